"""Stop, start or freeze one component of a LocalCluster that the test itself started.

Only for a cluster of the test's own (never the session `cluster`): `stop_component` kills the
process by the PID its LocalCluster recorded and returns its command line, `start_component`
runs that command line again with the same environment and log file and puts the new process
in the cluster's books, so `LocalCluster.stop()` still stops everything it should.
`frozen_component` stops the process with SIGSTOP for the duration of a block: its TCP
connections stay open and silent, like a peer lost behind a dead network path.
`compact_etcd` compacts the cluster's etcd history up to now, so that older resourceVersions
are gone (410) for watches that etcd serves.

Why SIGKILL: with its own clients' watches open, kube-apiserver's graceful shutdown on SIGTERM
waits about 60 s (its request timeout) before exiting; a crash is also the harder case.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devtools.devcluster.cluster import LocalCluster
from devtools.devcluster.state import ClusterError, ComponentState

READY_TIMEOUT_S = 60.0


def _entry(cluster: LocalCluster, name: str) -> int:
    # LocalCluster keeps (ComponentState, Popen) pairs in start order; tests may reach in.
    for index, (comp, _) in enumerate(cluster._procs):
        if comp.name == name:
            return index
    raise ClusterError(f"{name} is not a component of this cluster")


def stop_component(cluster: LocalCluster, name: str) -> list[str]:
    """SIGKILL `name` and wait for it; returns its argv for start_component."""
    _, proc = cluster._procs[_entry(cluster, name)]
    argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return argv


def start_component(cluster: LocalCluster, name: str, argv: list[str]) -> None:
    """Start `name` again from `argv`; for kube-apiserver, wait until /readyz says ok."""
    index = _entry(cluster, name)
    old, _ = cluster._procs[index]
    env = {**os.environ, "HOME": str(cluster.state_dir)}
    env.pop("KUBECONFIG", None)
    with Path(old.log).open("ab") as fh:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    comp = ComponentState(name=name, pid=proc.pid, binary=old.binary, log=old.log)
    cluster._procs[index] = (comp, proc)
    if cluster.state is not None:
        cluster.state.components = [comp if c.name == name else c for c in cluster.state.components]
        cluster.state.save()
    if name == "kube-apiserver":
        _wait_apiserver_ready(cluster, proc)


def restart_component(cluster: LocalCluster, name: str) -> None:
    start_component(cluster, name, stop_component(cluster, name))


@contextlib.contextmanager
def frozen_component(cluster: LocalCluster, name: str) -> Iterator[None]:
    """SIGSTOP `name` for the block, SIGCONT after it (also when the block fails)."""
    _, proc = cluster._procs[_entry(cluster, name)]
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


def etcd_url(cluster: LocalCluster) -> str:
    """The client URL of the cluster's etcd, from its command line."""
    _, proc = cluster._procs[_entry(cluster, "etcd")]
    argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode().split("\0")
    prefix = "--listen-client-urls="
    return next(a[len(prefix) :] for a in argv if a.startswith(prefix)).split(",")[0]


def _etcd_post(cluster: LocalCluster, path: str, body: dict[str, object]) -> dict[str, Any]:
    request = urllib.request.Request(
        etcd_url(cluster) + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def etcd_revision(cluster: LocalCluster) -> int:
    """etcd's current revision (what the apiserver hands out as resourceVersion)."""
    status = _etcd_post(cluster, "/v3/maintenance/status", {})
    return int(status["header"]["revision"])


def compact_etcd(cluster: LocalCluster) -> int:
    """Compact etcd's history up to its current revision (through its HTTP gateway, as
    `etcdctl compact --physical` would); returns that revision. A watch resuming from any
    older resourceVersion, straight from etcd, then fails with 410 Gone."""
    revision = etcd_revision(cluster)
    _etcd_post(cluster, "/v3/kv/compaction", {"revision": revision, "physical": True})
    return revision


def _wait_apiserver_ready(cluster: LocalCluster, proc: subprocess.Popen[bytes]) -> None:
    state = cluster.state
    assert state is not None
    ctx = ssl.create_default_context(cafile=state.ca_file)
    request = urllib.request.Request(
        f"{state.api_url}/readyz", headers={"Authorization": f"Bearer {state.admin_token}"}
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(f"kube-apiserver exited with {proc.returncode} on restart")
        try:
            with urllib.request.urlopen(request, context=ctx, timeout=2) as resp:
                if resp.status == 200 and resp.read() == b"ok":
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise ClusterError(f"kube-apiserver not ready {READY_TIMEOUT_S:.0f}s after a restart")
