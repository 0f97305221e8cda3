"""Retry-store calls sharing round trips on a real redis-server (watcher.adapters.redis.coalesce).

Concurrent begin_create / settle_created calls go in one pipeline of the same scripts, and
bulk scheduling pipelines the schedule script; each call's answer, fence refusal and effect
in Redis is what it would have been alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from tests.integration.conftest import SETTINGS, make_store
from tests.integration.test_fencing import snapshot
from tests.integration.test_sink import ticket
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.store import RedisStore
from watcher.core.errors import FencedWrite
from watcher.core.lineage import Lineage
from watcher.core.model import AttemptRecord, BeginStatus, CreateIntent, FailureClass, JobRef

pytestmark = pytest.mark.redis

LINEAGE = Lineage(2, (AttemptRecord(1, "job-x", "x", FailureClass.NODE_LOST, "x", 1.0),))


def _trips(store: RedisStore, script: str) -> int:
    """Round trips that carried a call of `script`."""
    op = {"begin": "begin_create", "settle": "settle_created"}[script]
    return store._fence.round_trips[op]


async def _claimed(store: RedisStore, uids: list[str]) -> dict[str, int]:
    await store.schedule_retries([(ticket(uid), 0.0) for uid in uids])
    batch = await store.claim_due_retries(limit=len(uids))
    return {item.ticket_id: item.claim for item in batch}


async def test_concurrent_begins_and_settles_share_a_round_trip_each_answered_alone(
    redis: Redis, keys: Keys
) -> None:
    # Given eight claimed tickets
    store = make_store(redis)
    uids = [f"t{i}" for i in range(8)]
    claims = await _claimed(store, uids)

    def begin(uid: str, claim: int) -> Awaitable[CreateIntent]:
        job = JobRef("ns", f"job-{uid}-r2", "")
        return store.begin_create(uid, claim=claim, job=job, lineage=LINEAGE)

    # When all begin at once, one with a stale claim number and one for a ticket not stored
    intents = await asyncio.gather(
        *(begin(uid, claims[uid]) for uid in uids[:6]),
        begin("t6", claims["t6"] + 1),
        begin("nowhere", 1),
    )
    # Then one round trip carried them, and each got what it would have got alone
    assert _trips(store, "begin") == 1
    assert [i.status for i in intents] == [BeginStatus.BEGUN] * 6 + [
        BeginStatus.SUPERSEDED,
        BeginStatus.SETTLED,
    ]
    assert len({i.token for i in intents[:6]}) == 6 and all(i.earlier_claims == 0 for i in intents)
    for uid, intent in zip(uids, intents[:6], strict=False):
        assert await redis.hget(keys.retry_create(uid), "token") == intent.token.encode()

    # When the six settle at once with their Jobs' uids
    settled = await asyncio.gather(
        *(
            store.settle_created(uid, claim=claims[uid], job=JobRef("ns", f"job-{uid}-r2", uid))
            for uid in uids[:6]
        )
    )
    # Then in one round trip each ticket left the queue with its uid recorded
    assert _trips(store, "settle") == 1
    assert all(s.status is BeginStatus.BEGUN and s.release_finalizer_now for s in settled)
    assert await redis.hlen(keys.retry_tickets) == 2  # t6 and t7 still pending
    for uid in uids[:6]:
        assert await redis.hget(keys.retry_create(uid), "uid") == uid.encode()
    due = await store.due_finalizers(limit=10)
    assert len(due) == 6
    # And their finalizer records go in one ZREM
    await asyncio.gather(*(store.finalizer_released(job) for job in due))
    assert store._released is not None and store._released.round_trips == 1
    assert await redis.zcard(keys.retry_finalize) == 0


async def test_a_stale_term_is_refused_for_every_call_of_a_shared_round_trip(
    redis: Redis, keys: Keys
) -> None:
    # Given tickets claimed, and a newer leader's write raising the fence to 4
    plain = make_store(redis)
    claims = await _claimed(plain, ["a", "b", "c"])
    await make_store(redis).with_term(lambda: 4).schedule_retry(ticket("newer"))
    before = await snapshot(redis)
    stale = make_store(redis).with_term(lambda: 3)
    # When the old leader begins three creates at once
    results = await asyncio.gather(
        *(
            stale.begin_create(uid, claim=c, job=JobRef("ns", uid, ""), lineage=LINEAGE)
            for uid, c in claims.items()
        ),
        return_exceptions=True,
    )
    # Then each is refused with FencedWrite, and nothing was written
    assert all(isinstance(r, FencedWrite) and r.fence == 4 for r in results), results
    # and each says how many of its round trip were refused (the daemon logs that count)
    assert [r.refused for r in results if isinstance(r, FencedWrite)] == [3, 3, 3]
    assert await snapshot(redis) == before


async def test_batched_calls_load_the_script_again_after_a_script_flush(
    redis: Redis, keys: Keys
) -> None:
    # Given claimed tickets and a server that forgot every script (a restart, SCRIPT FLUSH)
    store = make_store(redis)
    claims = await _claimed(store, ["a", "b"])
    await redis.script_flush()
    # When both begin at once, Then both begin, once each
    intents = await asyncio.gather(
        *(
            store.begin_create(uid, claim=c, job=JobRef("ns", uid, ""), lineage=LINEAGE)
            for uid, c in claims.items()
        )
    )
    assert [i.status for i in intents] == [BeginStatus.BEGUN] * 2
    assert [await redis.hget(keys.retry_create(u), "begins") for u in claims] == [b"1", b"1"]


async def test_bulk_scheduling_stores_what_one_by_one_scheduling_stores(
    redis: Redis, keys: Keys
) -> None:
    # Given the same tickets stored one by one under one cluster name, in bulk under another
    one = make_store(redis)
    bulk = RedisStore(redis, replace(SETTINGS, key_prefix="bulk"), cluster_name="it")
    uids = ["a", "b", "c"]
    singles = [await one.schedule_retry(ticket(uid), delay_s=60) for uid in uids]
    bulks = await bulk.schedule_retries([(ticket(uid), 60.0) for uid in uids])
    # Then each write says the same, and the keys hold the same
    assert singles == bulks and all(r.written for r in bulks)
    other = Keys(prefix="bulk", cluster="it")
    assert await redis.hgetall(keys.retry_tickets) == await redis.hgetall(other.retry_tickets)
    for uid in uids:
        assert await redis.get(keys.outcome(uid)) == await redis.get(other.outcome(uid))
    ones = await redis.zrange(keys.retry_due, 0, -1, withscores=True)
    bulked = await redis.zrange(other.retry_due, 0, -1, withscores=True)
    assert [m for m, _ in ones] == [m for m, _ in bulked]
    assert all(abs(a - b) < 5_000 for (_, a), (_, b) in zip(ones, bulked, strict=True))
    assert await redis.zrange(keys.outcome_index, 0, -1) == await redis.zrange(
        other.outcome_index, 0, -1
    )
    # And storing them again in bulk writes nothing (the outcome markers)
    again = await bulk.schedule_retries([(ticket(uid), 0.0) for uid in uids])
    assert not any(r.written for r in again)


async def test_due_finalizers_reads_redis_clock_and_range_in_one_round_trip(
    redis: Redis, keys: Keys
) -> None:
    # Given one finalizer due now, one in an hour (Redis's clock) and one hand-written member
    store = make_store(redis)
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    await redis.zadd(
        keys.retry_finalize,
        {"ns/due/u1": now_ms - 1000, "ns/later/u2": now_ms + 3_600_000, "garbage": now_ms - 2000},
    )
    await store.due_finalizers(limit=10)  # loads the script; drops the garbage member
    await redis.config_resetstat()
    # When the due ones are read
    due = await store.due_finalizers(limit=10)
    # Then it took one script call (TIME and ZRANGE inside it), and only the due one came back
    assert due == [JobRef("ns", "due", "u1")]
    stats = await redis.info("commandstats")
    called = {name: value["calls"] for name, value in stats.items()}
    assert (called.get("cmdstat_evalsha"), called.get("cmdstat_time")) == (1, 1), called
    assert await redis.zscore(keys.retry_finalize, "garbage") is None
