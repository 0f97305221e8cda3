"""Start, inspect and stop a local control plane: etcd, apiserver, controllers, scheduler, kwok.

Every component is a plain process on 127.0.0.1 with ports picked at start, its log in the
state dir, and its PID recorded in state.json, so `kube-dlq dev down` (another process) can
stop exactly what `dev up` started, in reverse order. Any failure while starting stops what
was already started and raises ClusterError naming the component and its log file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devtools.devcluster import pki
from devtools.devcluster.build import STAGES_FILE, Binaries

STATE_FILE = "state.json"
DEFAULT_NODES = 2
DEFAULT_NODE_PODS = 110  # a kubelet's default --max-pods
# Why 2 nodes: the node-lifecycle controller stops evicting when every node of a zone is
# NotReady ("full disruption"), so node-loss scenarios need a healthy node beside the lost one.

Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """The local cluster could not start, or is not in the state asked for."""


@dataclass(frozen=True, slots=True)
class ComponentState:
    name: str
    pid: int
    binary: str
    log: str


@dataclass(slots=True)
class ClusterState:
    """What state.json records: enough for another process to use or stop the cluster."""

    state_dir: str
    api_url: str
    kubeconfig: str
    """Admin identity (system:masters)."""
    daemon_kubeconfig: str
    """The daemon's ServiceAccount identity, limited by deploy/manifests/rbac.yaml."""
    ca_file: str
    admin_token: str
    daemon_token: str
    nodes: list[str]
    bin_dirs: list[str]
    components: list[ComponentState] = field(default_factory=list)
    started_at: float = 0.0

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState:
        path = state_dir / STATE_FILE
        try:
            raw = json.loads(path.read_text())
            raw["components"] = [ComponentState(**c) for c in raw.get("components", [])]
            return cls(**raw)
        except FileNotFoundError as exc:
            raise ClusterError(f"no cluster state in {state_dir} (run `kube-dlq dev up`)") from exc
        except (ValueError, TypeError) as exc:
            raise ClusterError(f"unreadable cluster state {path}: {exc}") from exc


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pid_alive(pid: int, binary: str) -> bool:
    """True if `pid` runs `binary` (guards against a recycled PID of an unrelated process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, UnicodeDecodeError):
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return cmdline == binary and not zombie


def cluster_running(state_dir: Path) -> list[ComponentState]:
    """The recorded components still alive in `state_dir` (empty: nothing running).

    Reads only the component list, so a partly written or older state file still tells
    whether processes from it are alive.
    """
    try:
        raw = json.loads((state_dir / STATE_FILE).read_text())
        comps = [ComponentState(**c) for c in raw.get("components", [])]
    except (OSError, ValueError, TypeError, AttributeError):
        return []
    return [c for c in comps if pid_alive(c.pid, c.binary)]


class LocalCluster:
    """One local control plane in one state dir.

    Use as a context manager (tests) or call start() and leave it running (`dev up`).
    """

    def __init__(
        self,
        state_dir: Path,
        binaries: Binaries,
        *,
        nodes: int = DEFAULT_NODES,
        node_pods: int = DEFAULT_NODE_PODS,
        rbac_manifest: Path | None = None,
        progress: Progress = _stderr,
        start_timeout_s: float = 90.0,
        extra_apiserver_args: tuple[str, ...] = (),
        extra_controller_manager_args: tuple[str, ...] = (),
        extra_scheduler_args: tuple[str, ...] = (),
        kwok_options: dict[str, Any] | None = None,
        component_env: dict[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.binaries = binaries
        self.node_names = [f"kwok-node-{i}" for i in range(nodes)]
        self.node_pods = node_pods
        """Each node's pod capacity: what the scheduler fits, counting pods bound but not
        yet terminal."""
        self.rbac_manifest = rbac_manifest
        self.progress = progress
        self.start_timeout_s = start_timeout_s
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        """Appended to kube-apiserver's flags, e.g. ("--min-request-timeout=3",) in tests."""
        self.extra_controller_manager_args = tuple(extra_controller_manager_args)
        """Appended to kube-controller-manager's flags (a later flag wins over the default),
        e.g. ("--node-monitor-grace-period=60s",) where the apiserver is restarted on purpose."""
        self.extra_scheduler_args = tuple(extra_scheduler_args)
        """Appended to kube-scheduler's flags, e.g. ("--kube-api-qps=500",) for load."""
        self.kwok_options = dict(kwok_options or {})
        """kwok's KwokConfiguration options (e.g. {"podPlayStageParallelism": 16}), over the
        defaults in KWOK_OPTIONS; written into kwok's --config file."""
        self.component_env = dict(component_env or {})
        """Added to every component's environment, e.g. {"GOGC": "400"} for load."""
        self._procs: list[tuple[ComponentState, subprocess.Popen[bytes]]] = []
        self.state: ClusterState | None = None

    # -- public ---------------------------------------------------------------------------

    def start(self) -> ClusterState:
        self._prepare_state_dir()
        started = time.monotonic()
        try:
            state = self._start_all()
        except BaseException:
            self.stop()
            raise
        self.progress(f"cluster ready in {time.monotonic() - started:.1f}s")
        return state

    def stop(self) -> None:
        """Stop every component this object started, in reverse order."""
        for comp, proc in reversed(self._procs):
            _terminate(proc.pid, comp.binary, proc)
        self._procs.clear()

    def __enter__(self) -> ClusterState:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start-up -------------------------------------------------------------------------

    def _prepare_state_dir(self) -> None:
        alive = cluster_running(self.state_dir)
        if alive:
            names = ", ".join(f"{c.name} pid {c.pid}" for c in alive)
            raise ClusterError(
                f"a cluster is already running from {self.state_dir} ({names}); "
                f"stop it with `kube-dlq dev down --state-dir {self.state_dir}`"
            )
        if (self.state_dir / STATE_FILE).exists():
            self.progress(f"removing stale cluster state in {self.state_dir}")
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        self.state_dir.mkdir(parents=True)

    def _start_all(self) -> ClusterState:
        d = self.state_dir
        pki.make_pki(d / "pki")
        ids = {i.name: i for i in pki.identities()}
        pki.write_token_file(d / "pki" / "tokens.csv", tuple(ids.values()))
        ports = {
            n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")
        }
        api_url = f"https://127.0.0.1:{ports['apiserver']}"
        ca = d / "pki" / "ca.crt"
        kubeconfigs = {
            name: self._write_kubeconfig(name, api_url, ca, ident.token)
            for name, ident in ids.items()
        }
        self.state = ClusterState(
            state_dir=str(d),
            api_url=api_url,
            kubeconfig=str(kubeconfigs["admin"]),
            daemon_kubeconfig=str(kubeconfigs["daemon"]),
            ca_file=str(ca),
            admin_token=ids["admin"].token,
            daemon_token=ids["daemon"].token,
            nodes=list(self.node_names),
            bin_dirs=[str(p) for p in self.binaries.bin_dirs],
            started_at=time.time(),
        )
        self.state.save()

        self._start_etcd(ports)
        self._start_apiserver(ports)
        self._bootstrap_objects()
        self._start_controller_manager(ports, kubeconfigs["controller-manager"])
        self._start_scheduler(ports, kubeconfigs["scheduler"])
        self._start_kwok(ports, kubeconfigs["kwok"])
        return self.state

    def _start_etcd(self, ports: dict[str, int]) -> None:
        url = f"http://127.0.0.1:{ports['etcd']}"
        self._spawn(
            "etcd",
            self.binaries.etcd,
            [
                f"--data-dir={self.state_dir / 'etcd-data'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
                f"--initial-cluster=default=http://127.0.0.1:{ports['etcd-peer']}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ],
            ready=lambda: _http_ok(f"{url}/health", expect=b'"health":"true"'),
        )

    def _start_apiserver(self, ports: dict[str, int]) -> None:
        d, p = self.state_dir, self.state_dir / "pki"
        assert self.state is not None
        token = self.state.admin_token
        url = f"{self.state.api_url}/readyz"
        self._spawn(
            "kube-apiserver",
            self.binaries.kube_apiserver,
            [
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--cert-dir={d / 'apiserver-certs'}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--token-auth-file={p / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--disable-admission-plugins=ServiceAccount",
                # Taint-based eviction after 5 s instead of 300 s, so node loss plays out fast.
                "--default-not-ready-toleration-seconds=5",
                "--default-unreachable-toleration-seconds=5",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
                *self.extra_apiserver_args,
            ],
            ready=lambda: _http_ok(url, token=token, ca=p / "ca.crt", expect=b"ok"),
        )

    def _bootstrap_objects(self) -> None:
        """The daemon's namespace and RBAC (the production manifest), before controllers run."""
        self.kubectl("create", "namespace", pki.DAEMON_NAMESPACE)
        if self.rbac_manifest is not None:
            self.kubectl("apply", "-f", str(self.rbac_manifest))

    def _start_controller_manager(self, ports: dict[str, int], kubeconfig: Path) -> None:
        controllers = ",".join(
            (
                "job-controller",
                "garbage-collector-controller",
                "namespace-controller",
                "pod-garbage-collector-controller",
                "ttl-after-finished-controller",
                "node-lifecycle-controller",
                "taint-eviction-controller",
                "serviceaccount-controller",
                "cronjob-controller",
            )
        )
        self._spawn(
            "kube-controller-manager",
            self.binaries.kube_controller_manager,
            [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kcm']}",
                f"--cert-dir={self.state_dir / 'kcm-certs'}",
                "--use-service-account-credentials=false",
                f"--controllers={controllers}",
                # Node loss in seconds: check often, declare a silent node lost after 10 s.
                "--node-monitor-period=2s",
                "--node-monitor-grace-period=10s",
                "--node-startup-grace-period=10s",
                # Delete pods of vanished nodes quickly (pod GC).
                "--terminated-pod-gc-threshold=1000",
                "--v=1",
                *self.extra_controller_manager_args,
            ],
            ready=lambda: _http_ok(f"https://127.0.0.1:{ports['kcm']}/healthz", expect=b"ok"),
        )

    def _start_scheduler(self, ports: dict[str, int], kubeconfig: Path) -> None:
        self._spawn(
            "kube-scheduler",
            self.binaries.kube_scheduler,
            [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                f"--cert-dir={self.state_dir / 'scheduler-certs'}",
                "--v=1",
                *self.extra_scheduler_args,
            ],
            ready=lambda: _http_ok(f"https://127.0.0.1:{ports['scheduler']}/healthz", expect=b"ok"),
        )

    def _start_kwok(self, ports: dict[str, int], kubeconfig: Path) -> None:
        self._spawn(
            "kwok",
            self.binaries.kwok,
            [
                f"--kubeconfig={kubeconfig}",
                "--manage-all-nodes=true",
                f"--config={self._stages_file()}",
                # Leases renewed every 2 s, well inside the controller's 10 s grace period.
                "--node-lease-duration-seconds=8",
                "--cidr=10.244.0.0/16",
                f"--server-address=127.0.0.1:{ports['kwok']}",
            ],
            ready=None,
        )
        nodes = [node_manifest(name, pods=str(self.node_pods)) for name in self.node_names]
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(nodes))
        self._wait("kwok", self._procs[-1], self._nodes_ready)

    # -- helpers --------------------------------------------------------------------------

    def _stages_file(self) -> Path:
        """kwok's configuration, then its upstream stages plus the project's own, in the
        state dir."""
        path = self.state_dir / "kwok-stages.yaml"
        upstream = self.binaries.kwok_stages.read_text().strip()
        conf = yaml.safe_dump(kwok_configuration(self.kwok_options), sort_keys=False).strip()
        docs = (conf, upstream, STAGES_FILE.read_text().strip())
        path.write_text("\n---\n".join(docs) + "\n")
        return path

    def _spawn(
        self, name: str, binary: Path, args: list[str], *, ready: Callable[[], bool] | None
    ) -> None:
        log = self.state_dir / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        # kwok reads $HOME/.kwok/kwok.yaml
        env = {**os.environ, **self.component_env, "HOME": str(self.state_dir)}
        env.pop("KUBECONFIG", None)
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                [str(binary), *args],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        comp = ComponentState(name=name, pid=proc.pid, binary=str(binary), log=str(log))
        self._procs.append((comp, proc))
        assert self.state is not None
        self.state.components.append(comp)
        self.state.save()
        if ready is not None:
            self._wait(name, (comp, proc), ready)

    def _wait(
        self,
        name: str,
        entry: tuple[ComponentState, subprocess.Popen[bytes]],
        ready: Callable[[], bool],
    ) -> None:
        comp, proc = entry
        deadline = time.monotonic() + self.start_timeout_s
        started = time.monotonic()
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise ClusterError(
                    f"{name} exited with code {code} while starting; log: {comp.log}\n"
                    + _tail(Path(comp.log))
                )
            if ready():
                self.progress(f"{name} ready ({time.monotonic() - started:.1f}s)")
                return
            time.sleep(0.2)
        raise ClusterError(
            f"{name} not ready after {self.start_timeout_s:.0f}s; log: {comp.log}\n"
            + _tail(Path(comp.log))
        )

    def _nodes_ready(self) -> bool:
        """Every node Ready and schedulable: the node-lifecycle controller removes the
        not-ready taint a moment after Ready, and a pod created before that gets a spurious
        FailedScheduling Event."""
        assert self.state is not None
        for node in self.node_names:
            obj = api_get(self.state, f"/api/v1/nodes/{node}") or {}
            conds = obj.get("status", {}).get("conditions") or []
            if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                return False
            taints = {t.get("key") for t in obj.get("spec", {}).get("taints") or []}
            if taints & {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}:
                return False
        return True

    def _write_kubeconfig(self, name: str, api_url: str, ca: Path, token: str) -> Path:
        path = self.state_dir / ("kubeconfig" if name == "admin" else f"{name}.kubeconfig")
        path.write_text(yaml.safe_dump(kubeconfig_dict(api_url, ca, token, user=name)))
        path.chmod(0o600)
        return path

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        assert self.state is not None
        return run_kubectl(self.binaries.kubectl, Path(self.state.kubeconfig), *args, stdin=stdin)


KWOK_OPTIONS: dict[str, Any] = {
    # kwok applies its defaults only when no KwokConfiguration is given at all: one from a
    # file must spell out every option whose zero value would differ (0 workers, handlers
    # off). These are kwok v0.8.0's defaults (pkg/apis/config/v1alpha1/zz_generated.defaults.go).
    "enableDebuggingHandlers": True,
    "enableContentionProfiling": False,
    "enableProfilingHandler": True,
    "podPlayStageParallelism": 4,
    "nodePlayStageParallelism": 4,
    "nodeLeaseParallelism": 4,
    "podsOnNodeSyncParallelism": 1,
    "enablePodsOnNodeSyncListPager": True,
    "enablePodsOnNodeSyncStreamWatch": False,
}


def kwok_configuration(options: dict[str, Any]) -> dict[str, Any]:
    """kwok's KwokConfiguration document: KWOK_OPTIONS with `options` over them (command
    line flags such as --cidr and --manage-all-nodes still win over both)."""
    return {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {**KWOK_OPTIONS, **options},
    }


def kubeconfig_dict(api_url: str, ca: Path, token: str, *, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kube-dlq-dev",
                "cluster": {"server": api_url, "certificate-authority": str(ca)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": f"kube-dlq-dev-{user}", "context": {"cluster": "kube-dlq-dev", "user": user}}
        ],
        "current-context": f"kube-dlq-dev-{user}",
    }


def run_kubectl(kubectl: Path, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def node_manifest(
    name: str, *, cpu: str = "32", pods: str = "110", taints: tuple[dict[str, str], ...] = ()
) -> dict[str, Any]:
    """A Node for kwok to manage (kwok fills in its status). The zone label matters: the
    scheduler's default topology spreading scores a node without one low."""
    resources = {"cpu": cpu, "memory": "256Gi", "pods": pods}
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "topology.kubernetes.io/zone": "local",
            },
        },
        "status": {"allocatable": resources, "capacity": resources},
    }
    if taints:
        node["spec"] = {"taints": list(taints)}
    return node


def api_get(state: ClusterState, path: str) -> dict[str, Any] | None:
    """GET from the apiserver as admin; None on 404 or while it is not answering."""
    ctx = ssl.create_default_context(cafile=state.ca_file)
    req = urllib.request.Request(
        state.api_url + path, headers={"Authorization": f"Bearer {state.admin_token}"}
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _http_ok(
    url: str, *, token: str | None = None, ca: Path | None = None, expect: bytes = b""
) -> bool:
    if url.startswith("https://"):
        ctx = ssl.create_default_context(cafile=str(ca)) if ca else _insecure_context()
    else:
        ctx = None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), context=ctx, timeout=2
        ) as resp:
            return resp.status == 200 and expect in resp.read()
    except (urllib.error.URLError, OSError):
        return False


def _insecure_context() -> ssl.SSLContext:
    # Controller-manager and scheduler serve /healthz with self-signed certs made at start.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def _terminate(
    pid: int, binary: str, proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0
) -> None:
    """SIGTERM, wait, then SIGKILL — only if `pid` still runs `binary`."""
    if proc is not None and proc.poll() is not None:
        return
    if proc is None and not pid_alive(pid, binary):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not pid_alive(pid, binary):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=5)


def stop_child(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Stop a child this process started: SIGTERM, wait up to `timeout_s`, then SIGKILL.

    The one way devtools stops its servers (control plane, Redis helpers, Toxiproxy,
    Prometheus); a child that already exited is left alone."""
    _terminate(proc.pid, "", proc, timeout_s)


def stop_recorded(state_dir: Path, progress: Progress = _stderr) -> list[str]:
    """Stop a cluster started by another process (`dev down`), by the PIDs it recorded."""
    state = ClusterState.load(state_dir)
    stopped = []
    for comp in reversed(state.components):
        if pid_alive(comp.pid, comp.binary):
            _terminate(comp.pid, comp.binary, None)
            stopped.append(comp.name)
            progress(f"stopped {comp.name} (pid {comp.pid})")
    return stopped


@contextlib.contextmanager
def running_cluster(state_dir: Path, binaries: Binaries, **kwargs: Any) -> Iterator[ClusterState]:
    cluster = LocalCluster(state_dir, binaries, **kwargs)
    with cluster as state:
        yield state
