"""The image `make image` builds: run as it runs in the cluster, and archived.

One build per run (scripts/build-image.sh, which proves the image itself and fails on its
own); the tests then look at the image from outside: its config, what its read-only root
holds, and the OCI archive someone loads elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.buildah

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"localhost/kube-dlq:{VERSION}"
SCRIPT = ROOT / "scripts/build-image.sh"


@dataclass(frozen=True)
class Build:
    output: str


@pytest.fixture(scope="session")
def build() -> Build:
    done = subprocess.run(
        [str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False
    )
    assert done.returncode == 0, f"make image failed:\n{done.stdout}\n{done.stderr}"
    return Build(done.stdout)


def readonly(*command: str) -> subprocess.CompletedProcess[str]:
    """`command` in the image on a read-only root as UID 65532 (the script's own helper)."""
    return subprocess.run(
        [str(SCRIPT), "--readonly", IMAGE, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_entrypoint_answers_as_the_non_root_user_on_a_read_only_root(build: Build) -> None:
    assert f"buildah run --user 65532: kube-dlq {VERSION}" in build.output
    assert (
        "read-only root, uid 65532: /etc/kube-dlq/kube-dlq.yaml: ok (cluster prod-eu-1"
        in build.output
    )
    whoami = readonly(
        "/opt/kube-dlq/bin/python", "-c", "import os; print(os.getuid(), os.getgid())"
    )
    assert whoami.stdout.split() == ["65532", "65532"], whoami.stderr


def test_the_image_config_is_what_the_deployment_expects(build: Build) -> None:
    inspected = subprocess.run(
        ["buildah", "inspect", "--type", "image", IMAGE], capture_output=True, text=True, check=True
    )
    config = json.loads(inspected.stdout)["OCIv1"]["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/opt/kube-dlq/bin/kube-dlq"]
    assert config["Cmd"] == ["run"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]
    assert "KUBE_DLQ_CONFIG=/etc/kube-dlq/kube-dlq.yaml" in config["Env"]


def test_nothing_can_be_written_anywhere(build: Build) -> None:
    for path in ("/probe", "/tmp/probe", "/opt/kube-dlq/probe"):
        wrote = readonly("/opt/kube-dlq/bin/python", "-c", f"open({path!r}, 'w')")
        assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr, path


def test_a_bad_config_is_reported_not_crashed_on(build: Build) -> None:
    checked = readonly("/opt/kube-dlq/bin/kube-dlq", "check-config", "/etc/passwd")
    assert checked.returncode == 2, checked.stderr
    assert checked.stderr.startswith("kube-dlq: config error:")


def test_no_pip_and_no_compiler_in_the_image(build: Build) -> None:
    pip = readonly("/opt/kube-dlq/bin/python", "-c", "import pip")
    assert pip.returncode != 0 and "No module named 'pip'" in pip.stderr
    system_pip = readonly("/bin/sh", "-c", "python3 -m pip --version")
    assert system_pip.returncode != 0
    tools = readonly(
        "/bin/sh", "-c", "for t in pip pip3 gcc cc c++ make; do command -v $t; done; true"
    )
    assert tools.stdout.split() == []


def test_every_module_of_the_product_is_precompiled(build: Build) -> None:
    """On a read-only root nothing is compiled at start: the bytecode must already be there."""
    script = (
        "import importlib.util, pathlib, watcher\n"
        "root = pathlib.Path(watcher.__file__).parent\n"
        "py = sorted(root.rglob('*.py'))\n"
        "pyc = [pathlib.Path(importlib.util.cache_from_source(p)) for p in py]\n"
        "missing = [str(c) for c in pyc if not c.exists()]\n"
        "print(len(py), missing)\n"
    )
    found = readonly("/opt/kube-dlq/bin/python", "-c", script)
    count, _, missing = found.stdout.partition(" ")
    assert int(count) > 50 and missing.strip() == "[]", found.stdout + found.stderr


def test_the_oci_archive_holds_the_tagged_image(build: Build) -> None:
    archive = ROOT / f"build/kube-dlq-{VERSION}.oci.tar"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        index_file = tar.extractfile("index.json")
        assert index_file is not None
        index = json.load(index_file)
    assert {"oci-layout", "index.json"} <= {n.removeprefix("./") for n in names}
    refs = [
        m.get("annotations", {}).get("org.opencontainers.image.ref.name")
        for m in index["manifests"]
    ]
    assert any(ref and ref.endswith(VERSION) for ref in refs), refs
