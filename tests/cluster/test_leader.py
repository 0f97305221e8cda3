"""Leader election on a real Lease, as the daemon's own ServiceAccount (so
deploy/manifests/rbac.yaml's leases get/create/update in kube-dlq is proven sufficient).

Short timings keep the file fast: leases last 3 s, a leader steps down after 2 s without a
successful renewal, everyone polls every 0.5 s. Each test has its own Lease in kube-dlq.
Every candidate logs into one shared journal in event-loop order, so "never two leaders" is
checked exactly (no acquisition while another term is open), besides being sampled.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from kubernetes_asyncio import client, config
from redis.asyncio import Redis
from structlog.typing import EventDict, FilteringBoundLogger

from devtools.devcluster.state import ClusterState
from tests.support.daemon import (  # noqa: F401 (fixtures)
    StartDaemon,
    cluster_name,
    dlq_redis,
    start_daemon,
    wait_dead_letters,
)
from tests.support.kube import RawObject, eventually, raw
from tests.support.workloads import create_job, failing_job
from watcher.adapters.kube.leases import LeaseAPI
from watcher.adapters.kube.request import KubeClient
from watcher.adapters.redis.store import RedisStore
from watcher.core.errors import FencedWrite
from watcher.core.model import DeadLetter, FailureClass, JobRef
from watcher.core.settings import KubernetesSettings, LeaderElectionSettings, RedisSettings
from watcher.service.leadership import ACQUIRE_JITTER, LeaderElector

pytestmark = pytest.mark.cluster

LEASE_NAMESPACE = "kube-dlq"
"""Where deploy/manifests/rbac.yaml lets the daemon's identity manage Leases."""
LEASE_DURATION_S = 3.0
RENEW_DEADLINE_S = 2.0
RETRY_PERIOD_S = 0.5
SLACK_S = 0.3
"""Scheduling and request time allowed on top of a computed bound."""
INTRUDER_HOLDS_S = 10.0
"""How long a Lease installed by the test under a running daemon lasts: time for a Job to fail
while the daemon stands by."""


# --- a journal of every candidate's log events, in event-loop order -----------------------------


@dataclass
class Journal:
    entries: list[dict[str, Any]] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=itertools.count)

    def logger(self) -> FilteringBoundLogger:
        def keep(_logger: Any, method: str, event: EventDict) -> EventDict:
            self.entries.append({"seq": next(self._seq), "level": method, **event})
            raise structlog.DropEvent

        logger: FilteringBoundLogger = structlog.wrap_logger(
            None,
            processors=[keep],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )
        return logger

    def of(self, identity: str, event: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.entries
            if e.get("identity") == identity and (event is None or e["event"] == event)
        ]

    def assert_one_leader_at_a_time(self) -> None:
        """No candidate acquired while another's term was open (acquired, not yet ended)."""
        leading: set[str] = set()
        for entry in self.entries:
            if entry["event"] == "leader_acquired":
                assert not leading, f"{entry['identity']} acquired while {leading} led"
                leading.add(entry["identity"])
            elif entry["event"] in ("leader_lost", "leader_released"):
                leading.discard(entry["identity"])


@dataclass
class Candidate:
    elector: LeaderElector
    task: asyncio.Task[None]
    stopping: asyncio.Event

    @property
    def identity(self) -> str:
        return self.elector.identity

    @property
    def leads(self) -> bool:
        return self.elector.is_leader.is_set()

    async def stop(self) -> None:
        """Graceful: the elector releases the Lease if it holds it."""
        self.stopping.set()
        await asyncio.wait_for(asyncio.shield(self.task), RENEW_DEADLINE_S * 2 + 2)

    async def kill(self) -> None:
        """As a crash would: no release."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


Start = Callable[..., Awaitable[Candidate]]


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
async def lease_name(admin_api: client.ApiClient) -> AsyncIterator[str]:
    """A Lease name of this test's own; the Lease is deleted afterwards (as admin: the daemon
    may not delete Leases)."""
    name = f"leader-test-{uuid.uuid4().hex[:8]}"
    yield name
    await raw(
        client.CoordinationV1Api(admin_api).delete_namespaced_lease(
            name, LEASE_NAMESPACE, _preload_content=False
        )
    )


@pytest.fixture
async def candidate(
    daemon_api: client.ApiClient, lease_name: str, journal: Journal
) -> AsyncIterator[Start]:
    """Factory: `await candidate(api=...)` runs a LeaderElector (daemon identity by default)."""
    started: list[Candidate] = []

    async def start(
        api: client.ApiClient | None = None, fence: RedisStore | None = None
    ) -> Candidate:
        kube = KubeClient(api or daemon_api, KubernetesSettings())
        elector = LeaderElector(
            LeaseAPI(kube, namespace=LEASE_NAMESPACE, name=lease_name),
            LeaderElectionSettings(
                enabled=True,
                lease_name=lease_name,
                lease_namespace=LEASE_NAMESPACE,
                lease_duration_s=LEASE_DURATION_S,
                renew_deadline_s=RENEW_DEADLINE_S,
                retry_period_s=RETRY_PERIOD_S,
            ),
            fence=fence,
            logger=journal.logger(),
        )
        stopping = asyncio.Event()
        one = Candidate(elector, asyncio.create_task(elector.run(stopping)), stopping)
        started.append(one)
        return one

    yield start
    for one in started:
        if not one.task.done():
            await one.stop()
    for one in started:
        assert one.task.cancelled() or one.task.exception() is None, one.task
    errors = [e for e in journal.entries if e["event"] == "leader_election_crashed"]
    assert not errors, errors
    journal.assert_one_leader_at_a_time()


async def read_lease(api: client.ApiClient, name: str) -> RawObject:
    coordination = client.CoordinationV1Api(api)
    lease = await raw(
        coordination.read_namespaced_lease(name, LEASE_NAMESPACE, _preload_content=False)
    )
    assert lease.get("kind") == "Lease", lease
    return lease


async def leads(one: Candidate, *, within: float, what: str = "") -> float:
    """Wait until `one` leads; the local clock at which it was seen leading."""

    async def leading() -> bool:
        return one.leads

    await eventually(leading, within=within, what=what or f"{one.identity} to lead", every=0.02)
    return time.monotonic()


async def steps_down(one: Candidate, *, within: float, what: str = "") -> float:
    async def not_leading() -> bool:
        return not one.leads

    await eventually(
        not_leading, within=within, what=what or f"{one.identity} to step down", every=0.02
    )
    return time.monotonic()


async def observed(journal: Journal, standby: Candidate, holder: Candidate) -> None:
    """Wait until `standby` has seen `holder`'s record (so it measures expiry from it)."""

    async def seen() -> bool:
        return any(
            e.get("holder") == holder.identity
            for e in journal.of(standby.identity, "leader_observed")
        )

    await eventually(seen, within=5, what=f"{standby.identity} to observe {holder.identity}")


async def install_intruder(api: client.ApiClient, lease_name: str, duration_s: float) -> None:
    """Delete the Lease and create it anew held by "intruder", who never renews it."""
    coordination = client.CoordinationV1Api(api)

    async def replaced() -> bool:
        await raw(
            coordination.delete_namespaced_lease(
                lease_name, LEASE_NAMESPACE, _preload_content=False
            )
        )
        body: Any = {
            "metadata": {"name": lease_name},
            "spec": {
                "holderIdentity": "intruder",
                "leaseDurationSeconds": int(duration_s),
                "leaseTransitions": 0,
            },
        }
        created = await raw(
            coordination.create_namespaced_lease(LEASE_NAMESPACE, body, _preload_content=False)
        )
        if created.get("code") == 409:  # the leader re-created it in between: again
            return False
        assert created.get("kind") == "Lease", created
        return True

    await eventually(replaced, within=10, what="the Lease to be replaced", every=0.01)


@contextlib.asynccontextmanager
async def sampled(*pool: list[Candidate]) -> AsyncIterator[list[str]]:
    """Sample every 2 ms that at most one candidate (of the live lists) says it leads; yields
    the succession of leaders seen."""
    succession: list[str] = []
    overlaps: list[list[str]] = []

    def look() -> None:
        leading = [c.identity for group in pool for c in group if c.leads]
        if len(leading) > 1:
            overlaps.append(leading)
        if leading and (not succession or succession[-1] != leading[0]):
            succession.append(leading[0])

    async def sample() -> None:
        while True:
            look()
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    try:
        yield succession
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        # One last look: a block that ends the moment a new leader is seen would otherwise
        # race the next 2 ms tick and miss that leader in the succession.
        look()
    assert not overlaps, f"two leaders at once: {overlaps[:5]}"


# --- a TCP relay to the apiserver that can be paused ---------------------------------------------


class Relay:
    """Forwards TCP to the apiserver (TLS passes through untouched). Paused, it stops moving
    bytes either way and leaves connections open: a hung apiserver or a network partition."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.append(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self.flowing.wait()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()


@contextlib.asynccontextmanager
async def client_through(relay: Relay, cluster: ClusterState) -> AsyncIterator[client.ApiClient]:
    """The daemon's identity, reaching the apiserver through `relay`."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=cluster.daemon_kubeconfig, client_configuration=configuration
    )
    configuration.host = relay.url
    api = client.ApiClient(configuration)
    async with api:
        yield api


# --- the tests -----------------------------------------------------------------------------------


async def test_first_candidate_creates_the_lease_and_keeps_renewing_it(
    candidate: Start, admin_api: client.ApiClient, lease_name: str, journal: Journal
) -> None:
    # Given no Lease, when one candidate runs
    first = await candidate()

    # Then it creates the Lease and leads, saying so in its log and its gauge
    await leads(first, within=5)
    lease = await read_lease(admin_api, lease_name)
    spec = lease["spec"]
    assert spec["holderIdentity"] == first.identity
    assert spec["leaseDurationSeconds"] == LEASE_DURATION_S
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] and spec["renewTime"]
    assert [e["term"] for e in journal.of(first.identity, "leader_acquired")] == [1]
    assert first.elector.metrics.registry.get_sample_value("kube_dlq_leader") == 1

    # And it renews the Lease every retry period, holding it
    async def renewed() -> RawObject | None:
        now = await read_lease(admin_api, lease_name)
        return now if now["spec"]["renewTime"] != spec["renewTime"] else None

    again = await eventually(renewed, within=RETRY_PERIOD_S * 4, what="a renewal", every=0.05)
    assert again["spec"]["holderIdentity"] == first.identity
    assert again["spec"]["acquireTime"] == spec["acquireTime"]
    assert first.leads


async def test_standby_waits_then_takes_over_within_a_period_when_the_leader_releases(
    candidate: Start, admin_api: client.ApiClient, lease_name: str, journal: Journal
) -> None:
    # Given a leader and a second candidate
    first = await candidate()
    await leads(first, within=5)
    second = await candidate()
    standby_since = time.monotonic()

    async with sampled([first, second]) as succession:
        # Then the second stands by for longer than a lease lasts, while the first renews
        await observed(journal, second, first)
        first_renewal = (await read_lease(admin_api, lease_name))["spec"]["renewTime"]

        async def stood_by_past_a_lease() -> bool:
            lease = await read_lease(admin_api, lease_name)
            return (
                time.monotonic() - standby_since > LEASE_DURATION_S + RETRY_PERIOD_S
                and lease["spec"]["renewTime"] != first_renewal
            )

        await eventually(stood_by_past_a_lease, within=LEASE_DURATION_S + 3, what="a while")
        assert first.leads and not second.leads
        assert second.elector.metrics.registry.get_sample_value("kube_dlq_leader") == 0

        # When the leader stops gracefully
        await first.stop()
        stopped = time.monotonic()

        # Then it released the Lease, and the standby takes over at its next poll, well
        # before the lease would have expired
        [released] = journal.of(first.identity, "leader_released")
        assert released["lease_released"] is True
        took_over = await leads(second, within=LEASE_DURATION_S, what="the standby to lead")
        assert took_over - stopped < RETRY_PERIOD_S * (1 + ACQUIRE_JITTER) + SLACK_S
    assert succession == [first.identity, second.identity]
    lease = await read_lease(admin_api, lease_name)
    assert lease["spec"]["holderIdentity"] == second.identity
    assert lease["spec"]["leaseTransitions"] == 1
    assert first.elector.metrics.registry.get_sample_value("kube_dlq_leader") == 0


async def test_killed_leader_is_replaced_only_once_its_lease_has_expired(
    candidate: Start, admin_api: client.ApiClient, lease_name: str, journal: Journal
) -> None:
    # Given a leader and a standby that has seen its record
    first = await candidate()
    await leads(first, within=5)
    second = await candidate()
    await observed(journal, second, first)

    async with sampled([first, second]):
        # When the leader dies without releasing
        await first.kill()
        killed = time.monotonic()
        assert (await read_lease(admin_api, lease_name))["spec"]["holderIdentity"] == (
            first.identity
        )

        # Then the standby takes over, but only once the lease has run out: its last renewal
        # was at most a retry period before the kill
        took_over = await leads(second, within=LEASE_DURATION_S + 3, what="the standby to lead")
    waited = took_over - killed
    assert waited > LEASE_DURATION_S - RETRY_PERIOD_S - SLACK_S, waited
    assert waited < LEASE_DURATION_S + 2 * RETRY_PERIOD_S + SLACK_S, waited
    assert [e["reason"] for e in journal.of(first.identity, "leader_lost")] == ["cancelled"]
    assert not journal.of(first.identity, "leader_released")


async def test_never_two_leaders_through_repeated_handovers(
    candidate: Start, journal: Journal
) -> None:
    # Given three candidates
    pool = [await candidate() for _ in range(3)]

    async def one_leader() -> Candidate | None:
        leading = [c for c in pool if c.leads]
        return leading[0] if len(leading) == 1 else None

    async with sampled(pool) as succession:
        # When the leader is stopped (or, once, killed) and replaced, round after round
        for round_ in range(4):
            leader = await eventually(
                one_leader, within=LEASE_DURATION_S + 3, what=f"a leader in round {round_}"
            )
            await (leader.kill() if round_ == 1 else leader.stop())
            pool.remove(leader)
            pool.append(await candidate())
        await eventually(one_leader, within=LEASE_DURATION_S + 3, what="the last leader")

    # Then leadership passed from one to the next, never held by two at once
    assert len(succession) == 5 and len(set(succession)) == 5, succession
    journal.assert_one_leader_at_a_time()


async def test_leader_whose_renewals_hang_steps_down_within_the_renew_deadline(
    candidate: Start, cluster: ClusterState, journal: Journal
) -> None:
    host, port = cluster.api_url.removeprefix("https://").rsplit(":", 1)
    async with Relay(host, int(port)) as relay, client_through(relay, cluster) as api:
        # Given a leader reaching the apiserver through a relay, and a standby
        first = await candidate(api=api)
        try:
            await leads(first, within=5)
            second = await candidate()
            await observed(journal, second, first)

            async with sampled([first, second]) as succession:
                # When its connection hangs (nothing answers, nothing fails fast)
                relay.pause()
                paused = time.monotonic()

                # Then it steps down within the renew deadline, counted from its last successful
                # renewal (before the pause), so before its lease can expire for anyone else
                gone = await steps_down(first, within=RENEW_DEADLINE_S + 2)
                assert gone - paused < RENEW_DEADLINE_S + SLACK_S
                [lost] = journal.of(first.identity, "leader_lost")
                assert lost["reason"] == "renew_deadline_exceeded"

                # And the standby takes over once the lease expired, after the leader stepped down
                await leads(second, within=LEASE_DURATION_S + 3, what="the standby to lead")

                # When the connection comes back, the old leader sees the new one and stands by
                relay.resume()
                await observed(journal, first, second)
                assert second.leads and not first.leads
            assert succession == [first.identity, second.identity]
            await first.stop()
        finally:
            await first.kill()  # a no-op once stopped; else before its client closes


async def test_leader_steps_down_when_the_lease_is_replaced_under_it(
    candidate: Start, admin_api: client.ApiClient, lease_name: str, journal: Journal
) -> None:
    # Given a leader
    first = await candidate()
    await leads(first, within=5)

    # When the Lease is deleted and recreated naming another holder (which never renews)
    await install_intruder(admin_api, lease_name, LEASE_DURATION_S)
    replaced_at = time.monotonic()

    # Then the leader steps down at its next renewal, not at the deadline
    gone = await steps_down(first, within=RENEW_DEADLINE_S)
    assert gone - replaced_at < RETRY_PERIOD_S + SLACK_S
    [lost] = journal.of(first.identity, "leader_lost")
    assert (lost["reason"], lost["holder"]) == ("lease_taken", "intruder")

    # And it takes the Lease back only once the intruder's has expired
    back = await leads(first, within=LEASE_DURATION_S + 3, what="the leader to come back")
    assert back - replaced_at > LEASE_DURATION_S - SLACK_S
    lease = await read_lease(admin_api, lease_name)
    assert lease["spec"]["holderIdentity"] == first.identity
    assert lease["spec"]["leaseTransitions"] == 1
    assert [e["term"] for e in journal.of(first.identity, "leader_acquired")] == [1, 2]


# --- fencing: the Lease's count and Redis's fence -----------------------------------------------


def letter(uid: str) -> DeadLetter:
    return DeadLetter(
        queue="batch",
        job=JobRef(namespace="ns", name=f"job-{uid}", uid=uid),
        failure_class=FailureClass.APP_ERROR,
        reason="exit code 1",
        attempts=1,
        failed_at=time.time(),
        cluster="fence",
    )


async def test_a_recreated_lease_is_moved_past_the_fence_before_its_leader_writes(
    candidate: Start,
    admin_api: client.ApiClient,
    lease_name: str,
    dlq_redis: Redis,  # noqa: F811 (the fixture imported above)
    cluster_name: str,  # noqa: F811 (the fixture imported above)
) -> None:
    # Given leaders up to term 7 have written (Redis's fence is at 7), and there is no Lease
    # (deleted with everything in it: a new one counts leaseTransitions from 0)
    store = RedisStore(dlq_redis, RedisSettings(), cluster_name=cluster_name)
    assert await store.claim_term(7) is None

    # When a candidate creates the Lease and takes it
    first = await candidate(fence=store)
    await leads(first, within=5)

    # Then the Lease it leads under counts past the fence, and that count is its term
    lease = await read_lease(admin_api, lease_name)
    assert lease["spec"]["leaseTransitions"] == 8 == first.elector.term
    assert await dlq_redis.get(store.keys.leader_fence) == b"8"
    # And its writes pass while a write of any earlier term is refused
    assert (await store.with_term(lambda: 8).dead_letter(letter("new"))).written
    with pytest.raises(FencedWrite):
        await store.with_term(lambda: 7).dead_letter(letter("old"))

    # When the Lease is deleted again (after a graceful hand-back) and a new leader takes it
    await first.stop()
    await raw(
        client.CoordinationV1Api(admin_api).delete_namespaced_lease(
            lease_name, LEASE_NAMESPACE, _preload_content=False
        )
    )
    second = await candidate(fence=store)
    await leads(second, within=5)

    # Then its term is above the first one's again, and so is the fence
    lease = await read_lease(admin_api, lease_name)
    assert lease["spec"]["leaseTransitions"] == 9 == second.elector.term
    assert await dlq_redis.get(store.keys.leader_fence) == b"9"


# --- the daemon: only the leader writes ----------------------------------------------------------


async def test_only_the_leading_daemon_writes_and_its_standby_carries_on(
    start_daemon: StartDaemon,  # noqa: F811 (the fixture imported above)
    admin_api: client.ApiClient,
    namespace: str,
    lease_name: str,
) -> None:
    election = {
        "enabled": True,
        "lease_name": lease_name,
        "lease_duration_s": LEASE_DURATION_S,
        "renew_deadline_s": RENEW_DEADLINE_S,
        "retry_period_s": RETRY_PERIOD_S,
    }
    # Given two daemons with leader election, the first leading (the standby is ready too)
    first = await start_daemon(leader_election=election)
    assert first.daemon.elector is not None

    async def first_leads() -> bool:
        return first.daemon.elector is not None and first.daemon.elector.is_leader.is_set()

    await eventually(first_leads, within=5, what="the first daemon to lead")
    second = await start_daemon(leader_election=election)
    assert await first.metric("kube_dlq_leader") == 1
    assert await second.metric("kube_dlq_leader") == 0

    # When a Job fails
    await create_job(admin_api, namespace, failing_job("work", exit_code=1))

    # Then the leader writes its dead letter; the standby only queues the failure
    await wait_dead_letters(first.queries, 1, within=60)

    async def standby_queued() -> bool:
        return second.daemon.pipeline.pending == 1

    await eventually(standby_queued, within=10, what="the standby to queue the failure")
    assert (first.daemon.pipeline.written, second.daemon.pipeline.written) == (1, 0)
    assert second.daemon.pipeline.already_handled == 0

    # When the leader shuts down, the standby takes over at once and finishes its queue,
    # finding the failure already handled: still one dead letter
    assert await first.stop() == 0
    stopped = time.monotonic()

    async def second_done() -> bool:
        return second.daemon.pipeline.pending == 0 and await second.metric("kube_dlq_leader") == 1

    await eventually(second_done, within=10, what="the standby to lead and drain", every=0.05)
    assert time.monotonic() - stopped < LEASE_DURATION_S
    assert (second.daemon.pipeline.written, second.daemon.pipeline.already_handled) == (0, 1)
    assert len(await second.dead_letters()) == 1


def running_duties() -> list[str]:
    """Names of the writer and retry-loop tasks running in this event loop."""
    return sorted(
        name
        for task in asyncio.all_tasks()
        if not task.done() and (name := task.get_name()) in ("writer", "retry-loop")
    )


async def test_daemon_that_loses_the_lease_pauses_its_duties_and_resumes_them_with_its_queue(
    start_daemon: StartDaemon,  # noqa: F811 (the fixture imported above)
    admin_api: client.ApiClient,
    namespace: str,
    lease_name: str,
) -> None:
    election = {
        "enabled": True,
        "lease_name": lease_name,
        "lease_duration_s": LEASE_DURATION_S,
        "renew_deadline_s": RENEW_DEADLINE_S,
        "retry_period_s": RETRY_PERIOD_S,
    }
    # Given a daemon leading, its writer and retry loop running
    daemon = await start_daemon(leader_election=election)
    elector = daemon.daemon.elector
    assert elector is not None

    async def duties_running() -> bool:
        return elector.is_leader.is_set() and running_duties() == ["retry-loop", "writer"]

    await eventually(duties_running, within=5, what="the daemon to lead and run its duties")

    # When another holder takes the Lease for a while
    await install_intruder(admin_api, lease_name, INTRUDER_HOLDS_S)
    taken = time.monotonic()

    # Then the daemon stops its writer and retry loop, but keeps running, ready, as a standby
    async def duties_stopped() -> bool:
        return not elector.is_leader.is_set() and running_duties() == []

    await eventually(duties_stopped, within=RENEW_DEADLINE_S, what="the duties to stop")
    assert not daemon.task.done()
    assert (await daemon.get("/readyz"))[0] == 200
    assert await daemon.metric("kube_dlq_leader") == 0

    # And a Job failing meanwhile is queued, not written
    await create_job(admin_api, namespace, failing_job("meanwhile", exit_code=1))

    async def queued() -> bool:
        return daemon.daemon.pipeline.pending == 1

    await eventually(queued, within=INTRUDER_HOLDS_S, what="the failure to be queued")
    assert not elector.is_leader.is_set(), "the intruder's lease ran out too soon for this test"
    assert daemon.daemon.pipeline.written == 0
    assert await daemon.dead_letters() == []

    # When the intruder's lease runs out, the daemon leads again and writes what it queued
    await wait_dead_letters(daemon.queries, 1, within=INTRUDER_HOLDS_S + 5)
    assert time.monotonic() - taken > INTRUDER_HOLDS_S - SLACK_S
    assert elector.terms == 2
    assert running_duties() == ["retry-loop", "writer"]
    assert (daemon.daemon.pipeline.written, daemon.daemon.pipeline.pending) == (1, 0)
