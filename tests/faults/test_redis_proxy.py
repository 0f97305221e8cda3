"""Fault: a bad network between the daemon and Redis (Toxiproxy), under load.

The daemon's redis.url points at a Toxiproxy proxy in front of the session redis-server;
the checker reads Redis directly. A seeded schedule injects, through Toxiproxy's HTTP API,
one network fault at a time while failures are written and retries claimed:

    latency   replies delayed 0.3-1.5 s (jitter 0.2 s), for 2-5 s
    timeout   replies dropped for 3-7 s, connections held open: the daemon's commands time
              out (redis.socket_timeout_s 5 s) after Redis has run them, so a write that
              succeeded looks failed and is sent again
    reset     connections reset by peer (0-0.3 s after data), for 1-3 s
    down      the proxy off (connection refused, open connections cut), for 1-3 s

Every outcome must be written exactly once nonetheless: the second send of a write that
Redis already ran must find its marker.

CI: 4 faults (one of each kind) over 30 Jobs. Soak (`make soak`): 40 faults over 300 Jobs.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable, Iterator

import pytest
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
    pytest.mark.soak_timeout(1500),
]

CI = Profile(jobs=30, rate_per_s=2, faults=4, settle_s=90)
SOAK = Profile(jobs=300, rate_per_s=1.5, faults=40, settle_s=180)

PROXY = "redis"
KINDS = ("latency", "timeout", "reset", "down")
BETWEEN_S = (1.0, 3.0)


@pytest.fixture
def toxiproxy() -> Iterator[Toxiproxy]:
    """A Toxiproxy server of the test's own (built once into the cache if missing)."""
    with Toxiproxy(ensure_toxiproxy(), seed=7) as server:
        yield server


async def one_fault(proxy: Toxiproxy, kind: str, rng: random.Random, log: FaultLog) -> None:
    if kind == "latency":
        ms, hold = rng.randint(300, 1500), rng.uniform(2, 5)
        await asyncio.to_thread(proxy.add_toxic, PROXY, "f", "latency", latency=ms, jitter=200)
        log.note(f"latency {ms} ms for {hold:.1f}s")
    elif kind == "timeout":
        hold = rng.uniform(3, 7)
        await asyncio.to_thread(proxy.add_toxic, PROXY, "f", "timeout", timeout=0)
        log.note(f"replies dropped for {hold:.1f}s")
    elif kind == "reset":
        ms, hold = rng.randint(0, 300), rng.uniform(1, 3)
        await asyncio.to_thread(proxy.add_toxic, PROXY, "f", "reset_peer", timeout=ms)
        log.note(f"reset_peer after {ms} ms for {hold:.1f}s")
    else:
        hold = rng.uniform(1, 3)
        await asyncio.to_thread(proxy.enable, PROXY, False)
        log.note(f"proxy down for {hold:.1f}s")
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


async def test_redis_behind_a_faulty_network_under_load(
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
) -> None:
    profile = sized(ci=CI, soak=SOAK)
    seed = seed_for(20261205)
    port = toxiproxy.proxy(PROXY, f"127.0.0.1:{redis_server.port}")
    proxied = f"redis://127.0.0.1:{port}/0"
    target = Target(cluster, admin_api, namespace, dlq_redis, proxied, cluster_name)
    report, daemon = await ledgered_run(
        target,
        fault_daemon,
        title=f"toxiproxy daemon<->redis x{profile.faults} (seed {seed})",
        profile=profile,
        seed=seed,
        injector=network_faults(toxiproxy, count=profile.faults, seed=seed),
    )

    table = publish(report)
    assert len(report.results) == profile.jobs, table
    assert sum(1 for line in report.faults if "fault#" in line) == profile.faults, table
    assert report.ok, f"{table}\n{evidence(daemon.log, report)}"
    # and the network faults were felt: some Redis calls failed
    felt = sum(
        report.effects.get(k, 0)
        for k in ("outcome_write_failed", "retry_cycle_failed", "retry_deferred")
    )
    assert felt > 0, table
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(30) == 0, daemon.log_tail()
