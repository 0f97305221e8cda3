"""Retry tickets on a real redis-server: Redis's clock, claim fences, create records, lineage.

The retry loop here fires into FakeJobs (the Jobs side is proven against the real apiserver in
tests/e2e/test_retry_once.py); everything Redis does is the real scripts.
"""

from __future__ import annotations

import random
import time

import structlog
from redis.asyncio import Redis
from structlog.testing import capture_logs

from tests.integration.conftest import make_store, redis_now, travel
from tests.integration.test_sink import ticket
from tests.support.fakes import FakeClock, FakeJobs
from tests.support.objects import (
    DISRUPTION_MESSAGES,
    T0_UNIX,
    disruption,
    raw_job,
    raw_pod,
    report,
    terminated,
)
from watcher.adapters.redis.creates import FINALIZE_GRACE_S
from watcher.adapters.redis.keys import Keys
from watcher.core.annotations import (
    ANNOTATION_ATTEMPT,
    ANNOTATION_CREATE_TOKEN,
    ANNOTATION_ORIGINAL_NAME,
    ANNOTATION_ORIGINAL_UID,
    ANNOTATION_RETRY_OF,
)
from watcher.core.lineage import Lineage
from watcher.core.model import AttemptRecord, BeginStatus, FailureClass, JobRef
from watcher.core.policy import RetryPolicy
from watcher.core.settings import ClassifySettings, RetryLoopSettings
from watcher.kit.metrics import Metrics
from watcher.service.handler import FailureHandler
from watcher.service.retrying import RetryLoop

AHEAD_S = 90.0


def loop_with_clock(store: object, jobs: FakeJobs, clock: object) -> RetryLoop:
    return RetryLoop(
        store=store,  # type: ignore[arg-type]
        jobs=jobs,
        settings=RetryLoopSettings(),
        cluster_name="it",
        metrics=Metrics(),
        logger=structlog.get_logger(),
        clock=clock,  # type: ignore[arg-type]
    )


async def test_a_loop_whose_clock_is_90s_ahead_takes_no_held_ticket_and_fires_nothing_early(
    redis: Redis, keys: Keys
) -> None:
    # Given one ticket held by another replica (leased 60 s), one due in 60 s, and a replica
    # whose own clock is 90 s ahead (before, it compared leases and due times on that clock)
    store = make_store(redis, retry_claim_lease_s=60)
    await store.schedule_retry(ticket("held"))
    [held] = await store.claim_due_retries(limit=10)
    await store.schedule_retry(ticket("later"), delay_s=60)
    jobs = FakeJobs()
    ahead = loop_with_clock(make_store(redis), jobs, lambda: time.time() + AHEAD_S)

    # When it fires
    claimed = await ahead.fire_due()

    # Then it took nothing: the lease and the due time are Redis's clock
    assert claimed == 0 and jobs.created == []
    assert await redis.zscore(keys.retry_inflight, "held") == round(held.lease_until * 1000)
    # And once Redis's clock has moved on, the due ticket fires (the held one: after its lease)
    await travel(redis, keys, 61)
    assert await ahead.fire_due() == 2


async def test_due_time_is_the_delay_from_redis_now_whatever_the_writers_clock(
    redis: Redis, keys: Keys
) -> None:
    store = make_store(redis)
    before = await redis_now(redis)
    await store.schedule_retry(ticket("t", due_at=T0_UNIX + 10**6), delay_s=30)
    after = await redis_now(redis)
    due = await redis.zscore(keys.retry_due, "t")
    assert due is not None and (before + 30) * 1000 - 1 <= due <= (after + 30) * 1000 + 1


async def test_create_intent_is_fenced_by_the_latest_claim_and_records_the_uid(
    redis: Redis, keys: Keys
) -> None:
    # Given a ticket claimed by A, whose lease ran out, then claimed by B
    store = make_store(redis, retry_claim_lease_s=5)
    await store.schedule_retry(ticket("t1"))
    [a] = await store.claim_due_retries(limit=1)
    job = JobRef("ns", "job-t1-r2", "")
    lineage = Lineage(2, (AttemptRecord(1, "job-t1", "t1", FailureClass.NODE_LOST, "x", 1.0),))
    first = await store.begin_create("t1", claim=a.claim, job=job, lineage=lineage)
    await travel(redis, keys, 6)
    [b] = await store.claim_due_retries(limit=1)

    # When both try to go on
    stale = await store.begin_create("t1", claim=a.claim, job=job, lineage=lineage)
    second = await store.begin_create("t1", claim=b.claim, job=job, lineage=lineage)
    stale_settle = await store.settle_created("t1", claim=a.claim, job=job)
    created = JobRef("ns", "job-t1-r2", "uid-created")
    settled = await store.settle_created("t1", claim=b.claim, job=created)

    # Then A is fenced out; B learns an earlier claim began (a create may have happened) and
    # gets the same token; B's settle records the uid, and the finalizer waits for the grace
    assert first.status is BeginStatus.BEGUN and first.earlier_claims == 0
    assert stale.status is BeginStatus.SUPERSEDED
    assert second.status is BeginStatus.BEGUN and second.token == first.token
    assert (second.earlier_claims, second.earlier_name) == (1, "job-t1-r2")
    assert stale_settle.status is BeginStatus.SUPERSEDED
    assert settled.status is BeginStatus.BEGUN and not settled.release_finalizer_now
    record = await store.create_record("t1")
    assert record is not None and record.uid == "uid-created" and record.lineage == lineage
    assert await store.due_finalizers(limit=10) == []
    await travel(redis, keys, FINALIZE_GRACE_S)
    assert await store.due_finalizers(limit=10) == [created]
    await store.finalizer_released(created)
    assert await store.due_finalizers(limit=10) == []
    # And the record expires on its own (no unbounded growth)
    assert 0 < await redis.ttl(keys.retry_create("t1")) <= 40 * 86400


async def test_an_unreadable_create_record_reads_as_no_lineage(redis: Redis, keys: Keys) -> None:
    store = make_store(redis)
    await redis.hset(keys.retry_create("x"), mapping={"lineage": b"\xff[", b"\xfe": b"\xfd"})
    record = await store.create_record("x")
    assert record is not None and record.lineage is None and record.error
    assert await store.create_record("absent") is None


def lost_pod() -> dict[str, object]:
    message = DISRUPTION_MESSAGES["DeletionByTaintManager"]
    return raw_pod(
        conditions=[disruption("DeletionByTaintManager", message)],
        containers=[terminated(exit_code=137)],
    )


async def test_a_job_claiming_another_jobs_lineage_is_an_original_on_real_redis(
    redis: Redis, keys: Keys
) -> None:
    # Given the retry loop created attempt 2 of "etl" (its create record is in Redis)
    store = make_store(redis)
    await store.schedule_retry(ticket("uid-etl"))
    jobs = FakeJobs()
    await loop_with_clock(store, jobs, time.time).fire_due()
    [victim] = jobs.created
    victim_annotations = victim["metadata"]["annotations"]
    record_before = await redis.hgetall(keys.retry_create("uid-etl"))

    # And a user's Job in the same namespace copies every annotation of that retry Job
    forged = raw_job(name="mine", uid="uid-mine")
    forged["metadata"]["namespace"] = victim["metadata"]["namespace"]
    forged["metadata"]["annotations"].update(
        {
            key: victim_annotations[key]
            for key in (
                ANNOTATION_ORIGINAL_NAME,
                ANNOTATION_ORIGINAL_UID,
                ANNOTATION_ATTEMPT,
                ANNOTATION_RETRY_OF,
                ANNOTATION_CREATE_TOKEN,
            )
        }
    )
    metrics = Metrics()
    handler = FailureHandler(
        store=store, jobs=None, policy=RetryPolicy(), classify=ClassifySettings(),
        cluster_name="it", metrics=metrics, logger=structlog.get_logger(),
        clock=FakeClock(time.time()), rng=random.Random(0),
    )  # fmt: skip

    # When the user's Job fails with a retried class
    with capture_logs() as logs:
        outcome = await handler.handle(report(forged, [lost_pod()]), forged)

    # Then it is handled as its own first attempt: its own ticket, for attempt 2 of itself
    assert outcome.decision.attempt == 1
    await travel(redis, keys, 3600)
    [claimed] = await store.claim_due_retries(limit=10)
    assert claimed.ticket.job.uid == "uid-mine" and claimed.ticket.attempt == 2
    assert [h.job_uid for h in claimed.ticket.history] == ["uid-mine"]
    # And the other lineage's record is untouched; the forgery is reported
    assert await redis.hgetall(keys.retry_create("uid-etl")) == record_before
    assert "lineage_annotation_ignored" in [e["event"] for e in logs]
    assert (
        metrics.registry.get_sample_value("kube_dlq_malformed_input_total", {"source": "lineage"})
        == 1
    )


async def test_hand_written_garbage_in_the_claim_and_create_records_does_not_stall_claims(
    redis: Redis, keys: Keys
) -> None:
    # Given a ticket whose claim number and create record hold text that is not a number
    store = make_store(redis)
    await store.schedule_retry(ticket("poisoned"))
    await redis.hset(keys.retry_claims, "poisoned", "lots")
    await redis.hset(keys.retry_create("poisoned"), mapping={"begins": "x", "last_ms": "y"})

    # When it is claimed, begun and settled
    [claimed] = await store.claim_due_retries(limit=1)
    job = JobRef("ns", "job-poisoned-r2", "")
    intent = await store.begin_create(
        "poisoned", claim=claimed.claim, job=job, lineage=Lineage(2, ())
    )
    settled = await store.settle_created(
        "poisoned", claim=claimed.claim, job=JobRef("ns", job.name, "uid-p")
    )

    # Then each step worked, the garbage read as nothing
    assert claimed.claim == 1
    assert intent.status is BeginStatus.BEGUN
    assert settled.status is BeginStatus.BEGUN


async def test_next_due_in_is_the_earliest_due_or_lease_end_on_redis_clock(redis: Redis) -> None:
    # Given no ticket, then tickets due in 30 s and 10 s (the loop sleeps this long at most)
    store = make_store(redis)
    assert await store.next_due_in() is None
    await store.schedule_retry(ticket("late", due_at=T0_UNIX), delay_s=30)
    await store.schedule_retry(ticket("soon", due_at=T0_UNIX), delay_s=10)
    due_in = await store.next_due_in()
    assert due_in is not None and 9.9 <= due_in <= 10.0

    # When one is due now it is 0; once claimed, its lease end (60 s) is later than 10 s
    await store.schedule_retry(ticket("now", due_at=T0_UNIX), delay_s=0)
    assert await store.next_due_in() == 0.0
    claimed = await store.claim_due_retries(limit=10)
    assert [item.ticket_id for item in claimed] == ["now"]
    due_in = await store.next_due_in()
    assert due_in is not None and 9.8 <= due_in <= 10.0
