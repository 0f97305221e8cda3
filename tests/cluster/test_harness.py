"""Bad input to the local cluster gets a clear error and leaves nothing running."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.devcluster import cluster as cluster_mod
from devtools.devcluster import processes
from devtools.devcluster.build import Binaries, BuildError, ensure_binaries
from devtools.devcluster.cluster import LocalCluster
from devtools.devcluster.processes import pid_alive
from devtools.devcluster.state import ClusterError


def fake_binaries(folder: Path, **scripts: str) -> Binaries:
    """Shell scripts standing in for components, to provoke start-up failures cheaply."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in (
        "etcd",
        "kube_apiserver",
        "kube_controller_manager",
        "kube_scheduler",
        "kubectl",
        "kwok",
    ):
        path = folder / name
        path.write_text("#!/bin/sh\n" + scripts.get(name, "exec sleep 60") + "\n")
        path.chmod(0o755)
        paths[name] = path
    return Binaries(kwok_stages=folder / "stages.yaml", **paths)


def recorded_pids(state_dir: Path) -> list[tuple[int, str]]:
    state = json.loads((state_dir / "state.json").read_text())
    return [(c["pid"], c["binary"]) for c in state["components"]]


def test_missing_go_toolchain_is_named(tmp_path: Path) -> None:
    env = {
        "PATH": str(tmp_path / "empty"),
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    with pytest.raises(BuildError, match=r"no Go toolchain on PATH.*KUBEBUILDER_ASSETS"):
        ensure_binaries(environ=env, progress=lambda _: None)


def test_kubebuilder_assets_without_apiserver_is_named(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "KUBEBUILDER_ASSETS": str(tmp_path / "assets"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    with pytest.raises(BuildError, match=r"KUBEBUILDER_ASSETS=.* has no executable etcd"):
        ensure_binaries(environ=env, progress=lambda _: None)


def test_crashed_component_is_named_with_its_log(tmp_path: Path) -> None:
    binaries = fake_binaries(tmp_path / "bin", etcd="echo 'etcdmain: bad flag' >&2; exit 3")
    state_dir = tmp_path / "state"
    cluster = LocalCluster(state_dir, binaries, progress=lambda _: None, start_timeout_s=10)

    with pytest.raises(ClusterError) as err:
        cluster.start()

    first_line = str(err.value).splitlines()[0]
    assert first_line.startswith("etcd exited with code 3 while starting; log: ")
    assert first_line.endswith(str(state_dir / "logs" / "etcd.log"))
    assert "etcdmain: bad flag" in str(err.value)


def test_hung_component_is_stopped_after_timeout(tmp_path: Path) -> None:
    # etcd that runs but never answers /health: the start times out and nothing is left.
    binaries = fake_binaries(tmp_path / "bin")
    state_dir = tmp_path / "state"
    cluster = LocalCluster(state_dir, binaries, progress=lambda _: None, start_timeout_s=2)

    with pytest.raises(ClusterError, match=r"^etcd not ready after 2s; log: "):
        cluster.start()

    pids = recorded_pids(state_dir)
    assert pids, "etcd should have been started and recorded"
    assert not any(pid_alive(pid, binary) for pid, binary in pids)


def test_running_cluster_in_state_dir_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    sleep = shutil.which("sleep") or "/bin/sleep"
    sleeper = subprocess.Popen([sleep, "60"])
    try:
        while not pid_alive(sleeper.pid, sleep):  # until the fork has exec'd sleep
            time.sleep(0.01)
        (state_dir / "state.json").write_text(
            json.dumps(
                {
                    "components": [
                        {"name": "kube-apiserver", "pid": sleeper.pid, "binary": sleep, "log": "x"}
                    ]
                }
            )
        )
        cluster = LocalCluster(state_dir, fake_binaries(tmp_path / "bin"), progress=lambda _: None)
        with pytest.raises(ClusterError, match=r"already running .*kube-apiserver pid"):
            cluster.start()
        assert sleeper.poll() is None, "refusing must not touch the running process"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_state_dir_is_replaced(tmp_path: Path) -> None:
    # A state dir left by a cluster that died (PIDs no longer alive) does not block a start.
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "state.json").write_text(
        json.dumps(
            {
                "components": [
                    {"name": "etcd", "pid": 2**22 - 1, "binary": "/nonexistent/etcd", "log": "x"}
                ]
            }
        )
    )
    messages: list[str] = []
    binaries = fake_binaries(tmp_path / "bin", etcd="exit 7")
    cluster = LocalCluster(state_dir, binaries, progress=messages.append, start_timeout_s=5)

    with pytest.raises(ClusterError, match="etcd exited with code 7"):
        cluster.start()
    assert any("removing stale cluster state" in m for m in messages)


@pytest.mark.cluster
def test_port_in_use_names_component_and_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given another program already listening on the port chosen for the apiserver
    binaries = ensure_binaries(progress=lambda _: None)
    blocker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import socket,time;s=socket.socket();s.bind(('127.0.0.1',0));s.listen();"
                "print(s.getsockname()[1],flush=True);time.sleep(120)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert blocker.stdout is not None
        taken = int(blocker.stdout.readline())
        real_free_port = processes.free_port
        calls = iter(range(100))

        def fake_free_port() -> int:
            # Third port asked for is the apiserver's (etcd, etcd-peer, apiserver, ...).
            return taken if next(calls) == 2 else real_free_port()

        # Patched where LocalCluster looks it up (cluster.py imports it from processes.py).
        monkeypatch.setattr(cluster_mod, "free_port", fake_free_port)
        state_dir = tmp_path / "state"
        cluster = LocalCluster(state_dir, binaries, progress=lambda _: None, start_timeout_s=60)

        with pytest.raises(ClusterError) as err:
            cluster.start()

        first_line = str(err.value).splitlines()[0]
        assert first_line.startswith("kube-apiserver exited with code")
        assert str(state_dir / "logs" / "kube-apiserver.log") in first_line
        assert "address already in use" in str(err.value)
        assert not any(pid_alive(pid, binary) for pid, binary in recorded_pids(state_dir))
    finally:
        blocker.kill()
        blocker.wait()
        if blocker.stdout is not None:
            blocker.stdout.close()
