"""Fault: a forced 410 Gone, by compacting etcd past the daemon's resourceVersion, under load.

On a control plane of this module's own whose apiserver serves Jobs straight from etcd
(``--watch-cache-sizes=jobs.batch#0``: etcd's compaction is then what decides 410), each
fault is made deterministic in three steps:

1. the daemon is frozen (SIGSTOP) and stays frozen past its Jobs watch's server-side timeout
   (``kubernetes.watch_timeout_s`` 3 s: the apiserver ends each watch within 6 s), so the
   apiserver has closed that stream and everything the daemon will still read from it is
   older than
2. the compaction of etcd's history up to its current revision, after which
3. the daemon is thawed: it drains the closed stream, resumes its Jobs watch from a
   resourceVersion that no longer exists, gets 410 Gone and relists every Job; failed Jobs
   it had handled come back as replays, and the ones that failed while it was frozen are new.

Every outcome must still be written exactly once. The test also proves the 410s happened:
the daemon logs one ``watch_restarted`` with reason ``expired`` for Jobs per fault.

CI: 3 compactions over 40 Jobs. Soak (`make soak`): 20 compactions over 300 Jobs.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable, Iterator

import pytest
from kubernetes_asyncio import client
from redis.asyncio import Redis

from devtools.devcluster.build import ensure_binaries
from devtools.devcluster.cluster import LocalCluster
from devtools.devcluster.commands import default_rbac
from devtools.devcluster.redis_server import RedisServer
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
from tests.support.components import compact_etcd
from tests.support.daemon import DaemonProcess

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.redis,
    pytest.mark.timeout(240),
    pytest.mark.soak_timeout(1500),
]

CI = Profile(jobs=40, rate_per_s=2, faults=3, settle_s=90)
SOAK = Profile(jobs=300, rate_per_s=1.5, faults=20, settle_s=180)

WATCH_TIMEOUT_S = 3
"""The daemon's kubernetes.watch_timeout_s: each watch asks for timeoutSeconds in [3, 6)."""
FROZEN_S = 2 * WATCH_TIMEOUT_S + 1.5
"""Frozen this long, the daemon's Jobs watch has certainly been ended by the apiserver."""
UP_S = (2.0, 5.0)


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane of this module's own, Jobs served from etcd (no watch cache)."""
    own = LocalCluster(
        tmp_path_factory.mktemp("faults-etcd"),
        ensure_binaries(),
        rbac_manifest=default_rbac(),
        progress=lambda _: None,
        extra_apiserver_args=("--watch-cache-sizes=jobs.batch#0",),
    )
    with own:
        yield own


def compactions(
    cluster: LocalCluster, *, count: int, seed: int
) -> Callable[[DaemonProcess], Injector]:
    def injector(daemon: DaemonProcess) -> Injector:
        rng = random.Random(seed)

        async def inject(log: FaultLog, _load_done: asyncio.Event) -> None:
            for n in range(1, count + 1):
                await asyncio.sleep(rng.uniform(*UP_S))
                daemon.send(signal.SIGSTOP)
                try:
                    await asyncio.sleep(FROZEN_S)
                    revision = await asyncio.to_thread(compact_etcd, cluster)
                    log.note(f"compaction#{n} at revision {revision} (daemon frozen)")
                finally:
                    daemon.send(signal.SIGCONT)

        return inject

    return injector


async def test_etcd_compacted_past_the_daemons_resource_version_under_load(
    sized: Callable[..., Profile],
    publish: Publish,
    fault_daemon: MakeDaemon,
    own_cluster: LocalCluster,
    own_api: client.ApiClient,
    own_ns: str,
    redis_server: RedisServer,
    dlq_redis: Redis,
    cluster_name: str,
) -> None:
    profile = sized(ci=CI, soak=SOAK)
    seed = seed_for(20261204)
    assert own_cluster.state is not None
    target = Target(own_cluster.state, own_api, own_ns, dlq_redis, redis_server.url, cluster_name)
    report, daemon = await ledgered_run(
        target,
        fault_daemon,
        title=f"etcd compaction -> 410 Gone x{profile.faults} (seed {seed})",
        profile=profile,
        seed=seed,
        injector=compactions(own_cluster, count=profile.faults, seed=seed),
        kubernetes={"watch_timeout_s": WATCH_TIMEOUT_S},
    )

    table = publish(report)
    assert len(report.results) == profile.jobs, table
    assert sum(1 for line in report.faults if "compaction#" in line) == profile.faults, table
    assert report.ok, f"{table}\n{evidence(daemon.log, report)}"
    # and each compaction forced a 410 on the daemon's Jobs watch, answered by a relist
    assert report.effects.get("watch_restarted:jobs:expired", 0) >= profile.faults, table
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(30) == 0, daemon.log_tail()
