"""RetryLoop over in-memory fakes: each branch of firing one ticket, at most one Job each.

FakeRetryStore keeps the scripts' rules (Redis's clock, claim numbers as fences, the create
record, the finalizer queue); FakeJobs keeps finalizers (a deleted Job with one only gets a
deletionTimestamp). The real-Redis and real-apiserver versions are in tests/e2e.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from structlog.testing import capture_logs

from tests.support.fakes import FakeJobs
from tests.support.retry_fakes import FakeRetryStore
from watcher.adapters.redis.creates import FINALIZE_GRACE_S
from watcher.core.annotations import ANNOTATION_CREATE_TOKEN, FINALIZER_RETRY_ACK
from watcher.core.errors import KubeConflict, KubeForbidden, KubeNotFound, KubeUnavailable
from watcher.core.manifest import manifest_for_ticket
from watcher.core.model import AttemptRecord, ClaimedBatch, FailureClass, JobRef, RetryTicket
from watcher.core.rawjson import RawObject
from watcher.core.settings import RetryLoopSettings
from watcher.kit.metrics import Metrics
from watcher.service.retrying import RetryLoop

NS = "batch"


def ticket(name: str = "report") -> RetryTicket:
    uid = str(uuid.uuid4())
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {}}
    return RetryTicket(
        job=JobRef(NS, name, uid),
        attempt=2,
        due_at=0.0,
        failure_class=FailureClass.NODE_LOST,
        reason="node lost",
        manifest=body,
        history=(AttemptRecord(1, name, uid, FailureClass.NODE_LOST, "node lost", 10.0),),
    )


def loop(store: FakeRetryStore, jobs: FakeJobs, metrics: Metrics | None = None) -> RetryLoop:
    return RetryLoop(
        store=store,
        jobs=jobs,
        settings=RetryLoopSettings(batch_size=10),
        cluster_name="unit",
        metrics=metrics or Metrics(),
        logger=structlog.get_logger(),
        clock=lambda: 1e12,  # any local clock: nothing is decided on it
    )


def fired(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value("kube_dlq_retries_fired_total", {"outcome": outcome})
    return value or 0.0


def job_at(jobs: FakeJobs, name: str) -> RawObject:
    return jobs.jobs[(NS, name)]


async def test_created_job_carries_the_token_and_loses_its_finalizer_once_recorded() -> None:
    # Given one due ticket
    store, jobs, metrics = FakeRetryStore(), FakeJobs(), Metrics()
    store.add(t := ticket())

    # When the loop fires it
    assert await loop(store, jobs, metrics).fire_due() == 1

    # Then one Job was created with the finalizer and the ticket's token; the settle recorded
    # its uid, and the finalizer was removed right after
    [created] = jobs.created
    assert created["metadata"]["finalizers"] == [FINALIZER_RETRY_ACK]
    record = store.records[t.job.uid]
    assert created["metadata"]["annotations"][ANNOTATION_CREATE_TOKEN] == record.token
    assert record.uid == created["metadata"]["uid"]
    assert job_at(jobs, "report-r2")["metadata"]["finalizers"] == []
    assert store.finalize == {}
    assert fired(metrics, "created") == 1
    assert await store.pending_retries() == 0


class LostReply(FakeJobs):
    """Creates the Job, then the answer never arrives (a timeout); optionally deletes it at
    once (a TTL of 0 on a quick Job)."""

    def __init__(self, *, delete: bool) -> None:
        super().__init__()
        self.delete_at_once = delete
        self.lose = True

    async def create(self, namespace: str, body: Mapping[str, Any]) -> RawObject:
        created = await super().create(namespace, body)
        if self.delete_at_once:
            self.purge(namespace, body["metadata"]["name"])
        if self.lose:
            self.lose = False
            raise KubeUnavailable("creating Job failed", reason="timed out", timed_out=True)
        return created


async def test_lost_reply_and_a_deleted_job_never_create_it_twice() -> None:
    # Given a create whose reply is lost, and whose Job is deleted at once (TTL 0)
    store, jobs, metrics = FakeRetryStore(lease_s=5), LostReply(delete=True), Metrics()
    store.add(t := ticket())
    retry = loop(store, jobs, metrics)

    # When the loop fires it (deferred: no answer), and again once due (another replica)
    await retry.fire_due()
    store.now += 3600
    await loop(store, jobs, metrics).fire_due()

    # Then the Job was created once: the second firing found it (Terminating, held by the
    # finalizer) by its token and settled the ticket with its uid
    assert len(jobs.created) == 1
    assert fired(metrics, "created") == 0 and fired(metrics, "already_exists") == 1
    assert store.records[t.job.uid].uid == jobs.created[0]["metadata"]["uid"]
    # And since two claims began a create, the finalizer waits out the grace, then goes
    assert (NS, "report-r2") in jobs.jobs
    store.now += FINALIZE_GRACE_S
    await retry.fire_due()
    assert (NS, "report-r2") not in jobs.jobs
    assert store.finalize == {}


async def test_lease_expired_mid_create_the_older_holder_is_fenced_out() -> None:
    # Given replica A claimed a ticket and is slow to create; its lease runs out and
    # replica B claims the same ticket
    store, metrics = FakeRetryStore(lease_s=1), Metrics()
    jobs = FakeJobs()
    store.add(ticket())
    a_claim = (await store.claim_due_retries(limit=1))[0]
    store.now += 2
    a_loop = loop(store, jobs, metrics)
    b_loop = loop(store, jobs, metrics)

    # When B fires it, and then A goes on with the claim it holds
    await b_loop.fire_due()
    with capture_logs() as logs:
        await a_loop._fire_guarded(a_claim)

    # Then only B created the Job; A learned the ticket is not its any more and did nothing
    assert len(jobs.created) == 1
    assert fired(metrics, "created") == 1
    assert [e["status"] for e in logs if e["event"] == "retry_not_ours_any_more"] == ["settled"]


async def test_superseded_claim_creates_nothing() -> None:
    # Given a claim whose lease ran out and that another replica claimed again (not settled)
    store, jobs = FakeRetryStore(lease_s=1), FakeJobs()
    store.add(ticket())
    [old] = await store.claim_due_retries(limit=1)
    store.now += 2
    await store.claim_due_retries(limit=1)

    # When the old holder fires
    with capture_logs() as logs:
        await loop(store, jobs)._fire_guarded(old)

    # Then nothing is created, released or settled by it
    assert jobs.created == []
    assert [e["status"] for e in logs if e["event"] == "retry_not_ours_any_more"] == ["superseded"]
    assert await store.pending_retries() == 1


async def test_a_foreign_job_with_the_name_is_not_taken_for_ours() -> None:
    # Given a Job of someone else's already holds the retry name, with the lineage annotations
    # copied from a real retry (but not the ticket's token, which does not exist yet)
    store, jobs, metrics = FakeRetryStore(), FakeJobs(), Metrics()
    store.add(t := ticket())
    squatter = manifest_for_ticket(t)
    squatter["metadata"]["namespace"] = NS
    jobs.put(squatter)

    # When the ticket fires
    await loop(store, jobs, metrics).fire_due()

    # Then the retry runs once under the name unique to the ticket
    [created] = jobs.created
    assert (
        created["metadata"]["name"] == manifest_for_ticket(t, unique_name=True)["metadata"]["name"]
    )
    assert fired(metrics, "created") == 1


async def test_foreign_jobs_on_both_names_dead_letter_the_ticket() -> None:
    store, jobs, metrics = FakeRetryStore(), FakeJobs(), Metrics()
    store.add(t := ticket())
    for unique in (False, True):
        body = manifest_for_ticket(t, unique_name=unique)
        body["metadata"]["namespace"] = NS
        jobs.put(body)
    await loop(store, jobs, metrics).fire_due()
    assert jobs.created == []
    [letter] = store.dead_letters
    assert "not this ticket's retry" in letter.reason
    assert fired(metrics, "abandoned") == 1


async def test_earlier_begin_looks_first_so_a_terminating_namespace_still_settles() -> None:
    # Given an earlier claim created the Job (reply lost), and the namespace is now
    # Terminating: creates get 403 there, before any 409
    store, metrics = FakeRetryStore(lease_s=5), Metrics()
    jobs = LostReply(delete=False)
    store.add(t := ticket())
    await loop(store, jobs, metrics).fire_due()
    jobs.fail_next(KubeForbidden("creating Job failed", status=403), method="create")
    store.now += 3600

    # When the ticket fires again
    await loop(store, jobs, metrics).fire_due()

    # Then the Job was found by its token before any POST, and the ticket is settled
    assert len(jobs.created) == 1
    assert fired(metrics, "already_exists") == 1
    assert store.records[t.job.uid].uid == jobs.created[0]["metadata"]["uid"]
    assert await store.pending_retries() == 0


async def test_namespace_gone_abandons_and_transient_errors_defer() -> None:
    store, jobs, metrics = FakeRetryStore(), FakeJobs(), Metrics()
    store.add(ticket("gone"))
    store.add(ticket("flaky"))
    jobs.fail_next(KubeNotFound("creating Job failed", status=404), method="create")
    jobs.fail_next(KubeUnavailable("creating Job failed", reason="reset"), method="create")
    await loop(store, jobs, metrics).fire_due()
    assert fired(metrics, "abandoned") == 1 and fired(metrics, "deferred") == 1
    assert len(store.dead_letters) == 1
    assert await store.pending_retries() == 1


async def test_a_finalizer_removal_that_failed_is_finished_by_the_next_cycle() -> None:
    # Given the API refuses the finalizer removal right after the create, and again in the
    # same cycle's pass
    store, jobs = FakeRetryStore(), FakeJobs()
    store.add(ticket())
    refused = KubeUnavailable("patch", reason="reset")
    jobs.fail_next(refused, refused, method="remove_finalizer")
    retry = loop(store, jobs)
    await retry.fire_due()
    assert job_at(jobs, "report-r2")["metadata"]["finalizers"] == [FINALIZER_RETRY_ACK]

    # When the next cycle runs (nothing else is due)
    await retry.fire_due()

    # Then the finalizer is gone and nothing is left queued
    assert job_at(jobs, "report-r2")["metadata"]["finalizers"] == []
    assert store.finalize == {}


async def test_a_clock_far_ahead_changes_nothing() -> None:
    # Given a ticket not due for a minute on the store's (Redis's) clock, and a loop whose own
    # clock is 90 s ahead (or anything else)
    store, jobs = FakeRetryStore(), FakeJobs()
    store.add(ticket(), delay_s=60)

    # When it fires
    claimed = await loop(store, jobs).fire_due()

    # Then nothing was due
    assert claimed == 0 and jobs.created == []


async def test_two_loops_racing_with_deletes_create_each_job_once() -> None:
    # Given 30 tickets, two loops with leases so short that they take each other's tickets,
    # creates whose reply is lost half the time, and every Job deleted right after its create
    store = FakeRetryStore(lease_s=0.0)

    class Racing(FakeJobs):
        async def create(self, namespace: str, body: Mapping[str, Any]) -> RawObject:
            await asyncio.sleep(0)  # let the other loop interleave
            created = await super().create(namespace, body)
            self.purge(namespace, body["metadata"]["name"])
            if len(self.created) % 2:
                raise KubeUnavailable("creating Job failed", reason="timed out")
            return created

    jobs = Racing()
    tickets = [ticket(f"batch-{i:02d}") for i in range(30)]
    for t in tickets:
        store.add(t)
    loops = [loop(store, jobs), loop(store, jobs)]

    # When both run cycles until every ticket is settled
    for _ in range(50):
        await asyncio.gather(*(lp.fire_due() for lp in loops))
        store.now += 1
        if not await store.pending_retries():
            break
    store.now += FINALIZE_GRACE_S + 1
    while store.finalize:  # each cycle finishes up to batch_size removals
        await loops[0].fire_due()

    # Then each ticket's Job was created exactly once, and every Job is gone in the end
    names = sorted(job["metadata"]["name"] for job in jobs.created)
    assert names == sorted(f"batch-{i:02d}-r2" for i in range(30))
    assert await store.pending_retries() == 0
    assert jobs.jobs == {}


class ConflictOnce(FakeJobs):
    """The first create answers 409: after creating the Job itself (`ours`: a concurrent POST
    of this ticket landed first), or with no Job left by the time of the look (a foreign Job
    deleted in between)."""

    def __init__(self, *, ours: bool) -> None:
        super().__init__()
        self.ours = ours
        self.conflicted = False

    async def create(self, namespace: str, body: Mapping[str, Any]) -> RawObject:
        if not self.conflicted:
            self.conflicted = True
            if self.ours:
                await super().create(namespace, body)
            raise KubeConflict("creating Job failed", status=409, reason="AlreadyExists")
        return await super().create(namespace, body)


async def test_409_from_this_tickets_own_job_settles_it_as_already_exists() -> None:
    store, jobs, metrics = FakeRetryStore(), ConflictOnce(ours=True), Metrics()
    store.add(t := ticket())
    await loop(store, jobs, metrics).fire_due()
    assert len(jobs.created) == 1
    assert fired(metrics, "already_exists") == 1
    assert store.records[t.job.uid].uid == jobs.created[0]["metadata"]["uid"]
    assert await store.pending_retries() == 0


async def test_409_with_no_job_left_defers_instead_of_guessing() -> None:
    # Given a create that got 409, and no Job at the name by the time it is looked up
    store, jobs, metrics = FakeRetryStore(), ConflictOnce(ours=False), Metrics()
    store.add(ticket())

    # When it fires
    await loop(store, jobs, metrics).fire_due()

    # Then it is deferred (ours would still be there, held by its finalizer), and created
    # when it is due again
    assert fired(metrics, "deferred") == 1 and jobs.created == []
    store.now += 3600
    await loop(store, jobs, metrics).fire_due()
    assert len(jobs.created) == 1 and fired(metrics, "created") == 1


async def test_an_invalid_ticket_is_dead_lettered_with_the_reason() -> None:
    store, jobs = FakeRetryStore(), FakeJobs()
    bad = ticket()
    store.add(
        RetryTicket(**{**{f: getattr(bad, f) for f in bad.__dataclass_fields__}, "attempt": 1})
    )
    await loop(store, jobs).fire_due()
    [letter] = store.dead_letters
    assert "invalid ticket" in letter.reason and jobs.created == []


class CountingStore(FakeRetryStore):
    """Counts claims (cycles) and reads of the pending count (the gauge's one Redis call)."""

    def __init__(self) -> None:
        super().__init__()
        self.cycles = 0
        self.pending_reads = 0

    async def claim_due_retries(self, *, limit: int) -> ClaimedBatch:
        self.cycles += 1
        return await super().claim_due_retries(limit=limit)

    async def pending_retries(self) -> int:
        self.pending_reads += 1
        return await super().pending_retries()


async def test_run_reads_the_pending_gauge_about_once_a_second_and_right_after_a_burst() -> None:
    # Given 100 due tickets, claimed 5 at a time (20 cycles back to back), and a running loop
    # that polls only every 30 s once nothing is due
    store, jobs, metrics = CountingStore(), FakeJobs(), Metrics()
    for i in range(100):
        store.add(ticket(f"burst-{i:03d}"))
    retry = RetryLoop(
        store=store,
        jobs=jobs,
        settings=RetryLoopSettings(batch_size=5, poll_interval_s=30.0),
        cluster_name="unit",
        metrics=metrics,
        logger=structlog.get_logger(),
    )
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(retry.run(stop))

    # When every ticket is fired, and the loop goes to sleep for its 30 s poll
    def gauge() -> float | None:
        return metrics.registry.get_sample_value("kube_dlq_retries_pending")

    for _ in range(1000):  # 10 s at most
        if len(jobs.created) == 100 and gauge() == 0:
            break
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    stop.set()
    await asyncio.wait_for(task, timeout=5)

    # Then the gauge shows 0 right after the last fire, without a 30 s wait for the next cycle
    assert len(jobs.created) == 100
    assert gauge() == 0
    # And it was read about once a second while the cycles followed each other, plus once as
    # the loop went to sleep: not once per cycle
    assert store.cycles >= 20
    assert store.pending_reads <= 2 + int(elapsed), (store.pending_reads, store.cycles, elapsed)
