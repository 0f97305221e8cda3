"""`kube-dlq demo`: the whole product on one machine, in about two minutes.

Starts the local control plane and a redis-server, runs the daemon in-process as its own
ServiceAccount identity, submits a batch workload that fails in the ways batch work really
fails (bad input, OOM, a network timeout, a lost node, an image that cannot be pulled, a
deadline), and shows what kube-dlq made of each: retried, or dead-lettered with its class.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from devtools.demo_view import (
    LiveView,
    alert_lines,
    alerting_rules,
    attempts_from_jobs,
    job_rows,
    queue_line,
)
from devtools.devcluster.build import ensure_binaries
from devtools.devcluster.cluster import LocalCluster
from devtools.devcluster.commands import default_rbac
from devtools.devcluster.kubeapi import kubeconfig_dict, node_manifest
from devtools.devcluster.processes import free_port
from devtools.devcluster.prometheus import PrometheusServer
from devtools.devcluster.redis_server import RedisServer
from devtools.monitoring.rules import RULES_FILE
from watcher.adapters.kube.connect import connect
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.adapters.redis.store import RedisStore
from watcher.app.config import parse_config
from watcher.app.daemon import Daemon
from watcher.app.sealing import build_seal
from watcher.cli import dlq_list
from watcher.core.dlq_filter import DeadLetterFilter
from watcher.core.settings import LogSettings, Settings
from watcher.kit.logs import configure, get_logger

NAMESPACE = "demo"
FAIL = "fail.stage.kwok.kube-dlq.io"
RUN_FOR = "run-for.stage.kwok.kube-dlq.io/duration"
FLAKY_NODE = "kwok-node-flaky"
PROM_INTERVAL_S = 5.0  # scrape and rule evaluation: short, so alerts change within the demo


def _failing(exit_code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "labels": {FAIL: "true"},
        "annotations": {
            f"{FAIL}/exit-code": str(exit_code),
            f"{FAIL}/reason": reason,
            f"{FAIL}/message": message,
            f"{FAIL}/delay": "2s",
        },
    }


def _job(
    name: str, pod_meta: dict[str, Any], *, annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {"name": "main", "image": f"registry.example/batch/{name}:1.4", "command": ["/app/run"]}
        ],
    }
    pod_spec.update(spec.pop("pod_spec", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations or {}},
        "spec": {"backoffLimit": 0, "template": {"metadata": pod_meta, "spec": pod_spec}, **spec},
    }


# Only nightly-report tolerates the flaky node's taint, and it prefers that node: its first
# run lands there, and its retry (which kube-dlq steers away from the lost node) elsewhere.
FLAKY_TAINT = {"key": "demo.kube-dlq.io/flaky", "value": "true", "effect": "NoSchedule"}
ON_FLAKY_NODE: dict[str, Any] = {
    "tolerations": [{"key": FLAKY_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "preference": {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/hostname",
                                "operator": "In",
                                "values": [FLAKY_NODE],
                            }
                        ]
                    },
                }
            ]
        }
    },
}

WORKLOAD = [
    (
        "report-etl",
        "app_error, dead-lettered: the code rejected its input",
        _job("report-etl", _failing(2, "Error", "ValueError: invalid input in row 17")),
    ),
    (
        "thumbnailer",
        "oom_killed, dead-lettered: needs more memory, not a retry",
        _job("thumbnailer", _failing(137, "OOMKilled", "memory limit 512Mi exceeded")),
    ),
    (
        "ingest-orders",
        "io_timeout, retried twice (its annotation), then dead-lettered",
        _job(
            "ingest-orders",
            _failing(1, "Error", "dial tcp 10.96.0.12:5432: i/o timeout"),
            annotations={"kube-dlq.io/max-retries": "2", "kube-dlq.io/backoff": "2s,x2"},
        ),
    ),
    (
        "nightly-report",
        "node_lost, retried away from the broken node, then succeeds",
        _job(
            "nightly-report",
            {"annotations": {RUN_FOR: "20s"}},
            annotations={"kube-dlq.io/backoff": "2s"},
            pod_spec=ON_FLAKY_NODE,
        ),
    ),
    (
        "fetch-prices",
        "image_pull, stuck Pending past its dwell time, dead-lettered",
        _job("fetch-prices", {"labels": {"image-pull-failed.stage.kwok.kube-dlq.io": "true"}}),
    ),
    (
        "monthly-export",
        "deadline_exceeded, dead-lettered: activeDeadlineSeconds hit",
        _job("monthly-export", {"annotations": {RUN_FOR: "1h"}}, activeDeadlineSeconds=4),
    ),
    (
        "cleanup-tmp",
        "malformed annotation reported (Event + metric), defaults applied",
        _job(
            "cleanup-tmp",
            _failing(3, "Error", "permission denied: /data/tmp"),
            annotations={"kube-dlq.io/max-retries": "lots"},
        ),
    ),
]


def demo_keys(state_dir: Path) -> str:
    """A signing key directory like the mounted Secret of deploy/ (one key, k1), made once."""
    directory = state_dir / "signing"
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "k1"
    if not key.exists():
        key.write_text(secrets.token_hex(32))
        key.chmod(0o600)
    return str(directory)


def demo_config(redis_url: str, kubeconfig: str, signing_keys_dir: str) -> Settings:
    return parse_config(
        {
            "cluster_name": "demo",
            "redis": {"url": redis_url},
            "kubernetes": {"kubeconfig": kubeconfig},
            "scope": {"namespaces": [NAMESPACE]},
            "classify": {"stuck_pending_after_s": "15s"},
            "retry": {"classes": {c: {"base_s": 2} for c in ("node_lost", "io_timeout")}},
            "server": {"bind_address": "127.0.0.1", "port": free_port()},
            "log": {"level": "info"},
            # As deploy/ ships it, so KubeDLQNoLeader means what it says (the Role is there).
            "leader_election": {"enabled": True, "lease_namespace": "kube-dlq"},
            "security": {"signing_keys_dir": signing_keys_dir, "signing_key_id": "k1"},
        }
    )


async def _submit(kubectl_state: LocalCluster) -> None:
    import yaml

    kubectl_state.kubectl("create", "namespace", NAMESPACE)
    flaky = node_manifest(FLAKY_NODE, taints=(FLAKY_TAINT,))
    kubectl_state.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(flaky))
    kubectl_state.kubectl("wait", "--for=condition=Ready", f"node/{FLAKY_NODE}", "--timeout=30s")
    for _ in range(100):  # and schedulable: the not-ready taint goes a moment after Ready
        taints = kubectl_state.kubectl(
            "get", "node", FLAKY_NODE, "-o", "jsonpath={.spec.taints[*].key}"
        )
        if "node.kubernetes.io/not-ready" not in taints:
            break
        await asyncio.sleep(0.2)
    for _, _, manifest in WORKLOAD:
        kubectl_state.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))


async def _break_flaky_node(cluster: LocalCluster) -> None:
    # Once nightly-report runs there, the node's kubelet reports NotReady.
    for _ in range(60):
        out = cluster.kubectl(
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            "job-name=nightly-report",
            "-o",
            "jsonpath={.items[*].status.phase}",
        )
        if "Running" in out:
            break
        await asyncio.sleep(0.5)
    cluster.kubectl("label", "node", FLAKY_NODE, "node-not-ready.stage.kwok.x-k8s.io=true")


async def _jobs_document(cluster: LocalCluster) -> object:
    # kubectl in a thread: the daemon shares this event loop and must keep handling events.
    raw = await asyncio.to_thread(cluster.kubectl, "get", "jobs", "-n", NAMESPACE, "-o", "json")
    try:
        return json.loads(raw)
    except ValueError:
        return {}


async def _watch_outcomes(
    daemon: Daemon,
    queries: DeadLetterQueries,
    cluster: LocalCluster,
    view: LiveView,
    footer: list[str],
    deadline_s: float,
) -> None:
    """Refresh the view every second until every demo Job has its outcome, or the deadline."""
    stories = [(name, story) for name, story, _ in WORKLOAD]
    start = time.monotonic()
    while True:
        attempts = attempts_from_jobs(await _jobs_document(cluster))
        letters = [letter for _, letter in await queries.list_dead_letters(None, count=100)]
        pending = await daemon.store.pending_retries()
        rows = job_rows(stories, attempts, letters)
        depths = await daemon.store.queue_depths()
        view.update(rows, [queue_line(depths, pending), *footer])
        if all(row.done for row in rows) and pending == 0:
            return
        if time.monotonic() - start > deadline_s:
            break
        await asyncio.sleep(1)
    print(f"demo: not every outcome arrived within {deadline_s:.0f}s", file=sys.stderr)


def _start_prometheus(metrics_port: int) -> PrometheusServer | None:
    if shutil.which(os.environ.get("PROMETHEUS_BIN", "prometheus")) is None:
        print(
            "prometheus: not on PATH, so no alerts are shown (apt-get install prometheus, "
            "or scripts/install-deps.sh, installs Debian's; PROMETHEUS_BIN names another)"
        )
        return None
    prom = PrometheusServer(
        [f"127.0.0.1:{metrics_port}"], rule_files=[RULES_FILE], scrape_interval_s=PROM_INTERVAL_S
    )
    prom.start()
    print(
        f"prometheus: {prom.url} scrapes it every {PROM_INTERVAL_S:g}s and evaluates "
        f"{RULES_FILE.name} (alerts: {prom.url}/alerts)"
    )
    return prom


def _api_document(prom: PrometheusServer, path: str) -> object:
    """The whole answer of GET /api/v1/<path>, or an error document: never an exception."""
    try:
        with urllib.request.urlopen(f"{prom.url}/api/v1/{path}", timeout=5) as resp:
            return json.load(resp)
    except (OSError, ValueError) as exc:
        return {"status": "error", "error": str(exc)}


def _print_failures(daemon: Daemon) -> None:
    for family in daemon.metrics.failures.collect():
        for sample in sorted(family.samples, key=lambda x: sorted(x.labels.items())):
            if sample.name.endswith("_total") and sample.value:
                labels = sample.labels
                print(f"  {labels['failure_class']:<18} {labels['action']:<12} {sample.value:.0f}")


def _configure_logs(live: bool, state_dir: Path) -> Path | None:
    """On a terminal the daemon logs to a file, so its lines do not tear the live table."""
    if not live:
        configure(LogSettings(level="info", format="auto"))
        return None
    log_path = state_dir / "demo-daemon.log"
    log_file = log_path.open("a")  # open for the whole run: the loggers write to it
    with contextlib.redirect_stderr(log_file):  # configure() binds the current sys.stderr
        configure(LogSettings(level="info", format="json"))
    return log_path


async def _run(state_dir: Path, keep: bool) -> int:
    view = LiveView(sys.stdout)
    log_path = _configure_logs(view.live, state_dir)
    binaries = ensure_binaries()
    cluster = LocalCluster(state_dir, binaries, rbac_manifest=default_rbac())
    # A persistent Redis (appendonly), as kube-dlq asks of one: else KubeDLQRedisNotDurable.
    with (
        cluster as state,
        RedisServer(persistent=True) as redis_server,
        contextlib.ExitStack() as stack,
    ):
        daemon_kubeconfig = state_dir / "demo-daemon.kubeconfig"
        import yaml

        daemon_kubeconfig.write_text(
            yaml.safe_dump(
                kubeconfig_dict(
                    state.api_url, Path(state.ca_file), state.daemon_token, user="daemon"
                )
            )
        )
        config = demo_config(redis_server.url, str(daemon_kubeconfig), demo_keys(state_dir))
        metrics_url = f"http://{config.server.bind_address}:{config.server.port}/metrics"
        print(f"\nkube-dlq /metrics: {metrics_url}")
        if log_path is not None:
            print(f"kube-dlq log: {log_path} (kept only with --state-dir)")
        prom = _start_prometheus(config.server.port)
        if prom is not None:
            stack.callback(prom.close)
        footer = [f"metrics: {metrics_url}"] + ([f"prometheus: {prom.url}"] if prom else [])
        kube = await connect(config.kubernetes)
        redis = redis_client(config.redis)
        try:
            seal = build_seal(config.security)
            store = RedisStore(redis, config.redis, cluster_name=config.cluster_name, seal=seal)
            daemon = Daemon(config, kube=kube, store=store, logger=get_logger())
            queries = DeadLetterQueries(
                redis, config.redis, cluster_name=config.cluster_name, seal=seal
            )
            runner = asyncio.create_task(daemon.run())
            try:
                print("\n== workload ==")
                for name, story, _ in WORKLOAD:
                    print(f"  {name:<16} {story}")
                await _submit(cluster)
                print()
                # The view starts with the workload: the first outcomes come within seconds.
                breaker = asyncio.create_task(_break_flaky_node(cluster))
                with view:
                    await _watch_outcomes(daemon, queries, cluster, view, footer, deadline_s=150)
                await breaker
                print("\n== kube-dlq dlq list ==")
                await dlq_list.list_entries(
                    queries,
                    DeadLetterFilter(),
                    limit=50,
                    after=None,
                    output="table",
                    out=sys.stdout,
                    err=sys.stderr,
                )
                print("\n== kube_dlq_failures_total (from /metrics) ==")
                _print_failures(daemon)
                jobs = cluster.kubectl("get", "jobs", "-n", NAMESPACE, "-o", "wide")
                print("\n== kubectl get jobs -n demo ==\n" + jobs)
                if prom is not None:
                    # Two intervals: one scrape of the last counters, one evaluation of them.
                    await asyncio.sleep(2 * PROM_INTERVAL_S)
                    rules = alerting_rules(_api_document(prom, "rules"))
                    print(f"== alerts pending or firing, of {rules} rules ({prom.url}/alerts) ==")
                    for line in alert_lines(_api_document(prom, "alerts")):
                        print(f"  {line}")
                if keep:
                    print(
                        f'cluster kept: eval "$(kube-dlq dev env --state-dir {state_dir})"; '
                        f"redis at {redis_server.url}; /metrics at {metrics_url}"
                        + (f"; prometheus at {prom.url}" if prom else "")
                        + "; Ctrl-C to stop"
                    )
                    with contextlib.suppress(asyncio.CancelledError):
                        await daemon.stop.wait()
            finally:
                daemon.stop.set()
                code = await runner
        finally:
            await redis.aclose()
            await kube.close()
    return code


def main(state_dir: Path | None, keep: bool) -> int:
    if state_dir is None:
        with tempfile.TemporaryDirectory(prefix="kube-dlq-demo-") as tmp:
            return asyncio.run(_run(Path(tmp), keep))
    return asyncio.run(_run(state_dir, keep))
