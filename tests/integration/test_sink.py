"""RedisStore and DeadLetterQueries against a real redis-server.

Exactly-once writes, retry claims, stream trimming, the CLI's reads, corrupt data, failures.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.typing import EncodableT, FieldT

from devtools.devcluster.redis_server import RedisServer
from tests.integration.conftest import (
    CLUSTER,
    SETTINGS,
    ClientFactory,
    make_queries,
    make_redis,
    make_store,
    redis_now,
    travel,
)
from watcher.adapters.redis import codec
from watcher.adapters.redis.codec import CorruptEntry
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.adapters.redis.store import RedisStore
from watcher.core.errors import SinkError
from watcher.core.lineage import Lineage
from watcher.core.model import (
    Action,
    AttemptRecord,
    BeginStatus,
    DeadLetter,
    FailureClass,
    JobRef,
    OwnerRef,
    RetryTicket,
    WriteResult,
)

pytestmark = pytest.mark.redis

T0 = 1_700_000_000.0
"""A fixed time for the records' own timestamps. Due and lease times are Redis's clock: tests
move it on with `travel` instead of sleeping."""


def letter(uid: str, queue: str = "batch", **changes: object) -> DeadLetter:
    base = DeadLetter(
        queue=queue,
        job=JobRef(namespace="ns", name=f"job-{uid}", uid=uid),
        failure_class=FailureClass.OOM_KILLED,
        reason="container worker was OOM-killed",
        attempts=3,
        failed_at=T0,
        cluster="it",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def ticket(uid: str, due_at: float = T0, attempt: int = 2) -> RetryTicket:
    return RetryTicket(
        job=JobRef(namespace="ns", name=f"job-{uid}", uid=uid),
        attempt=attempt,
        due_at=due_at,
        failure_class=FailureClass.NODE_LOST,
        reason="node n1 went NotReady",
        manifest={"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"job-{uid}"}},
        avoid_node="n1",
    )


FULL_LETTER = DeadLetter(
    queue="etl/nightly",
    job=JobRef(namespace="data", name="load-2024", uid="0b9c-uid"),
    failure_class=FailureClass.APP_ERROR,
    reason="exit code 3 — «schema mismatch»",
    attempts=4,
    failed_at=1_700_000_123.456789,
    cluster="prod-eu",
    evidence=("pod load-2024-x: exitCode=3", "event BackoffLimitExceeded"),
    owner=OwnerRef(kind="CronJob", name="load", uid="cj-uid"),
    manifest={
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {"backoffLimit": 0, "template": {"spec": {"containers": [{"name": "w"}]}}},
        "ratio": 0.1,
        "none": None,
        "flag": True,
    },
    history=(
        AttemptRecord(1, "load-2024-a", "uid-a", FailureClass.NODE_LOST, "node gone", 1.5),
        AttemptRecord(2, "load-2024-b", "uid-b", FailureClass.APP_ERROR, "exit 3", 2.0),
    ),
    report={"pods": [{"name": "load-2024-x", "exitCode": 3}], "events": []},
)


async def stream_len(redis: Redis, keys: Keys, queue: str = "batch") -> int:
    return int(await redis.xlen(keys.dlq(queue)))


async def timed(call: Awaitable[object]) -> float:
    """Await `call`, expecting SinkError; return how long it took."""
    start = time.monotonic()
    with pytest.raises(SinkError):
        await call
    return time.monotonic() - start


# --- exactly once ---------------------------------------------------------------------------


async def test_fifty_concurrent_writers_for_one_uid_write_one_entry(
    redis: Redis, keys: Keys, make_client: ClientFactory
) -> None:
    # Given 50 writers spread over 5 separate connection pools (as 5 daemons would be)
    clients = [await make_client() for _ in range(5)]
    stores = [make_store(clients[i % 5]) for i in range(50)]

    # When all of them dead-letter the same job uid at once
    results = await asyncio.gather(*(s.dead_letter(letter("uid-1")) for s in stores))

    # Then exactly one wrote, the rest report it as already handled with the same entry id
    written = [r for r in results if r.written]
    assert len(written) == 1
    assert sum(r.already_handled for r in results) == 49
    assert {(r.action, r.ref) for r in results} == {(Action.DEAD_LETTER, written[0].ref)}
    assert written[0].ref.startswith("batch/")
    assert await stream_len(redis, keys) == 1


async def test_dead_letter_and_retry_racing_for_one_uid_leave_one_outcome(
    redis: Redis, keys: Keys, make_client: ClientFactory
) -> None:
    # Given two daemons that disagree: one dead-letters a job, the other schedules a retry
    clients = [await make_client() for _ in range(4)]
    stores = [make_store(c) for c in clients]

    # When 20 of each race for the same uid
    calls = [stores[i % 4].dead_letter(letter("uid-r")) for i in range(20)]
    calls += [stores[i % 4].schedule_retry(ticket("uid-r")) for i in range(20)]
    results = await asyncio.gather(*calls)

    # Then one outcome won, everyone agrees on it, and only that one was stored
    assert sum(r.written for r in results) == 1
    assert len({(r.action, r.ref) for r in results}) == 1
    store = make_store(redis)
    stored = await stream_len(redis, keys) + await store.pending_retries()
    assert stored == 1


async def test_replayed_dead_letter_after_client_restart_is_not_doubled(
    redis_server: RedisServer, keys: Keys, make_client: ClientFactory, redis: Redis
) -> None:
    # Given a dead letter written by one daemon, whose client is then closed
    first_client = make_redis(redis_server.port)
    first = await make_store(first_client).dead_letter(letter("uid-2"))
    await first_client.aclose()

    # When a restarted daemon (new client, new store, scripts not yet loaded) replays the event
    second = await make_store(await make_client()).dead_letter(letter("uid-2"))

    # Then nothing new is written and the earlier entry is reported
    assert first.written and second.already_handled
    assert second.ref == first.ref
    assert await stream_len(redis, keys) == 1


async def test_replay_after_redis_restart_with_aof_is_not_doubled(
    private_server: Callable[..., RedisServer], keys: Keys
) -> None:
    # Given a persistent Redis holding one dead letter and one retry ticket
    server = private_server(persistent=True)
    client = make_redis(server.port)
    try:
        store = make_store(client)
        first = await store.dead_letter(letter("uid-p"))
        await store.schedule_retry(ticket("uid-t"))

        # When Redis restarts (script cache gone, data reloaded from the AOF) and both replay
        server.restart()
        again = await store.dead_letter(letter("uid-p"))
        again_ticket = await store.schedule_retry(ticket("uid-t"))

        # Then both are recognised as already handled and nothing is doubled
        assert again.already_handled and again.ref == first.ref
        assert again_ticket.already_handled and again_ticket.ref == "uid-t"
        assert await client.xlen(keys.dlq("batch")) == 1
        assert await store.pending_retries() == 1
    finally:
        await client.aclose()


async def test_scheduled_retry_is_stored_once_and_blocks_a_later_dead_letter(
    store: RedisStore, redis: Redis, keys: Keys
) -> None:
    # Given a retry scheduled for a job uid
    first = await store.schedule_retry(ticket("uid-3"))

    # When the same ticket is replayed and then a dead letter for that uid arrives
    due = await redis.zscore(keys.retry_due, "uid-3")
    replay = await store.schedule_retry(ticket("uid-3", due_at=T0 + 99), delay_s=99)
    late = await store.dead_letter(letter("uid-3"))

    # Then only the first ticket exists and both later calls name it
    assert first == WriteResult(written=True, action=Action.RETRY, ref="uid-3")
    assert replay.already_handled and late.already_handled
    assert (late.action, late.ref) == (Action.RETRY, "uid-3")
    assert await redis.zrange(keys.retry_due, 0, -1, withscores=True) == [(b"uid-3", due)]
    assert await stream_len(redis, keys) == 0


async def test_outcome_markers_have_no_ttl_and_are_indexed_by_namespace(
    redis: Redis, keys: Keys
) -> None:
    # Given a store whose forgotten markers expire after one hour (before, every marker did)
    store = make_store(redis, outcome_ttl_s=3600)

    # When a dead letter and a ticket are written
    await store.dead_letter(letter("uid-4"))
    await store.schedule_retry(ticket("uid-5"))

    # Then neither marker has a TTL (kept while the Job may be in the API); both are indexed
    # with their namespace, in write order; and they say what happened
    for uid in ("uid-4", "uid-5"):
        assert await redis.ttl(keys.outcome(uid)) == -1
    assert await redis.zrange(keys.outcome_index, 0, -1, withscores=True) == [
        (b"ns/uid-4", 1.0),
        (b"ns/uid-5", 2.0),
    ]
    marker = await redis.get(keys.outcome("uid-4"))
    assert isinstance(marker, bytes) and marker.startswith(b"dead_letter:batch/")
    assert await redis.get(keys.outcome("uid-5")) == b"retry:uid-5"


async def test_retry_ticket_survives_expired_marker_without_duplicate(
    store: RedisStore, redis: Redis, keys: Keys
) -> None:
    # Given a ticket still pending whose outcome marker has expired (or was evicted)
    await store.schedule_retry(ticket("uid-6"))
    due = await redis.zscore(keys.retry_due, "uid-6")
    await redis.delete(keys.outcome("uid-6"))

    # When the ticket is scheduled again
    result = await store.schedule_retry(ticket("uid-6", due_at=T0 + 50), delay_s=50)

    # Then nothing is rewritten and the marker is restored
    assert result.already_handled and result.ref == "uid-6"
    assert await redis.zscore(keys.retry_due, "uid-6") == due
    assert await redis.get(keys.outcome("uid-6")) == b"retry:uid-6"
    # And the restored marker is kept for good (no TTL) and indexed
    assert await redis.ttl(keys.outcome("uid-6")) == -1
    assert await redis.zscore(keys.outcome_index, "ns/uid-6") is not None


async def test_every_field_round_trips_through_redis(
    store: RedisStore, queries: DeadLetterQueries
) -> None:
    # Given a dead letter using every field, nested values and non-ASCII text
    # When it is written and read back by id
    result = await store.dead_letter(FULL_LETTER)
    got = await queries.get_dead_letter(result.ref)

    # Then the value read is equal to the value written
    assert got == (result.ref, FULL_LETTER)


# --- retry claims -----------------------------------------------------------------------------


async def test_two_concurrent_claim_loops_claim_each_of_200_tickets_once(
    redis: Redis, keys: Keys, make_client: ClientFactory
) -> None:
    # Given 200 due tickets and two retry loops on separate connections
    store = make_store(redis)
    for i in range(200):
        await store.schedule_retry(ticket(f"t{i:03}", T0 - i), delay_s=-i)
    loops = [make_store(await make_client(), retry_claim_lease_s=60) for _ in range(2)]

    async def claim_all(loop_store: RedisStore) -> list[str]:
        got: list[str] = []
        while batch := await loop_store.claim_due_retries(limit=7):
            got += [c.ticket_id for c in batch]
            await asyncio.sleep(0)
        return got

    # When both loops claim until nothing is due
    a, b = await asyncio.gather(*(claim_all(s) for s in loops))

    # Then every ticket was claimed exactly once, and both loops did work
    assert sorted(a + b) == sorted(f"t{i:03}" for i in range(200))
    assert not set(a) & set(b)
    assert a and b
    assert await redis.zcard(keys.retry_inflight) == 200
    assert await store.pending_retries() == 200


async def test_claim_returns_only_due_tickets_earliest_first_up_to_limit(redis: Redis) -> None:
    # Given tickets due in the past, now, and the future, in a store leasing claims for 30 s
    store = make_store(redis, retry_claim_lease_s=30)
    for uid, delay in (("late", 60), ("b", -10), ("a", -20), ("now", 0)):
        await store.schedule_retry(ticket(uid, T0 + delay), delay_s=delay)

    # When claiming with a limit of 2, then again
    before = await redis_now(redis)
    first = await store.claim_due_retries(limit=2)
    second = await store.claim_due_retries(limit=2)
    third = await store.claim_due_retries(limit=2)
    after = await redis_now(redis)

    # Then due tickets come earliest first with their lease, and the future one stays put
    assert [c.ticket_id for c in first] == ["a", "b"]
    assert [c.ticket_id for c in second] == ["now"]
    assert third == []
    assert first[0].ticket == ticket("a", T0 - 20)
    assert before + 30 - 0.002 <= first[0].lease_until <= after + 30 + 0.002
    # And each claim has its number, the fence of what it may do with the ticket
    assert [c.claim for c in (*first, *second)] == [1, 1, 1]


async def test_claimed_ticket_whose_lease_expires_is_claimed_again(
    redis: Redis, keys: Keys
) -> None:
    # Given a ticket claimed for 30 s by a daemon that then crashed (never acked nor released)
    store = make_store(redis, retry_claim_lease_s=30)
    await store.schedule_retry(ticket("crash"))
    (claimed,) = await store.claim_due_retries(limit=10)

    # When another loop claims before and after the lease ran out (on Redis's clock)
    await travel(redis, keys, 29)
    during = await store.claim_due_retries(limit=10)
    await travel(redis, keys, 2)
    after = await store.claim_due_retries(limit=10)

    # Then it is not handed out while leased, and is handed out again once the lease expired,
    # under a new claim number that fences the first holder out
    assert during == []
    assert [c.ticket_id for c in after] == ["crash"]
    assert after[0].ticket == claimed.ticket
    assert (claimed.claim, after[0].claim) == (1, 2)
    assert await store.release_retry("crash", delay_s=0, claim=claimed.claim) is False
    assert await store.pending_retries() == 1


async def test_abandoned_ticket_becomes_one_dead_letter_in_its_place(
    redis: Redis, keys: Keys
) -> None:
    # Given a claimed ticket whose Job can never be created
    store = make_store(redis, retry_claim_lease_s=5)
    await store.schedule_retry(ticket("stuck"))
    [claimed] = await store.claim_due_retries(limit=1)
    instead = letter("stuck", reason="retry 2 could not be created: namespace gone")

    # When two replicas abandon it (the second after its lease ran out, say)
    first = await store.abandon_retry(claimed.ticket_id, instead)
    second = await store.abandon_retry(claimed.ticket_id, instead)

    # Then exactly one dead letter replaces it, and the Job's marker names that dead letter
    assert first is not None and first.written and second is None
    entries = await make_queries(redis).list_dead_letters(None, count=10)
    assert [lt.reason for _, lt in entries] == ["retry 2 could not be created: namespace gone"]
    assert await redis.get(keys.outcome("stuck")) == f"dead_letter:{first.ref}".encode()
    assert await store.pending_retries() == 0
    assert await store.claim_due_retries(limit=10) == []


async def test_acked_ticket_cannot_be_abandoned(redis: Redis) -> None:
    store = make_store(redis, retry_claim_lease_s=5)
    await store.schedule_retry(ticket("done"))
    await store.claim_due_retries(limit=1)
    await store.settle_created("done", claim=0, job=None)
    assert await store.abandon_retry("done", letter("done")) is None
    assert list(await make_queries(redis).list_dead_letters(None, count=10)) == []


async def test_acked_ticket_is_gone_for_good(redis: Redis, keys: Keys) -> None:
    # Given a claimed ticket
    store = make_store(redis, retry_claim_lease_s=5)
    await store.schedule_retry(ticket("done"))
    [claimed] = await store.claim_due_retries(limit=1)

    # When it is acked (twice: the second is a no-op)
    first = await store.settle_created("done", claim=claimed.claim, job=None)
    second = await store.settle_created("done", claim=claimed.claim, job=None)

    # Then nothing is pending, no later claim returns it, and it cannot be released back
    assert (first.status, second.status) == (BeginStatus.BEGUN, BeginStatus.SETTLED)
    assert await store.pending_retries() == 0
    await travel(redis, keys, 3600)
    assert await store.claim_due_retries(limit=10) == []
    assert await store.release_retry("done", delay_s=0) is False
    assert not await redis.exists(keys.retry_tickets)


async def test_released_ticket_is_due_again_at_the_new_time(redis: Redis, keys: Keys) -> None:
    # Given a claimed ticket whose re-creation failed (the API was down)
    store = make_store(redis, retry_claim_lease_s=300)
    await store.schedule_retry(ticket("api-down"))
    [claimed] = await store.claim_due_retries(limit=1)

    # When it is released to be due 60 s later
    assert await store.release_retry("api-down", delay_s=60, claim=claimed.claim) is True

    # Then it is not claimable before that time, and is claimable after it
    await travel(redis, keys, 59)
    assert await store.claim_due_retries(limit=1) == []
    await travel(redis, keys, 1.01)
    again = await store.claim_due_retries(limit=1)
    assert [c.ticket_id for c in again] == ["api-down"]


# --- streams: trimming and reads --------------------------------------------------------------


@pytest.mark.usefixtures("small_stream_nodes")
async def test_stream_is_capped_at_about_max_len(redis: Redis, keys: Keys) -> None:
    # Given a store capping each queue at ~10 entries
    store, queries = make_store(redis, stream_maxlen=10), make_queries(redis)

    # When 50 different jobs are dead-lettered
    refs = [(await store.dead_letter(letter(f"cap-{i}"))).ref for i in range(50)]

    # Then the stream holds the newest ~10 (trimmed in whole nodes of 4) and the oldest are gone
    assert 10 <= await stream_len(redis, keys) < 14
    assert await queries.get_dead_letter(refs[-1]) is not None
    assert await queries.get_dead_letter(refs[0]) is None
    # And a replay of a trimmed job does not come back: its outcome marker outlives the entry
    assert (await store.dead_letter(letter("cap-0"))).already_handled


@pytest.mark.usefixtures("small_stream_nodes")
async def test_each_write_reports_exactly_the_entries_its_trim_removed(
    redis: Redis, keys: Keys
) -> None:
    # Given a store capping each queue at ~10 entries (approximate: whole nodes of 4)
    store = make_store(redis, stream_maxlen=10)

    # When 50 different jobs are dead-lettered, the stream's length read around each write
    reported, removed = [], []
    for i in range(50):
        before = await stream_len(redis, keys)
        result = await store.dead_letter(letter(f"trim-{i}"))
        reported.append(result.trimmed)
        removed.append(before + 1 - await stream_len(redis, keys))

    # Then every write reports exactly what its trim removed, the total is everything written
    # beyond what the stream holds, and trims did happen (whole nodes at a time)
    assert reported == removed
    assert sum(reported) == 50 - await stream_len(redis, keys)
    assert sum(reported) >= 36 and set(reported) <= {0, 4}
    # And a replay reports nothing trimmed (it writes nothing)
    assert (await store.dead_letter(letter("trim-49"))).trimmed == 0


@pytest.mark.usefixtures("small_stream_nodes")
async def test_entries_older_than_max_age_are_trimmed(redis: Redis, keys: Keys) -> None:
    # Given a queue holding four entries written long ago (stream ids in 2001)
    old = codec.encode_dead_letter(letter("old"))
    for i in range(4):
        await redis.xadd(keys.dlq("batch"), {STREAM_FIELD: old}, id=f"1000000000000-{i}")
    store = make_store(redis, stream_max_age_s=86400)

    # When a new dead letter is written to that queue
    new = await store.dead_letter(letter("new"))

    # Then the old entries are trimmed by age and the new one remains
    listed = await make_queries(redis).list_dead_letters("batch", count=10)
    assert [entry_id for entry_id, _ in listed] == [new.ref]
    # And the write reports the four it trimmed
    assert new.trimmed == 4


async def test_list_get_depths_and_ages_across_queues(
    store: RedisStore, queries: DeadLetterQueries
) -> None:
    # Given three dead letters in two queues, written in order a, b, c in different
    # milliseconds (stream ids order entries of different queues only to the millisecond)
    a = await store.dead_letter(letter("a", queue="batch"))
    await asyncio.sleep(0.002)
    b = await store.dead_letter(letter("b", queue="etl"))
    await asyncio.sleep(0.002)
    c = await store.dead_letter(letter("c", queue="batch"))
    before = time.time()

    # When listing everything, one queue, and a page after the first entry
    everything = await queries.list_dead_letters(None, count=10)
    batch_only = await queries.list_dead_letters("batch", count=10)
    first_page = await queries.list_dead_letters(None, count=2)
    after_a = await queries.list_dead_letters(None, count=10, start="(" + a.ref.split("/")[1])

    # Then entries come merged by time with "<queue>/<stream-id>" ids, and nothing is corrupt
    assert [e for e, _ in everything] == [a.ref, b.ref, c.ref]
    assert [ltr.job.uid for _, ltr in everything] == ["a", "b", "c"]
    assert [e for e, _ in batch_only] == [a.ref, c.ref]
    assert [e for e, _ in first_page] == [a.ref, b.ref]
    assert [e for e, _ in after_a] == [b.ref, c.ref]
    assert everything.corrupt == []

    # And single entries are found by full id or bare stream id, and absent ones are None
    assert await queries.get_dead_letter(b.ref) == (b.ref, letter("b", queue="etl"))
    assert await queries.get_dead_letter(b.ref.split("/")[1]) == (b.ref, letter("b", queue="etl"))
    assert await queries.get_dead_letter("batch/1-0") is None
    assert await queries.get_dead_letter("nosuchqueue/1-0") is None
    with pytest.raises(ValueError, match="not a dead-letter id"):
        await queries.get_dead_letter("batch/latest")

    # And depths and oldest ages are per queue
    assert await store.queue_depths() == {"batch": 2, "etl": 1}
    ages = await store.oldest_age_s(before + 100)
    assert set(ages) == {"batch", "etl"}
    assert 99 <= ages["batch"] <= 102 and 99 <= ages["etl"] <= 102
    assert ages["batch"] >= ages["etl"]


async def test_reads_on_an_empty_store(store: RedisStore, queries: DeadLetterQueries) -> None:
    # Given nothing written
    # When reading / Then everything is empty rather than an error
    assert await queries.list_dead_letters(None, count=5) == []
    assert await queries.get_dead_letter("1-0") is None
    assert await queries.queues() == []
    assert await store.queue_depths() == {}
    assert await store.oldest_age_s(T0) == {}
    assert await store.pending_retries() == 0
    assert await store.claim_due_retries(limit=5) == []


# --- corrupt data -----------------------------------------------------------------------------

CORRUPT_ENTRIES: dict[str, tuple[dict[FieldT, EncodableT], str]] = {
    "not json": ({STREAM_FIELD: b"\xff\xfenot json"}, "not valid UTF-8 JSON"),
    "wrong field": ({"payload": b"{}"}, "no 'data' field"),
    "future version": (
        {STREAM_FIELD: json.dumps({"v": 2, "kind": "dead_letter", "data": {}})},
        "unsupported envelope version 2",
    ),
    "missing uid": (
        {STREAM_FIELD: codec.encode_dead_letter(letter("x")).replace(b'"uid":"x"', b'"id":"x"')},
        "dead letter: missing field 'job.uid'",
    ),
    "bad class": (
        {STREAM_FIELD: codec.encode_dead_letter(letter("y")).replace(b"oom_killed", b"gremlins")},
        "unknown failure class 'gremlins'",
    ),
}


async def test_corrupt_stream_entries_are_reported_not_fatal(
    store: RedisStore, queries: DeadLetterQueries, redis: Redis, keys: Keys
) -> None:
    # Given a queue where good entries surround entries written by hand with garbage
    good_1 = await store.dead_letter(letter("good-1"))
    bad_ids = {}
    for name, (fields, _) in CORRUPT_ENTRIES.items():
        stream_id = await redis.xadd(keys.dlq("batch"), fields)
        assert isinstance(stream_id, bytes)
        bad_ids[name] = f"batch/{stream_id.decode()}"
    good_2 = await store.dead_letter(letter("good-2"))

    # When the queue is listed
    listed = await queries.list_dead_letters(None, count=100)

    # Then the good entries are returned and each bad one is reported with a clear reason
    assert [e for e, _ in listed] == [good_1.ref, good_2.ref]
    reported = {c.entry_id: c.error for c in listed.corrupt}
    assert set(reported) == set(bad_ids.values())
    for name, (_, message) in CORRUPT_ENTRIES.items():
        assert message in reported[bad_ids[name]], name
    assert await store.queue_depths() == {"batch": 2 + len(CORRUPT_ENTRIES)}

    # And asking for one corrupt entry raises CorruptEntry naming it
    with pytest.raises(CorruptEntry, match=bad_ids["future version"]):
        await queries.get_dead_letter(bad_ids["future version"])


async def test_corrupt_retry_ticket_is_quarantined_not_fatal(redis: Redis, keys: Keys) -> None:
    # Given a due ticket whose stored body is garbage, next to a good one
    store = make_store(redis, retry_claim_lease_s=30)
    await store.schedule_retry(ticket("good"))
    await redis.hset(keys.retry_tickets, "bad", b"{oops")
    await redis.zadd(keys.retry_due, {"bad": T0 * 1000})

    # When the retry loop claims
    claimed = await store.claim_due_retries(limit=10)

    # Then it gets the good ticket; the bad one is set aside where an operator can see it
    assert [c.ticket_id for c in claimed] == ["good"]
    assert await store.corrupt_retries() == {"bad": b"{oops"}
    assert await store.pending_retries() == 1
    await travel(redis, keys, 3600)
    later = await store.claim_due_retries(limit=10)
    assert [c.ticket_id for c in later] == ["good"]


# --- Redis failures ---------------------------------------------------------------------------


async def test_stopped_redis_raises_sink_error_quickly(
    private_server: Callable[..., RedisServer],
) -> None:
    # Given a working store and CLI reader whose Redis then stops
    server = private_server()
    client = make_redis(server.port)
    try:
        store, queries = make_store(client, retry_claim_lease_s=1), make_queries(client)
        await store.dead_letter(letter("before"))
        server.stop()

        # When writes and reads are attempted / Then each fails with SinkError within seconds
        assert await timed(store.dead_letter(letter("after"))) < 3
        assert await timed(store.schedule_retry(ticket("after"))) < 3
        assert await timed(store.claim_due_retries(limit=1)) < 3
        assert await timed(queries.list_dead_letters(None, count=1)) < 3
        assert await timed(store.settle_created("x", claim=1, job=None)) < 3
    finally:
        await client.aclose()


async def test_hung_redis_raises_sink_error_within_the_timeouts(
    private_server: Callable[..., RedisServer],
) -> None:
    # Given a Redis that accepts connections but never answers (SIGSTOP)
    server = private_server()
    client = make_redis(server.port)
    try:
        store = make_store(client, operation_timeout_s=2.0)
        await store.pending_retries()
        server.freeze()

        # When a dead letter is written / Then SinkError comes within the store's bound
        elapsed = await timed(store.dead_letter(letter("hung")))
        assert elapsed < 2.5
    finally:
        server.thaw()
        await client.aclose()


# --- construction and layout ------------------------------------------------------------------


async def test_store_and_queries_refuse_a_client_that_decodes_responses(
    redis_server: RedisServer,
) -> None:
    # Given a client with decode_responses=True (it would choke on non-UTF-8 garbage)
    client = Redis(port=redis_server.port, decode_responses=True)
    try:
        # When / Then the store and the CLI reader refuse it up front
        with pytest.raises(ValueError, match="decode_responses=False"):
            RedisStore(client, SETTINGS, cluster_name=CLUSTER)
        with pytest.raises(ValueError, match="decode_responses=False"):
            DeadLetterQueries(client, SETTINGS, cluster_name=CLUSTER)
    finally:
        await client.aclose()


async def test_all_keys_share_one_cluster_slot(store: RedisStore, redis: Redis) -> None:
    # Given every kind of key written
    await store.dead_letter(letter("k1", queue="q1"))
    await store.dead_letter(letter("k2", queue="q2"))
    await store.schedule_retry(ticket("k3"))
    [claimed] = await store.claim_due_retries(limit=1)
    job = JobRef("ns", "job-k3-r2", "uid-k3r2")
    lineage = Lineage(2, ())
    await store.begin_create("k4", claim=1, job=job, lineage=lineage)  # settled: writes nothing
    await store.schedule_retry(ticket("k4"))
    [claimed4] = await store.claim_due_retries(limit=1)
    await store.begin_create("k4", claim=claimed4.claim, job=job, lineage=lineage)
    await store.settle_created("k4", claim=claimed4.claim, job=job)
    await store.begin_create("k3", claim=claimed.claim, job=job, lineage=lineage)
    await redis.hset(store.keys.retry_corrupt, "x", b"x")

    # When their Redis Cluster hash slots are computed
    names = [k async for k in redis.scan_iter(match="kube-dlq-test:*")]
    slots = {key_slot(k) for k in names}

    # Then there are all kinds of keys, in one slot (so every Lua script is cluster-safe):
    # queues, 2 streams, 4 markers, the marker index and its counter, tickets, inflight,
    # corrupt, claims, 2 create records, the finalizer queue, and per queue its class index,
    # namespace index and index registry
    assert len(names) == 22
    assert len(slots) == 1


async def test_server_problems_flags_an_evicting_redis(store: RedisStore, redis: Redis) -> None:
    # Given the test server as installed (noeviction, Redis >= 6.2)
    assert await store.server_problems() == []

    # When it is switched to a policy that evicts keys with a TTL
    await redis.config_set("maxmemory-policy", "volatile-lru")
    try:
        problems = await store.server_problems()
    finally:
        await redis.config_set("maxmemory-policy", "noeviction")

    # Then the store names the setting that breaks exactly-once
    assert len(problems) == 1 and "volatile-lru" in problems[0]
