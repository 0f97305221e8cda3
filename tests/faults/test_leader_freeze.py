"""Fault: two replicas with leader election, the leader frozen (SIGSTOP) past its Lease, resumed.

Two `kube-dlq run` processes share one Lease (short: 3 s) and one Redis and handle a ledgered
load in the session control plane. The injector SIGSTOPs whichever replica leads, waits for the
other to take over, keeps the frozen one stopped for twice the lease, then SIGCONTs it. The
resumed replica still believes it leads until its next look at the clock; anything it writes in
that moment must be refused by Redis's fence (docs/scale-out.md, "Fencing"). So besides the
ledger's pass mark (0 lost, 0 duplicated, every retry Job created exactly once), each freeze is
checked from both ends: Redis's MONITOR records every write script that reaches it carrying
the frozen leader's term after SIGCONT, and the resumed replica must have logged a refusal
(`write_fenced`) for each one of them, counted in `kube_dlq_fenced_writes_total`, and
`leader_lost`. (Its log may still show a write accepted after SIGCONT: one Redis ran before
the freeze, whose reply it read on waking; at most one per duty.)

CI: one freeze over 40 Jobs. Soak (`make soak`): 20 freezes over 600 Jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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

from devtools.devcluster.redis_server import RedisServer
from devtools.devcluster.state import ClusterState
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
from watcher.adapters.redis import scripts

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.redis,
    pytest.mark.timeout(180),
    pytest.mark.soak_timeout(1800),
]

CI = Profile(jobs=40, rate_per_s=2, faults=1, settle_s=90)
SOAK = Profile(jobs=600, rate_per_s=2, faults=20, settle_s=240)

LEASE_NAMESPACE = "kube-dlq"
"""Where deploy/manifests/rbac.yaml lets the daemon's identity manage Leases."""
LEASE_DURATION_S = 3.0
RENEW_DEADLINE_S = 2.0
RETRY_PERIOD_S = 0.5
FROZEN_S = 2 * LEASE_DURATION_S
"""How long the leader stays stopped: well past its Lease, so the standby has taken over."""
BETWEEN_S = (3.0, 8.0)
"""Running time before each freeze (and between them): the replicas are handling load."""

IN_FLIGHT_MAX = 3
"""Writes a frozen replica can have had in flight: one per writer, retry loop, marker sweep."""
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
    term: int
    """The frozen leader's term: what its writes carry."""
    resumed_at_byte: int
    stale_seen: int = 0
    """Write scripts carrying `term` that reached Redis after SIGCONT (MONITOR)."""
    until_byte: int | None = None
    """Where its log stood when that replica was frozen again (None: not again)."""


def _merged_shas() -> frozenset[str]:
    """SHA1s of the `scripts.many` forms of the fenced write scripts: one command, n calls."""
    fenced = (getattr(scripts, name) for name in scripts.__all__)
    return frozenset(
        hashlib.sha1(scripts.many(source).encode()).hexdigest()
        for source in fenced
        if isinstance(source, str) and source.startswith(scripts.FENCE_PRELUDE + "\n")
    )


class StaleWrites:
    """Counts the writes carrying one term that Redis receives while it runs: one per script
    command, or n for a merged command of n calls (its ARGV[1]; `scripts.many`)."""

    def __init__(self, url: str, term: int) -> None:
        self._redis = Redis.from_url(url)
        self._term = str(term)
        self.seen = 0
        self._merged = _merged_shas()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def __aenter__(self) -> StaleWrites:
        self._task = asyncio.create_task(self._watch())
        await asyncio.wait_for(self._listening.wait(), 10)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._redis.aclose()

    async def _watch(self) -> None:
        async with self._redis.monitor() as monitor:
            self._listening.set()
            async for command in monitor.listen():
                words = command["command"].split(" ")
                if command["client_type"] == "lua" or words[0].upper() not in ("EVALSHA", "EVAL"):
                    continue
                if words[-1] == self._term:  # the fence prelude's term: the last ARGV
                    self.seen += self._calls(words)

    def _calls(self, words: list[str]) -> int:
        """Writes in one EVALSHA: ``EVALSHA sha numkeys KEYS... ARGV...``, keys without spaces."""
        if words[0].upper() != "EVALSHA" or words[1].strip('"') not in self._merged:
            return 1
        return int(words[3 + int(words[2].strip('"'))].strip('"'))


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


def last_term(replica: DaemonProcess) -> int:
    acquired = [line for line in events_from(replica, 0) if line.get("event") == "leader_acquired"]
    return int(str(acquired[-1]["fence_term"]))


def freeze_schedule(replicas: Replicas, *, freezes: int, seed: int, redis_url: str) -> Injector:
    rng = random.Random(seed)

    async def inject(log: FaultLog, _load_done: asyncio.Event) -> None:
        for n in range(1, freezes + 1):
            await asyncio.sleep(rng.uniform(*BETWEEN_S))
            leader = await replicas.leader(within=LEASE_DURATION_S * 3)
            standby = replicas.other(leader)
            for earlier in replicas.freezes:  # its next window ends here
                if earlier.replica is leader and earlier.until_byte is None:
                    earlier.until_byte = leader.log.stat().st_size
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
            freeze = Freeze(leader, last_term(leader), offset)
            async with StaleWrites(redis_url, freeze.term) as stale:
                leader.send(signal.SIGCONT)
                log.note(
                    f"freeze#{n} SIGCONT pid {leader.pid} after {time.monotonic() - stopped:.1f}s"
                )
                await eventually(
                    lambda r=leader: stands_by(r),
                    within=10,
                    what="the resumed one to stand by",
                )
                await asyncio.sleep(1.0)  # its refused writes are logged by now
            freeze.stale_seen = stale.seen
            replicas.freezes.append(freeze)
        log.note("both replicas left running")

    return inject


def events_from(
    replica: DaemonProcess, offset: int, until: int | None = None
) -> list[dict[str, object]]:
    with replica.log.open("rb") as f:
        f.seek(offset)
        tail = f.read(-1 if until is None else until - offset).decode(errors="replace")
    found = []
    for line in tail.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            found.append(parsed)
    return found


def after_resume(freeze: Freeze) -> tuple[list[str], dict[str, object] | None, list[int]]:
    """(accepted writes logged before the step-down, the step-down line, refused terms)."""
    accepted: list[str] = []
    step_down = None
    refused: list[int] = []
    for line in events_from(freeze.replica, freeze.resumed_at_byte, freeze.until_byte):
        event = str(line.get("event"))
        if event == "write_fenced":
            # One line per step-down; `refused` counts the writes of its round trip (pipelined)
            refused.extend([int(str(line["term"]))] * int(str(line.get("refused", 1))))
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
        inject = freeze_schedule(
            replicas, freezes=profile.faults, seed=seed, redis_url=redis_server.url
        )
        report = await scenario.run(inject)
    effects: Counter[str] = Counter()
    for replica in replicas.both:
        effects.update(daemon_effects(replica.log))
    report.effects = dict(effects)

    # Then the ledger holds: nothing lost, nothing twice, every retry Job created once
    table = publish(report)
    assert len(report.results) == profile.jobs, table
    assert len(replicas.freezes) == profile.faults, table
    assert report.ok, f"{table}\n{evidence(first.log, report)}\n{evidence(second.log, report)}"

    # And every write of a stale term that reached Redis after a resume was refused (the
    # resumed replica logged a refusal for each), counted, and the replica stepped down
    total_refused = 0
    for n, freeze in enumerate(replicas.freezes, 1):
        accepted, step_down, refused = after_resume(freeze)
        where = f"freeze#{n} (pid {freeze.replica.pid}, term {freeze.term}, {freeze.replica.log})"
        assert step_down is not None, f"{where}: no leader_lost after SIGCONT\n{table}"
        assert step_down.get("reason") in ("renew_deadline_exceeded", "lease_taken", "fenced")
        assert refused == [freeze.term] * freeze.stale_seen, (
            f"{where}: {freeze.stale_seen} stale writes reached Redis, refusals logged: {refused}"
        )
        assert len(accepted) <= IN_FLIGHT_MAX, f"{where}: accepted after resume: {accepted}"
        total_refused += len(refused)
        print(
            f"  {where}: stepped down ({step_down.get('reason')}); stale writes reaching Redis"
            f" {freeze.stale_seen}, all refused; replies read on waking {accepted or 'none'}"
        )
    counted = sum([await r.metric("kube_dlq_fenced_writes_total") for r in replicas.both])
    assert counted == total_refused, (counted, total_refused)
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
