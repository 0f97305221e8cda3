"""`kube-dlq dlq redrive` flags: what is refused before Redis or the API is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.cli import main


def run(tmp_path: Path, *argv: str, read_only: bool = False) -> int:
    config = tmp_path / "kube-dlq.yaml"
    # Redis on a port nothing listens on: a test that got past the flags would fail loudly.
    config.write_text(
        "cluster_name: t\nredis: {url: 'redis://127.0.0.1:9/0'}\n"
        "security: {allow_unsigned: true}\n"
        + ("dead_letter: {read_only: true}\n" if read_only else "")
    )
    return main.main(["dlq", "redrive", "--config", str(config), *argv])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "name what to redrive"),
        (("batch/1-0", "--class", "oom_killed"), "ids or a filter, not both"),
        (("--all", "--namespace", "etl"), "drop the filter, or drop --all"),
        (("--all", "--rate", "fast"), "--rate: expected N/s"),
        (("--all", "--rate", "0/s"), "--rate: expected N/s"),
        (("--all", "--max-redrives", "0"), "--max-redrives must be >= 1"),
        (("--all", "--memory", "lots"), "not a memory quantity"),
        (("--all", "--image", "a b"), "--image: expected"),
        (("--all", "--class", "no_such_class"), "no_such_class"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    assert run(tmp_path, *argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kube-dlq dlq redrive: ") and message in err


def test_a_read_only_config_refuses_redrive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--all", read_only=True) == 2
    assert "dead_letter.read_only (nothing redriven)" in capsys.readouterr().err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main.main(["dlq", "redrive", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--dry-run" in out and "examples:" in out and "--max-redrives" in out
