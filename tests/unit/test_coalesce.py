"""watcher.adapters.redis.coalesce: calls made together share a round trip, each caller gets
its own answer, and a cancelled caller's call is dropped if it was not sent yet."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from watcher.adapters.redis.coalesce import Coalescer
from watcher.core.errors import SinkError


class Sender:
    """Answers each call with its double, or the error it asks for; records each round trip."""

    def __init__(self, *, gate: asyncio.Event | None = None, fail: BaseException | None = None):
        self.trips: list[list[int]] = []
        self.gate = gate
        self.fail = fail

    async def __call__(self, calls: Sequence[int]) -> list[int | BaseException]:
        self.trips.append(list(calls))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [ValueError(f"bad {n}") if n < 0 else n * 2 for n in calls]


async def test_calls_made_together_share_one_round_trip_and_each_gets_its_own_reply() -> None:
    # Given a coalescer
    sender = Sender()
    batcher: Coalescer[int, int] = Coalescer(sender, limit=64)
    # When ten callers call in the same turn of the event loop, one of them with a bad call
    results = await asyncio.gather(
        *(batcher.call(n) for n in [*range(9), -1]), return_exceptions=True
    )
    # Then one round trip carried them all, and each got its own answer
    assert sender.trips == [[*range(9), -1]]
    assert results[:9] == [n * 2 for n in range(9)]
    assert isinstance(results[9], ValueError) and str(results[9]) == "bad -1"


async def test_calls_made_during_a_round_trip_go_together_in_the_next_within_the_limit() -> None:
    gate = asyncio.Event()
    sender = Sender(gate=gate)
    batcher: Coalescer[int, int] = Coalescer(sender, limit=3)
    first = asyncio.ensure_future(batcher.call(0))
    await asyncio.sleep(0.01)  # the first round trip is under way
    later = [asyncio.ensure_future(batcher.call(n)) for n in range(1, 6)]
    await asyncio.sleep(0.01)
    gate.set()
    assert await first == 0
    assert [await task for task in later] == [2, 4, 6, 8, 10]
    assert sender.trips == [[0], [1, 2, 3], [4, 5]]
    assert batcher.round_trips == 3


async def test_a_failed_round_trip_reaches_every_caller_of_it() -> None:
    error = SinkError("redis begin_create failed: ConnectionError")
    batcher: Coalescer[int, int] = Coalescer(Sender(fail=error), limit=64)
    results = await asyncio.gather(*(batcher.call(n) for n in range(3)), return_exceptions=True)
    assert results == [error, error, error]


async def test_a_caller_cancelled_before_its_call_is_sent_is_dropped_from_the_round_trip() -> None:
    # Given a round trip under way and two callers waiting for the next
    gate = asyncio.Event()
    sender = Sender(gate=gate)
    batcher: Coalescer[int, int] = Coalescer(sender, limit=64)
    first = asyncio.ensure_future(batcher.call(0))
    await asyncio.sleep(0.01)
    dropped = asyncio.ensure_future(batcher.call(1))
    kept = asyncio.ensure_future(batcher.call(2))
    await asyncio.sleep(0.01)
    # When one of them is cancelled (its fire task was: a crash before the call)
    dropped.cancel()
    gate.set()
    # Then its call is never sent, and the others are answered
    assert (await first, await kept) == (0, 4)
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert sender.trips == [[0], [2]]


async def test_a_caller_cancelled_after_its_call_was_sent_leaves_the_others_answered() -> None:
    gate = asyncio.Event()
    sender = Sender(gate=gate)
    batcher: Coalescer[int, int] = Coalescer(sender, limit=64)
    gone = asyncio.ensure_future(batcher.call(1))
    kept = asyncio.ensure_future(batcher.call(2))
    await asyncio.sleep(0.01)
    gone.cancel()  # mid-flight: the call may have happened, as with a direct call
    await asyncio.sleep(0)
    gate.set()
    assert await kept == 4
    assert sender.trips == [[1, 2]]
    # And the coalescer goes on working afterwards
    assert await batcher.call(5) == 10


def test_the_limit_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="limit"):
        Coalescer(Sender(), limit=0)


def test_a_drain_left_behind_by_a_closed_event_loop_does_not_block_the_next_loop() -> None:
    # Given a coalescer whose round trip was under way when its event loop was closed
    gate = asyncio.Event()
    sender = Sender(gate=gate)
    batcher: Coalescer[int, int] = Coalescer(sender, limit=64)
    first = asyncio.new_event_loop()
    first.run_until_complete(_start(batcher))
    first.close()  # without cancelling the drain task: it is left pending
    # When another event loop calls, Then it is answered (not queued behind the dead drain)
    sender.gate = None
    assert asyncio.run(asyncio.wait_for(batcher.call(4), 5)) == 8


async def _start(batcher: Coalescer[int, int]) -> asyncio.Future[int]:
    pending = asyncio.ensure_future(batcher.call(1))
    await asyncio.sleep(0.01)
    return pending
