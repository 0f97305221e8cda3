"""What the cluster benchmarks share: the local control plane, a daemon process, fast creates.

* `control_plane`: a LocalCluster of its own (etcd, apiserver, controller-manager, scheduler,
  kwok), or the one `kube-dlq dev up` left running in ``--state-dir``.
* `DaemonProcess`: ``python -m watcher run --config FILE`` as a child, its /readyz, its
  VmRSS from /proc, stopped by its PID.
* `Admin`: one aiohttp session as the admin identity that POSTs raw JSON many at a time
  (no client models: the loader must not be the bottleneck on 2 cores).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from devtools.devcluster.build import ensure_binaries
from devtools.devcluster.cluster import LocalCluster
from devtools.devcluster.commands import default_rbac
from devtools.devcluster.processes import free_port
from devtools.devcluster.state import ClusterState, cluster_running

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTROLLER_MANAGER_ARGS = (
    "--kube-api-qps=300",
    "--kube-api-burst=600",
    "--concurrent-job-syncs=100",
    "--terminated-pod-gc-threshold=12500",
)
"""client-go's default 20 requests/s and 5 Job workers let the Job controller start only a few
Jobs a second (a pod create, finalizer removals, status writes each): the benchmark would
measure the controller-manager. At 300/s it is not throttled at 50 Jobs/s (bench.latency
reports its client-side wait), but each Job worker waits on the apiserver for every write of
its sync (a pod POST, about two status PUTs), and at a loaded apiserver's 0.3-1 s a write, 20
workers started 26 pods/s with 2,800 Jobs queued: 100 workers keep the queue short. The
pod-GC threshold is upstream's default (the dev cluster's 1,000 would delete 2,000 of a run's
failed pods during it, work the apiserver and every watcher then do for nothing)."""
SCHEDULER_ARGS = ("--kube-api-qps=500", "--kube-api-burst=1000")
"""Binding 50 pods/s is the scheduler's whole default 50 requests/s."""
KWOK_OPTIONS = {"podPlayStageParallelism": 32}
"""kwok's 4 stage workers each wait on the apiserver for every pod status PATCH (two a pod
here: Running, then Failed): at a loaded apiserver's ~0.3 s a PATCH they move 13 pods/s."""


def _memory_limit() -> str:
    """A quarter of this machine's memory, for GOMEMLIMIT (bytes; Go's default if unknown)."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return "off"
    return str(pages * size // 4)


COMPONENT_ENV = {"GOGC": "400", "GOMEMLIMIT": _memory_limit()}
"""The control plane's Go processes collect garbage a quarter as often (heap up to 5x live
instead of 2x). Garbage collection was ~15 % of the apiserver's CPU under this load; at 15
Jobs/s, measured in interleaved pairs, the apiserver spent 15-18 % less CPU per Job (45.6 ->
37.3 and 36.7 -> 31.1 ms) and the whole stack 8-14 % less. GOMEMLIMIT caps what GOGC=400
lets each process grow to: at 100,000 Jobs and Pods (bench.memory) the apiserver reached
13.2 GB, kwok 5.1 GB and the controller-manager 2.1 GB, and with kopf beside them the 24 GB
machine had 50 MB left and thrashed (load average 14); near the limit Go collects more often
instead."""
NODE_PODS = 1000
"""A kubelet's 110 a node fills at 50 pods/s once pods wait a few seconds between bound and
failed, and the scheduler then backs off ("Too many pods") for seconds."""
FAIL_STAGE = "fail.stage.kwok.kube-dlq.io"
SIGNING_KEY_ID = "bench"


@contextlib.contextmanager
def control_plane(state_dir: Path | None, nodes: int = 2) -> Iterator[ClusterState]:
    """The running cluster of `state_dir` if there is one, else a new one stopped after."""
    if state_dir is not None and cluster_running(state_dir):
        yield ClusterState.load(state_dir)
        return
    target = state_dir or Path(tempfile.mkdtemp(prefix="kube-dlq-bench-"))
    cluster = LocalCluster(
        target, ensure_binaries(), nodes=nodes, node_pods=NODE_PODS, rbac_manifest=default_rbac(),
        extra_controller_manager_args=CONTROLLER_MANAGER_ARGS,
        extra_scheduler_args=SCHEDULER_ARGS, kwok_options=KWOK_OPTIONS,
        component_env=COMPONENT_ENV,
    )  # fmt: skip
    with cluster as state:
        yield state


def signing_keys_dir() -> str:
    """A key directory like a mounted Secret: the daemon signs as in production."""
    directory = tempfile.mkdtemp(prefix="kube-dlq-bench-keys-")
    Path(directory, SIGNING_KEY_ID).write_text(secrets.token_hex(32))
    return directory


def daemon_config(
    state: ClusterState,
    *,
    namespaces: Iterable[str],
    redis_url: str,
    cluster_name: str,
    keys_dir: str,
    **sections: Any,
) -> dict[str, Any]:
    """The daemon's documented defaults, scoped to `namespaces`; `sections` add or replace."""
    doc: dict[str, Any] = {
        "cluster_name": cluster_name,
        "redis": {"url": redis_url},
        "kubernetes": {"kubeconfig": state.daemon_kubeconfig},
        "scope": {"namespaces": list(namespaces)},
        "server": {"bind_address": "127.0.0.1", "port": free_port()},
        "log": {"level": "warning", "format": "json"},
        "security": {"signing_keys_dir": keys_dir, "signing_key_id": SIGNING_KEY_ID},
    }
    doc.update(sections)
    return doc


class DaemonProcess:
    """`python -m watcher run --config FILE`, logging to a file next to the config."""

    def __init__(self, config: Path, doc: Mapping[str, Any]) -> None:
        config.write_text(yaml.safe_dump(dict(doc), sort_keys=False))
        self.config = config
        self.port: int = doc["server"]["port"]
        self.log = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> DaemonProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE_DLQ_")}
        env.pop("KUBECONFIG", None)
        with self.log.open("ab") as out:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(  # fixed argv, no shell
                [sys.executable, "-m", "watcher", "run", "--config", str(self.config)],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def wait_ready(self, within: float = 600.0, every: float = 0.05) -> float:
        """Seconds from process start to /readyz 200; raises with the log tail if it exits
        or takes longer than `within`."""
        deadline = time.monotonic() + within
        url = f"http://127.0.0.1:{self.port}/readyz"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}\n{self.tail()}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(url, timeout=2) as resp,
            ):
                if resp.status == 200:
                    return time.monotonic() - self.started
            time.sleep(every)
        raise RuntimeError(f"daemon not ready within {within:.0f}s\n{self.tail()}")

    def rss_bytes(self) -> int:
        """VmRSS of the daemon process, from /proc/<pid>/status."""
        return vm_rss(self.pid)

    def stop(self, grace_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after `grace_s`; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Admin:
    """The admin identity over one aiohttp session: raw JSON in and out."""

    def __init__(self, state: ClusterState, width: int = 64) -> None:
        self.state = state
        self._ssl = ssl.create_default_context(cafile=state.ca_file)
        self._session: aiohttp.ClientSession | None = None
        self._width = asyncio.Semaphore(width)
        self._limit = width
        self.errors: list[str] = []

    async def __aenter__(self) -> Admin:
        headers = {"Authorization": f"Bearer {self.state.admin_token}"}
        conn = aiohttp.TCPConnector(limit=max(128, self._limit), ssl=self._ssl)
        self._session = aiohttp.ClientSession(headers=headers, connector=conn)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Admin(...)`"
        return self._session

    def url(self, path: str) -> str:
        return f"{self.state.api_url}{path}"

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """POST `body`; None (and the error kept in `.errors`) unless 201."""
        async with self._width:
            try:
                async with self.session.post(self.url(path), json=body) as resp:
                    answer = await resp.read()
                    if resp.status != 201:
                        self.errors.append(f"POST {path}: {resp.status} {answer[:200]!r}")
                        return None
                    created: dict[str, Any] = json.loads(answer)
                    return created
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Recorded, not raised: one slow answer must not end an hour-long run.
                self.errors.append(f"POST {path}: {type(exc).__name__} {exc}")
                return None

    async def delete(self, path: str) -> int:
        """DELETE `path`: its status, or 0 (and the error kept in `.errors`) if none came."""
        try:
            async with self._width, self.session.delete(self.url(path)) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors.append(f"DELETE {path}: {type(exc).__name__} {exc}")
            return 0

    async def get(self, path: str) -> dict[str, Any] | None:
        async with self.session.get(self.url(path)) as resp:
            if resp.status == 404:
                return None
            resp.raise_for_status()
            found: dict[str, Any] = await resp.json()
            return found

    async def create_namespace(self, name: str) -> None:
        if await self.post("/api/v1/namespaces", {"metadata": {"name": name}}) is None:
            raise RuntimeError(f"namespace {name} not created: {self.errors[-1]}")

    async def delete_namespace(self, name: str, within: float = 0.0) -> None:
        """Delete it; with `within`, wait (up to that long) until it is gone."""
        await self.delete(f"/api/v1/namespaces/{name}")
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await self.get(f"/api/v1/namespaces/{name}") is None:
                return
            await asyncio.sleep(1.0)

    async def count(self, path: str) -> int:
        """Objects at a collection path, by paged LIST (500 a page)."""
        total, token = 0, ""
        while True:
            page = await self.get(f"{path}?limit=500" + (f"&continue={token}" if token else ""))
            assert page is not None
            total += len(page.get("items", []))
            token = page.get("metadata", {}).get("continue", "")
            if not token:
                return total


def job_body(
    name: str, *, fail_exit_code: int | None = None, pod_annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A one-pod Job (backoffLimit 0). With `fail_exit_code`, kwok's fail stage ends its pod
    with that code a second after it runs (devtools/devcluster/stages.yaml); without, kwok
    completes it."""
    labels: dict[str, str] = {}
    annotations = dict(pod_annotations or {})
    if fail_exit_code is not None:
        labels[FAIL_STAGE] = "true"
        annotations.update(
            {
                f"{FAIL_STAGE}/exit-code": str(fail_exit_code),
                f"{FAIL_STAGE}/reason": "Error",
                f"{FAIL_STAGE}/message": "bench: the workload failed",
                f"{FAIL_STAGE}/delay": "1s",
            }
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": "registry.invalid/bench:1", "command": ["/w"]}
                    ],
                },
            },
        },
    }
