"""An in-memory `RetryStore` that keeps the Lua scripts' rules, for unit tests of RetryLoop.

Due and lease times are its own clock (`now`, like Redis's TIME), never the loop's; claims are
numbered and only the latest claim may begin, settle, release or abandon (the fence); the
create record and the finalizer queue follow begin_create.lua and settle_created.lua.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from watcher.adapters.redis.creates import FINALIZE_GRACE_S
from watcher.core.errors import SinkError
from watcher.core.lineage import CreateRecord, Lineage
from watcher.core.model import (
    Action,
    BeginStatus,
    ClaimedBatch,
    ClaimedTicket,
    CreateIntent,
    DeadLetter,
    JobRef,
    RetryTicket,
    SettleResult,
    WriteResult,
)
from watcher.service.ports import RetryStore


@dataclass
class Record:
    token: str
    namespace: str = ""
    name: str = ""
    begins: int = 0
    claim: int = 0
    last: float = 0.0
    lineage: Lineage | None = None
    uid: str = ""


@dataclass
class FakeRetryStore:
    now: float = 1_000.0
    """The store's clock (Redis's), in seconds."""
    lease_s: float = 30.0
    tickets: dict[str, RetryTicket] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)
    inflight: dict[str, float] = field(default_factory=dict)
    claims: dict[str, int] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)
    finalize: dict[JobRef, float] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    settled: list[tuple[str, JobRef | None]] = field(default_factory=list)
    failures: dict[str, list[SinkError]] = field(default_factory=dict)
    """Method name -> raised, in order, by its next calls."""
    tokens: int = 0

    def add(self, ticket: RetryTicket, *, delay_s: float = 0.0) -> None:
        self.tickets[ticket.job.uid] = ticket
        self.due[ticket.job.uid] = self.now + delay_s

    def fail_next(self, method: str, *errors: SinkError) -> None:
        self.failures.setdefault(method, []).extend(errors)

    def _maybe_fail(self, method: str) -> None:
        if self.failures.get(method):
            raise self.failures[method].pop(0)

    def create_record(self, ticket_id: str) -> CreateRecord | None:
        found = self.records.get(ticket_id)
        if found is None:
            return None
        return CreateRecord(found.namespace, found.name, found.token, found.uid, found.lineage)

    async def claim_due_retries(self, *, limit: int) -> ClaimedBatch:
        self._maybe_fail("claim_due_retries")
        for ticket_id, until in list(self.inflight.items()):
            if until <= self.now:
                del self.inflight[ticket_id]
                self.due[ticket_id] = until
        ready = sorted((at, tid) for tid, at in self.due.items() if at <= self.now)[:limit]
        claimed = []
        for _, ticket_id in ready:
            del self.due[ticket_id]
            self.inflight[ticket_id] = self.now + self.lease_s
            self.claims[ticket_id] = self.claims.get(ticket_id, 0) + 1
            claimed.append(
                ClaimedTicket(
                    ticket_id,
                    self.tickets[ticket_id],
                    self.now + self.lease_s,
                    self.claims[ticket_id],
                )
            )
        return ClaimedBatch(claimed)

    def _fenced(self, ticket_id: str, claim: int) -> BeginStatus | None:
        if ticket_id not in self.tickets:
            return BeginStatus.SETTLED
        if claim and self.claims.get(ticket_id) != claim:
            return BeginStatus.SUPERSEDED
        return None

    async def begin_create(
        self, ticket_id: str, *, claim: int, job: JobRef, lineage: Lineage
    ) -> CreateIntent:
        self._maybe_fail("begin_create")
        refused = self._fenced(ticket_id, claim)
        if refused is not None:
            return CreateIntent(refused)
        if ticket_id not in self.records:
            self.tokens += 1
            self.records[ticket_id] = Record(token=f"{self.tokens:032x}")
        record = self.records[ticket_id]
        before, name = record.begins, record.name
        if record.claim != claim:
            record.begins += 1
            record.claim = claim
        else:
            before -= 1
        record.namespace, record.name, record.last = job.namespace, job.name, self.now
        record.lineage = lineage
        return CreateIntent(BeginStatus.BEGUN, record.token, before, name)

    async def settle_created(
        self, ticket_id: str, *, claim: int, job: JobRef | None
    ) -> SettleResult:
        self._maybe_fail("settle_created")
        refused = self._fenced(ticket_id, claim)
        if refused is not None:
            return SettleResult(refused)
        self._drop(ticket_id)
        self.settled.append((ticket_id, job))
        if job is None:
            return SettleResult(BeginStatus.BEGUN)
        record = self.records[ticket_id]
        record.uid, record.name = job.uid, job.name
        at = self.now
        if record.begins > 1:
            at = max(self.now, record.last + FINALIZE_GRACE_S)
        self.finalize[job] = at
        return SettleResult(BeginStatus.BEGUN, at <= self.now)

    async def release_retry(self, ticket_id: str, *, delay_s: float, claim: int = 0) -> bool:
        self._maybe_fail("release_retry")
        if self._fenced(ticket_id, claim) is not None:
            return False
        self.inflight.pop(ticket_id, None)
        self.due[ticket_id] = self.now + delay_s
        return True

    async def abandon_retry(
        self, ticket_id: str, letter: DeadLetter, *, claim: int = 0
    ) -> WriteResult | None:
        self._maybe_fail("abandon_retry")
        if self._fenced(ticket_id, claim) is not None:
            return None
        self._drop(ticket_id)
        self.dead_letters.append(letter)
        return WriteResult(True, Action.DEAD_LETTER, f"{letter.queue}/{len(self.dead_letters)}-0")

    async def pending_retries(self) -> int:
        return len(self.due) + len(self.inflight)

    async def next_due_in(self) -> float | None:
        self._maybe_fail("next_due_in")
        times = [*self.due.values(), *self.inflight.values()]
        return max(0.0, min(times) - self.now) if times else None

    async def due_finalizers(self, *, limit: int) -> list[JobRef]:
        self._maybe_fail("due_finalizers")
        ready = sorted((at, job.uid, job) for job, at in self.finalize.items() if at <= self.now)
        return [job for _, _, job in ready[:limit]]

    async def finalizer_released(self, job: JobRef) -> None:
        self.finalize.pop(job, None)

    def _drop(self, ticket_id: str) -> None:
        del self.tickets[ticket_id]
        self.claims.pop(ticket_id, None)
        self.due.pop(ticket_id, None)
        self.inflight.pop(ticket_id, None)


def _conforms(store: RetryStore) -> None:
    """mypy checks here that the fake implements the Protocol it stands in for."""


_conforms(FakeRetryStore())
