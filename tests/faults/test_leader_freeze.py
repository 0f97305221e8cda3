"""Fault: two replicas with leader election, the leader frozen (SIGSTOP) past its Lease, resumed.

Two `kube-dlq run` processes share one Lease (short: 3 s) and one Redis and handle a ledgered
load in the session control plane. The injector SIGSTOPs whichever replica leads, waits for the
other to take over, keeps the frozen one stopped for twice the lease, then SIGCONTs it. The
resumed replica still believes it leads until its next look at the clock; anything it writes in
that moment must be refused by Redis's fence (docs/scale-out.md, "Fencing"). So besides the
ledger's pass mark (0 lost, 0 duplicated, every retry Job created exactly once), each freeze is
checked in the resumed replica's own log: after SIGCONT it accepts no write before it logs
`leader_lost` (renew deadline passed, Lease taken, or fenced), and every write Redis refused is
counted in its `kube_dlq_fenced_writes_total`.

CI: one freeze over 40 Jobs. Soak (`make soak`): 6 freezes over 360 Jobs.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from kubernetes_asyncio import client
from redis.asyncio import Redis

from devtools.devcluster.cluster import ClusterState
from devtools.devcluster.redis_server import RedisServer
from tests.faults.checker import Sources
from tests.faults.conftest import MakeDaemon, Publish
from tests.faults.harness import (
    FaultLog,
    Injector,
    Profile,
    Scenario,
    daemon_effects,
    evidence,
    queries_for,
    seed_for,
)
from tests.faults.ledger import LoadGenerator
from tests.faults.recorder import JobRecorder
from tests.support.daemon import DaemonProcess, try_get
from tests.support.kube import eventually, raw

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.redis,
    pytest.mark.timeout(180),
    pytest.mark.soak_timeout(1800),
]

CI = Profile(jobs=40, rate_per_s=2, faults=1, settle_s=90)
SOAK = Profile(jobs=360, rate_per_s=2, faults=6, settle_s=240)

LEASE_NAMESPACE = "kube-dlq"
"""Where deploy/rbac.yaml lets the daemon's identity manage Leases."""
LEASE_DURATION_S = 3.0
RENEW_DEADLINE_S = 2.0
RETRY_PERIOD_S = 0.5
FROZEN_S = 2 * LEASE_DURATION_S
"""How long the leader stays stopped: well past its Lease, so the standby has taken over."""
BETWEEN_S = (3.0, 8.0)
"""Running time before each freeze (and between them): the replicas are handling load."""

ACCEPTED_WRITES = frozenset(
    {
        "dead_lettered",
        "retry_scheduled",
        "failure_already_handled",
        "retry_abandoned",
        "retry_already_settled",
        "outcome_markers_forgotten",
    }
)
"""Log events that follow a write script Redis ran (not refused)."""
STEP_DOWN = "leader_lost"


@dataclass
class Freeze:
    """One SIGSTOP/SIGCONT of the leader; where its log stood when it was resumed."""

    replica: DaemonProcess
    resumed_at_byte: int
    taken_over_s: float


@dataclass
class Replicas:
    both: tuple[DaemonProcess, DaemonProcess]
    freezes: list[Freeze] = field(default_factory=list)

    async def leader(self, *, within: float) -> DaemonProcess:
        async def find() -> DaemonProcess | None:
            for replica in self.both:
                if await leads(replica):
                    return replica
            return None

        return await eventually(find, within=within, what="a replica to lead", every=0.1)

    def other(self, replica: DaemonProcess) -> DaemonProcess:
        return self.both[1] if replica is self.both[0] else self.both[0]


async def leads(replica: DaemonProcess) -> bool:
    got = await try_get(replica.port, "/metrics")
    return got is not None and "\nkube_dlq_leader 1.0" in got[1]


async def stands_by(replica: DaemonProcess) -> bool:
    got = await try_get(replica.port, "/metrics")
    return got is not None and "\nkube_dlq_leader 0.0" in got[1]


def freeze_schedule(replicas: Replicas, *, freezes: int, seed: int) -> Injector:
    rng = random.Random(seed)

    async def inject(log: FaultLog, _load_done: asyncio.Event) -> None:
        for n in range(1, freezes + 1):
            await asyncio.sleep(rng.uniform(*BETWEEN_S))
            leader = await replicas.leader(within=LEASE_DURATION_S * 3)
            standby = replicas.other(leader)
            leader.send(signal.SIGSTOP)
            stopped = time.monotonic()
            log.note(f"freeze#{n} SIGSTOP leader pid {leader.pid}")

            await eventually(
                lambda r=standby: leads(r),
                within=LEASE_DURATION_S * 4,
                what="the standby to take over",
            )
            taken = time.monotonic() - stopped
            log.note(f"freeze#{n} standby pid {standby.pid} leads after {taken:.1f}s")
            await asyncio.sleep(max(0.0, FROZEN_S - (time.monotonic() - stopped)))
            offset = leader.log.stat().st_size  # a stopped process writes nothing
            leader.send(signal.SIGCONT)
            log.note(f"freeze#{n} SIGCONT pid {leader.pid} after {time.monotonic() - stopped:.1f}s")
            replicas.freezes.append(Freeze(leader, offset, taken))

            await eventually(
                lambda r=leader: stands_by(r),
                within=10,
                what="the resumed one to stand by",
            )
        log.note("both replicas left running")

    return inject


def events_from(replica: DaemonProcess, offset: int) -> list[dict[str, object]]:
    with replica.log.open("rb") as f:
        f.seek(offset)
        tail = f.read().decode(errors="replace")
    found = []
    for line in tail.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            found.append(parsed)
    return found


def after_resume(freeze: Freeze) -> tuple[list[str], dict[str, object] | None, int]:
    """(accepted writes before the step-down, the step-down line, writes refused)."""
    accepted: list[str] = []
    step_down = None
    refused = 0
    for line in events_from(freeze.replica, freeze.resumed_at_byte):
        event = str(line.get("event"))
        if event == "write_fenced":
            refused += 1
        if step_down is None:
            if event == STEP_DOWN:
                step_down = line
            elif event in ACCEPTED_WRITES:
                accepted.append(event)
    return accepted, step_down, refused


@pytest.fixture
async def lease_name(admin_api: client.ApiClient) -> AsyncIterator[str]:
    name = f"fault-freeze-{uuid.uuid4().hex[:8]}"
    yield name
    coordination = client.CoordinationV1Api(admin_api)
    await raw(coordination.delete_namespaced_lease(name, LEASE_NAMESPACE, _preload_content=False))


async def test_leader_frozen_past_its_lease_then_resumed_writes_nothing_stale(
    sized: Callable[..., Profile],
    publish: Publish,
    fault_daemon: MakeDaemon,
    cluster: ClusterState,
    redis_server: RedisServer,
    admin_api: client.ApiClient,
    namespace: str,
    dlq_redis: Redis,
    cluster_name: str,
    lease_name: str,
) -> None:
    profile = sized(ci=CI, soak=SOAK)
    seed = seed_for(20261202)
    election = {
        "enabled": True,
        "lease_name": lease_name,
        "lease_namespace": LEASE_NAMESPACE,
        "lease_duration_s": LEASE_DURATION_S,
        "renew_deadline_s": RENEW_DEADLINE_S,
        "retry_period_s": RETRY_PERIOD_S,
    }
    common = {
        "namespace": namespace,
        "redis_url": redis_server.url,
        "cluster_name": cluster_name,
        "leader_election": election,
    }
    first, second = fault_daemon(cluster, **common), fault_daemon(cluster, **common)
    replicas = Replicas((first, second))
    queries, keys = queries_for(first.config, dlq_redis)
    load = LoadGenerator(
        admin_api,
        namespace,
        count=profile.jobs,
        rate_per_s=profile.rate_per_s,
        seed=seed,
        max_duration_s=profile.load_s + 60,
    )
    title = f"leader SIGSTOP past its lease x{profile.faults}, 2 replicas (seed {seed})"

    # Given two replicas, the first leading and the second standing by (both ready)
    async with JobRecorder(admin_api, namespace) as recorder:
        first.start()
        await first.wait_ready()
        assert await replicas.leader(within=10) is first
        second.start()
        await second.wait_ready()
        sources = Sources(dlq_redis, queries, keys, admin_api, namespace, recorder)
        scenario = Scenario(title, load, sources, first, profile)

        # When the leader is frozen past its Lease and resumed, under load
        report = await scenario.run(freeze_schedule(replicas, freezes=profile.faults, seed=seed))
    effects: Counter[str] = Counter()
    for replica in replicas.both:
        effects.update(daemon_effects(replica.log))
    report.effects = dict(effects)

    # Then the ledger holds: nothing lost, nothing twice, every retry Job created once
    table = publish(report)
    assert len(report.results) == profile.jobs, table
    assert len(replicas.freezes) == profile.faults, table
    assert report.ok, f"{table}\n{evidence(first.log, report)}\n{evidence(second.log, report)}"

    # And every resumed leader stepped down before any write of its stale term was accepted;
    # what it did try was refused at the fence and counted
    for n, freeze in enumerate(replicas.freezes, 1):
        accepted, step_down, refused = after_resume(freeze)
        where = f"freeze#{n} (pid {freeze.replica.pid}, {freeze.replica.log})"
        assert step_down is not None, f"{where}: no leader_lost after SIGCONT\n{table}"
        assert accepted == [], f"{where}: writes accepted before stepping down: {accepted}"
        assert step_down.get("reason") in ("renew_deadline_exceeded", "lease_taken", "fenced")
        counted = await freeze.replica.metric("kube_dlq_fenced_writes_total")
        assert counted >= refused, f"{where}: {refused} refusals logged, {counted} counted"
        print(f"  {where}: stepped down ({step_down.get('reason')}), {refused} write(s) refused")
    # And the terms only grew: each takeover claimed a term above the one before
    terms = [
        int(line["fence_term"])
        for replica in replicas.both
        for line in events_from(replica, 0)
        if line.get("event") == "leader_acquired"
    ]
    assert len(set(terms)) == len(terms) >= profile.faults + 1, terms
    fence = await dlq_redis.get(keys.leader_fence)
    assert fence is not None and int(fence) == max(terms), (fence, terms)
    for replica in replicas.both:  # before the Lease is deleted under them
        replica.send(signal.SIGTERM)
    for replica in replicas.both:
        assert await replica.wait(30) == 0, replica.log_tail()
