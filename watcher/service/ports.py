"""What the service layer needs from the outside world, as Protocols.

The pipeline, the handler, the retry loop and leader election are given these at construction.
The real ones are the adapters (`watcher.adapters.kube.jobs.JobsAPI`,
`watcher.adapters.kube.leases.LeaseAPI`, the Redis store); unit tests pass in-memory fakes.
Every method raises only `watcher.core.errors` exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import Any, Protocol

from watcher.core.lineage import CreateRecord, Lineage
from watcher.core.model import (
    ClaimedBatch,
    CreateIntent,
    DeadLetter,
    ForgetResult,
    JobRef,
    RetryTicket,
    SettleResult,
    WriteResult,
)
from watcher.core.rawjson import RawObject

__all__ = [
    "JobsPort",
    "LeasePort",
    "MarkerStore",
    "OutcomeStore",
    "PodsPort",
    "RetryStore",
    "TermFence",
]


class OutcomeStore(Protocol):
    """Where outcomes are written exactly once (`watcher.adapters.redis.store.RedisStore`).

    Both writes are keyed by the failed Job's uid: a second write for the same uid writes
    nothing and answers with the first outcome (``already_handled``). Raise SinkError.
    """

    async def dead_letter(self, letter: DeadLetter) -> WriteResult: ...

    async def schedule_retry(self, ticket: RetryTicket, *, delay_s: float = 0.0) -> WriteResult:
        """Due `delay_s` from now on the store's clock (Redis's), not the caller's."""
        ...

    async def handled(self, job_uids: Sequence[str]) -> set[str]:
        """The uids among `job_uids` whose outcome is written (by anyone)."""
        ...

    async def create_record(self, ticket_id: str) -> CreateRecord | None:
        """The create record of a retry ticket (the lineage of the Job it created), None if
        there is none; read before a failed Job is classified (`watcher.core.lineage`)."""
        ...


class MarkerStore(Protocol):
    """Forgetting the outcome markers of Jobs gone from the API
    (`watcher.adapters.redis.store.RedisStore`). Raise SinkError."""

    async def outcome_watermark(self) -> int:
        """The newest marker's sequence number: read before a complete list of Jobs begins."""
        ...

    async def forget_absent(
        self,
        present_uids: Set[str],
        *,
        written_up_to: int,
        namespaces: Set[str] | None,
    ) -> ForgetResult:
        """Let expire the markers at or below `written_up_to` whose uid is not in
        `present_uids`, whose namespace is in `namespaces` (None: any), and whose retry ticket
        is not pending."""
        ...


class RetryStore(Protocol):
    """Due retry tickets, claimed with a lease (`watcher.adapters.redis.store.RedisStore`)."""

    async def claim_due_retries(self, *, limit: int) -> ClaimedBatch:
        """Due tickets (on Redis's clock), leased, each with its claim number; those that
        failed to decode are in ``.quarantined`` instead (already moved aside by the store),
        for the caller to count and report."""
        ...

    async def begin_create(
        self, ticket_id: str, *, claim: int, job: JobRef, lineage: Lineage
    ) -> CreateIntent:
        """Record the create intent before the POST; only the latest claim may."""
        ...

    async def settle_created(
        self, ticket_id: str, *, claim: int, job: JobRef | None
    ) -> SettleResult:
        """Ack the ticket and record its Job's uid atomically; only the latest claim may."""
        ...

    async def release_retry(self, ticket_id: str, *, delay_s: float, claim: int = 0) -> bool: ...

    async def abandon_retry(
        self, ticket_id: str, letter: DeadLetter, *, claim: int = 0
    ) -> WriteResult | None:
        """Settle a ticket as `letter` instead; None if it was settled already (or claimed
        by another replica since)."""
        ...

    async def due_finalizers(self, *, limit: int) -> list[JobRef]:
        """Retry Jobs whose finalizer may be removed now."""
        ...

    async def finalizer_released(self, job: JobRef) -> None: ...

    async def pending_retries(self) -> int: ...

    async def next_due_in(self) -> float | None:
        """Seconds until a ticket can next be claimed (Redis's clock): 0 if one can now, None
        if none is stored. Tells the loop how long it may sleep."""
        ...


class JobsPort(Protocol):
    """Jobs in the API (`watcher.adapters.kube.jobs.JobsAPI`)."""

    async def get(self, namespace: str, name: str) -> RawObject | None:
        """The Job now, or None if there is none of that name."""
        ...

    async def create(self, namespace: str, body: Mapping[str, Any]) -> RawObject:
        """Create a Job; 409 raises KubeConflict."""
        ...

    async def delete(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        """Delete a Job (and its pods); False if gone, or (with `uid`) if it is another one."""
        ...

    async def remove_finalizer(self, job: JobRef, finalizer: str) -> bool:
        """Remove `finalizer` from the Job `job` (uid checked): False if the Job is gone, is
        another one, or has no such finalizer. A concurrent change raises KubeConflict."""
        ...

    async def warn(self, job: JobRef, reason: str, message: str) -> None:
        """A Warning Event on the Job."""
        ...


class PodsPort(Protocol):
    """Pods in the API (`watcher.adapters.kube.pods.PodsAPI`)."""

    async def of_job(self, namespace: str, job_uid: str) -> list[RawObject]:
        """The pods of the Job `job_uid` now (each a raw Pod)."""
        ...


class LeasePort(Protocol):
    """One Lease (`watcher.adapters.kube.leases.LeaseAPI`); writes answer None on a conflict."""

    namespace: str
    name: str

    async def get(self, timeout_s: float) -> RawObject | None: ...

    async def create(self, spec: Mapping[str, Any], timeout_s: float) -> RawObject | None: ...

    async def replace(
        self, lease: Mapping[str, Any], spec: Mapping[str, Any], timeout_s: float
    ) -> RawObject | None: ...


class TermFence(Protocol):
    """Where leadership terms are fenced (`watcher.adapters.redis.store.RedisStore`): every
    write carries its writer's term, and one below the highest term seen is refused with
    `FencedWrite`. Raise SinkError."""

    async def claim_term(self, term: int) -> int | None:
        """Make `term` the fence if every term used before is below it (None); otherwise
        answer the fence, which is at or above `term`."""
        ...
