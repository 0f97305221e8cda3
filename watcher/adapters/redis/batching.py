"""Outcome writes issued together go to Redis together: one pipeline, not one round trip each.

The writer handles several due failures at once (`watcher.service.pipeline`); each ends in one
fenced write script (`RedisStore.dead_letter`, `RedisStore.schedule_retry`). A round trip
through redis-py costs far more CPU than the script's own bytes (connection checkout, one
send and one read, the event loop's wake-ups): profiled, it was the largest part of writing
an outcome. `ScriptBatch.call` queues the call; what was queued by the time the flushing task
runs (the other failures of the same batch, queued in the same turn of the event loop) is sent
as one pipeline of EVALSHA.

Nothing about the guarantees changes, because each script still runs alone and atomically
with its own fence and marker check: the pipeline is not a transaction (``transaction=False``)
and holds at most one write per Job uid. Each caller gets its own script's reply, or the error
its call alone would have raised: `FencedWrite` for a refused term, `SinkError` for anything
Redis or the connection did (then, as with a single call that timed out, the write may have
landed, and writing again is answered from the marker). A script Redis no longer has cached
(NOSCRIPT: a restart, SCRIPT FLUSH) did not run, and is sent again alone through redis-py's
`Script`, which loads it. A single queued call, and every call to a Redis Cluster client
(whose pipelines split by node), takes the plain path, `Fence.call`, unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, KeyT

from watcher.adapters.redis.client import RedisClient
from watcher.adapters.redis.fencing import Fence, count_refusals
from watcher.adapters.redis.guard import Guard
from watcher.core.errors import SinkError

__all__ = ["MAX_BATCH", "ScriptBatch"]

MAX_BATCH: Final = 64
"""Most script calls sent in one pipeline; more queued at once go in the next."""


@dataclass(slots=True)
class _Call:
    op: str
    script: AsyncScript
    keys: Sequence[KeyT]
    args: Sequence[EncodableT]
    reply: asyncio.Future[Any]


class ScriptBatch:
    """Fenced write scripts queued in one turn of the event loop, sent as one pipeline."""

    def __init__(self, redis: RedisClient, fence: Fence, guard: Guard) -> None:
        self._redis = redis
        self._fence = fence
        self._guard = guard
        self._pipelined = not isinstance(redis, RedisCluster)
        self._queued: list[_Call] = []
        self._sending: list[_Call] = []
        self._flushing: asyncio.Task[None] | None = None
        self.pipelines = 0
        """Pipelines sent so far (of two calls or more), for tests and benchmarks."""

    async def call(
        self, op: str, script: AsyncScript, *, keys: Sequence[KeyT], args: Sequence[EncodableT]
    ) -> Any:
        """What ``Fence.call(op, script, keys=keys, args=args)`` answers or raises."""
        if not self._pipelined:
            return await self._fence.call(op, script, keys=keys, args=args)
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append(_Call(op, script, keys, args, reply))
        if self._flushing is None:
            # Its own task, so a caller cancelled meanwhile cannot strand the others' replies.
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        try:
            return await reply
        except asyncio.CancelledError:
            # No caller left waiting (a shutdown's grace ran out): the round trip is cancelled
            # too, as a call of one's own would be, rather than left to hang on Redis.
            waiting = (c for c in (*self._sending, *self._queued) if not c.reply.done())
            if self._flushing is not None and next(waiting, None) is None:
                self._flushing.cancel()
            raise

    async def _flush(self) -> None:
        try:
            while self._queued:
                self._sending = [c for c in self._queued[:MAX_BATCH] if not c.reply.done()]
                del self._queued[:MAX_BATCH]
                if len(self._sending) == 1:
                    await self._alone(self._sending[0])
                elif self._sending:
                    await self._pipeline(self._sending)
                self._sending = []
        finally:
            self._flushing = None
            # Left unanswered only when this task itself was cancelled or failed (a closing
            # loop, a bug): their callers must not wait forever.
            for call in (*self._sending, *self._queued):
                _settle(call, exc=SinkError(f"redis {call.op} failed: the write did not complete"))
            self._sending, self._queued = [], []

    async def _alone(self, call: _Call) -> None:
        try:
            result = await self._fence.call(call.op, call.script, keys=call.keys, args=call.args)
        except Exception as exc:  # handed to the caller, whose own call it is
            _settle(call, exc=exc)
        else:
            _settle(call, result=result)

    async def _pipeline(self, batch: list[_Call]) -> None:
        term = self._fence.term()
        op = "outcome writes"
        try:
            async with self._guard(op), self._redis.pipeline(transaction=False) as pipe:
                for call in batch:
                    keys, args = self._fence.fenced(call.keys, call.args, term)
                    pipe.evalsha(call.script.sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
        except SinkError as exc:
            for call in batch:
                _settle(call, exc=_again(exc, call.op))
            return
        again: list[_Call] = []
        results = count_refusals([
            None if isinstance(reply, NoScriptError) else self._fence.reply_of(call.op, term, reply)
            for call, reply in zip(batch, replies, strict=True)
        ])  # fmt: skip
        for call, reply, result in zip(batch, replies, results, strict=True):
            if isinstance(reply, NoScriptError):
                again.append(call)  # not run: sent alone, which loads the script
            elif isinstance(result, Exception):
                _settle(call, exc=result)
            else:
                _settle(call, result=result)
        for call in again:
            await self._alone(call)
        self.pipelines += 1


def _again(exc: SinkError, op: str) -> SinkError:
    """A SinkError of its own for each caller of a failed pipeline, worded as its own call's
    would be, its cause kept."""
    error = SinkError(str(exc).replace("redis outcome writes ", f"redis {op} ", 1))
    error.__cause__ = exc.__cause__
    return error


def _settle(call: _Call, *, result: Any = None, exc: BaseException | None = None) -> None:
    if call.reply.done():  # its caller was cancelled
        return
    if exc is not None:
        call.reply.set_exception(exc)
    else:
        call.reply.set_result(result)
