"""The CLI's side of Redis: read what landed on the dead-letter queues, never write.

`DeadLetterQueries` backs ``kube-dlq dlq list|show``. It takes the same ``redis`` settings
section and cluster name as the daemon's `watcher.adapters.redis.store.RedisStore`, so it reads
the keys the daemon writes. Whatever is stored, the reads are total: an entry that fails to
decode, one without its data field, a queue name that is not UTF-8 are each reported as a
`CorruptRecord` value (``list_dead_letters``, ``find_dead_letter``), or as `codec.CorruptEntry`
naming the entry (``get_dead_letter``, for callers that want an exception), never another
error. An entry whose seal does not check out (`seal.ForgedEntry`: unsigned, unknown key,
altered, or moved from another queue) is such a record too, with ``forged`` set. Redis
failures surface as `SinkError` (`watcher.adapters.redis.guard`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio.cluster import RedisCluster

from watcher.adapters.redis import codec
from watcher.adapters.redis.client import RedisClient
from watcher.adapters.redis.codec import CorruptEntry
from watcher.adapters.redis.dlq_stats import Stat, dlq_stats
from watcher.adapters.redis.guard import Guard, as_bytes, check_client, stream_id_key, text
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.adapters.redis.seal import ForgedEntry, Seal, dead_letter_place, ticket_place
from watcher.adapters.redis.selection import Found, Selection, Selector, follow
from watcher.core.dlq_filter import Cursor, DeadLetterFilter
from watcher.core.model import DeadLetter
from watcher.core.settings import RedisSettings

__all__ = [
    "CorruptRecord",
    "DeadLetterList",
    "DeadLetterQueries",
    "Found",
    "FoundLetter",
    "Selection",
    "Stat",
]

_STREAM_ID: Final = re.compile(r"\d+(-\d+)?")
_RANGE_START: Final = re.compile(r"-|\(?\d+(-\d+)?")


@dataclass(frozen=True, slots=True)
class CorruptRecord:
    """A stored entry that did not decode; reported to the operator, never fatal."""

    entry_id: str
    error: str
    raw: bytes | None
    """The stored bytes, or None when the entry had no data field at all."""
    forged: bool = False
    """Its seal did not check out (unsigned, unknown key, bad signature): not kube-dlq's."""


FoundLetter = tuple[str, DeadLetter]
"""``(<queue>/<stream-id>, letter)``."""


class DeadLetterList(list[tuple[str, DeadLetter]]):
    """``[(entry_id, letter), ...]`` plus the entries of the same range that failed to decode."""

    def __init__(
        self, entries: Iterable[tuple[str, DeadLetter]] = (), corrupt: Iterable[CorruptRecord] = ()
    ) -> None:
        super().__init__(entries)
        self.corrupt: list[CorruptRecord] = list(corrupt)


class DeadLetterQueries:
    """Read-only access to one cluster's dead-letter queues."""

    def __init__(
        self,
        redis: RedisClient,
        settings: RedisSettings,
        *,
        cluster_name: str,
        seal: Seal | None = None,
    ) -> None:
        """`seal` checks each entry is kube-dlq's (None, for tests and tools: unsigned
        entries accepted); the CLI's comes from the ``security`` settings."""
        check_client(redis, "DeadLetterQueries")
        self._redis = redis
        self._keys = Keys(prefix=settings.key_prefix, cluster=cluster_name)
        self._seal = seal or Seal(signing=None, allow_unsigned=True)
        self._guard = Guard(settings.operation_timeout_s)
        # XREAD BLOCK must return before the socket times out (redis-py would call it dead).
        self._block_ms = max(50, int(min(_socket_timeout(redis, settings), 5.0) * 500))
        self.selector = Selector(redis, self._keys, self._guard, self._decoded, self.queues)

    @property
    def keys(self) -> Keys:
        return self._keys

    @property
    def client(self) -> RedisClient:
        """The client these reads use, for the one CLI class that writes (`dlq purge`)."""
        return self._redis

    async def now_ms(self) -> int:
        """Redis's clock in ms (stream ids are its time)."""
        return await self.selector.now_ms()

    async def select(
        self,
        flt: DeadLetterFilter,
        *,
        limit: int,
        after: Cursor | None = None,
        now_ms: int | None = None,
    ) -> Selection:
        """One page of entries matching `flt` (selection.py: indexes, never a full scan for
        a class or namespace)."""
        return await self.selector.select(flt, limit=limit, after=after, now_ms=now_ms)

    def iterate(
        self, flt: DeadLetterFilter, *, now_ms: int, after: Cursor | None = None
    ) -> AsyncIterator[Found]:
        """Every entry matching `flt`, in listing order, read in bounded batches."""
        return self.selector.iterate(flt, after=after, now_ms=now_ms)

    def follow(
        self, flt: DeadLetterFilter, *, since_ms: int, stop: Callable[[], bool] = lambda: False
    ) -> AsyncIterator[Found]:
        """Entries matching `flt` as they are written after `since_ms`, until `stop()`."""
        return follow(
            self.selector,
            flt,
            block_ms=self._block_ms,
            since_ms=since_ms,
            names=self.queues,
            stop=stop,
        )

    async def stats(self, *, queue: str | None, now_ms: int) -> list[Stat]:
        """Depth, oldest age and last-hour inflow by queue, class and namespace."""
        names = [queue] if queue is not None else await self.queues()
        return await dlq_stats(self._redis, self._keys, self._guard, names, now_ms)

    async def queues(self) -> list[str]:
        """Names of all dead-letter queues ever written, sorted (members that are not UTF-8,
        which name no queue kube-dlq writes, left out; `list_dead_letters` reports them)."""
        names, _ = await self._queue_names()
        return names

    async def _queue_names(self) -> tuple[list[str], list[CorruptRecord]]:
        async with self._guard("queues"):
            members = await self._redis.smembers(self._keys.queues)
        names: list[str] = []
        bad: list[CorruptRecord] = []
        for member in map(as_bytes, members):
            try:
                names.append(member.decode())
            except UnicodeDecodeError as exc:
                shown = member.decode(errors="backslashreplace")
                bad.append(CorruptRecord(f"{shown}/", f"queue name is not UTF-8: {exc}", None))
        return sorted(names), bad

    async def list_dead_letters(
        self, queue: str | None, *, count: int, start: str = "-"
    ) -> DeadLetterList:
        """Up to `count` entries from `queue` (or all queues, merged by time) from `start` on.

        `start` is a stream id, inclusive, or ``(<id>`` exclusive; it applies to every queue.
        Entry ids are ``<queue>/<stream-id>``; across queues, entries are ordered by stream id
        (server time in ms), then queue name. Entries that fail to decode count towards
        `count` and are returned in ``.corrupt``, not in the list.
        """
        if count < 1:
            raise ValueError("count must be >= 1")
        if not _RANGE_START.fullmatch(start):
            raise ValueError(f"start must be '-', a stream id or '(<stream id>', got {start!r}")
        bad_names: list[CorruptRecord] = []
        if queue is not None:
            names = [queue]
        else:
            names, bad_names = await self._queue_names()
        async with self._guard("list_dead_letters"), self._redis.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.xrange(self._keys.dlq(name), min=start, max="+", count=count)
            ranges = await pipe.execute()
        rows = [
            (text(sid), name, fields)
            for name, entries in zip(names, ranges, strict=True)
            for sid, fields in entries or ()
        ]
        rows.sort(key=lambda r: (stream_id_key(r[0]), r[1]))
        out = DeadLetterList(corrupt=bad_names)
        for sid, name, fields in rows[:count]:
            entry = self._decoded(name, sid, fields)
            if isinstance(entry, CorruptRecord):
                out.corrupt.append(entry)
            else:
                out.append(entry)
        return out

    async def find_dead_letter(self, entry_id: str) -> FoundLetter | CorruptRecord | None:
        """Look up ``<queue>/<stream-id>``, or a bare stream id in every queue.

        Returns ``(<queue>/<stream-id>, letter)``, a `CorruptRecord` naming the entry if it is
        there but does not decode, or None if absent. Raises `ValueError` for a malformed id
        (the caller's input, not stored data); never for what is stored.
        """
        queue, _, sid = entry_id.rpartition("/")
        if not _STREAM_ID.fullmatch(sid) or (queue == "" and "/" in entry_id):
            raise ValueError(f"not a dead-letter id ('<queue>/<stream-id>'): {entry_id!r}")
        names = [queue] if queue else await self.queues()
        async with self._guard("get_dead_letter"), self._redis.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.xrange(self._keys.dlq(name), min=sid, max=sid, count=1)
            ranges = await pipe.execute()
        for name, entries in zip(names, ranges, strict=True):
            if entries:
                return self._decoded(name, text(entries[0][0]), entries[0][1])
        return None

    async def quarantined_tickets(self, *, count: int) -> list[CorruptRecord]:
        """Up to `count` retry tickets the daemon set aside instead of firing (the corrupt
        hash), each with why, checked again here: not signed, unreadable, ... (entry ids are
        ``retry-ticket/<id>``). Upgrading from an unsigned version leaves its tickets here."""
        found: list[CorruptRecord] = []
        cursor = 0
        while len(found) < count:
            async with self._guard("quarantined_tickets"):
                cursor, page = await self._redis.hscan(self._keys.retry_corrupt, cursor, count=100)
            entries: dict[Any, Any] = page if isinstance(page, dict) else {}
            for raw_id, body in entries.items():
                ticket_id = as_bytes(raw_id).decode(errors="backslashreplace")
                place = ticket_place(self._keys, ticket_id)
                raw = as_bytes(body)
                try:
                    codec.decode_retry_ticket(self._seal.open(codec.KIND_RETRY_TICKET, place, raw))
                    error = "set aside by the daemon; reads fine here (a key since restored?)"
                    forged = False
                except CorruptEntry as exc:
                    error, forged = str(exc), isinstance(exc, ForgedEntry)
                found.append(CorruptRecord(f"retry-ticket/{ticket_id}", error, raw, forged))
            if cursor == 0:
                break
        return sorted(found[:count], key=lambda r: r.entry_id)

    async def get_dead_letter(self, entry_id: str) -> FoundLetter | None:
        """`find_dead_letter`, with a corrupt entry raised as `CorruptEntry` naming it.

        Returns ``(<queue>/<stream-id>, letter)`` or None if absent. Raises `ValueError` for a
        malformed id and `CorruptEntry` if the entry does not decode; nothing else.
        """
        found = await self.find_dead_letter(entry_id)
        if isinstance(found, CorruptRecord):
            raise CorruptEntry(f"{found.entry_id}: {found.error}")
        return found

    def _decoded(self, queue: str, sid: str, fields: dict[Any, Any]) -> FoundLetter | CorruptRecord:
        """One stream entry as ``(entry_id, letter)``, or what is wrong with it."""
        entry_id = f"{queue}/{sid}"
        raw = _field(fields)
        if raw is None:
            return CorruptRecord(entry_id, f"entry has no {STREAM_FIELD!r} field", None)
        place = dead_letter_place(self._keys, queue)
        try:
            return entry_id, codec.decode_dead_letter(
                self._seal.open(codec.KIND_DEAD_LETTER, place, raw)
            )
        except CorruptEntry as exc:
            return CorruptRecord(entry_id, str(exc), raw, forged=isinstance(exc, ForgedEntry))


def _socket_timeout(redis: RedisClient, settings: RedisSettings) -> float:
    """The client's own socket timeout (a test's or tool's may differ from the settings)."""
    kwargs = (
        redis.get_connection_kwargs()
        if isinstance(redis, RedisCluster)
        else redis.connection_pool.connection_kwargs
    )
    found = kwargs.get("socket_timeout")
    return (
        float(found) if isinstance(found, int | float) and found > 0 else settings.socket_timeout_s
    )


def _field(fields: dict[Any, Any]) -> bytes | None:
    raw = fields.get(STREAM_FIELD.encode())
    return None if raw is None else as_bytes(raw)
