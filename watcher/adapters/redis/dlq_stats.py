"""`dlq stats`: depth, oldest age and last-hour inflow per queue, class and namespace.

Answered from the stream heads and the index zsets (XLEN, one XRANGE COUNT 1, ZCARD, ZRANGE
0 0, ZCOUNT per key): a few round-trips whatever the queues hold, never a scan. Class and
namespace figures come from the indexes, so entries written before the indexes existed (an
upgrade) count in their queue's depth only, until they are trimmed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from watcher.adapters.redis.client import RedisClient
from watcher.adapters.redis.guard import Guard, stream_id_key, text
from watcher.adapters.redis.keys import Keys

__all__ = ["INFLOW_WINDOW_MS", "Stat", "dlq_stats"]

INFLOW_WINDOW_MS: Final = 3_600_000
"""Inflow is counted over the last hour."""


@dataclass(frozen=True, slots=True)
class Stat:
    """One row: entries of a queue, a class or a namespace (the last two over every queue)."""

    by: str
    """"queue", "class" or "namespace"."""
    name: str
    depth: int
    oldest_age_s: float | None
    """None: no entry."""
    inflow_1h: int


@dataclass(slots=True)
class _Acc:
    depth: int = 0
    oldest_ms: int | None = None
    inflow: int = 0

    def add(self, depth: int, oldest_ms: int | None, inflow: int) -> None:
        self.depth += depth
        self.inflow += inflow
        if oldest_ms is not None and (self.oldest_ms is None or oldest_ms < self.oldest_ms):
            self.oldest_ms = oldest_ms


async def dlq_stats(
    redis: RedisClient, keys: Keys, guard: Guard, queues: list[str], now_ms: int
) -> list[Stat]:
    """Rows by queue, then by class, then by namespace, each sorted by name."""
    since = now_ms - INFLOW_WINDOW_MS
    async with guard("stats"), redis.pipeline(transaction=True) as pipe:
        for q in queues:
            pipe.xlen(keys.dlq(q))
            pipe.xrange(keys.dlq(q), count=1)
            pipe.smembers(keys.dlq_indexes(q))
        heads = await pipe.execute()
    indexes: list[tuple[str, str, str]] = []  # (queue, kind, value) per index key
    for i, q in enumerate(queues):
        registry = keys.dlq_indexes(q)
        for member in heads[3 * i + 2]:
            rest = text(member).removeprefix(registry + ":")
            kind, _, value = rest.partition(":")
            if kind in ("class", "ns") and value:
                indexes.append((q, kind, value))
    async with guard("stats"), redis.pipeline(transaction=True) as pipe:
        for q, kind, value in indexes:
            key = (
                keys.dlq_class_index(q, value)
                if kind == "class"
                else keys.dlq_namespace_index(q, value)
            )
            pipe.zcard(key)
            pipe.zrange(key, 0, 0, withscores=True)
            pipe.zcount(key, since, "+inf")
        sizes = await pipe.execute()
    by_queue: dict[str, _Acc] = {q: _Acc() for q in queues}
    by_kind: dict[str, dict[str, _Acc]] = {"class": {}, "ns": {}}
    for i, q in enumerate(queues):
        first = heads[3 * i + 1]
        oldest = stream_id_key(text(first[0][0]))[0] if first else None
        by_queue[q].add(int(heads[3 * i]), oldest, 0)
    for j, (q, kind, value) in enumerate(indexes):
        depth, first, inflow = sizes[3 * j], sizes[3 * j + 1], int(sizes[3 * j + 2])
        oldest = int(first[0][1]) if first else None
        by_kind[kind].setdefault(value, _Acc()).add(int(depth), oldest, inflow)
        if kind == "class":  # each entry is in exactly one class index of its queue
            by_queue[q].inflow += inflow

    def rows(by: str, accs: dict[str, _Acc]) -> list[Stat]:
        return [
            Stat(
                by,
                name,
                acc.depth,
                None if acc.oldest_ms is None else max(0.0, (now_ms - acc.oldest_ms) / 1000),
                acc.inflow,
            )
            for name, acc in sorted(accs.items())
        ]

    return (
        rows("queue", by_queue) + rows("class", by_kind["class"]) + rows("namespace", by_kind["ns"])
    )
