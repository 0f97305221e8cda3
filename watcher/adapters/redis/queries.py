"""The CLI's side of Redis: read what landed on the dead-letter queues, never write.

`DeadLetterQueries` backs ``kube-dlq dlq list|show``. It takes the same ``redis`` settings
section and cluster name as the daemon's `watcher.adapters.redis.store.RedisStore`, so it reads
the keys the daemon writes. Entries that fail to decode are reported (`CorruptRecord`, or a
`codec.CorruptEntry` naming the entry), never a crash; Redis failures surface as `SinkError`
(`watcher.adapters.redis.guard`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis

from watcher.adapters.redis import codec
from watcher.adapters.redis.codec import CorruptEntry
from watcher.adapters.redis.guard import Guard, as_bytes, check_client, stream_id_key, text
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.core.model import DeadLetter
from watcher.core.settings import RedisSettings

__all__ = ["CorruptRecord", "DeadLetterList", "DeadLetterQueries"]

_STREAM_ID: Final = re.compile(r"\d+(-\d+)?")
_RANGE_START: Final = re.compile(r"-|\(?\d+(-\d+)?")


@dataclass(frozen=True, slots=True)
class CorruptRecord:
    """A stored entry that did not decode; reported to the operator, never fatal."""

    entry_id: str
    error: str
    raw: bytes | None
    """The stored bytes, or None when the entry had no data field at all."""


class DeadLetterList(list[tuple[str, DeadLetter]]):
    """``[(entry_id, letter), ...]`` plus the entries of the same range that failed to decode."""

    def __init__(
        self, entries: Iterable[tuple[str, DeadLetter]] = (), corrupt: Iterable[CorruptRecord] = ()
    ) -> None:
        super().__init__(entries)
        self.corrupt: list[CorruptRecord] = list(corrupt)


class DeadLetterQueries:
    """Read-only access to one cluster's dead-letter queues."""

    def __init__(self, redis: Redis, settings: RedisSettings, *, cluster_name: str) -> None:
        check_client(redis, "DeadLetterQueries")
        self._redis = redis
        self._keys = Keys(prefix=settings.key_prefix, cluster=cluster_name)
        self._guard = Guard(settings.operation_timeout_s)

    @property
    def keys(self) -> Keys:
        return self._keys

    async def queues(self) -> list[str]:
        """Names of all dead-letter queues ever written, sorted."""
        async with self._guard("queues"):
            members = await self._redis.smembers(self._keys.queues)
        return sorted(text(m) for m in members)

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
        names = [queue] if queue is not None else await self.queues()
        async with self._guard("list_dead_letters"), self._redis.pipeline() as pipe:
            for name in names:
                pipe.xrange(self._keys.dlq(name), min=start, max="+", count=count)
            ranges = await pipe.execute()
        rows = [
            (text(sid), name, fields)
            for name, entries in zip(names, ranges, strict=True)
            for sid, fields in entries or ()
        ]
        rows.sort(key=lambda r: (stream_id_key(r[0]), r[1]))
        out = DeadLetterList()
        for sid, name, fields in rows[:count]:
            entry_id = f"{name}/{sid}"
            raw = _field(fields)
            try:
                if raw is None:
                    raise CorruptEntry(f"entry has no {STREAM_FIELD!r} field")
                out.append((entry_id, codec.decode_dead_letter(raw)))
            except CorruptEntry as exc:
                out.corrupt.append(CorruptRecord(entry_id, str(exc), raw))
        return out

    async def get_dead_letter(self, entry_id: str) -> tuple[str, DeadLetter] | None:
        """Look up ``<queue>/<stream-id>``, or a bare stream id in every queue.

        Returns ``(<queue>/<stream-id>, letter)`` or None if absent. Raises `ValueError` for a
        malformed id and `CorruptEntry` (naming the entry) if the entry does not decode.
        """
        queue, _, sid = entry_id.rpartition("/")
        if not _STREAM_ID.fullmatch(sid) or (queue == "" and "/" in entry_id):
            raise ValueError(f"not a dead-letter id ('<queue>/<stream-id>'): {entry_id!r}")
        names = [queue] if queue else await self.queues()
        async with self._guard("get_dead_letter"), self._redis.pipeline() as pipe:
            for name in names:
                pipe.xrange(self._keys.dlq(name), min=sid, max=sid, count=1)
            ranges = await pipe.execute()
        for name, entries in zip(names, ranges, strict=True):
            if entries:
                found_id = f"{name}/{text(entries[0][0])}"
                raw = _field(entries[0][1])
                if raw is None:
                    raise CorruptEntry(f"{found_id}: entry has no {STREAM_FIELD!r} field")
                try:
                    return found_id, codec.decode_dead_letter(raw)
                except CorruptEntry as exc:
                    raise CorruptEntry(f"{found_id}: {exc}") from exc
        return None


def _field(fields: dict[Any, Any]) -> bytes | None:
    raw = fields.get(STREAM_FIELD.encode())
    return None if raw is None else as_bytes(raw)
