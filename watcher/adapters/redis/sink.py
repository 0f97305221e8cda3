"""The Redis edge: exactly-once dead-letter and retry-ticket writes, retry claims, CLI reads.

`RedisSink` wraps a `redis.asyncio.Redis` that the caller builds and closes (with socket
timeouts and a retry policy of its choosing, and ``decode_responses=False``). Key names come
from `watcher.adapters.redis.keys`, (de)serialisation from `watcher.adapters.redis.codec`.

Exactly once: each write is one Lua script that checks the job uid's outcome marker and, only
when it is absent, writes the entry and sets the marker, in one atomic step. Replayed watch
events, relists, restarts and several daemons at once therefore produce one entry per job uid,
and a client that times out mid-write may simply call again. Lua scripts are not rolled back
on error, so in each script nothing that can fail comes after the entry's write: an entry is
never left without its marker.

Redis must not evict keys (``maxmemory-policy noeviction``): under ``volatile-*`` policies the
outcome markers, which carry TTLs, are the first keys to go, and a replay after an eviction
would write a second entry. `RedisSink.server_problems` checks this and the server version.

The caller bounds its own concurrency: redis-py's asyncio pool fails with
``MaxConnectionsError`` (a `SinkError` here) rather than waiting once ``max_connections``
(default 100) commands are in flight, unless the client uses a ``BlockingConnectionPool``.

Every `redis.RedisError` (and the per-call timeout) surfaces as `SinkError`; entries that fail
to decode surface as `codec.CorruptEntry` values or records, never as a crash.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis

from watcher.adapters.redis import codec, scripts
from watcher.adapters.redis.codec import CorruptEntry
from watcher.adapters.redis.guard import Guard, as_bytes, check_client, ms, stream_id_key, text
from watcher.adapters.redis.keys import (
    DLQ_MAX_AGE_S,
    DLQ_MAX_LEN,
    OUTCOME_TTL_S,
    STREAM_FIELD,
    Keys,
)
from watcher.core.errors import SinkError
from watcher.core.model import Action, DeadLetter, RetryTicket

__all__ = [
    "ClaimedTicket",
    "CorruptRecord",
    "DeadLetterList",
    "RedisSink",
    "SinkError",
    "WriteResult",
]

REQUEUE_BATCH: Final = 1000
"""At most this many lease-expired tickets go back to due per claim call; the rest follow on
the next calls, so one claim never blocks Redis for long after a long outage."""

OP_TIMEOUT_S: Final = 10.0
"""Upper bound on one sink call, on top of the client's socket timeouts and retries."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What `dead_letter` / `schedule_retry` did for a job uid.

    ``written`` is False when the uid was already handled before; then ``action`` and ``ref``
    describe that earlier outcome, which may be of the other kind.
    """

    written: bool
    action: Action
    ref: str
    """``<queue>/<stream-id>`` for a dead letter, the ticket id for a retry."""

    @property
    def already_handled(self) -> bool:
        return not self.written


@dataclass(frozen=True, slots=True)
class ClaimedTicket:
    ticket_id: str
    ticket: RetryTicket
    lease_until: float
    """Unix seconds; after this another claim may take the ticket again unless it is acked."""


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


_MIN_REDIS: Final = (6, 2)
_STREAM_ID = re.compile(r"\d+(-\d+)?")
_RANGE_START = re.compile(r"-|\(?\d+(-\d+)?")


class RedisSink:
    """Dead letters, retry tickets and the exactly-once markers in one Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        keys: Keys | None = None,
        outcome_ttl_s: float = OUTCOME_TTL_S,
        dlq_max_len: int = DLQ_MAX_LEN,
        dlq_max_age_s: float | None = DLQ_MAX_AGE_S,
        op_timeout_s: float = OP_TIMEOUT_S,
    ) -> None:
        check_client(redis, "RedisSink")
        if outcome_ttl_s <= 0 or dlq_max_len < 1:
            raise ValueError("outcome_ttl_s must be > 0 and dlq_max_len >= 1")
        self._redis = redis
        self._keys = keys if keys is not None else Keys()
        self._outcome_ttl_ms = ms(outcome_ttl_s)
        self._dlq_max_len = dlq_max_len
        self._dlq_max_age_ms = ms(dlq_max_age_s) if dlq_max_age_s else 0
        self._guard = Guard(op_timeout_s)
        self._dead_letter_script = redis.register_script(scripts.DEAD_LETTER)
        self._schedule_retry_script = redis.register_script(scripts.SCHEDULE_RETRY)
        self._claim_script = redis.register_script(scripts.CLAIM)
        self._release_script = redis.register_script(scripts.RELEASE)

    @property
    def keys(self) -> Keys:
        return self._keys

    # --- writes ---------------------------------------------------------------------------------

    async def dead_letter(self, letter: DeadLetter) -> WriteResult:
        """Append `letter` to its queue's stream unless its job uid was already handled."""
        payload = codec.encode_dead_letter(letter)
        k = self._keys
        async with self._guard("dead_letter"):
            reply = await self._dead_letter_script(
                keys=[k.outcome(letter.job.uid), k.dlq(letter.queue), k.queues],
                args=[
                    letter.queue,
                    payload,
                    self._outcome_ttl_ms,
                    self._dlq_max_len,
                    self._dlq_max_age_ms,
                    STREAM_FIELD,
                ],
            )
        return self._write_result(letter.job.uid, reply)

    async def schedule_retry(self, ticket: RetryTicket) -> WriteResult:
        """Store `ticket` as due at ``ticket.due_at`` unless its job uid was already handled.

        The ticket id is the failed Job's uid, so the same ticket is never stored twice.
        """
        payload = codec.encode_retry_ticket(ticket)
        k = self._keys
        ticket_id = ticket.job.uid
        async with self._guard("schedule_retry"):
            reply = await self._schedule_retry_script(
                keys=[k.outcome(ticket_id), k.retry_tickets, k.retry_due],
                args=[ticket_id, payload, ms(ticket.due_at), self._outcome_ttl_ms],
            )
        return self._write_result(ticket_id, reply)

    def _write_result(self, job_uid: str, reply: Any) -> WriteResult:
        written, marker = reply
        action, _, ref = text(marker).partition(":")
        try:
            return WriteResult(written=bool(written), action=Action(action), ref=ref)
        except ValueError:
            raise SinkError(
                f"outcome marker {self._keys.outcome(job_uid)!r} holds {text(marker)!r}, "
                "not '<action>:<ref>'"
            ) from None

    # --- retry tickets --------------------------------------------------------------------------

    async def claim_due_retries(
        self, now: float, *, limit: int, lease_s: float
    ) -> list[ClaimedTicket]:
        """Claim up to `limit` tickets due at `now`, leased until ``now + lease_s``.

        Lease-expired claims are first put back as due (crash recovery). Two callers never get
        the same ticket from one due period. Tickets that fail to decode are moved to the
        corrupt hash (see `corrupt_retries`) and not returned.
        """
        if limit < 1 or lease_s <= 0:
            raise ValueError("limit must be >= 1 and lease_s > 0")
        k = self._keys
        lease_until = now + lease_s
        async with self._guard("claim_due_retries"):
            reply = await self._claim_script(
                keys=[k.retry_due, k.retry_inflight, k.retry_tickets],
                args=[ms(now), limit, ms(lease_until), REQUEUE_BATCH],
            )
        claimed: list[ClaimedTicket] = []
        corrupt: list[tuple[str, bytes]] = []
        flat = reply[2:]
        for raw_id, body in zip(flat[::2], flat[1::2], strict=True):
            ticket_id = text(raw_id)
            try:
                ticket = codec.decode_retry_ticket(body)
            except CorruptEntry:
                corrupt.append((ticket_id, body))
                continue
            claimed.append(ClaimedTicket(ticket_id, ticket, lease_until))
        if corrupt:
            await self._quarantine(corrupt)
        return claimed

    async def _quarantine(self, entries: Sequence[tuple[str, bytes]]) -> None:
        k = self._keys
        async with self._guard("quarantine_retries"), self._redis.pipeline() as pipe:
            for ticket_id, body in entries:
                pipe.hset(k.retry_corrupt, ticket_id, body)
                pipe.hdel(k.retry_tickets, ticket_id)
                pipe.zrem(k.retry_inflight, ticket_id)
            await pipe.execute()

    async def ack_retry(self, ticket_id: str) -> bool:
        """Forget a ticket for good (the Job was re-created). False if it was already gone."""
        k = self._keys
        async with self._guard("ack_retry"), self._redis.pipeline() as pipe:
            pipe.hdel(k.retry_tickets, ticket_id)
            pipe.zrem(k.retry_inflight, ticket_id)
            pipe.zrem(k.retry_due, ticket_id)
            deleted, *_ = await pipe.execute()
        return bool(deleted)

    async def release_retry(self, ticket_id: str, due_at: float) -> bool:
        """Give a claimed ticket back, due again at `due_at`. False if it was already acked."""
        k = self._keys
        async with self._guard("release_retry"):
            reply = await self._release_script(
                keys=[k.retry_tickets, k.retry_inflight, k.retry_due],
                args=[ticket_id, ms(due_at)],
            )
        return bool(reply)

    async def handled(self, job_uids: Sequence[str]) -> set[str]:
        """The uids among `job_uids` whose outcome is already written (by anyone)."""
        if not job_uids:
            return set()
        async with self._guard("handled"), self._redis.pipeline(transaction=False) as pipe:
            for uid in job_uids:
                pipe.exists(self._keys.outcome(uid))
            found = await pipe.execute()
        return {uid for uid, hit in zip(job_uids, found, strict=True) if hit}

    async def pending_retries(self) -> int:
        """Tickets not yet acked: due or claimed."""
        k = self._keys
        async with self._guard("pending_retries"), self._redis.pipeline() as pipe:
            pipe.zcard(k.retry_due)
            pipe.zcard(k.retry_inflight)
            due, inflight = await pipe.execute()
        return int(due) + int(inflight)

    async def corrupt_retries(self) -> dict[str, bytes]:
        """Tickets that failed to decode when claimed: ticket id -> stored bytes."""
        async with self._guard("corrupt_retries"):
            raw = await self._redis.hgetall(self._keys.retry_corrupt)
        return {text(key): as_bytes(value) for key, value in raw.items()}

    # --- reads for the CLI ----------------------------------------------------------------------

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

    async def queue_depths(self) -> dict[str, int]:
        """Entries per queue (corrupt ones included), for every known queue."""
        names = await self.queues()
        async with self._guard("queue_depths"), self._redis.pipeline() as pipe:
            for name in names:
                pipe.xlen(self._keys.dlq(name))
            lengths = await pipe.execute()
        return {name: int(n) for name, n in zip(names, lengths, strict=True)}

    async def oldest_age_s(self, now: float) -> dict[str, float]:
        """Age in seconds of the oldest entry of every non-empty queue, from its stream id."""
        names = await self.queues()
        async with self._guard("oldest_age_s"), self._redis.pipeline() as pipe:
            for name in names:
                pipe.xrange(self._keys.dlq(name), count=1)
            firsts = await pipe.execute()
        return {
            name: max(0.0, now - stream_id_key(text(first[0][0]))[0] / 1000)
            for name, first in zip(names, firsts, strict=True)
            if first
        }

    async def server_problems(self) -> list[str]:
        """Settings of the Redis server that break the sink's guarantees; empty when fine."""
        async with self._guard("server_problems"):
            info = await self._redis.info()
        problems = []
        version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])
        if version < _MIN_REDIS:
            problems.append(
                f"redis {info.get('redis_version')} is too old: need >= 6.2 "
                "(ZRANGE BYSCORE, XTRIM MINID)"
            )
        policy = info.get("maxmemory_policy", "noeviction")
        if policy != "noeviction":
            problems.append(
                f"maxmemory-policy is {policy}, not noeviction: evicted outcome markers "
                "break exactly-once"
            )
        return problems


def _field(fields: dict[Any, Any]) -> bytes | None:
    raw = fields.get(STREAM_FIELD.encode())
    return None if raw is None else as_bytes(raw)
