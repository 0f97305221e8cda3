"""Filtered, paged reads of the dead-letter streams (`dlq list|export|purge`, `--watch`).

A filter by class or namespace reads the queue's index zset (dlq_index.lua keeps it in the
writing script) and then only the stream entries it names, never the whole stream; a filter
by time alone is a range of stream ids (they are the server's ms); the job and owner parts
are checked on each decoded entry. Every entry is checked against the whole filter again
after decoding: an index says where to look, the entry says what it is.

Order is (stream id, queue) across queues, as in `DeadLetterQueries.list_dead_letters`; a
page ends at a `Cursor` and the next page starts strictly after it, whatever was written
between the two reads.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from watcher.adapters.redis.client import RedisClient
from watcher.adapters.redis.guard import Guard, stream_id_key, text
from watcher.adapters.redis.keys import Keys
from watcher.core.dlq_filter import Cursor, DeadLetterFilter
from watcher.core.model import DeadLetter

if TYPE_CHECKING:
    from watcher.adapters.redis.queries import CorruptRecord

__all__ = ["Found", "Selection", "Selector", "follow"]

_STREAM_ID: Final = re.compile(r"\d+-\d+")

MAX_BATCH: Final = 1000
"""At most this many ids or entries per round-trip: bounded replies, bounded Redis time."""

Decoded: TypeAlias = "tuple[str, DeadLetter] | CorruptRecord"
"""What the reader's decoder returns: ``(entry_id, letter)`` or what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Found:
    """One selected entry: where it is, and the decoded letter or what is wrong with it."""

    cursor: Cursor
    decoded: Decoded


@dataclass(slots=True)
class Selection:
    """One page: entries in order, the corrupt ones apart, and where the next page starts."""

    entries: list[tuple[str, DeadLetter]] = field(default_factory=list)
    corrupt: list[CorruptRecord] = field(default_factory=list)
    next_after: Cursor | None = None
    """Pass as `after` for the next page; None: this was the last one."""
    read: int = 0
    """Stream entries read from Redis for this page (what an index saves)."""


Decoder = Callable[[str, str, dict[Any, Any]], Decoded]


class Selector:
    """Reads for one installation; `decode(queue, stream_id, fields)` opens an entry."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        guard: Guard,
        decode: Decoder,
        queue_names: Callable[[], Awaitable[list[str]]],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.guard = guard
        self.decode = decode
        self._queue_names = queue_names
        self.read = 0
        """Stream entries read so far, all calls together (tests and the bench count them)."""
        self.bad: list[CorruptRecord] = []
        """Index members that are no stream id (not written by kube-dlq), each met once."""

    def _bad_member(self, key: str, member: str) -> bool:
        """Report an index member that names no entry (someone else wrote it); skip it."""
        from watcher.adapters.redis.queries import CorruptRecord  # (queries imports us)

        shown = f"{key}:{member}"[:200]
        self.bad.append(CorruptRecord(shown, "index member is not a stream id, skipped", None))
        return False

    async def now_ms(self) -> int:
        """Redis's clock: stream ids are its time, so ages are measured on the same clock."""
        async with self.guard("time"):
            secs, micros = await self.redis.time()
        return int(secs) * 1000 + int(micros) // 1000

    async def select(
        self,
        flt: DeadLetterFilter,
        *,
        limit: int,
        after: Cursor | None = None,
        now_ms: int | None = None,
    ) -> Selection:
        """Up to `limit` entries matching `flt`, strictly after `after`, in listing order."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        now = now_ms if now_ms is not None else await self.now_ms()
        start_read = self.read
        page = Selection()
        async for found in self.iterate(flt, after=after, now_ms=now, batch=min(limit, MAX_BATCH)):
            if isinstance(found.decoded, tuple):
                page.entries.append(found.decoded)
            else:
                page.corrupt.append(found.decoded)
            if len(page.entries) + len(page.corrupt) >= limit:
                page.next_after = found.cursor
                break
        page.read = self.read - start_read
        page.corrupt += self.bad
        self.bad = []
        return page

    async def iterate(
        self,
        flt: DeadLetterFilter,
        *,
        after: Cursor | None,
        now_ms: int,
        batch: int = MAX_BATCH,
    ) -> AsyncIterator[Found]:
        """Every matching entry (and every corrupt one met), merged across queues in order."""
        names = [flt.queue] if flt.queue is not None else await self._queue_names()
        sources = [self._queue(name, flt, after, now_ms, max(1, batch)) for name in names]
        heads: dict[int, Found] = {}
        for i, source in enumerate(sources):
            first = await anext(source, None)
            if first is not None:
                heads[i] = first
        while heads:
            i = min(heads, key=lambda n: heads[n].cursor)
            yield heads[i]
            nxt = await anext(sources[i], None)
            if nxt is None:
                del heads[i]
            else:
                heads[i] = nxt

    async def _queue(
        self, queue: str, flt: DeadLetterFilter, after: Cursor | None, now_ms: int, batch: int
    ) -> AsyncIterator[Found]:
        low_ms, high_ms = flt.time_range_ms(now_ms)
        # Where this queue resumes: at the cursor's id for queues after the cursor's in the
        # order (same id, later queue), strictly after it for the others.
        start: tuple[int, int] | None = None
        exclusive = False
        if after is not None:
            start, exclusive = (after.ms, after.seq), queue <= after.queue
        index = await self._index_for(queue, flt)
        ids = (
            self._index_ids(index, low_ms, high_ms, start, exclusive, batch)
            if index is not None
            else None
        )
        if ids is None:
            entries = self._stream_entries(queue, low_ms, high_ms, start, exclusive, batch)
        else:
            entries = self._entries_by_id(queue, ids, batch)
        async for sid, fields in entries:
            ms_part, seq = stream_id_key(sid)
            decoded = self.decode(queue, sid, fields)
            if isinstance(decoded, tuple) and not flt.matches(decoded[1], ms_part, now_ms):
                continue
            yield Found(Cursor(ms_part, seq, queue), decoded)

    async def _index_for(self, queue: str, flt: DeadLetterFilter) -> str | None:
        """The smaller index that answers the filter's class or namespace; None: the stream."""
        candidates = []
        if flt.failure_class is not None:
            candidates.append(self.keys.dlq_class_index(queue, flt.failure_class.value))
        if flt.namespace is not None:
            candidates.append(self.keys.dlq_namespace_index(queue, flt.namespace))
        if len(candidates) < 2:
            return candidates[0] if candidates else None
        async with self.guard("index_size"), self.redis.pipeline(transaction=True) as pipe:
            for key in candidates:
                pipe.zcard(key)
            sizes = await pipe.execute()
        return min(zip(sizes, candidates, strict=True))[1]

    async def _index_ids(
        self,
        key: str,
        low_ms: int | None,
        high_ms: int | None,
        start: tuple[int, int] | None,
        exclusive: bool,
        batch: int,
    ) -> AsyncIterator[str]:
        """Stream ids in `key` within the bounds, in stream-id order, in pages of `batch`.

        Members of one ms sort as strings in the zset ("1-10" before "1-9"), so each page
        ends at a whole ms: the last ms of a full page is read again on its own, completely.
        """
        low: float = low_ms if low_ms is not None else float("-inf")
        if start is not None:
            low = max(low, start[0])
        high = "+inf" if high_ms is None else str(high_ms)
        floor = f"{low:.0f}" if low != float("-inf") else "-inf"
        while True:
            got: Any
            whole: Any
            async with self.guard("index_range"):
                got = await self.redis.zrangebyscore(
                    key, floor, high, start=0, num=batch, withscores=True
                )
            page = [(text(member), int(score)) for member, score in got]
            if len(page) == batch and batch > 0:
                last = page[-1][1]
                async with self.guard("index_range"):
                    whole = await self.redis.zrangebyscore(key, last, last)
                page = [p for p in page if p[1] < last] + [(text(m), last) for m in whole]
                more = True
            else:
                more = False
            ids = sorted(
                (stream_id_key(member), member)
                for member, _ in page
                if _STREAM_ID.fullmatch(member) or self._bad_member(key, member)
            )
            for pos, member in ids:
                if start is not None and (pos < start or (exclusive and pos == start)):
                    continue
                yield member
            if not more:
                return
            floor = f"({page[-1][1]}"

    async def _entries_by_id(
        self, queue: str, ids: AsyncIterator[str], batch: int
    ) -> AsyncIterator[tuple[str, dict[Any, Any]]]:
        """The stream entries of `ids`, read `batch` at a time (an id the stream no longer
        has is skipped: a purge or trim running at the same time)."""
        stream = self.keys.dlq(queue)
        chunk: list[str] = []
        async for sid in ids:
            chunk.append(sid)
            if len(chunk) >= batch:
                for entry in await self._fetch(stream, chunk):
                    yield entry
                chunk = []
        if chunk:
            for entry in await self._fetch(stream, chunk):
                yield entry

    async def _fetch(self, stream: str, ids: Sequence[str]) -> list[tuple[str, dict[Any, Any]]]:
        async with self.guard("read_entries"), self.redis.pipeline(transaction=True) as pipe:
            for sid in ids:
                pipe.xrange(stream, min=sid, max=sid, count=1)
            replies = await pipe.execute()
        found = [(text(reply[0][0]), reply[0][1]) for reply in replies if reply]
        self.read += len(found)
        return found

    async def _stream_entries(
        self,
        queue: str,
        low_ms: int | None,
        high_ms: int | None,
        start: tuple[int, int] | None,
        exclusive: bool,
        batch: int,
    ) -> AsyncIterator[tuple[str, dict[Any, Any]]]:
        stream = self.keys.dlq(queue)
        lowest = "-" if low_ms is None else f"{max(low_ms, 0)}-0"
        if start is not None:
            at = f"{start[0]}-{start[1]}"
            if low_ms is None or start >= (low_ms, 0):
                lowest = f"({at}" if exclusive else at
        highest = "+" if high_ms is None else str(max(high_ms, 0))
        while True:
            got: Any
            async with self.guard("list_dead_letters"):
                got = await self.redis.xrange(stream, min=lowest, max=highest, count=batch)
            self.read += len(got)
            for sid, fields in got:
                yield text(sid), fields
            if len(got) < batch:
                return
            lowest = f"({text(got[-1][0])}"


async def follow(
    selector: Selector,
    flt: DeadLetterFilter,
    *,
    block_ms: int,
    since_ms: int,
    names: Callable[[], Awaitable[list[str]]],
    stop: Callable[[], bool] = lambda: False,
) -> AsyncIterator[Found]:
    """Entries written after `since_ms` that match `flt`, as they land (XREAD BLOCK), until
    `stop()` answers True (checked between blocks: at most `block_ms` later).

    The queue list is read again after each block, so a queue created meanwhile is followed
    from `since_ms` too. `block_ms` must stay below the client's socket timeout.
    """
    last: dict[str, str] = {}
    prefix = selector.keys.dlq_prefix
    while not stop():
        queues = [flt.queue] if flt.queue is not None else await names()
        streams: dict[Any, Any] = {
            selector.keys.dlq(q): last.setdefault(q, f"{since_ms}-0") for q in queues
        }
        if not streams:
            await asyncio.sleep(block_ms / 1000)
            continue
        reply: Any
        async with selector.guard("follow"):
            reply = await selector.redis.xread(streams, count=MAX_BATCH, block=block_ms)
        items = reply.items() if isinstance(reply, dict) else (reply or [])
        for key, entries in items:
            queue = text(key).removeprefix(prefix)
            for raw_sid, fields in entries:
                sid = text(raw_sid)
                last[queue] = sid
                selector.read += 1
                ms_part, seq = stream_id_key(sid)
                decoded = selector.decode(queue, sid, fields)
                if isinstance(decoded, tuple) and not flt.matches(decoded[1], ms_part, ms_part):
                    continue
                yield Found(Cursor(ms_part, seq, queue), decoded)
