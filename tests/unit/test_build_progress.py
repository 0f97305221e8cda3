"""A long first build says what it is doing (devtools/devcluster/build_progress.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from devtools.devcluster import build_progress

CMD = "/usr/local/go/bin/go build -v -trimpath -o out/ k8s.io/kubernetes/cmd/kube-apiserver"

LOGS = {
    "nothing yet": ([CMD], "resolving modules"),
    "downloading": (
        [
            CMD,
            "go: downloading k8s.io/api v0.36.3",
            "go: downloading github.com/spf13/cobra v1.9.1",
        ],
        "downloading modules: 2 so far, last github.com/spf13/cobra v1.9.1",
    ),
    "compiling after downloads": (
        [CMD, "go: downloading k8s.io/api v0.36.3", "internal/goarch", "k8s.io/api/core/v1"],
        "compiling: 2 packages done, last k8s.io/api/core/v1",
    ),
    "a compiler note is not a package": (
        [CMD, "runtime", "# k8s.io/klog/v2", "note: something"],
        "compiling: 1 packages done, last runtime",
    ),
}


@pytest.mark.parametrize(("lines", "said"), LOGS.values(), ids=list(LOGS))
def test_describe_says_the_phase_and_how_far(lines: list[str], said: str) -> None:
    assert build_progress.describe(lines) == said


def test_run_says_how_it_goes_while_the_command_runs(tmp_path: Path) -> None:
    # Given a "build" that compiles two packages over about a second
    log = tmp_path / "build.log"
    script = "import sys,time; print('pkg/a', file=sys.stderr, flush=True); time.sleep(1)"
    said: list[str] = []

    # When it runs with a heartbeat every 0.2 s
    with log.open("w") as fh:
        fh.write("go build -v\n")
        fh.flush()
        rc = build_progress.run(
            [sys.executable, "-c", script], cwd=tmp_path, env={}, log=log, log_file=fh,
            component="k8s-test", progress=said.append, every_s=0.2,
        )  # fmt: skip

    # Then it ends with the command's exit status, and said more than once what it was doing
    assert rc == 0
    assert len(said) >= 2
    assert all(line.startswith("  k8s-test: ") for line in said)
    assert "compiling: 1 packages done, last pkg/a" in said[-1]
