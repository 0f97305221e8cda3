"""The leader fence: every write script carries this process's leadership term.

With leader election on, a leader that froze past its Lease (a long GC pause, SIGSTOP, a VM
migration) and then resumes still believes it leads until its next renewal attempt; anything
it writes meanwhile races the new leader. So each write script starts with
``scripts/fence_prelude.lua``: `Fence.call` appends the fence key (`Keys.leader_fence`) and the
term to the call, and the script refuses, writing nothing, a term below the highest one Redis
has seen; a higher term raises it. A refusal surfaces as `FencedWrite`, never as a
`SinkError`: retrying cannot succeed, the caller must stop acting as leader.

A new leader first claims its term (`Fence.claim`, ``claim_term.lua``): strictly above every
term used before, or the caller must take a higher one (docs/scale-out.md, "Fencing").

No term (None: leader election off, `kube-dlq sweep`) means unfenced: the call passes ``''``
and the prelude neither checks nor raises the fence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Final

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.typing import EncodableT, KeyT

from watcher.adapters.redis import scripts
from watcher.adapters.redis.client import RedisClient
from watcher.adapters.redis.coalesce import Coalescer
from watcher.adapters.redis.guard import Guard, text
from watcher.adapters.redis.keys import Keys
from watcher.core.errors import FencedWrite, SinkError

__all__ = ["Fence", "TermSource", "unfenced"]

TermSource = Callable[[], int | None]
"""This process's leadership term now; None: unfenced."""

Call = tuple[Sequence[KeyT], Sequence[EncodableT]]
"""One script call's KEYS and ARGV, without the fence's key and term."""

BATCH_LIMIT: Final = 64
"""Most calls `Fence.call_batched` sends in one round trip."""


def unfenced() -> int | None:
    return None


class Fence:
    """The fence key of one installation and where this process's term comes from."""

    def __init__(self, redis: RedisClient, keys: Keys, guard: Guard, term: TermSource) -> None:
        self._redis = redis
        self._key = keys.leader_fence
        self._guard = guard
        self.term = term
        self._claim_script = redis.register_script(scripts.CLAIM_TERM)
        self._batchers: dict[str, Coalescer[Call, Any]] = {}

    async def call(
        self, op: str, script: AsyncScript, *, keys: Sequence[KeyT], args: Sequence[EncodableT]
    ) -> Any:
        """Run a fenced write script; `FencedWrite` if its term is below the fence."""
        term = self.term()
        fenced_keys, fenced_args = self.fenced(keys, args, term)
        async with self._guard(op):
            try:
                return await script(keys=fenced_keys, args=fenced_args)
            except ResponseError as exc:
                refused = self.refused(op, term, exc)
                if refused is None:
                    raise
        raise refused

    def fenced(
        self, keys: Sequence[KeyT], args: Sequence[EncodableT], term: int | None
    ) -> tuple[list[KeyT], list[EncodableT]]:
        """KEYS and ARGV of a write script carrying `term` (`call`; pipelined writes too)."""
        return [*keys, self._key], [*args, "" if term is None else term]

    def refused(self, op: str, term: int | None, exc: ResponseError) -> FencedWrite | None:
        """The `FencedWrite` a script's error reply means, None when it is another error;
        `SinkError` for a fence key that holds no term."""
        fence = self._refusal(exc)
        if fence is None:
            return None
        assert term is not None  # an unfenced call is never refused
        return FencedWrite(op, term=term, fence=fence)

    async def call_batched(
        self, op: str, script: AsyncScript, *, keys: Sequence[KeyT], args: Sequence[EncodableT]
    ) -> Any:
        """`call`, with the calls of `script` made while one of its round trips is under way
        (or in the same turn of the event loop) sent together in the next (`call_many`,
        watcher.adapters.redis.coalesce). Each caller gets its own reply or error."""
        batcher = self._batchers.get(script.sha)
        if batcher is None:

            async def send(calls: Sequence[Call]) -> list[Any]:
                return await self.call_many(op, script, calls)

            batcher = self._batchers[script.sha] = Coalescer(send, limit=BATCH_LIMIT)
        return await batcher.call((keys, args))

    async def call_many(self, op: str, script: AsyncScript, calls: Sequence[Call]) -> list[Any]:
        """Run a fenced write script once per call of `calls`, in one round trip.

        A pipeline, not a transaction: each call is atomic on its own, as if they were sent one
        after the other on one connection. Per call, its reply, or the error it gets: a
        `FencedWrite` when its term is refused, a `SinkError` for any other error reply. A
        failure of the round trip itself (connection, timeout) raises `SinkError`.
        """
        term = self.term()
        tail = "" if term is None else term
        replies: list[Any]
        async with self._guard(op):
            if isinstance(self._redis, RedisCluster):
                replies = await self._each(script, calls, tail)
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        pipe.evalsha(script.sha, len(keys) + 1, *keys, self._key, *args, tail)
                    replies = await pipe.execute(raise_on_error=False)
            for i, reply in enumerate(replies):
                if isinstance(reply, NoScriptError):
                    # Not run (a restarted or flushed server): once more through redis-py's
                    # own path, which loads the script.
                    replies[i] = await self._one(script, *calls[i], tail)
        return count_refusals([self.reply_of(op, term, reply) for reply in replies])

    async def _each(self, script: AsyncScript, calls: Sequence[Call], tail: Any) -> list[Any]:
        """The calls at once, each on its own: redis-py refuses EVALSHA in a cluster pipeline.
        When one fails other than by an error reply, those still in flight are cancelled."""
        tasks = [asyncio.ensure_future(self._one(script, *call, tail)) for call in calls]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()

    async def _one(
        self, script: AsyncScript, keys: Sequence[KeyT], args: Sequence[EncodableT], tail: Any
    ) -> Any:
        """One call's reply, or its error reply (returned, not raised)."""
        try:
            return await script(keys=[*keys, self._key], args=[*args, tail])
        except ResponseError as exc:
            return exc

    def reply_of(self, op: str, term: int | None, reply: Any) -> Any:
        """One call's reply of a pipeline (`call_many`, `ScriptBatch`), or the error `call`
        would have raised for it."""
        if not isinstance(reply, RedisError):
            return reply
        try:
            fence = self._refusal(reply) if isinstance(reply, ResponseError) else None
        except SinkError as exc:
            return exc
        if fence is None or term is None:
            error = SinkError(f"redis {op} failed: {type(reply).__name__}: {reply}")
            error.__cause__ = reply
            return error
        return FencedWrite(op, term=term, fence=fence)

    async def claim(self, term: int) -> int | None:
        """Make `term` the fence if every term used before is below it: None. Otherwise the
        fence (at or above `term`): the caller must take a term above it and claim again."""
        if term < 0:
            raise ValueError(f"a term is >= 0, got {term}")
        async with self._guard("claim_term"):
            try:
                claimed, fence = await self._claim_script(keys=[self._key], args=[term])
            except ResponseError as exc:
                self._refusal(exc)  # a bad fence raises; nothing else is expected here
                raise
        return None if int(claimed) else int(text(fence))

    async def current(self) -> int | None:
        """The fence now (None: none yet); for tests and tools."""
        async with self._guard("read_fence"):
            raw = await self._redis.get(self._key)
        return None if raw is None else int(text(raw))

    def _refusal(self, exc: ResponseError) -> int | None:
        """The fence of a refusal by term; SinkError for a bad fence; None for other errors."""
        word, _, rest = str(exc).partition(" ")
        if word == scripts.BAD_FENCE_REPLY:
            raise SinkError(
                f"redis key {self._key!r} holds {rest!r}, not a leadership term: every fenced "
                "write is refused until it is deleted (docs/scale-out.md)"
            ) from exc
        if word == scripts.FENCED_REPLY:
            try:
                return int(rest)
            except ValueError:
                raise SinkError(f"unexpected fence refusal {str(exc)[:80]!r}") from exc
        return None


def count_refusals(results: list[Any]) -> list[Any]:
    """`results`, each `FencedWrite` among them told how many writes of the round trip were
    refused (whichever one a caller raises, the count of all is logged)."""
    refusals = [result for result in results if isinstance(result, FencedWrite)]
    for refusal in refusals:
        refusal.refused = len(refusals)
    return results
