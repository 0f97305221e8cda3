"""Outcome writes made at once share one pipeline, on a real redis-server, and lose nothing.

The writer handles several failures at once, so their `dead_letter` and `schedule_retry` calls
arrive together; the store sends them as one pipeline of scripts (`Fence.call_batched`,
watcher.adapters.redis.coalesce). Each caller must get what its own call would have given: its
entry written once (or "already handled"), its own error (a refused term, a script error,
Redis gone), and a script Redis no longer has is loaded and run, not lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from devtools.devcluster.redis_server import RedisServer
from tests.integration.conftest import make_redis, make_store
from tests.integration.test_sink import letter, ticket
from watcher.adapters.redis import codec
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.adapters.redis.store import RedisStore
from watcher.core.errors import FencedWrite, SinkError
from watcher.core.model import Action

pytestmark = pytest.mark.redis


def batch_of(store: RedisStore) -> Any:
    return store._fence  # whose call_batched shares round trips, to count its pipelines


async def test_writes_made_at_once_go_in_one_pipeline_each_written_once(
    redis: Redis, keys: Keys
) -> None:
    # Given a store, and ten dead letters and ten retry tickets to write at the same time
    store = make_store(redis)
    letters = [letter(f"dl-{i}") for i in range(10)]
    tickets = [ticket(f"rt-{i}") for i in range(10)]

    # When they are written at once (as the writer does with a batch of failures)
    results = await asyncio.gather(
        *(store.dead_letter(x) for x in letters), *(store.schedule_retry(t) for t in tickets)
    )

    # Then one pipeline carried them, and each caller got its own outcome
    assert batch_of(store).pipelines == 1
    assert [r.written for r in results] == [True] * 20
    assert [r.action for r in results] == [Action.DEAD_LETTER] * 10 + [Action.RETRY] * 10
    entries = await redis.xrange(keys.dlq("batch"))
    refs = [f"batch/{entry_id.decode()}" for entry_id, _ in entries]
    assert [r.ref for r in results[:10]] == refs
    stored = [codec.decode_dead_letter(fields[STREAM_FIELD.encode()]) for _, fields in entries]
    assert [x.job.uid for x in stored] == [x.job.uid for x in letters]
    assert [r.ref for r in results[10:]] == [t.job.uid for t in tickets]
    assert await redis.hlen(keys.retry_tickets) == 10
    for x in letters:
        assert await redis.get(keys.outcome(x.job.uid)) == f"dead_letter:{refs.pop(0)}".encode()


async def test_the_same_job_twice_in_one_pipeline_is_written_once(redis: Redis, keys: Keys) -> None:
    store = make_store(redis)
    first, again, retry = await asyncio.gather(
        store.dead_letter(letter("twice")),
        store.dead_letter(letter("twice")),
        store.schedule_retry(ticket("twice")),
    )
    assert batch_of(store).pipelines == 1
    assert first.written and not again.written and not retry.written
    assert again.ref == retry.ref == first.ref and retry.action is Action.DEAD_LETTER
    assert await redis.xlen(keys.dlq("batch")) == 1
    assert not await redis.hexists(keys.retry_tickets, "twice")


async def test_a_stale_term_refuses_every_write_of_the_pipeline(redis: Redis, keys: Keys) -> None:
    # Given a new leader at term 4, and the old one (term 3) writing a batch
    await make_store(redis).with_term(lambda: 4).dead_letter(letter("new"))
    old = make_store(redis).with_term(lambda: 3)

    # When the old leader writes three outcomes at once
    results = await asyncio.gather(
        old.dead_letter(letter("a")),
        old.schedule_retry(ticket("b")),
        old.dead_letter(letter("c")),
        return_exceptions=True,
    )

    # Then each is refused with its own operation named, and none was written
    assert batch_of(old).pipelines == 1
    assert all(isinstance(r, FencedWrite) for r in results)
    assert [r.operation for r in results if isinstance(r, FencedWrite)] == [
        "dead_letter",
        "schedule_retry",
        "dead_letter",
    ]
    assert all((r.term, r.fence) == (3, 4) for r in results if isinstance(r, FencedWrite))
    # and each refusal says three were refused: whichever the writer raises, all are logged
    assert [r.refused for r in results if isinstance(r, FencedWrite)] == [3, 3, 3]
    for uid in ("a", "b", "c"):
        assert not await redis.exists(keys.outcome(uid))


async def test_one_script_failing_fails_only_its_own_call(redis: Redis, keys: Keys) -> None:
    # Given queue "broken" whose stream key holds a string (XADD fails: WRONGTYPE)
    await redis.set(keys.dlq("broken"), b"not a stream")
    store = make_store(redis)

    # When it is written together with two healthy outcomes
    results = await asyncio.gather(
        store.dead_letter(letter("ok-1")),
        store.dead_letter(letter("bad", queue="broken")),
        store.schedule_retry(ticket("ok-2")),
        return_exceptions=True,
    )

    # Then the healthy ones are written and the broken one is a SinkError naming its call
    ok_1, bad, ok_2 = results
    assert not isinstance(ok_1, BaseException) and ok_1.written
    assert not isinstance(ok_2, BaseException) and ok_2.written
    assert isinstance(bad, SinkError) and "dead_letter" in str(bad)
    assert "WRONGTYPE" in str(bad)


async def test_a_script_redis_no_longer_has_is_loaded_and_run(redis: Redis, keys: Keys) -> None:
    # Given the scripts are cached, then flushed (a Redis restart, SCRIPT FLUSH)
    store = make_store(redis)
    await store.dead_letter(letter("warm"))
    await redis.script_flush()

    # When a batch is written
    results = await asyncio.gather(*(store.dead_letter(letter(f"cold-{i}")) for i in range(3)))

    # Then every write happened, once
    assert [r.written for r in results] == [True, True, True]
    assert await redis.xlen(keys.dlq("batch")) == 4


async def test_redis_gone_fails_every_call_of_the_pipeline_with_its_own_sink_error(
    private_server: Callable[..., RedisServer],
) -> None:
    server = private_server()
    client = make_redis(server.port)
    try:
        store = make_store(client)
        await store.dead_letter(letter("before"))
        server.stop()
        results = await asyncio.gather(
            store.dead_letter(letter("x")),
            store.schedule_retry(ticket("y")),
            return_exceptions=True,
        )
        assert all(isinstance(r, SinkError) for r in results)
        assert results[0] is not results[1]
        assert "redis dead_letter" in str(results[0])
        assert "redis schedule_retry" in str(results[1])
    finally:
        await client.aclose()


async def test_a_cancelled_caller_leaves_the_others_of_its_batch_written(
    redis: Redis, keys: Keys
) -> None:
    store = make_store(redis)
    kept = [asyncio.ensure_future(store.dead_letter(letter(f"kept-{i}"))) for i in range(3)]
    dropped = asyncio.ensure_future(store.dead_letter(letter("dropped")))
    await asyncio.sleep(0)  # every call queued
    dropped.cancel()
    results = await asyncio.gather(*kept)
    assert [r.written for r in results] == [True, True, True]
    with pytest.raises(asyncio.CancelledError):
        await dropped


async def test_a_write_nobody_waits_for_any_more_stops_waiting_on_a_hung_redis(
    private_server: Callable[..., RedisServer],
) -> None:
    # Given a Redis that accepts connections but never answers (SIGSTOP)
    server = private_server()
    client = make_redis(server.port)
    try:
        store = make_store(client, operation_timeout_s=30.0)
        await store.pending_retries()
        server.freeze()

        # When the only caller of a write gives up on it (the shutdown grace ran out)
        write = asyncio.ensure_future(store.dead_letter(letter("hung")))
        await asyncio.sleep(0.2)
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write

        # Then the round trip is cancelled with it, not left waiting for the timeout
        async with asyncio.timeout(2):
            while batch_of(store).busy:  # noqa: ASYNC110 - internal state
                await asyncio.sleep(0.01)
    finally:
        server.thaw()
        await client.aclose()
