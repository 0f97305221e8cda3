"""The retry store's create records: intent before the POST, uid on settling, finalizer queue.

A mixin of `watcher.adapters.redis.store.RedisStore` (kept apart so the store stays readable);
docs/exactly-once.md ("Retry Jobs: created at most once") has the argument. Every time in these
scripts is Redis's clock (TIME), so replicas whose clocks disagree still agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Final

from redis.commands.core import AsyncScript

from watcher.adapters.redis import scripts
from watcher.adapters.redis.client import RedisClient
from watcher.adapters.redis.coalesce import Coalescer
from watcher.adapters.redis.codec import CorruptEntry
from watcher.adapters.redis.fencing import BATCH_LIMIT, Fence
from watcher.adapters.redis.guard import Guard, as_bytes, ms, text
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.seal import ForgedEntry, Seal, lineage_place
from watcher.core.lineage import CreateRecord, Lineage, decode_lineage, encode_lineage
from watcher.core.model import BeginStatus, CreateIntent, JobRef, SettleResult

__all__ = ["CREATE_RECORD_TTL_S", "FINALIZE_GRACE_S", "KIND_LINEAGE", "CreateRecords"]

CREATE_RECORD_TTL_S: Final = 40 * 86400.0
"""How long a ticket's create record (and so the lineage of the Job it created) is kept after
its last write. Longer than any retry chain: no retry is due later than its lineage's budget
(at most 30 days, ``kube-dlq.io/budget``) after the first failure. A retry Job that fails
later than this after its creation is handled as an original (its own budgets again)."""

FINALIZE_GRACE_S: Final = 120.0
"""When another claim also began a create of a ticket, the Job keeps its finalizer (and so its
name) this long after the last begin: its POST may still be on its way. A sender gives up after
kubernetes.request_timeout_s (30 s), the apiserver finishes a request it received within its
--request-timeout (60 s); 120 s covers both."""

KIND_LINEAGE: Final = "lineage"
"""The seal's kind for a create record's lineage: signed like tickets, so a Redis writer cannot
hand a Job another lineage's attempt count and history."""

_STATUS: Final = {1: BeginStatus.BEGUN, 0: BeginStatus.SETTLED, -1: BeginStatus.SUPERSEDED}

_DUE_FINALIZERS: Final = """
-- KEYS[1] finalizer zset  ARGV[1] limit -> the members due now (Redis's clock), oldest first
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, ARGV[1])
"""


class CreateRecords:
    """Mixin: needs ``_redis``, ``_keys`` and ``_guard`` from the store."""

    _redis: RedisClient
    _keys: Keys
    _guard: Guard
    _seal: Seal
    _fence: Fence
    _released: Coalescer[str, None] | None = None
    _due_finalizers_script: AsyncScript | None = None

    def _register_create_scripts(self) -> None:
        self._begin_script: AsyncScript = self._redis.register_script(scripts.BEGIN_CREATE)
        self._settle_script: AsyncScript = self._redis.register_script(scripts.SETTLE_CREATED)

    async def begin_create(
        self, ticket_id: str, *, claim: int, job: JobRef, lineage: Lineage
    ) -> CreateIntent:
        """Record, before the POST, that claim `claim` creates `job` (its name; no uid yet).

        Only the ticket's latest claim may begin (else SUPERSEDED), and only while the ticket
        is pending (else SETTLED). The answer carries the ticket's token (made now if this is
        the first begin) and whether other claims began before (a create may have happened).
        Begins made at about the same time (a batch fired at once) share a round trip
        (`Fence.call_batched`), each still its own script call.
        """
        k = self._keys
        reply: Any = await self._fence.call_batched(
            "begin_create",
            self._begin_script,
            keys=[k.retry_tickets, k.retry_claims, k.retry_create(ticket_id)],
            args=[
                ticket_id,
                claim,
                job.namespace,
                job.name,
                uuid.uuid4().hex,
                self._seal.seal(
                    KIND_LINEAGE,
                    lineage_place(k, ticket_id, job.namespace, job.name),
                    encode_lineage(lineage).encode(),
                ),
                ms(CREATE_RECORD_TTL_S),
            ],
        )
        status, token, earlier, name = reply
        return CreateIntent(_STATUS[int(status)], text(token), int(earlier), text(name))

    async def settle_created(
        self, ticket_id: str, *, claim: int, job: JobRef | None
    ) -> SettleResult:
        """Ack the ticket: its Job `job` exists (None: ack without a Job, e.g. an old ticket).

        Atomically the ticket leaves the queue, its create record gets the Job's uid, and the
        Job is queued for its finalizer removal: at once (``release_finalizer_now``), or once
        FINALIZE_GRACE_S passed since the last begin when another claim also began a create.
        `claim` 0 settles whatever the latest claim (tools and tests). Settles made at about
        the same time share a round trip, as begins do.
        """
        k = self._keys
        member = f"{job.namespace}/{job.name}/{job.uid}" if job is not None else ""
        reply: Any = await self._fence.call_batched(
            "settle_created",
            self._settle_script,
            keys=[
                k.retry_tickets,
                k.retry_inflight,
                k.retry_due,
                k.retry_claims,
                k.retry_create(ticket_id),
                k.retry_finalize,
            ],
            args=[
                ticket_id,
                claim or "",
                job.uid if job is not None else "",
                job.name if job is not None else "",
                ms(FINALIZE_GRACE_S),
                ms(CREATE_RECORD_TTL_S),
                member,
            ],
        )
        status, now = reply
        return SettleResult(_STATUS[int(status)], bool(int(now)))

    async def due_finalizers(self, *, limit: int) -> list[JobRef]:
        """Retry Jobs whose finalizer may be removed now (Redis's clock), oldest first.

        One read-only script (TIME and the range at one instant, one round trip per cycle).
        A member that does not parse (written by hand) is dropped: nothing can be done with it.
        """
        k = self._keys
        if self._due_finalizers_script is None:
            self._due_finalizers_script = self._redis.register_script(_DUE_FINALIZERS)
        async with self._guard("due_finalizers"):
            raw: Any = await self._due_finalizers_script(keys=[k.retry_finalize], args=[limit])
        due: list[JobRef] = []
        for member in raw:
            parts = as_bytes(member).decode(errors="replace").split("/")
            if len(parts) == 3 and all(parts):
                due.append(JobRef(*parts))
            else:
                async with self._guard("due_finalizers"):
                    await self._redis.zrem(k.retry_finalize, member)
        return due

    async def finalizer_released(self, job: JobRef) -> None:
        """`job`'s finalizer is gone (or the Job is): forget it. Calls made at about the same
        time share one ZREM (watcher.adapters.redis.coalesce)."""
        if self._released is None:
            self._released = Coalescer(self._forget_finalizers, limit=BATCH_LIMIT)
        await self._released.call(f"{job.namespace}/{job.name}/{job.uid}")

    async def _forget_finalizers(self, members: Sequence[str]) -> list[None]:
        async with self._guard("finalizer_released"):
            await self._redis.zrem(self._keys.retry_finalize, *members)
        return [None] * len(members)

    async def create_record(self, ticket_id: str) -> CreateRecord | None:
        """The create record of ticket `ticket_id`, None if there is none (or it expired).

        Its lineage is None, with ``error`` set, when the stored lineage does not decode; the
        caller reports it and treats the Job as an original.
        """
        async with self._guard("create_record"):
            raw = await self._redis.hgetall(self._keys.retry_create(ticket_id))
        if not raw:
            return None
        fields = {as_bytes(key).decode(errors="replace"): value for key, value in raw.items()}

        def field(name: str) -> str:
            try:
                return text(fields.get(name, b""))
            except UnicodeDecodeError:
                return ""

        lineage: Lineage | None = None
        error = ""
        forged = False
        place = lineage_place(self._keys, ticket_id, field("namespace"), field("name"))
        try:
            opened = self._seal.open(KIND_LINEAGE, place, fields.get("lineage") or b"")
            lineage = decode_lineage(opened.decode(errors="replace"))
        except ForgedEntry as exc:
            error, forged = str(exc), True
        except (CorruptEntry, ValueError) as exc:
            error = str(exc)
        return CreateRecord(
            namespace=field("namespace"),
            name=field("name"),
            token=field("token"),
            uid=field("uid"),
            lineage=lineage,
            error=error,
            forged=forged,
        )
