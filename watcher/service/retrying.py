"""Fire due retries: re-create failed Jobs from their Redis tickets, exactly once.

Each cycle claims up to ``batch_size`` due tickets (leased for redis.retry_claim_lease_s),
creates the Job ``watcher.core.manifest.manifest_for_ticket`` builds from each, and settles
the ticket:

    create result                      ticket          outcome label    log event
    201 Created                        ack             created          retry_fired
    409, the Job is this lineage's     ack             already_exists   retry_already_exists
      (or it is gone again by now)
    409, the Job there is not this     try the name unique to this ticket (<job>-<hash>-r<n>):
      ticket's retry (other lineage)     created / already_exists as above, else abandoned
    400/404/422 (namespace gone,       dead letter     abandoned        retry_abandoned
      invalid body), bad ticket          with the reason, in place of the ticket (atomic)
    401/403/429/5xx, no response       release with    deferred         retry_deferred
                                         backoff
    any other exception (a bug)        release with    deferred         retry_fire_crashed
                                         backoff

Exactly once: the retry's name depends only on the original Job's name and the attempt, so a
second firing of one ticket (another replica after a lease expired, or this one after a crash
between create and ack) gets 409 AlreadyExists instead of running the Job twice. A lease that
runs out while a slow create is still in flight is therefore harmless. The one gap: a Job
deleted between the first create and the second firing (ttlSecondsAfterFinished shorter than
the lease, after an ack failed) is created again, as nothing is left to collide with.

Redis failures are counted (``redis_errors{operation}``) and end the cycle; ``run`` backs off
and carries on. A ticket whose ack or release failed stays leased and comes back after its
lease; its Job, if created, then answers 409. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

from structlog.typing import FilteringBoundLogger

from watcher.core.annotations import ANNOTATION_ORIGINAL_UID
from watcher.core.backoff import compute_delay
from watcher.core.errors import (
    FencedWrite,
    KubeAPIError,
    KubeConflict,
    KubeInvalid,
    KubeNotFound,
    SinkError,
)
from watcher.core.manifest import manifest_for_ticket
from watcher.core.model import ClaimedTicket, DeadLetter
from watcher.core.settings import RetryLoopSettings
from watcher.kit.aio import sleep_or_stop
from watcher.kit.metrics import Metrics
from watcher.service.ports import JobsPort, RetryStore

__all__ = ["Outcome", "RetryLoop"]

T = TypeVar("T")

PERMANENT_ERRORS: Final = (KubeInvalid, KubeNotFound)
"""Create failures that no retry can fix: a malformed body, a deleted namespace, a Job the
apiserver rejects as invalid. Everything else (401, 403, 429, 5xx, no response) may pass later:
credentials rotate, RBAC gets fixed, a Terminating namespace answers 403 until it is gone."""

_MAX_TRACKED_DEFERRALS: Final = 10_000
_REASON_CHARS: Final = 500


class Outcome(enum.StrEnum):
    """What firing one ticket did; the ``outcome`` label of ``retries_fired``."""

    CREATED = "created"
    ALREADY_EXISTS = "already_exists"
    ABANDONED = "abandoned"
    DEFERRED = "deferred"


class RetryLoop:
    """Claims due retry tickets and re-creates their Jobs; see the module docstring."""

    def __init__(
        self,
        *,
        store: RetryStore,
        jobs: JobsPort,
        settings: RetryLoopSettings,
        cluster_name: str,
        metrics: Metrics,
        logger: FilteringBoundLogger,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._cluster_name = cluster_name
        """Named in the dead letter of a retry that cannot be created."""
        self._metrics = metrics
        self._log = logger
        self._settings = settings
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._deferrals: dict[str, int] = {}
        """Transient failures per ticket id in this process, for the deferral backoff."""

    # --- public -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Fire due tickets every ``poll_interval_s`` (net of the work) until `stop` is set.

        Returns once `stop` is set: a create already in flight finishes and its ticket is
        settled, claimed tickets not yet started are released for another replica. Redis
        errors are logged and counted, then the loop waits (``error_backoffs_s``) and carries
        on. Cancellation is logged and re-raised; a ticket whose create was cut off comes back
        after its lease and ends as created or already_exists.
        """
        settings = self._settings
        loop = asyncio.get_running_loop()
        failures = 0
        self._log.info("retry_loop_started", poll_interval_s=settings.poll_interval_s)
        try:
            while not stop.is_set():
                started = loop.time()
                try:
                    claimed = await self._cycle(self._clock(), stop)
                except SinkError as exc:
                    wait = self._error_wait(failures)
                    failures += 1
                    self._log.warning("retry_cycle_failed", error=str(exc), retry_in_s=wait)
                except FencedWrite:
                    raise  # another replica leads: stop now; our claims come back after their lease
                except Exception:
                    # Guard of a root loop: log with the traceback and carry on; tickets that
                    # were claimed come back when their lease runs out.
                    wait = self._error_wait(failures)
                    failures += 1
                    self._log.exception("retry_cycle_crashed", retry_in_s=wait)
                else:
                    failures = 0
                    wait = self._next_wait(claimed, loop.time() - started)
                await sleep_or_stop(stop, wait)
        except asyncio.CancelledError:
            self._log.info("retry_loop_cancelled")
            raise
        self._log.info("retry_loop_stopped")

    async def fire_due(self, now: float) -> int:
        """One cycle at `now` (unix seconds): claim, fire and settle one batch, update gauges.

        Returns how many tickets were claimed. Raises `SinkError` (after counting it) when
        Redis fails; tickets not settled by then come back after their lease.
        """
        return await self._cycle(now, None)

    # --- one cycle ----------------------------------------------------------------------------

    async def _cycle(self, now: float, stop: asyncio.Event | None) -> int:
        settings = self._settings
        claimed = await self._redis(
            "claim_due_retries",
            self._store.claim_due_retries(now, limit=settings.batch_size),
        )
        for bad in claimed.quarantined:
            # Already moved to the corrupt hash by the store; counted and named here so an
            # operator learns of it, then the rest of the batch is fired as usual.
            self._metrics.quarantined.labels(kind="retry_ticket").inc()
            self._log.warning("retry_ticket_quarantined", ticket_id=bad.ticket_id, error=bad.error)
        for index, item in enumerate(claimed):
            if stop is not None and stop.is_set():
                await self._give_back(claimed[index:], now)
                break
            await self._fire_guarded(item, now)
        pending = await self._redis("pending_retries", self._store.pending_retries())
        self._metrics.retries_pending.set(pending)
        return len(claimed)

    def _error_wait(self, failures: int) -> float:
        backoffs = self._settings.error_backoffs_s
        return backoffs[min(failures, len(backoffs) - 1)]

    def _next_wait(self, claimed: int, elapsed: float) -> float:
        interval = self._settings.poll_interval_s
        if claimed >= self._settings.batch_size:
            return 0.0  # more tickets may be due: claim again at once
        if elapsed > interval:
            self._log.warning(
                "retry_cycle_overran", elapsed_s=round(elapsed, 3), poll_interval_s=interval
            )
        return max(0.0, interval - elapsed)

    async def _give_back(self, items: Sequence[ClaimedTicket], now: float) -> None:
        """Release claimed tickets we will not fire (stopping), so no one waits for the lease."""
        for item in items:
            try:
                await self._redis("release_retry", self._store.release_retry(item.ticket_id, now))
            except SinkError:
                return  # counted; the leases run out and another replica takes them
        self._log.info("retry_tickets_released", count=len(items))

    # --- one ticket ---------------------------------------------------------------------------

    async def _fire_guarded(self, item: ClaimedTicket, now: float) -> None:
        try:
            await self._fire(item, now)
        except (SinkError, FencedWrite, asyncio.CancelledError):
            raise
        except Exception as exc:
            # A bug or an unexpected client error must not stall the rest of the batch, and
            # the ticket must not be lost: log it with its traceback and try again later.
            log = self._log.bind(ticket_id=item.ticket_id, namespace=item.ticket.job.namespace)
            log.exception("retry_fire_crashed")
            error = f"{type(exc).__name__}: {exc}"
            await self._defer(item, log, status=None, error=error, now=now)

    async def _fire(self, item: ClaimedTicket, now: float) -> None:
        ticket = item.ticket
        log = self._log.bind(
            ticket_id=item.ticket_id,
            namespace=ticket.job.namespace,
            failed_job=ticket.job.name,
            failed_job_uid=ticket.job.uid,
            attempt=ticket.attempt,
            failure_class=ticket.failure_class.value,
        )
        # The usual name first; if a Job of another lineage holds it (a fixed-name Job that
        # was re-created, and its own retry), a name unique to this ticket.
        for unique_name in (False, True):
            try:
                body = manifest_for_ticket(ticket, unique_name=unique_name)
            except ValueError as exc:
                await self._abandon(item, log, f"invalid ticket: {exc}", status=None)
                return
            named = log.bind(job=body["metadata"]["name"])
            try:
                await self._jobs.create(ticket.job.namespace, body)
            except KubeConflict as err:
                if unique_name:
                    await self._settle_failed_create(item, body, err, named, now)
                    return
                try:
                    ours = await self._is_our_retry(ticket.job.namespace, body)
                except KubeAPIError as lookup_err:
                    error = str(lookup_err)
                    await self._defer(item, named, status=lookup_err.status, error=error, now=now)
                    return
                if ours:
                    self._already_exists(named)
                    await self._ack(item)
                    return
                named.info("retry_name_taken", by="a Job of another lineage")
                continue
            except KubeAPIError as err:
                await self._settle_failed_create(item, body, err, named, now)
                return
            self._count(Outcome.CREATED)
            named.info("retry_fired", outcome=Outcome.CREATED.value, avoid_node=ticket.avoid_node)
            await self._ack(item)
            return

    async def _settle_failed_create(
        self,
        item: ClaimedTicket,
        body: dict[str, Any],
        err: KubeAPIError,
        log: FilteringBoundLogger,
        now: float,
    ) -> None:
        if isinstance(err, PERMANENT_ERRORS):
            await self._abandon(item, log, err.reason or str(err), status=err.status)
            return
        if not isinstance(err, KubeConflict):
            await self._defer(item, log, status=err.status, error=str(err), now=now)
            return
        try:
            ours = await self._is_our_retry(item.ticket.job.namespace, body)
        except KubeAPIError as lookup_err:
            await self._defer(item, log, status=lookup_err.status, error=str(lookup_err), now=now)
            return
        if not ours:
            expected = body["metadata"]["annotations"][ANNOTATION_ORIGINAL_UID]
            reason = (
                "a Job with this name already exists and is not this ticket's retry "
                f"(its {ANNOTATION_ORIGINAL_UID} is not {expected!r} or is missing)"
            )
            await self._abandon(item, log, reason, status=409)
            return
        self._already_exists(log)
        await self._ack(item)

    def _already_exists(self, log: FilteringBoundLogger) -> None:
        self._count(Outcome.ALREADY_EXISTS)
        log.info("retry_already_exists", outcome=Outcome.ALREADY_EXISTS.value)

    async def _abandon(
        self, item: ClaimedTicket, log: FilteringBoundLogger, reason: str, *, status: int | None
    ) -> None:
        """The retry can never be created: the ticket becomes a dead letter with the reason."""
        ticket = item.ticket
        letter = DeadLetter(
            queue=ticket.queue,
            job=ticket.job,
            failure_class=ticket.failure_class,
            reason=f"retry {ticket.attempt} could not be created: {reason}"[:_REASON_CHARS],
            attempts=ticket.attempt - 1,
            failed_at=self._clock(),
            cluster=self._cluster_name,
            evidence=(f"the failed Job's own failure: {ticket.reason}"[:_REASON_CHARS],),
            manifest=ticket.manifest,
            history=ticket.history,
            report={"retry_abandoned": {"status": status, "error": reason[:_REASON_CHARS]}},
        )
        written = await self._redis(
            "abandon_retry", self._store.abandon_retry(item.ticket_id, letter)
        )
        self._deferrals.pop(item.ticket_id, None)
        if written is None:
            log.info("retry_already_settled", ticket_id=item.ticket_id)
            return
        self._count(Outcome.ABANDONED)
        log.error(
            "retry_abandoned",
            outcome=Outcome.ABANDONED.value,
            status=status,
            error=reason,
            failure_reason=ticket.reason,
            due_at=ticket.due_at,
            avoid_node=ticket.avoid_node,
            earlier_attempts=len(ticket.history),
            dead_letter=written.ref,
        )

    async def _defer(
        self,
        item: ClaimedTicket,
        log: FilteringBoundLogger,
        *,
        status: int | None,
        error: str,
        now: float,
    ) -> None:
        settings = self._settings
        if len(self._deferrals) >= _MAX_TRACKED_DEFERRALS:
            self._deferrals.clear()  # bounded memory; the backoff merely restarts
        count = self._deferrals.get(item.ticket_id, 0) + 1
        self._deferrals[item.ticket_id] = count
        delay = compute_delay(
            count,
            base_s=settings.defer_base_s,
            factor=2.0,
            cap_s=settings.defer_cap_s,
            jitter="equal",
            rng=self._rng,
        )
        self._count(Outcome.DEFERRED)
        log.warning(
            "retry_deferred",
            outcome=Outcome.DEFERRED.value,
            status=status,
            error=error,
            retry_in_s=round(delay, 3),
            deferrals=count,
        )
        await self._redis("release_retry", self._store.release_retry(item.ticket_id, now + delay))

    async def _ack(self, item: ClaimedTicket) -> None:
        self._deferrals.pop(item.ticket_id, None)
        await self._redis("ack_retry", self._store.ack_retry(item.ticket_id))

    def _count(self, outcome: Outcome) -> None:
        self._metrics.retries_fired.labels(outcome=outcome.value).inc()

    async def _redis(self, operation: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except SinkError:
            self._metrics.redis_errors.labels(operation=operation).inc()
            raise

    # --- the Kubernetes API -------------------------------------------------------------------

    async def _is_our_retry(self, namespace: str, body: dict[str, Any]) -> bool:
        """After a 409: is the existing Job this ticket's retry (same original uid)?

        A Job deleted again since the 409 (finished with ttlSecondsAfterFinished: 0, or
        removed by hand) counts as ours: creating it again could run it twice.
        """
        existing = await self._jobs.get(namespace, body["metadata"]["name"])
        if existing is None:
            return True
        annotations = (existing.get("metadata") or {}).get("annotations")
        found = annotations.get(ANNOTATION_ORIGINAL_UID) if isinstance(annotations, dict) else None
        expected = body["metadata"]["annotations"][ANNOTATION_ORIGINAL_UID]
        return bool(found == expected)
