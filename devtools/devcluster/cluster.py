"""Start and stop a local control plane: etcd, apiserver, controllers, scheduler, kwok.

Every component is a plain process on 127.0.0.1 with ports picked at start, its log in the
state dir, and its PID recorded in state.json, so `kube-dlq dev down` (another process) can
stop exactly what `dev up` started, in reverse order. Any failure while starting stops what
was already started and raises ClusterError naming the component and its log file.

state.py holds state.json and stopping a recorded cluster, processes.py the process helpers,
kubeapi.py the documents and clients for the components.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from devtools.devcluster import pki
from devtools.devcluster.build import STAGES_FILE, Binaries
from devtools.devcluster.kubeapi import (
    api_get,
    http_ok,
    kubeconfig_dict,
    kwok_configuration,
    node_manifest,
    run_kubectl,
)
from devtools.devcluster.processes import Progress, free_port, log_tail, terminate, to_stderr
from devtools.devcluster.state import (
    STATE_FILE,
    ClusterError,
    ClusterState,
    ComponentState,
    cluster_running,
)

DEFAULT_NODES = 2
DEFAULT_NODE_PODS = 110  # a kubelet's default --max-pods
# Why 2 nodes: the node-lifecycle controller stops evicting when every node of a zone is
# NotReady ("full disruption"), so node-loss scenarios need a healthy node beside the lost one.


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
        progress: Progress = to_stderr,
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
            terminate(proc.pid, comp.binary, proc)
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
            ready=lambda: http_ok(f"{url}/health", expect=b'"health":"true"'),
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
            ready=lambda: http_ok(url, token=token, ca=p / "ca.crt", expect=b"ok"),
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
            ready=lambda: http_ok(f"https://127.0.0.1:{ports['kcm']}/healthz", expect=b"ok"),
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
            ready=lambda: http_ok(f"https://127.0.0.1:{ports['scheduler']}/healthz", expect=b"ok"),
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
                    + log_tail(Path(comp.log))
                )
            if ready():
                self.progress(f"{name} ready ({time.monotonic() - started:.1f}s)")
                return
            time.sleep(0.2)
        raise ClusterError(
            f"{name} not ready after {self.start_timeout_s:.0f}s; log: {comp.log}\n"
            + log_tail(Path(comp.log))
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


@contextlib.contextmanager
def running_cluster(state_dir: Path, binaries: Binaries, **kwargs: Any) -> Iterator[ClusterState]:
    cluster = LocalCluster(state_dir, binaries, **kwargs)
    with cluster as state:
        yield state
