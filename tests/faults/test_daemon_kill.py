"""Fault: the daemon SIGKILLed at random moments under load, and started again.

`kube-dlq run` (a subprocess, as a user runs it) handles a ledgered load of failures in the
session control plane while a seeded schedule kills it with SIGKILL (the OOM killer, a node
crash) anywhere in its life: while starting, listing, settling a failure, writing to Redis,
or firing a retry; it is started again after a short random pause. Once the load is over
and the daemon has been left running, every injected Job must end with exactly the outcome
the ledger says, once: no dead letter lost or written twice, no retry Job created twice.

CI: 5 kills over 30 Jobs. Soak (`make soak`): 100 kills over 600 Jobs.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable

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
    pytest.mark.soak_timeout(1800),
]

CI = Profile(jobs=30, rate_per_s=3, faults=5, settle_s=90)
SOAK = Profile(jobs=600, rate_per_s=2, faults=100, settle_s=240)

UP_S = (0.5, 5.0)
"""How long the daemon runs between a start and the next kill: from mid-start-up (before
its first list is done) to well into handling failures."""
DOWN_S = (0.0, 1.5)


def kill_schedule(*, kills: int, seed: int) -> Callable[[DaemonProcess], Injector]:
    def injector(daemon: DaemonProcess) -> Injector:
        rng = random.Random(seed)

        async def inject(log: FaultLog, _load_done: asyncio.Event) -> None:
            for n in range(1, kills + 1):
                await asyncio.sleep(rng.uniform(*UP_S))
                code = await daemon.kill()
                log.note(f"kill#{n} pid {daemon.pid} -> {code}")
                await asyncio.sleep(rng.uniform(*DOWN_S))
                daemon.start()
            log.note(f"daemon left running (pid {daemon.pid})")

        return inject

    return injector


async def test_daemon_sigkilled_at_random_under_load(
    sized: Callable[..., Profile],
    publish: Publish,
    fault_daemon: MakeDaemon,
    cluster: ClusterState,
    redis_server: RedisServer,
    admin_api: client.ApiClient,
    namespace: str,
    dlq_redis: Redis,
    cluster_name: str,
) -> None:
    profile = sized(ci=CI, soak=SOAK)
    seed = seed_for(20261201)
    target = Target(cluster, admin_api, namespace, dlq_redis, redis_server.url, cluster_name)
    report, daemon = await ledgered_run(
        target,
        fault_daemon,
        title=f"daemon SIGKILL x{profile.faults} (seed {seed})",
        profile=profile,
        seed=seed,
        injector=kill_schedule(kills=profile.faults, seed=seed),
    )

    table = publish(report)
    assert len(report.results) == profile.jobs, table
    assert sum(1 for line in report.faults if " kill#" in line) == profile.faults, table
    assert report.ok, f"{table}\n{evidence(daemon.log, report)}"
    # and the kills were felt: each start replayed failures an earlier run had handled
    assert report.effects.get("failure_already_handled", 0) > 0, table
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(30) == 0, daemon.log_tail()
