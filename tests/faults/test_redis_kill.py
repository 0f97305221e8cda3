"""Fault: redis-server killed with kill -9 under load, and started again on its data.

The daemon's Redis is a server of the test's own with appendonly on (`RedisServer(persistent=
True)`). A seeded schedule SIGKILLs it while failures are being written and retries claimed,
keeps it down for a moment (the daemon's writes and claims fail meanwhile, and queue), then
starts it again on the same port and data dir, where it reloads its append-only file. Every
outcome acknowledged before a kill must still be there after it, none written twice, and the
failures decided while Redis was down must be written once it is back.

CI: 3 kills over 30 Jobs. Soak (`make soak`): 20 kills over 200 Jobs.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator, Callable

import pytest
from kubernetes_asyncio import client
from redis.asyncio import Redis

from devtools.devcluster.redis_server import RedisServer
from devtools.devcluster.state import ClusterState
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
    pytest.mark.timeout(180),
    pytest.mark.soak_timeout(1200),
]

CI = Profile(jobs=30, rate_per_s=3, faults=3, settle_s=90)
SOAK = Profile(jobs=200, rate_per_s=2, faults=20, settle_s=180)

UP_S = (2.0, 5.0)
DOWN_S = (0.5, 3.0)


def redis_kills(
    server: RedisServer, *, kills: int, seed: int
) -> Callable[[DaemonProcess], Injector]:
    def injector(_daemon: DaemonProcess) -> Injector:
        rng = random.Random(seed)

        async def inject(log: FaultLog, _load_done: asyncio.Event) -> None:
            for n in range(1, kills + 1):
                await asyncio.sleep(rng.uniform(*UP_S))
                pid = server.pid
                await asyncio.to_thread(server.crash)
                log.note(f"redis kill -9 #{n} (pid {pid})")
                await asyncio.sleep(rng.uniform(*DOWN_S))
                await asyncio.to_thread(server.start)
                log.note(f"redis back (pid {server.pid}, port {server.port})")

        return inject

    return injector


@pytest.fixture
async def aof_reader(persistent_redis: RedisServer) -> AsyncIterator[Redis]:
    """The checker's client of the persistent server (it reconnects after each restart)."""
    conn = Redis.from_url(persistent_redis.url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield conn
    finally:
        await conn.aclose()


async def test_redis_killed_and_restarted_on_its_aof_under_load(
    sized: Callable[..., Profile],
    publish: Publish,
    fault_daemon: MakeDaemon,
    cluster: ClusterState,
    persistent_redis: RedisServer,
    aof_reader: Redis,
    admin_api: client.ApiClient,
    namespace: str,
    cluster_name: str,
) -> None:
    profile = sized(ci=CI, soak=SOAK)
    seed = seed_for(20261202)
    assert (await aof_reader.config_get("appendonly"))["appendonly"] == "yes"
    port = persistent_redis.port
    target = Target(cluster, admin_api, namespace, aof_reader, persistent_redis.url, cluster_name)
    report, daemon = await ledgered_run(
        target,
        fault_daemon,
        title=f"redis kill -9 + AOF restart x{profile.faults} (seed {seed})",
        profile=profile,
        seed=seed,
        injector=redis_kills(persistent_redis, kills=profile.faults, seed=seed),
    )

    table = publish(report)
    assert len(report.results) == profile.jobs, table
    assert sum(1 for line in report.faults if "kill -9" in line) == profile.faults, table
    assert persistent_redis.port == port  # restarted where the daemon's redis.url points
    assert report.ok, f"{table}\n{evidence(daemon.log, report)}"
    # and the kills were felt: writes or claims failed while Redis was down
    felt = report.effects.get("outcome_write_failed", 0) + report.effects.get(
        "retry_cycle_failed", 0
    )
    assert felt > 0, table
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(30) == 0, daemon.log_tail()
