"""Filtered reads of the dead-letter queues and their indexes, on a real redis-server.

The invariant every test checks after its writes, trims and purges: each stream id of a queue
is in exactly one class index and one namespace index of that queue, no index names an id the
stream lacks, and the queue's registry names exactly the index keys that exist.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from tests.integration.conftest import CLUSTER, SETTINGS, make_store
from tests.integration.test_sink import letter, ticket
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.purge import DeadLetterPurger
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.adapters.redis.store import RedisStore
from watcher.core.dlq_filter import DeadLetterFilter, parse_cursor
from watcher.core.model import DeadLetter, FailureClass, JobRef, OwnerRef

pytestmark = pytest.mark.redis

CLASSES = (FailureClass.OOM_KILLED, FailureClass.APP_ERROR, FailureClass.NODE_LOST)


def varied(i: int, queue: str = "batch") -> DeadLetter:
    return replace(
        letter(f"u{i}", queue=queue),
        job=JobRef(namespace=f"ns{i % 4}", name=f"job-{i}", uid=f"u{i}"),
        failure_class=CLASSES[i % 3],
    )


async def write_all(store: RedisStore, letters: list[DeadLetter], width: int = 50) -> list[str]:
    refs: list[str] = []
    for i in range(0, len(letters), width):
        results = await asyncio.gather(*(store.dead_letter(x) for x in letters[i : i + width]))
        refs += [r.ref for r in results]
    return refs


async def assert_indexes_consistent(redis: Redis, keys: Keys, queue: str) -> set[str]:
    """The invariant of the module docstring; returns the stream's ids."""
    ids: set[str] = set()
    start = "-"
    while True:  # in pages: one XRANGE of 10,000 entries timed out on a loaded CI machine
        page = await redis.xrange(keys.dlq(queue), min=start, count=1000)
        ids |= {sid.decode() for sid, _ in page}
        if len(page) < 1000:
            break
        start = "(" + page[-1][0].decode()
    registry = {m.decode() for m in await redis.smembers(keys.dlq_indexes(queue))}
    prefix = keys.dlq_indexes(queue) + ":"
    existing = {k.decode() async for k in redis.scan_iter(match=prefix + "*")}
    assert registry == existing
    seen: dict[str, list[str]] = {"class": [], "ns": []}
    for key in registry:
        kind = key.removeprefix(prefix).partition(":")[0]
        members = [m.decode() for m in await redis.zrange(key, 0, -1)]
        seen[kind] += members
    for kind, members in seen.items():
        assert sorted(members) == sorted(ids), kind
    return ids


async def test_a_class_filter_reads_only_the_index_members(
    redis: Redis, store: RedisStore, queries: DeadLetterQueries, keys: Keys
) -> None:
    # Given 10,000 dead letters of which 10 are image-pull failures in namespace "rare"
    store = make_store(redis, stream_maxlen=20_000)
    many = [letter(f"m{i}") for i in range(10_000)]
    for i in range(0, 10_000, 1000):
        many[i] = replace(
            many[i],
            failure_class=FailureClass.IMAGE_PULL,
            job=JobRef("rare", f"rare-{i}", f"m{i}"),
        )
    await write_all(store, many, width=40)

    # When listing by class, then by namespace
    by_class = await queries.select(
        DeadLetterFilter(failure_class=FailureClass.IMAGE_PULL), limit=100
    )
    by_ns = await queries.select(DeadLetterFilter(namespace="rare"), limit=100)
    by_job = await queries.select(DeadLetterFilter(job="rare-"), limit=100)

    # Then 10 entries each, and only those 10 were read from the stream (the job substring
    # has no index: it reads all 10,000)
    assert sorted(letter.job.name for _, letter in by_class.entries) == sorted(
        f"rare-{i}" for i in range(0, 10_000, 1000)
    )
    assert (by_class.read, by_ns.read) == (10, 10)
    assert [e for e, _ in by_ns.entries] == [e for e, _ in by_class.entries]
    assert (len(by_job.entries), by_job.read) == (10, 10_000)
    await assert_indexes_consistent(redis, keys, "batch")


async def test_indexes_lose_exactly_the_trimmed_entries(
    redis: Redis, keys: Keys, small_stream_nodes: None
) -> None:
    # Given a queue capped at 40 entries (trimmed in nodes of small_stream_nodes' size)
    store = make_store(redis, stream_maxlen=40)
    refs = await write_all(store, [varied(i) for i in range(300)], width=1)

    # Then the stream was trimmed, and the indexes hold exactly what the stream holds
    ids = await assert_indexes_consistent(redis, keys, "batch")
    assert 40 <= len(ids) < 300
    assert ids == {r.partition("/")[2] for r in refs[-len(ids) :]}


async def test_a_queue_trimmed_by_age_keeps_indexes_of_what_is_left(
    redis: Redis, keys: Keys, small_stream_nodes: None
) -> None:
    # Given 8 entries (two whole stream nodes of 4), then one written with an age cap that
    # removes everything before it
    await write_all(make_store(redis), [varied(i) for i in range(8)], width=1)
    await asyncio.sleep(0.01)
    aged = make_store(redis, stream_max_age_s=0.001)
    last = await aged.dead_letter(varied(8))

    # Then the indexes kept only what the stream kept: the last entry
    ids = await assert_indexes_consistent(redis, keys, "batch")
    assert ids == {last.ref.partition("/")[2]}


async def test_an_abandoned_retry_is_indexed_like_a_dead_letter(
    redis: Redis, store: RedisStore, queries: DeadLetterQueries, keys: Keys
) -> None:
    await store.schedule_retry(ticket("t1"))
    [claimed] = await store.claim_due_retries(limit=1)
    written = await store.abandon_retry(
        claimed.ticket_id, replace(letter("t1"), failure_class=FailureClass.NODE_LOST)
    )
    assert written is not None
    page = await queries.select(DeadLetterFilter(failure_class=FailureClass.NODE_LOST), limit=5)
    assert [e for e, _ in page.entries] == [written.ref]
    await assert_indexes_consistent(redis, keys, "batch")


async def test_purge_removes_entries_from_stream_and_indexes(
    redis: Redis, store: RedisStore, queries: DeadLetterQueries, keys: Keys
) -> None:
    refs = await write_all(store, [varied(i) for i in range(30)])
    purger = DeadLetterPurger(redis, SETTINGS, cluster_name=CLUSTER)
    gone = [r.partition("/")[2] for r in refs[::3]]

    first = await purger.purge("batch", gone)
    again = await purger.purge("batch", gone)

    assert (first.deleted, first.missing, again.deleted, again.missing) == (10, 0, 0, 10)
    ids = await assert_indexes_consistent(redis, keys, "batch")
    assert ids == {r.partition("/")[2] for r in refs} - set(gone)
    # Purging all of it leaves no index keys behind
    await purger.purge("batch", sorted(ids))
    assert await assert_indexes_consistent(redis, keys, "batch") == set()
    assert await redis.exists(keys.dlq_indexes("batch")) == 0


@pytest.mark.parametrize(
    "flt",
    [
        DeadLetterFilter(),
        DeadLetterFilter(failure_class=FailureClass.APP_ERROR),
        DeadLetterFilter(namespace="ns1"),
        DeadLetterFilter(failure_class=FailureClass.APP_ERROR, namespace="ns1"),
        DeadLetterFilter(queue="etl", job="job-1"),
        DeadLetterFilter(owner=("CronJob", "nightly")),
    ],
)
async def test_pages_cover_every_match_once_in_order(
    redis: Redis, store: RedisStore, queries: DeadLetterQueries, flt: DeadLetterFilter
) -> None:
    # Given entries in two queues, many in the same ms (ids "<ms>-0", "<ms>-1", ..., "<ms>-10"
    # sort differently as strings), some owned by a CronJob
    letters = [varied(i, queue="batch" if i % 2 else "etl") for i in range(60)]
    letters = [
        replace(x, owner=OwnerRef("CronJob", "nightly", "c1")) if i % 5 == 0 else x
        for i, x in enumerate(letters)
    ]
    await write_all(store, letters)
    now = await queries.now_ms()
    everything = await queries.select(DeadLetterFilter(), limit=1000, now_ms=now)
    expected = [
        e
        for e, x in everything.entries
        if flt.matches(x, int(e.rpartition("/")[2].split("-")[0]), now)
    ]

    # When paging 4 at a time
    got: list[str] = []
    after = None
    while True:
        page = await queries.select(flt, limit=4, after=after, now_ms=now)
        got += [e for e, _ in page.entries]
        if page.next_after is None:
            break
        after = parse_cursor(str(page.next_after))

    # Then every match once, in the order of the unfiltered listing
    assert expected
    assert got == expected
    assert [e for e, _ in everything.entries] == [
        e for e, _ in await queries.list_dead_letters(None, count=1000)
    ]


async def test_time_bounds_select_by_stream_id(
    redis: Redis, store: RedisStore, queries: DeadLetterQueries
) -> None:
    old = await write_all(store, [varied(i) for i in range(6)])
    await asyncio.sleep(0.05)
    boundary = await queries.now_ms()
    await asyncio.sleep(0.05)
    new = await write_all(store, [varied(i) for i in range(6, 12)])
    now = await queries.now_ms()
    age_s = (now - boundary) / 1000

    older = await queries.select(DeadLetterFilter(older_than_s=age_s), limit=100, now_ms=now)
    newer = await queries.select(DeadLetterFilter(newer_than_s=age_s), limit=100, now_ms=now)
    newer_oom = await queries.select(
        DeadLetterFilter(newer_than_s=age_s, failure_class=FailureClass.OOM_KILLED),
        limit=100,
        now_ms=now,
    )

    # (concurrent writes land in any order: compared as sets)
    assert {e for e, _ in older.entries} == set(old)
    assert {e for e, _ in newer.entries} == set(new)
    assert {e for e, _ in newer_oom.entries} == {new[0], new[3]}
    assert newer_oom.read == 2


async def test_stats_by_queue_class_and_namespace(
    redis: Redis, store: RedisStore, queries: DeadLetterQueries
) -> None:
    await write_all(store, [varied(i) for i in range(9)] + [varied(9, queue="etl")])
    now = await queries.now_ms()
    rows = {
        (s.by, s.name): (s.depth, s.inflow_1h) for s in await queries.stats(queue=None, now_ms=now)
    }
    assert rows[("queue", "batch")] == (9, 9)
    assert rows[("queue", "etl")] == (1, 1)
    assert rows[("class", "oom_killed")] == (4, 4)  # 0, 3, 6, 9
    assert rows[("namespace", "ns1")] == (3, 3)  # 1, 5, 9
    later = {(s.by, s.name): s for s in await queries.stats(queue="batch", now_ms=now + 7_200_000)}
    assert later[("queue", "batch")].inflow_1h == 0
    assert later[("class", "app_error")].oldest_age_s == pytest.approx(7200, abs=5)
    assert ("queue", "etl") not in later


async def test_follow_yields_new_matching_entries(
    redis: Redis, store: RedisStore, queries: DeadLetterQueries
) -> None:
    await store.dead_letter(varied(0))
    since = await queries.now_ms()
    seen: list[str] = []

    async def watch() -> None:
        async for found in queries.follow(
            DeadLetterFilter(failure_class=FailureClass.APP_ERROR), since_ms=since
        ):
            assert isinstance(found.decoded, tuple)
            seen.append(found.decoded[1].job.name)
            if len(seen) == 3:
                return

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.1)
    await write_all(store, [varied(i) for i in range(1, 5)], width=1)
    await store.dead_letter(varied(7, queue="fresh"))
    await asyncio.wait_for(task, 10)
    # (job-7 in a queue created after the watch began)
    assert seen == ["job-1", "job-4", "job-7"]


async def test_a_filtered_list_of_a_queue_without_indexes_is_empty_not_an_error(
    queries: DeadLetterQueries,
) -> None:
    page = await queries.select(DeadLetterFilter(queue="none", namespace="x"), limit=5)
    assert (page.entries, page.corrupt, page.next_after, page.read) == ([], [], None, 0)


async def test_a_junk_index_member_is_reported_not_fatal(
    redis: Redis, store: RedisStore, queries: DeadLetterQueries, keys: Keys
) -> None:
    # Given a real entry and, written by someone else, members of its index that name nothing
    [ref] = await write_all(store, [varied(1)])
    index = keys.dlq_class_index("batch", "app_error")
    await redis.zadd(index, {"not-an-id": 1, "9-9": 9})

    page = await queries.select(DeadLetterFilter(failure_class=FailureClass.APP_ERROR), limit=10)

    # Then the entry is listed, the junk is one corrupt record, the dangling id is skipped
    assert [e for e, _ in page.entries] == [ref]
    assert [(c.entry_id, c.error) for c in page.corrupt] == [
        (f"{index}:not-an-id", "index member is not a stream id, skipped")
    ]
