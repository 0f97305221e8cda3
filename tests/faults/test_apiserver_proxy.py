"""Fault: a bad network between the daemon and kube-apiserver (Toxiproxy), under load.

The daemon's kubeconfig points at a Toxiproxy proxy in front of the session apiserver. TLS
passes through it as plain TCP: the daemon still verifies the apiserver's certificate, whose
SANs cover 127.0.0.1, the proxy's address too. Only the daemon's path is faulted: the Job
controller, kwok, the load generator and the checker talk to the apiserver directly, so
failures keep happening and the ledger sees the truth. A seeded schedule injects one fault at
a time while failures are watched, classified, written and retried:

    latency   replies delayed 0.3-1.5 s (jitter 0.2 s), for 2-5 s
    reset     connections reset by peer (0-0.3 s after data), for 1-3 s
    timeout   replies dropped for 2-5 s, connections held open: a retry's Job create reaches
              the apiserver and runs, but its answer never comes (request_timeout_s)
    cut       both directions dropped for longer than the watch inactivity timeout: the
              watches hear nothing, must notice on their own (no error ever arrives) and
              reconnect; reconnects hang in the TLS handshake until the cut ends

Pass mark as everywhere in the suite: 0 lost, 0 duplicated, every retry Job created once (a
create whose answer was lost must not be sent again as a second Job).

The daemon runs with short timeouts so a CI run stays short: watch inactivity 8 s (the
product's 70 s waits for bookmarks), request 5 s, connect 3 s. CI: 4 faults (one of each kind)
over 30 Jobs. Soak (`make soak`): 40 faults over 300 Jobs.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes_asyncio import client
from redis.asyncio import Redis

from devtools.devcluster.build import ensure_toxiproxy
from devtools.devcluster.redis_server import RedisServer
from devtools.devcluster.state import ClusterState
from devtools.devcluster.toxiproxy import Toxiproxy
from tests.faults.conftest import MakeDaemon, Publish
from tests.faults.harness import (
    FaultLog,
    Injector,
    Profile,
    Target,
    evidence,
    ledgered_run,
    seed_for,
)
from tests.support.daemon import DaemonProcess

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.redis,
    pytest.mark.timeout(240),
    pytest.mark.soak_timeout(1800),
]

CI = Profile(jobs=30, rate_per_s=2, faults=4, settle_s=90)
SOAK = Profile(jobs=300, rate_per_s=1.5, faults=40, settle_s=180)

PROXY = "apiserver"
KINDS = ("latency", "reset", "timeout", "cut")
BETWEEN_S = (1.0, 3.0)

INACTIVITY_S = 8.0
"""The daemon's kubernetes.watch_inactivity_timeout_s in this test; a cut lasts longer."""
KUBE_TIMEOUTS = {
    "watch_inactivity_timeout_s": INACTIVITY_S,
    "request_timeout_s": 5.0,
    "connect_timeout_s": 3.0,
    "list_timeout_s": 10.0,
}


@pytest.fixture
def toxiproxy() -> Iterator[Toxiproxy]:
    """A Toxiproxy server of the test's own (built once into the cache if missing)."""
    with Toxiproxy(ensure_toxiproxy(), seed=11) as server:
        yield server


def apiserver_address(kubeconfig: str) -> str:
    """``host:port`` of the apiserver the (one-cluster) `kubeconfig` names."""
    (entry,) = yaml.safe_load(Path(kubeconfig).read_text())["clusters"]
    upstream = urlsplit(entry["cluster"]["server"])
    assert upstream.hostname == "127.0.0.1", "the serving cert's SANs must cover the proxy"
    return upstream.netloc


def proxied_kubeconfig(source: str, dest: Path, port: int) -> Path:
    """A copy of the kubeconfig `source` whose server is ``https://127.0.0.1:<port>``."""
    doc = yaml.safe_load(Path(source).read_text())
    for entry in doc["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    dest.write_text(yaml.safe_dump(doc))
    return dest


async def one_fault(proxy: Toxiproxy, kind: str, rng: random.Random, log: FaultLog) -> None:
    add = proxy.add_toxic
    if kind == "latency":
        ms, hold = rng.randint(300, 1500), rng.uniform(2, 5)
        await asyncio.to_thread(add, PROXY, "f", "latency", latency=ms, jitter=200)
        log.note(f"latency {ms} ms for {hold:.1f}s")
    elif kind == "reset":
        ms, hold = rng.randint(0, 300), rng.uniform(1, 3)
        await asyncio.to_thread(add, PROXY, "f", "reset_peer", timeout=ms)
        log.note(f"reset_peer after {ms} ms for {hold:.1f}s")
    elif kind == "timeout":
        hold = rng.uniform(2, 5)
        await asyncio.to_thread(add, PROXY, "f", "timeout", timeout=0)
        log.note(f"replies dropped for {hold:.1f}s")
    else:
        hold = INACTIVITY_S + rng.uniform(2, 5)
        await asyncio.to_thread(add, PROXY, "up", "timeout", stream="upstream", timeout=0)
        await asyncio.to_thread(add, PROXY, "down", "timeout", timeout=0)
        log.note(f"cut both ways for {hold:.1f}s (watch inactivity {INACTIVITY_S:.0f}s)")
    await asyncio.sleep(hold)
    await asyncio.to_thread(proxy.reset)


def network_faults(
    proxy: Toxiproxy, *, count: int, seed: int
) -> Callable[[DaemonProcess], Injector]:
    def injector(_daemon: DaemonProcess) -> Injector:
        rng = random.Random(seed)

        async def inject(log: FaultLog, _load_done: asyncio.Event) -> None:
            deck: list[str] = []
            try:
                for n in range(1, count + 1):
                    if not deck:
                        deck = list(KINDS)
                        rng.shuffle(deck)
                    await asyncio.sleep(rng.uniform(*BETWEEN_S))
                    kind = deck.pop()
                    await one_fault(proxy, kind, rng, log)
                    log.note(f"fault#{n} ({kind}) over")
            finally:
                await asyncio.to_thread(proxy.reset)

        return inject

    return injector


def failed_reconnects(log: Path) -> int:
    """Watch restarts that came after a failed one (``failures`` >= 2): reconnect attempts the
    faults broke, as opposed to a quiet watch's routine re-open."""
    count = 0
    for raw in log.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("event") == "watch_restarted":
            failures = line.get("failures")
            count += isinstance(failures, int) and failures >= 2
    return count


async def test_apiserver_behind_a_faulty_network_under_load(
    sized: Callable[..., Profile],
    publish: Publish,
    fault_daemon: MakeDaemon,
    toxiproxy: Toxiproxy,
    cluster: ClusterState,
    redis_server: RedisServer,
    admin_api: client.ApiClient,
    namespace: str,
    dlq_redis: Redis,
    cluster_name: str,
    tmp_path: Path,
) -> None:
    profile = sized(ci=CI, soak=SOAK)
    seed = seed_for(20261207)
    port = toxiproxy.proxy(PROXY, apiserver_address(cluster.daemon_kubeconfig))
    kubeconfig = proxied_kubeconfig(
        cluster.daemon_kubeconfig, tmp_path / "daemon-proxied.kubeconfig", port
    )
    target = Target(cluster, admin_api, namespace, dlq_redis, redis_server.url, cluster_name)
    report, daemon = await ledgered_run(
        target,
        fault_daemon,
        title=f"toxiproxy daemon<->apiserver x{profile.faults} (seed {seed})",
        profile=profile,
        seed=seed,
        injector=network_faults(toxiproxy, count=profile.faults, seed=seed),
        kubernetes={"kubeconfig": str(kubeconfig), **KUBE_TIMEOUTS},
    )

    table = publish(report)
    assert len(report.results) == profile.jobs, table
    assert sum(1 for line in report.faults if "fault#" in line) == profile.faults, table
    assert report.ok, f"{table}\n{evidence(daemon.log, report)}"
    # and the faults were felt: watch reconnects failed while they lasted
    assert failed_reconnects(daemon.log) > 0, f"{table}\n{report.effects}"
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(30) == 0, daemon.log_tail()
