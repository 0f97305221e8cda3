"""A Redis consumer group on the dead-letter streams, for `kube-dlq dlq consume`.

Keys, beside the streams (same ``{cluster}`` hash tag, so every script below runs on Redis
Cluster)::

    kube-dlq:{prod}:consume:<group>:attempts  hash  entry id -> handler runs counted so far;
                                                    removed when the entry is acked or parked
    kube-dlq:{prod}:consume:<group>:parked    list  JSON records of entries given up on, oldest
                                                    first, capped at ``park_max`` (LTRIM)

The consumer group itself lives in each stream (XGROUP CREATE ... 0 MKSTREAM: a new group
starts at the stream's first entry). Entries are opened like `DeadLetterQueries` opens them:
an entry whose seal does not check out, or that does not decode, is a `Delivery` with a
``problem`` and no letter, never an exception. Ownership matters for every write: counting a
run and keeping an entry check, in one script, that it is still in *this* consumer's pending
list, and ack and park write only if XACK acked something, so an entry taken over by another
consumer is never parked twice. Redis failures surface as `SinkError`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import ResponseError

from watcher.adapters.redis import codec
from watcher.adapters.redis.client import RedisClient
from watcher.adapters.redis.codec import CorruptEntry
from watcher.adapters.redis.guard import Guard, as_bytes, check_client, ms, text
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.adapters.redis.seal import ForgedEntry, Seal, dead_letter_place
from watcher.core.consume import Delivery
from watcher.core.model import DeadLetter
from watcher.core.settings import RedisSettings

__all__ = ["GROUP_NAME", "ParkedEntry", "ParkedList", "StreamConsumer", "check_group"]

GROUP_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Group and consumer names: no braces (they would break the hash tag), no ``:``."""

# KEYS: stream, attempts. ARGV: group, consumer, stream id, entry id.
_BEGIN: Final = """
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #mine == 0 then return -1 end
return redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
"""
# KEYS: stream, attempts. ARGV: group, consumer, stream id, entry id.
_UNCOUNT: Final = """
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #mine == 0 then return 0 end
return redis.call('HINCRBY', KEYS[2], ARGV[4], -1)
"""
# KEYS: stream. ARGV: group, consumer, stream id. XCLAIM JUSTID resets the idle time only.
_KEEP: Final = """
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #mine == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""
# KEYS: stream, attempts, parked. ARGV: group, stream id, entry id, record ('' = ack only), cap.
_SETTLE: Final = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[3])
if acked == 1 and ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[4])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
end
return acked
"""
# KEYS: stream. ARGV: group, consumer. Only a consumer with nothing pending is deleted, checked
# in the same script: DELCONSUMER drops its pending entries, which would lose them.
_FORGET_CONSUMER: Final = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) + 1
"""


def check_group(name: str, what: str = "group") -> str:
    if not GROUP_NAME.fullmatch(name):
        raise ValueError(
            f"consumer {what} must be 1-64 letters, digits, '.', '_' or '-', got {name!r}"
        )
    return name


def attempts_key(keys: Keys, group: str) -> str:
    return f"{keys.base}:consume:{group}:attempts"


def parked_key(keys: Keys, group: str) -> str:
    return f"{keys.base}:consume:{group}:parked"


class StreamConsumer:
    """One consumer of one group, on one queue or on every queue (`ConsumerStore`)."""

    def __init__(
        self,
        redis: RedisClient,
        settings: RedisSettings,
        *,
        cluster_name: str,
        seal: Seal,
        group: str,
        consumer: str,
        queue: str | None = None,
        claim_idle_s: float = 60.0,
        park_max: int = 10_000,
        forget_idle_s: float = 24 * 3600.0,
    ) -> None:
        check_client(redis, "StreamConsumer")
        self._redis = redis
        self._keys = Keys(prefix=settings.key_prefix, cluster=cluster_name)
        self._seal = seal
        self.group = check_group(group)
        self.consumer = check_group(consumer, "name")
        self._queue = queue
        self._claim_idle_ms = max(1, ms(claim_idle_s))
        self._reclaim_every_s = claim_idle_s / 2
        self._forget_idle_ms = ms(forget_idle_s)
        self._park_max = park_max
        self._guard = Guard(settings.operation_timeout_s)
        self._grouped: set[str] = set()
        self._own_done: set[str] = set()
        """Queues whose pending entries of this consumer's name (from before a restart) are
        all handed out; only new entries are read from them."""
        self._sweep: list[str] = []
        self._claim_cursor: dict[str, str] = {}
        self._next_sweep = 0.0
        self._attempts = attempts_key(self._keys, self.group)
        self._parked = parked_key(self._keys, self.group)

    @property
    def keys(self) -> Keys:
        return self._keys

    async def prepare(self) -> None:
        """Create missing groups; own pending entries are read again first (after a Redis
        error, one may have been read and not settled)."""
        self._grouped.clear()
        self._own_done.clear()
        await self._queues()

    async def _queues(self) -> list[str]:
        """The queues consumed, each with the group created (queues appear while running)."""
        if self._queue is not None:
            names = [self._queue]
        else:
            async with self._guard("queues"):
                members = await self._redis.smembers(self._keys.queues)
            names = []
            for member in map(as_bytes, members):
                try:
                    names.append(member.decode())
                except UnicodeDecodeError:
                    continue  # names no queue kube-dlq writes; `dlq list` reports it
            names.sort()
        for name in names:
            if name not in self._grouped:
                await self._create_group(name)
                self._grouped.add(name)
        return names

    async def _create_group(self, queue: str) -> None:
        async with self._guard("xgroup_create"):
            try:
                await self._redis.xgroup_create(
                    self._keys.dlq(queue), self.group, id="0", mkstream=True
                )
            except ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    async def reclaim(self) -> Delivery | None:
        """One entry pending longer than the claim idle time, anyone's, now this one's.

        A sweep over the queues runs every half claim idle time; within one, each call takes
        one entry, so they are handled (and kept) one at a time.
        """
        if not self._sweep:
            now = time.monotonic()
            if now < self._next_sweep:
                return None
            self._next_sweep = now + self._reclaim_every_s
            self._sweep = await self._queues()
            for queue in self._sweep:
                await self._forget_idle_consumers(queue)
        while self._sweep:
            queue = self._sweep[0]
            start = self._claim_cursor.get(queue, "0-0")
            async with self._guard("xautoclaim"):
                reply: list[Any] = await self._redis.xautoclaim(
                    self._keys.dlq(queue),
                    self.group,
                    self.consumer,
                    self._claim_idle_ms,
                    start_id=start,
                    count=1,
                )
            cursor = text(reply[0])
            entries = reply[1] or []
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                # Trimmed or purged while pending: Redis dropped them from the group already.
                async with self._guard("hdel"):
                    await self._redis.hdel(
                        self._attempts, *(f"{queue}/{text(sid)}" for sid in deleted)
                    )
            if cursor == "0-0":
                self._sweep.pop(0)
                self._claim_cursor.pop(queue, None)
            else:
                self._claim_cursor[queue] = cursor
            for sid, fields in entries:
                if sid is not None:
                    return self._delivery(queue, text(sid), fields)
        return None

    async def _forget_idle_consumers(self, queue: str) -> None:
        """Drop consumers idle ``forget_idle_s`` with nothing pending: each pod's name is a
        new consumer, so without this the group's consumer list grows with every restart.
        A live one merely blocked in a long handler loses nothing: reading re-creates it."""
        stream = self._keys.dlq(queue)
        async with self._guard("xinfo_consumers"):
            consumers = await self._redis.xinfo_consumers(stream, self.group)
        for info in consumers:
            name = text(info.get("name", b""))
            if name == self.consumer or int(info.get("pending", 1)) > 0:
                continue
            if int(info.get("idle", 0)) < self._forget_idle_ms:
                continue
            async with self._guard("forget_consumer"):
                await self._redis.eval(_FORGET_CONSUMER, 1, stream, self.group, name)

    async def next(self, *, block_s: float) -> list[Delivery]:
        queues = await self._queues()
        own = [q for q in queues if q not in self._own_done]
        if own:
            found = await self._own_pending(own)
            if found:
                return found
        if not queues:
            await asyncio.sleep(block_s)  # no queue yet: wait as a blocking read would
            return []
        streams: dict[Any, Any] = {self._keys.dlq(q): ">" for q in queues}
        async with self._guard("xreadgroup"):
            reply = await self._redis.xreadgroup(
                self.group, self.consumer, streams, count=1, block=max(1, ms(block_s))
            )
        out: list[Delivery] = []
        prefix = self._keys.dlq_prefix
        for stream, entries in _stream_replies(reply):
            queue = stream.removeprefix(prefix)
            for sid, fields in entries:
                out.append(self._delivery(queue, text(sid), fields))
        return out

    async def _own_pending(self, queues: list[str]) -> list[Delivery]:
        """The first entry still pending for this consumer's name in each of `queues`."""
        out: list[Delivery] = []
        for queue in queues:
            stream = self._keys.dlq(queue)
            async with self._guard("xpending_range"):
                pending = await self._redis.xpending_range(
                    stream, self.group, min="-", max="+", count=1, consumername=self.consumer
                )
            if not pending:
                self._own_done.add(queue)
                continue
            message_id: Any = pending[0]["message_id"]
            sid = text(message_id)
            async with self._guard("xrange"):
                entries = await self._redis.xrange(stream, min=sid, max=sid, count=1)
            if entries:
                out.append(self._delivery(queue, sid, entries[0][1]))
            else:
                out.append(
                    Delivery(f"{queue}/{sid}", queue, None, "deleted from the stream", gone=True)
                )
        return out

    def _delivery(self, queue: str, sid: str, fields: Any) -> Delivery:
        entry_id = f"{queue}/{sid}"
        raw = fields.get(STREAM_FIELD.encode()) if isinstance(fields, dict) else None
        if raw is None:
            return Delivery(entry_id, queue, None, f"entry has no {STREAM_FIELD!r} field")
        return _opened(self._seal, self._keys, entry_id, queue, as_bytes(raw))

    def _args(self, delivery: Delivery) -> tuple[list[str], list[str]]:
        sid = delivery.entry_id.rpartition("/")[2]
        keys = [self._keys.dlq(delivery.queue), self._attempts]
        return keys, [self.group, self.consumer, sid, delivery.entry_id]

    async def begin_attempt(self, delivery: Delivery) -> int | None:
        keys, argv = self._args(delivery)
        async with self._guard("begin_attempt"):
            count = int(await self._redis.eval(_BEGIN, len(keys), *keys, *argv))
        return None if count < 0 else count

    async def uncount(self, delivery: Delivery) -> None:
        keys, argv = self._args(delivery)
        async with self._guard("uncount"):
            await self._redis.eval(_UNCOUNT, len(keys), *keys, *argv)

    async def keep(self, delivery: Delivery) -> bool:
        keys, argv = self._args(delivery)
        async with self._guard("keep"):
            return bool(await self._redis.eval(_KEEP, 1, keys[0], *argv[:3]))

    async def ack(self, delivery: Delivery) -> None:
        await self._settle(delivery, "")

    async def park(self, delivery: Delivery, *, attempts: int, reason: str) -> None:
        await self._settle(delivery, self.parked_record(delivery, attempts, reason))

    def parked_record(self, delivery: Delivery, attempts: int, reason: str) -> str:
        return json.dumps(
            {
                "v": 1,
                "id": delivery.entry_id,
                "queue": delivery.queue,
                "group": self.group,
                "consumer": self.consumer,
                "attempts": attempts,
                "reason": reason,
                "parked_at": time.time(),
            },
            separators=(",", ":"),
        )

    async def _settle(self, delivery: Delivery, record: str) -> None:
        keys, argv = self._args(delivery)
        keys.append(self._parked)
        sid, entry_id = argv[2], argv[3]
        async with self._guard("settle"):
            await self._redis.eval(
                _SETTLE, len(keys), *keys, self.group, sid, entry_id, record, self._park_max
            )


@dataclass(frozen=True, slots=True)
class ParkedEntry:
    """One record of a group's parked list, with the dead letter it names when still there."""

    entry_id: str
    queue: str
    attempts: int
    reason: str
    parked_at: float
    letter: DeadLetter | None
    problem: str | None
    """Why `letter` is None: the record or the entry is unreadable, forged, or trimmed."""


class ParkedList:
    """Read one group's parked list (`kube-dlq dlq list --parked G`)."""

    def __init__(
        self, redis: RedisClient, settings: RedisSettings, *, cluster_name: str, seal: Seal
    ) -> None:
        check_client(redis, "ParkedList")
        self._redis = redis
        self._keys = Keys(prefix=settings.key_prefix, cluster=cluster_name)
        self._seal = seal
        self._guard = Guard(settings.operation_timeout_s)

    async def entries(self, group: str, *, count: int) -> list[ParkedEntry]:
        """The oldest `count` records, each looked up in its stream; never raises for what
        is stored (a bad record is an entry with a ``problem``)."""
        async with self._guard("lrange"):
            raw = await self._redis.lrange(parked_key(self._keys, check_group(group)), 0, count - 1)
        out = []
        for body in raw:
            out.append(await self._entry(as_bytes(body)))
        return out

    async def _entry(self, body: bytes) -> ParkedEntry:
        try:
            doc = json.loads(body)
            entry_id, queue = str(doc["id"]), str(doc["queue"])
            attempts, reason = int(doc["attempts"]), str(doc["reason"])
            parked_at = float(doc["parked_at"])
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            shown = base64.b64encode(body[:60]).decode()
            return ParkedEntry("?", "?", 0, "", 0.0, None, f"unreadable record ({exc}): {shown}")
        sid = entry_id.rpartition("/")[2]
        letter: DeadLetter | None = None
        problem: str | None = "no longer in the stream (trimmed or purged)"
        if queue and re.fullmatch(r"\d+-\d+", sid):
            async with self._guard("xrange"):
                found = await self._redis.xrange(self._keys.dlq(queue), min=sid, max=sid, count=1)
            if found:
                raw = (found[0][1] or {}).get(STREAM_FIELD.encode())
                opened = _opened(self._seal, self._keys, entry_id, queue, as_bytes(raw or b""))
                letter, problem = opened.letter, opened.problem
        return ParkedEntry(entry_id, queue, attempts, reason, parked_at, letter, problem)


def _opened(seal: Seal, keys: Keys, entry_id: str, queue: str, raw: bytes) -> Delivery:
    try:
        opened = seal.open(codec.KIND_DEAD_LETTER, dead_letter_place(keys, queue), raw)
        return Delivery(entry_id, queue, codec.decode_dead_letter(opened))
    except CorruptEntry as exc:
        return Delivery(entry_id, queue, None, str(exc), forged=isinstance(exc, ForgedEntry))


def _stream_replies(reply: Any) -> list[tuple[str, list[Any]]]:
    """XREADGROUP's reply as ``[(stream, entries)]`` (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else reply
    return [(text(stream), list(entries or [])) for stream, entries in pairs]
