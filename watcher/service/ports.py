"""What the service layer needs from the outside world, as Protocols.

The pipeline, the handler, the retry loop and leader election are given these at construction.
The real ones are the adapters (`watcher.adapters.kube.jobs.JobsAPI`,
`watcher.adapters.kube.leases.LeaseAPI`, the Redis store); unit tests pass in-memory fakes.
Every method raises only `watcher.core.errors` exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import Any, Protocol

from watcher.core.model import (
    ClaimedBatch,
    DeadLetter,
    ForgetResult,
    JobRef,
    RetryTicket,
    WriteResult,
)
from watcher.core.rawjson import RawObject

__all__ = ["JobsPort", "LeasePort", "MarkerStore", "OutcomeStore", "RetryStore", "TermFence"]


class OutcomeStore(Protocol):
    """Where outcomes are written exactly once (`watcher.adapters.redis.store.RedisStore`).

    Both writes are keyed by the failed Job's uid: a second write for the same uid writes
    nothing and answers with the first outcome (``already_handled``). Raise SinkError.
    """

    async def dead_letter(self, letter: DeadLetter) -> WriteResult: ...

    async def schedule_retry(self, ticket: RetryTicket) -> WriteResult: ...

    async def handled(self, job_uids: Sequence[str]) -> set[str]:
        """The uids among `job_uids` whose outcome is written (by anyone)."""
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

    async def claim_due_retries(self, now: float, *, limit: int) -> ClaimedBatch:
        """Due tickets, leased; those that failed to decode are in ``.quarantined`` instead
        (already moved aside by the store), for the caller to count and report."""
        ...

    async def ack_retry(self, ticket_id: str) -> bool: ...

    async def release_retry(self, ticket_id: str, due_at: float) -> bool: ...

    async def abandon_retry(self, ticket_id: str, letter: DeadLetter) -> WriteResult | None:
        """Settle a ticket as `letter` instead; None if it was settled already."""
        ...

    async def pending_retries(self) -> int: ...


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

    async def warn(self, job: JobRef, reason: str, message: str) -> None:
        """A Warning Event on the Job."""
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
