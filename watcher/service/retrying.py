"""Fire due retries: re-create failed Jobs from their Redis tickets, at most once each.

Each cycle claims up to ``batch_size`` due tickets (leased for redis.retry_claim_lease_s, on
Redis's clock), creates the Job ``watcher.core.manifest.manifest_for_ticket`` builds from each,
settles the ticket, then removes the finalizers that are due. Up to ``fire_concurrency``
tickets of a batch are fired at once, each as below; between cycles the loop sleeps until the
next ticket is due (Redis's clock), at most ``poll_interval_s`` and at least 50 ms:

    create result                      ticket          outcome label    log event
    201 Created                        settle (uid)    created          retry_fired
    the Job there has this ticket's    settle (uid)    already_exists   retry_already_exists
      create token (found by a GET
      or after a 409)
    409, the Job there is not this     try the name unique to this ticket (<job>-<hash>-r<n>):
      ticket's (other lineage)           created / already_exists as above, else abandoned
    409 and no Job there any more      release with    deferred         retry_deferred
                                         backoff
    400/404/422 (namespace gone,       dead letter     abandoned        retry_abandoned
      invalid body), bad ticket          with the reason, in place of the ticket (atomic)
    401/403/429/5xx, no response       release with    deferred         retry_deferred
                                         backoff
    any other exception (a bug)        release with    deferred         retry_fire_crashed
                                         backoff

At most once (docs/exactly-once.md has the argument and what it does not cover):

* every claim has a number; only the ticket's latest claim may begin a create, settle,
  release or abandon it (a replica whose lease ran out learns it, logs
  ``retry_not_ours_any_more`` and leaves the ticket to the newer claim);
* before the POST, ``begin_create`` records the intent (name, lineage) and hands out the
  ticket's random create token, which the Job carries; a holder told that another claim
  began before looks for the Job first, and any Job at the name with the token is this
  ticket's (acked, never created again);
* the Job is created with the finalizer ``kube-dlq.io/retry-ack``, so it cannot disappear
  (ttlSecondsAfterFinished, a delete) and free its name before the settle script has recorded
  its uid; the finalizer goes right after (or FINALIZE_GRACE_S after the last begin when two
  claims began: a POST may still be on its way), and each cycle finishes removals that a
  crash or an API error cut off.

Redis failures are counted (``redis_errors{operation}``) and end the cycle; ``run`` backs off
and carries on. A ticket whose settling failed stays leased and comes back after its lease;
its Job, if created, is then found by its token. Nothing is dropped.

Firing concurrently changes none of this. A SinkError or FencedWrite of one ticket ends the
cycle: no further ticket is started and the tickets in flight are cancelled wherever they
are, before or after their POST or settle. For the at-most-once argument that is a crash of
the replica mid-create, which it already covers: each cancelled ticket stays leased, comes
back after its lease, and its next claim, told an earlier claim began, looks for the Job by
its token before any POST. Every ticket is still fired by one task holding its own claim.
The store sends the begin, settle and finalizer calls that tasks make at about the same time
in shared round trips (watcher.adapters.redis.coalesce), each call still its own script run
with its own fence check and reply: to this loop, a concurrent call like any other.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

from structlog.typing import FilteringBoundLogger

from watcher.core.annotations import ANNOTATION_CREATE_TOKEN, FINALIZER_RETRY_ACK
from watcher.core.backoff import compute_delay
from watcher.core.errors import (
    FencedWrite,
    KubeAPIError,
    KubeConflict,
    KubeInvalid,
    KubeNotFound,
    SinkError,
)
from watcher.core.lineage import Lineage
from watcher.core.manifest import manifest_for_ticket, with_create_token
from watcher.core.model import BeginStatus, ClaimedTicket, CreateIntent, DeadLetter, JobRef
from watcher.core.rawjson import RawObject
from watcher.core.settings import RetryLoopSettings
from watcher.kit.aio import sleep_or_stop
from watcher.kit.metrics import Metrics
from watcher.service.bounded import fire_bounded
from watcher.service.pending import PendingGauge
from watcher.service.ports import JobsPort, RetryStore

__all__ = ["Outcome", "RetryLoop"]

T = TypeVar("T")

PERMANENT_ERRORS: Final = (KubeInvalid, KubeNotFound)
"""Create failures that no retry can fix: a malformed body, a deleted namespace, a Job the
apiserver rejects as invalid. Everything else (401, 403, 429, 5xx, no response) may pass later:
credentials rotate, RBAC gets fixed, a Terminating namespace answers 403 until it is gone."""

_MAX_TRACKED_DEFERRALS: Final = 10_000
_MIN_WAIT_S: Final = 0.05
"""Shortest sleep between cycles that claimed less than a batch: a ticket due "now" that the
claim did not return (another replica took it) must not make the loop spin."""
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
        self._pending = PendingGauge(store, metrics)

    # --- public -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Fire due tickets until `stop` is set: again at once after a full batch, else when
        the next ticket is due, every ``poll_interval_s`` (net of the work) at the latest.

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
                    claimed = await self._cycle(stop)
                    wait = await self._next_wait(claimed, loop.time() - started)
                    await self._pending.refresh(next_cycle_in=wait)
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
                await sleep_or_stop(stop, wait)
        except asyncio.CancelledError:
            self._log.info("retry_loop_cancelled")
            raise
        self._log.info("retry_loop_stopped")

    async def fire_due(self) -> int:
        """One cycle: claim, fire and settle one batch, finish due finalizer removals, update
        gauges. What is due is decided on Redis's clock, never this process's.

        Returns how many tickets were claimed. Raises `SinkError` (after counting it) when
        Redis fails; tickets not settled by then come back after their lease.
        """
        claimed = await self._cycle(None)
        await self._pending.refresh()  # no next cycle to wait for
        return claimed

    # --- one cycle ----------------------------------------------------------------------------

    async def _cycle(self, stop: asyncio.Event | None) -> int:
        settings = self._settings
        claimed = await self._redis(
            "claim_due_retries", self._store.claim_due_retries(limit=settings.batch_size)
        )
        for bad in claimed.quarantined:
            # Already moved to the corrupt hash by the store; counted and named here so an
            # operator learns of it, then the rest of the batch is fired as usual.
            self._metrics.quarantined.labels(kind="retry_ticket").inc()
            if bad.forged:  # not kube-dlq's: someone with Redis access, or an old unsigned one
                self._metrics.forged.labels(kind="retry_ticket").inc()
            event = "retry_ticket_forged" if bad.forged else "retry_ticket_quarantined"
            self._log.warning(event, ticket_id=bad.ticket_id, error=bad.error)
        await fire_bounded(
            list(claimed),
            self._fire_guarded,
            limit=settings.fire_concurrency,
            stop=stop,
            give_back=self._give_back,
        )
        await self._finish_finalizers()
        return len(claimed)

    def _error_wait(self, failures: int) -> float:
        backoffs = self._settings.error_backoffs_s
        return backoffs[min(failures, len(backoffs) - 1)]

    async def _next_wait(self, claimed: int, elapsed: float) -> float:
        """0 after a full batch; else until the next ticket is due, within the poll interval
        (net of the cycle's work) and never under _MIN_WAIT_S."""
        interval = self._settings.poll_interval_s
        if claimed >= self._settings.batch_size:
            return 0.0  # more tickets may be due: claim again at once
        if elapsed > interval:
            self._log.warning(
                "retry_cycle_overran", elapsed_s=round(elapsed, 3), poll_interval_s=interval
            )
        wait = max(0.0, interval - elapsed)
        try:
            due_in = await self._redis("next_due_in", self._store.next_due_in())
        except SinkError as exc:
            # Counted; the poll interval is the fallback, and the next claim will tell.
            self._log.warning("retry_next_due_unknown", error=str(exc))
            return wait
        if due_in is None:
            return wait
        return min(wait, max(_MIN_WAIT_S, due_in))

    async def _give_back(self, items: Sequence[ClaimedTicket]) -> None:
        """Release claimed tickets we will not fire (stopping), so no one waits for the lease."""
        for item in items:
            release = self._store.release_retry(item.ticket_id, delay_s=0.0, claim=item.claim)
            try:
                await self._redis("release_retry", release)
            except SinkError:
                return  # counted; the leases run out and another replica takes them
        self._log.info("retry_tickets_released", count=len(items))

    # --- one ticket ---------------------------------------------------------------------------

    async def _fire_guarded(self, item: ClaimedTicket) -> None:
        try:
            await self._fire(item)
        except (SinkError, FencedWrite, asyncio.CancelledError):
            raise
        except Exception as exc:
            # A bug or an unexpected client error must not stall the rest of the batch, and
            # the ticket must not be lost: log it with its traceback and try again later.
            log = self._log.bind(ticket_id=item.ticket_id, namespace=item.ticket.job.namespace)
            log.exception("retry_fire_crashed")
            error = f"{type(exc).__name__}: {exc}"
            await self._defer(item, log, status=None, error=error)

    async def _fire(self, item: ClaimedTicket) -> None:
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
            name = body["metadata"]["name"]
            named = log.bind(job=name)
            intent = await self._redis(
                "begin_create",
                self._store.begin_create(
                    item.ticket_id,
                    claim=item.claim,
                    job=JobRef(ticket.job.namespace, name, ""),
                    lineage=Lineage(ticket.attempt, ticket.history),
                ),
            )
            if intent.status is not BeginStatus.BEGUN:
                named.info("retry_not_ours_any_more", status=intent.status.value)
                return
            with_create_token(body, ticket_id=ticket.job.uid, token=intent.token)
            if await self._try_create(item, body, intent, named, last=unique_name):
                return

    async def _try_create(
        self,
        item: ClaimedTicket,
        body: dict[str, Any],
        intent: CreateIntent,
        log: FilteringBoundLogger,
        *,
        last: bool,
    ) -> bool:
        """POST `body` and settle the ticket; False when a Job of another lineage holds the
        name and another name may be tried."""
        namespace, name = item.ticket.job.namespace, body["metadata"]["name"]
        try:
            if intent.earlier_claims:
                # Another claim began a create: it may have happened (a lost reply). Look
                # first: a Terminating namespace answers a create with 403, never 409, and
                # only settling our Job lets its finalizer, and the namespace, go.
                existing = await self._jobs.get(namespace, name)
                if existing is not None and _token_of(existing) == intent.token:
                    await self._settle_existing(item, existing, log)
                    return True
            try:
                created = await self._jobs.create(namespace, body)
            except KubeConflict as err:
                existing = await self._jobs.get(namespace, name)
                if existing is None:
                    # Not ours: ours keeps its finalizer until settled. The name is free now.
                    await self._defer(item, log, status=409, error=f"{err}; gone since")
                    return True
                if _token_of(existing) == intent.token:
                    await self._settle_existing(item, existing, log)
                    return True
                if not last:
                    log.info("retry_name_taken", by="a Job of another lineage")
                    return False
                reason = (
                    "a Job with this name already exists and is not this ticket's retry "
                    f"(its {ANNOTATION_CREATE_TOKEN} is not this ticket's)"
                )
                await self._abandon(item, log, reason, status=409)
                return True
        except KubeAPIError as err:
            if isinstance(err, PERMANENT_ERRORS):
                await self._abandon(item, log, err.reason or str(err), status=err.status)
            else:
                await self._defer(item, log, status=err.status, error=str(err))
            return True
        self._count(Outcome.CREATED)
        log.info("retry_fired", outcome=Outcome.CREATED.value, avoid_node=item.ticket.avoid_node)
        await self._settle(item, _ref_of(created, namespace, name), log)
        return True

    async def _settle_existing(
        self, item: ClaimedTicket, existing: RawObject, log: FilteringBoundLogger
    ) -> None:
        """The Job is this ticket's (its token): an earlier firing created it."""
        self._already_exists(log)
        namespace = item.ticket.job.namespace
        await self._settle(item, _ref_of(existing, namespace, ""), log)

    async def _settle(self, item: ClaimedTicket, job: JobRef, log: FilteringBoundLogger) -> None:
        """Ack the ticket with its Job's uid, then let the Job go (its finalizer)."""
        self._deferrals.pop(item.ticket_id, None)
        settled = await self._redis(
            "settle_created",
            self._store.settle_created(
                item.ticket_id, claim=item.claim, job=job if job.uid else None
            ),
        )
        if settled.status is not BeginStatus.BEGUN:
            # Claimed again since (the Job is found there by its token) or settled already.
            log.info("retry_not_ours_any_more", status=settled.status.value)
            return
        if settled.release_finalizer_now and job.uid:
            await self._release_finalizer(job, log)

    async def _release_finalizer(self, job: JobRef, log: FilteringBoundLogger) -> None:
        try:
            await self._jobs.remove_finalizer(job, FINALIZER_RETRY_ACK)
        except KubeAPIError as err:
            # Still queued in the store: the next cycle's pass tries again.
            log.warning("retry_finalizer_not_removed", job_uid=job.uid, error=str(err))
            return
        await self._redis("finalizer_released", self._store.finalizer_released(job))

    async def _finish_finalizers(self) -> None:
        """Remove the finalizers that are due: those kept for a grace, or cut off by a crash."""
        due = await self._redis(
            "due_finalizers", self._store.due_finalizers(limit=self._settings.batch_size)
        )
        for job in due:
            log = self._log.bind(namespace=job.namespace, job=job.name)
            await self._release_finalizer(job, log)

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
            "abandon_retry", self._store.abandon_retry(item.ticket_id, letter, claim=item.claim)
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
        release = self._store.release_retry(item.ticket_id, delay_s=delay, claim=item.claim)
        await self._redis("release_retry", release)

    def _count(self, outcome: Outcome) -> None:
        self._metrics.retries_fired.labels(outcome=outcome.value).inc()

    async def _redis(self, operation: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except SinkError:
            self._metrics.redis_errors.labels(operation=operation).inc()
            raise


def _token_of(job: RawObject) -> str:
    """The create token a Job carries (empty when none): whether it is a ticket's Job."""
    annotations = (job.get("metadata") or {}).get("annotations")
    token = annotations.get(ANNOTATION_CREATE_TOKEN) if isinstance(annotations, dict) else None
    return token if isinstance(token, str) else ""


def _ref_of(job: RawObject, namespace: str, name: str) -> JobRef:
    meta = job.get("metadata") or {}
    uid, found = meta.get("uid"), meta.get("name")
    return JobRef(
        namespace,
        found if isinstance(found, str) and found else name,
        uid if isinstance(uid, str) else "",
    )
