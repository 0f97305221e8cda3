"""The daemon's side of Redis: exactly-once outcome writes, retry tickets, gauges, health.

`RedisStore` wraps a `redis.asyncio.Redis` or `RedisCluster` that the caller builds and closes
(normally with `watcher.adapters.redis.client.redis_client`, always with
``decode_responses=False``) and takes
the ``redis`` settings section, so every documented key (stream caps, the TTL of forgotten
markers, claim lease, operation timeout) is the value it uses. Key names come from
`watcher.adapters.redis.keys`, (de)serialisation from `watcher.adapters.redis.codec`, the Lua
scripts from `watcher.adapters.redis.scripts`. The CLI's reads are
`watcher.adapters.redis.queries`.

Exactly once: each write is one Lua script that checks the job uid's outcome marker and, only
when it is absent, writes the entry and sets the marker, in one atomic step. Replayed watch
events, relists, restarts and several daemons at once therefore produce one entry per job uid,
and a client that times out mid-write may simply call again. Lua scripts are not rolled back
on error, so in each script nothing that can fail comes after the entry's write: an entry is
never left without its marker.

Markers have no TTL while their Job may still be in the API: each is indexed (namespace and
uid, scored by a sequence number) in the same script, and `forget_absent` lets expire only
those a complete list of Jobs showed gone (docs/exactly-once.md has the argument).

Redis must not evict keys (``maxmemory-policy noeviction``): an evicted marker lets a replay
write a second entry, and under ``allkeys-*`` policies any marker may go.
`RedisStore.server_problems` checks this and the server version.

An outcome is only as durable as the server makes it: without the append-only file, or with
replicas a failover can promote before they have it, Redis acknowledges a write it can still
lose. `RedisStore.durability` reads what the server does (INFO, and CONFIG GET where it is
allowed) and `assess_durability` says what is missing; the daemon reports it.

Pipelines name ``transaction=True``: it is redis-py's default for one server but not for
`RedisCluster`, whose MULTI/EXEC (redis-py >= 6.2) needs every key in one slot, which the hash
tag gives.

The caller bounds its own concurrency: redis-py's asyncio pool fails with
``MaxConnectionsError`` (a `SinkError` here) rather than waiting once ``max_connections``
(default 100) commands are in flight, unless the client uses a ``BlockingConnectionPool``.

Every `redis.RedisError` (and the operation timeout) surfaces as `SinkError`
(`watcher.adapters.redis.guard`), a write refused for its stale leadership term as
`FencedWrite` (`watcher.adapters.redis.fencing`); undecodable tickets are quarantined.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence, Set
from typing import Any, Final

from watcher.adapters.redis import scripts, servers
from watcher.adapters.redis.bulk import BulkSchedule
from watcher.adapters.redis.client import RedisClient
from watcher.adapters.redis.codec import CorruptEntry
from watcher.adapters.redis.creates import CreateRecords
from watcher.adapters.redis.due import DueTimes
from watcher.adapters.redis.durability import Durability
from watcher.adapters.redis.fencing import Fence, TermSource, unfenced
from watcher.adapters.redis.guard import Guard, as_bytes, check_client, ms, stream_id_key, text
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.adapters.redis.redrive import RedriveRecords
from watcher.adapters.redis.seal import ForgedEntry, Seal, open_ticket, seal_letter, seal_ticket
from watcher.core.errors import SinkError
from watcher.core.model import (
    Action,
    ClaimedBatch,
    ClaimedTicket,
    DeadLetter,
    ForgetResult,
    JobRef,
    QuarantinedTicket,
    RetryTicket,
    WriteResult,
)
from watcher.core.settings import RedisSettings

__all__ = ["ClaimedBatch", "ClaimedTicket", "ForgetResult", "RedisStore", "WriteResult"]

REQUEUE_BATCH: Final = 1000
"""At most this many lease-expired tickets go back to due per claim call; the rest follow on
the next calls, so one claim never blocks Redis for long after a long outage."""

FORGET_BATCH: Final = 500
"""Markers read from the index, and at most forgotten, per round-trip of `forget_absent`."""


class RedisStore(CreateRecords, RedriveRecords, DueTimes, BulkSchedule):
    """Dead letters, retry tickets and the exactly-once markers of one cluster in one Redis."""

    def __init__(
        self,
        redis: RedisClient,
        settings: RedisSettings,
        *,
        cluster_name: str,
        seal: Seal | None = None,
    ) -> None:
        """`seal` signs what is written and checks what is read (None, for tests and tools:
        unsigned); the daemon's comes from the ``security`` settings (watcher.app.sealing)."""
        check_client(redis, "RedisStore")
        # The config loader validates these too; checked again because tests and tools build
        # RedisSettings by hand, and a zero here would silently disable a guarantee.
        if settings.stream_maxlen < 1:
            raise ValueError(f"stream_maxlen must be >= 1, got {settings.stream_maxlen}")
        for name in ("stream_max_age_s", "outcome_ttl_s", "retry_claim_lease_s"):
            if getattr(settings, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(settings, name)!r}")
        self._redis = redis
        self._keys = Keys(prefix=settings.key_prefix, cluster=cluster_name)
        self._seal = seal or Seal(signing=None, allow_unsigned=True)
        self._stream_maxlen = settings.stream_maxlen
        # At least 1 ms: the script reads 0 as "no age trim", which no setting asks for.
        self._stream_max_age_ms = max(1, ms(settings.stream_max_age_s))
        self._outcome_ttl_ms = max(1, ms(settings.outcome_ttl_s))
        self._lease_s = settings.retry_claim_lease_s
        self._guard = Guard(settings.operation_timeout_s)
        self._dead_letter_script = redis.register_script(scripts.DEAD_LETTER)
        self._schedule_retry_script = redis.register_script(scripts.SCHEDULE_RETRY)
        self._claim_script = redis.register_script(scripts.CLAIM)
        self._release_script = redis.register_script(scripts.RELEASE)
        self._abandon_script = redis.register_script(scripts.ABANDON_RETRY)
        self._forget_script = redis.register_script(scripts.FORGET)
        self._register_create_scripts()
        self._register_redrive_scripts()
        # Every write script; outcome writes and retry calls made at once share round trips
        # through it (`Fence.call_batched`), each still its own script call (coalesce.py).
        self._fence = Fence(redis, self._keys, self._guard, unfenced)

    def with_term(self, term: TermSource) -> RedisStore:
        """This store, its writes fenced by the term `term()` answers (fencing.py)."""
        fenced = copy.copy(self)
        fenced._fence = Fence(self._redis, self._keys, self._guard, term)
        return fenced

    async def claim_term(self, term: int) -> int | None:
        """A new leader's term: None if claimed, else the fence at or above it (fencing.py)."""
        return await self._fence.claim(term)

    @property
    def keys(self) -> Keys:
        return self._keys

    # --- writes ---------------------------------------------------------------------------------

    async def dead_letter(self, letter: DeadLetter) -> WriteResult:
        """Append `letter` to its queue's stream unless its job uid was already handled.

        The stream is trimmed (approximately: whole stream nodes) to ``stream_maxlen`` entries
        and to entries younger than ``stream_max_age_s`` in the same step; the result's
        ``trimmed`` is how many entries that removed (exactly, not approximately).
        """
        keys, args = self._dead_letter_call(letter)
        reply = await self._fence.call_batched(
            "dead_letter", self._dead_letter_script, keys=keys, args=args
        )
        return self._write_result(letter.job.uid, reply)

    def _dead_letter_call(self, letter: DeadLetter) -> tuple[list[Any], list[Any]]:
        """KEYS and ARGV of dead_letter.lua for `letter` (redrive_failed.lua adds to both)."""
        k = self._keys
        keys = [
            k.outcome(letter.job.uid),
            k.dlq(letter.queue),
            k.queues,
            k.outcome_index,
            k.outcome_seq,
            *k.dlq_entry_indexes(letter.queue, letter.failure_class, letter.job.namespace),
        ]
        payload = seal_letter(self._seal, k, letter)
        max_age = self._stream_max_age_ms
        return keys, [
            letter.queue,
            payload,
            self._stream_maxlen,
            max_age,
            STREAM_FIELD,
            _member(letter.job),
        ]

    async def schedule_retry(self, ticket: RetryTicket, *, delay_s: float = 0.0) -> WriteResult:
        """Store `ticket` as due `delay_s` from now unless its job uid was already handled.

        "Now" is Redis's clock, not this process's (``ticket.due_at`` is kept for people to
        read). The ticket id is the failed Job's uid, so the same ticket is never stored twice.
        """
        keys, args = self._schedule_call(ticket, delay_s)
        script = self._schedule_retry_script
        reply = await self._fence.call_batched("schedule_retry", script, keys=keys, args=args)
        return self._write_result(ticket.job.uid, reply)

    def _schedule_call(self, ticket: RetryTicket, delay_s: float) -> tuple[list[Any], list[Any]]:
        """KEYS and ARGV of schedule_retry.lua for `ticket` (also `BulkSchedule`'s)."""
        k, ticket_id = self._keys, ticket.job.uid
        payload = seal_ticket(self._seal, k, ticket)
        keys = [k.outcome(ticket_id), k.retry_tickets, k.retry_due, k.outcome_index, k.outcome_seq]
        return keys, [ticket_id, payload, ms(delay_s), _member(ticket.job)]

    def _write_result(self, job_uid: str, reply: Any) -> WriteResult:
        written, marker, *rest = reply
        trimmed = int(rest[0]) if rest else 0
        action, _, ref = text(marker).partition(":")
        try:
            return WriteResult(
                written=bool(written), action=Action(action), ref=ref, trimmed=trimmed
            )
        except ValueError:
            raise SinkError(
                f"outcome marker {self._keys.outcome(job_uid)!r} holds {text(marker)!r}, "
                "not '<action>:<ref>'"
            ) from None

    # --- forgetting markers ----------------------------------------------------------------------

    async def outcome_watermark(self) -> int:
        """The sequence number of the newest marker written so far (0: none yet).

        Read it before a complete list of Jobs starts and pass it to `forget_absent` after:
        every marker at or below it was written before the list began, so its Job, if it still
        existed, was in the list.
        """
        async with self._guard("outcome_watermark"):
            raw = await self._redis.get(self._keys.outcome_seq)
        return int(raw) if raw is not None else 0

    async def forget_absent(
        self,
        present_uids: Set[str],
        *,
        written_up_to: int,
        namespaces: Set[str] | None,
    ) -> ForgetResult:
        """Let expire the markers of Jobs a complete list showed gone from the API.

        A marker is forgotten when it is indexed at or below `written_up_to` (the
        `outcome_watermark` read before the list began), its uid is not in `present_uids`
        (every Job uid that list returned), its namespace is in `namespaces` (None: any) and no
        retry ticket of its uid is pending. It then leaves the index and expires after
        ``redis.outcome_ttl_s``. The index is read in batches of `FORGET_BATCH`, each batch
        forgotten in one script that checks all of this again; running it twice, or from two
        processes at once, forgets each marker once.
        """
        k = self._keys
        forgotten = pending = out_of_scope = 0
        low: str = "-inf"
        while True:
            reply: Any
            async with self._guard("forget_absent"):
                reply = await self._redis.zrange(
                    k.outcome_index,
                    low,
                    written_up_to,
                    byscore=True,
                    offset=0,
                    num=FORGET_BATCH,
                    withscores=True,
                )
            page = [(text(member), int(score)) for member, score in reply]
            absent: list[tuple[str, str]] = []
            for member, _ in page:
                namespace, uid = Keys.outcome_member_parts(member)
                if not uid or uid in present_uids:
                    continue  # (no uid: not written by the scripts; left alone)
                if namespaces is not None and namespace not in namespaces:
                    out_of_scope += 1
                    continue
                absent.append((member, uid))
            if absent:
                done, kept = await self._fence.call(
                    "forget_absent",
                    self._forget_script,
                    keys=[k.outcome_index, k.retry_tickets, *(k.outcome(uid) for _, uid in absent)],
                    args=[
                        written_up_to,
                        self._outcome_ttl_ms,
                        *(part for pair in absent for part in pair),
                    ],
                )
                forgotten += int(done)
                pending += int(kept)
            if len(page) < FORGET_BATCH:
                break
            # Scores are distinct (each marker takes the next number), so this resumes exactly.
            low = f"({page[-1][1]}"
        return ForgetResult(forgotten=forgotten, pending_retry=pending, out_of_scope=out_of_scope)

    async def outcome_markers(self) -> int:
        """Markers kept for good (indexed): Jobs that may still be in the API."""
        async with self._guard("outcome_markers"):
            return int(await self._redis.zcard(self._keys.outcome_index))

    # --- retry tickets --------------------------------------------------------------------------

    async def claim_due_retries(self, *, limit: int) -> ClaimedBatch:
        """Claim up to `limit` due tickets, leased for ``retry_claim_lease_s``, each with its
        claim number (the fence of `begin_create` and the settling calls).

        Due and lease times are Redis's clock (TIME in the script), never this process's.

        Lease-expired claims are first put back as due (crash recovery). Two callers never get
        the same ticket from one due period. A ticket that fails to decode (or whose id is not
        UTF-8) is moved to the corrupt hash (see `corrupt_retries`), never returned and never
        raised: one poison ticket must not stall the batch around it, nor come back after its
        lease to stall the next one. So is a ticket whose seal does not check out (unsigned,
        unknown key, altered or moved: ``forged`` in ``.quarantined``, for the caller to count
        and report): kube-dlq creates no Job it did not describe itself.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        k = self._keys
        reply = await self._fence.call(
            "claim_due_retries",
            self._claim_script,
            keys=[k.retry_due, k.retry_inflight, k.retry_tickets, k.retry_claims],
            args=[ms(self._lease_s), limit, REQUEUE_BATCH],
        )
        lease_until = int(reply[2]) / 1000 + self._lease_s
        claimed: list[ClaimedTicket] = []
        corrupt: list[tuple[bytes, bytes]] = []
        quarantined: list[QuarantinedTicket] = []
        flat = reply[3:]
        for raw_id, body, claim in zip(flat[::3], flat[1::3], flat[2::3], strict=True):
            raw_id, body = as_bytes(raw_id), as_bytes(body)
            try:
                ticket_id = raw_id.decode()
                ticket = open_ticket(self._seal, k, ticket_id, body)
            except (CorruptEntry, UnicodeDecodeError) as exc:
                error = str(exc) if isinstance(exc, CorruptEntry) else f"ticket id: {exc}"
                corrupt.append((raw_id, body))
                forged = isinstance(exc, ForgedEntry)
                quarantined.append(QuarantinedTicket(_shown(raw_id), error, forged=forged))
                continue
            claimed.append(ClaimedTicket(ticket_id, ticket, lease_until, int(claim)))
        if corrupt:
            await self._quarantine(corrupt)
        return ClaimedBatch(claimed, quarantined)

    async def _quarantine(self, entries: Sequence[tuple[bytes, bytes]]) -> None:
        # By the raw id: an id that is not UTF-8 has no str that names the same key.
        k = self._keys
        async with (
            self._guard("quarantine_retries"),
            self._redis.pipeline(transaction=True) as pipe,
        ):
            for ticket_id, body in entries:
                pipe.hset(k.retry_corrupt, ticket_id, body)
                pipe.hdel(k.retry_tickets, ticket_id)
                pipe.zrem(k.retry_inflight, ticket_id)
                pipe.hdel(k.retry_claims, ticket_id)
            await pipe.execute()

    async def abandon_retry(
        self, ticket_id: str, letter: DeadLetter, *, claim: int = 0
    ) -> WriteResult | None:
        """Replace a claimed ticket whose Job cannot be created by `letter`, atomically.

        None when the ticket was already settled (acked, or abandoned by another replica), or
        (with `claim`) claimed by another replica since: then nothing is written, so a retry is
        never both created and dead-lettered, and never dead-lettered twice.
        """
        k = self._keys
        payload = seal_letter(self._seal, k, letter)
        reply = await self._fence.call(
            "abandon_retry",
            self._abandon_script,
            keys=[
                k.outcome(letter.job.uid),
                k.dlq(letter.queue),
                k.queues,
                k.retry_tickets,
                k.retry_inflight,
                k.retry_due,
                k.retry_claims,
                *k.dlq_entry_indexes(letter.queue, letter.failure_class, letter.job.namespace),
            ],
            args=[
                letter.queue,
                payload,
                self._stream_maxlen,
                self._stream_max_age_ms,
                STREAM_FIELD,
                ticket_id,
                claim or "",
            ],
        )
        if int(reply[0]) != 1:
            return None
        return self._write_result(letter.job.uid, reply)

    async def release_retry(self, ticket_id: str, *, delay_s: float, claim: int = 0) -> bool:
        """Give a claimed ticket back, due again `delay_s` from now (Redis's clock). False if it
        was already settled, or (with `claim`) claimed by another replica since."""
        k = self._keys
        reply = await self._fence.call(
            "release_retry",
            self._release_script,
            keys=[k.retry_tickets, k.retry_inflight, k.retry_due, k.retry_claims],
            args=[ticket_id, ms(delay_s), claim or ""],
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
        async with self._guard("pending_retries"), self._redis.pipeline(transaction=True) as pipe:
            pipe.zcard(k.retry_due)
            pipe.zcard(k.retry_inflight)
            due, inflight = await pipe.execute()
        return int(due) + int(inflight)

    async def corrupt_retries(self) -> dict[str, bytes]:
        """Tickets that failed to decode when claimed: ticket id -> stored bytes."""
        async with self._guard("corrupt_retries"):
            raw = await self._redis.hgetall(self._keys.retry_corrupt)
        return {_shown(as_bytes(key)): as_bytes(value) for key, value in raw.items()}

    # --- gauges and health ----------------------------------------------------------------------

    async def queue_depths(self) -> dict[str, int]:
        """Entries per queue (corrupt ones included), for every known queue."""
        names = await self._queues("queue_depths")
        async with self._guard("queue_depths"), self._redis.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.xlen(self._keys.dlq(name))
            lengths = await pipe.execute()
        return {name: int(n) for name, n in zip(names, lengths, strict=True)}

    async def oldest_age_s(self, now: float) -> dict[str, float]:
        """Age in seconds of the oldest entry of every non-empty queue, from its stream id."""
        names = await self._queues("oldest_age_s")
        async with self._guard("oldest_age_s"), self._redis.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.xrange(self._keys.dlq(name), count=1)
            firsts = await pipe.execute()
        return {
            name: max(0.0, now - stream_id_key(text(first[0][0]))[0] / 1000)
            for name, first in zip(names, firsts, strict=True)
            if first
        }

    async def _queues(self, op: str) -> list[str]:
        # The same SMEMBERS as DeadLetterQueries.queues; repeated rather than shared so the
        # daemon's store does not depend on the CLI's read side.
        async with self._guard(op):
            members = await self._redis.smembers(self._keys.queues)
        # A member that is not UTF-8 names no queue kube-dlq writes (names are validated
        # ASCII): skipped, so one bad member cannot stop the gauges.
        return sorted(name for name in map(_utf8, members) if name is not None)

    async def ping(self, timeout_s: float) -> None:
        """Answer within `timeout_s` or raise SinkError (the daemon's readiness check)."""
        async with self._guard("ping"):
            async with asyncio.timeout(timeout_s):
                await self._redis.ping()

    async def durability(self) -> Durability:
        """Read what the server does to keep acknowledged writes (see `assess_durability`); in a
        Redis Cluster, every primary, the weakest one reported (`servers.durability`)."""
        async with self._guard("durability"):
            return await servers.durability(self._redis)

    async def server_problems(self) -> list[str]:
        """Settings of the Redis server (each cluster primary) that break the store's
        guarantees; empty when fine."""
        async with self._guard("server_problems"):
            return await servers.server_problems(self._redis)


def _member(job: JobRef) -> str:
    return Keys.outcome_member(job.namespace, job.uid)


def _shown(raw_id: bytes) -> str:
    """A stored id as text for logs and reports, whatever its bytes."""
    return raw_id.decode(errors="backslashreplace")


def _utf8(value: bytes | str) -> str | None:
    try:
        return text(value)
    except UnicodeDecodeError:
        return None
