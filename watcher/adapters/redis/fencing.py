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
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

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

__all__ = ["BATCH_LIMIT", "Fence", "ScriptCall", "TermSource", "count_refusals", "unfenced"]

TermSource = Callable[[], int | None]
"""This process's leadership term now; None: unfenced."""


class ScriptCall(NamedTuple):
    """One fenced script call: its operation (named in errors), script, KEYS and ARGV, without
    the fence's key and term."""

    op: str
    script: AsyncScript
    keys: Sequence[KeyT]
    args: Sequence[EncodableT]


BATCH_LIMIT: Final = 64
"""Most calls `Fence.call_batched` sends in one round trip."""

_MANY: Final = "outcome writes"
"""The operation a failed round trip of `call_many` names, reworded per call (`_reworded`)."""


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
        self._cluster = isinstance(redis, RedisCluster)
        self._batcher: Coalescer[ScriptCall, Any] = Coalescer(self._send, limit=BATCH_LIMIT)
        self._many: dict[str, AsyncScript] = {}
        """The `scripts.many` form of each script called so, by the script's sha."""
        self.round_trips: Counter[str] = Counter()
        """Round trips of `call_batched` that carried a call of each operation (for tests)."""
        self.pipelines = 0
        """Round trips of `call_batched` that carried two calls or more (for tests)."""

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
        """`call`, with the calls made while a round trip is under way (or in the same turn of
        the event loop), of any script, sent together in the next (`call_many`,
        watcher.adapters.redis.coalesce). Each caller gets its own reply or error, as alone.
        A Redis Cluster client's calls go alone, at once (its pipelines refuse EVALSHA)."""
        if self._cluster:
            return await self.call(op, script, keys=keys, args=args)
        return await self._batcher.call(ScriptCall(op, script, keys, args))

    @property
    def busy(self) -> bool:
        """Whether a round trip of `call_batched` is queued or under way (for tests)."""
        return self._batcher.busy

    async def _send(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """The coalescer's sender: one call goes alone (`call`), more as `call_many`."""
        self.round_trips.update({call.op for call in calls})
        if len(calls) > 1:
            self.pipelines += 1
            return await self.call_many(calls)
        op, script, keys, args = calls[0]
        try:
            return [await self.call(op, script, keys=keys, args=args)]
        except (SinkError, FencedWrite) as exc:  # its own, handed to its caller
            return [exc]

    async def call_many(self, calls: Sequence[ScriptCall], *, load: bool = True) -> list[Any]:
        """Run each fenced script call of `calls` (any scripts), in one round trip.

        Each call is atomic on its own, as if they were sent one after the other on one
        connection, in order: a pipeline (not a transaction), where consecutive calls of one
        script go as one call of its `scripts.many` form (the fence checked once, then each
        call's body with its own KEYS and ARGV; fewer commands for redis-py to pack and parse,
        and for Redis to run). Per call, in order, its reply or the error `call` would have
        raised for it (returned, not raised): `FencedWrite` when its term is refused,
        `SinkError` for any other error reply, and a `SinkError` of its own, naming its
        operation, when the round trip itself failed (connection, timeout: it may have run).
        Calls whose script Redis no longer has (NOSCRIPT: a restart, SCRIPT FLUSH) did not
        run: their scripts are loaded and they are sent again. On a Redis Cluster client they
        go at once, each alone.
        """
        if not calls:
            return []
        term = self.term()
        runs = _runs(calls)
        try:
            if self._cluster:  # at once, each alone
                return list(await asyncio.gather(*(self._alone(call) for call in calls)))
            replies: list[Any]
            async with self._guard(_MANY), self._redis.pipeline(transaction=False) as pipe:
                for run in runs:
                    script, keys, args = self._command(run, term)
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
        except SinkError as exc:
            return [_reworded(exc, call.op) for call in calls]
        flat: list[Any] = []
        for run, reply in zip(runs, replies, strict=True):
            if len(run) == 1 or isinstance(reply, RedisError):
                flat.extend([reply] * len(run))  # a refusal or NOSCRIPT: the script's every call
            elif isinstance(reply, list) and len(reply) == len(run):
                flat.extend(reply)
            else:
                flat.extend(
                    [ResponseError(f"{len(run)} calls, reply {str(reply)[:80]!r}")] * len(run)
                )
        results = count_refusals([
            None if isinstance(reply, NoScriptError) else self.reply_of(call.op, term, reply)
            for call, reply in zip(calls, flat, strict=True)
        ])  # fmt: skip
        missing = [i for i, reply in enumerate(flat) if isinstance(reply, NoScriptError)]
        if missing:
            again = [calls[i] for i in missing]
            if load:
                await self._load({self._command(run, term)[0] for run in _runs(again)})
                answers = await self.call_many(again, load=False)
            else:  # flushed again meanwhile: redis-py's own path, call by call
                answers = [await self._alone(call) for call in again]
            for i, answer in zip(missing, answers, strict=True):
                results[i] = answer
        return results

    def _command(
        self, run: Sequence[ScriptCall], term: int | None
    ) -> tuple[AsyncScript, list[KeyT], list[EncodableT]]:
        """The script, KEYS and ARGV (fenced) of a run of calls of one script."""
        if len(run) == 1:
            return run[0].script, *self.fenced(run[0].keys, run[0].args, term)
        script = run[0].script
        merged = self._many.get(script.sha)
        if merged is None:
            source = script.script  # the store's scripts are str (scripts.py)
            if not isinstance(source, str):
                source = bytes(source).decode()
            merged = self._many[script.sha] = self._redis.register_script(scripts.many(source))
        counts: list[EncodableT] = [len(run)]
        keys: list[KeyT] = []
        args: list[EncodableT] = []
        for call in run:
            counts += (len(call.keys), len(call.args))
            keys += call.keys
            args += call.args
        return merged, *self.fenced(keys, [*counts, *args], term)

    async def _load(self, wanted: set[AsyncScript]) -> None:
        """SCRIPT LOAD of `wanted`; a failure is left to the calls that follow to report."""
        try:
            async with self._guard("script_load"):
                for script in wanted:
                    await self._redis.script_load(script.script)
        except SinkError:
            return

    async def _alone(self, call: ScriptCall) -> Any:
        """`call`'s reply, or the error it raised (returned)."""
        try:
            return await self.call(call.op, call.script, keys=call.keys, args=call.args)
        except (SinkError, FencedWrite) as exc:
            return exc

    def reply_of(self, op: str, term: int | None, reply: Any) -> Any:
        """One call's reply of a pipeline (`call_many`), or the error `call` would have raised
        for it."""
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


def _runs(calls: Sequence[ScriptCall]) -> list[list[ScriptCall]]:
    """`calls` cut into runs of consecutive calls of one script, in order, each of at most
    BATCH_LIMIT calls (one script call holds Redis for its whole run: kept short)."""
    runs: list[list[ScriptCall]] = []
    for call in calls:
        if runs and runs[-1][0].script is call.script and len(runs[-1]) < BATCH_LIMIT:
            runs[-1].append(call)
        else:
            runs.append([call])
    return runs


def count_refusals(results: list[Any]) -> list[Any]:
    """`results`, each `FencedWrite` among them told how many writes of the round trip were
    refused (whichever one a caller raises, the count of all is logged)."""
    refusals = [result for result in results if isinstance(result, FencedWrite)]
    for refusal in refusals:
        refusal.refused = len(refusals)
    return results


def _reworded(exc: SinkError, op: str) -> SinkError:
    """A SinkError of its own for each call of a failed round trip, worded as its own call's
    would be, its cause kept."""
    error = SinkError(str(exc).replace(f"redis {_MANY} ", f"redis {op} ", 1))
    error.__cause__ = exc.__cause__
    return error
