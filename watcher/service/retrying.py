"""Fire due retries: re-create failed Jobs from their Redis tickets, exactly once.

Each cycle claims up to ``batch_size`` due tickets (leased for ``lease_s``), creates the Job
``watcher.core.manifest.manifest_for_ticket`` builds from each, and settles the ticket:

    create result                      ticket          outcome label    log event
    201 Created                        ack             created          retry_fired
    409, the Job is this lineage's     ack             already_exists   retry_already_exists
      (or it is gone again by now)
    409, the Job there is not this     ack             abandoned        retry_abandoned
      ticket's retry (other lineage)
    400/404/422 (namespace gone,       ack             abandoned        retry_abandoned
      invalid body), bad ticket
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
import contextlib
import enum
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from structlog.typing import FilteringBoundLogger

from watcher.adapters.redis.store import ClaimedTicket
from watcher.core.backoff import compute_delay
from watcher.core.errors import KubeAPIError, SinkError
from watcher.core.manifest import manifest_for_ticket
from watcher.core.policy import ANNOTATION_ORIGINAL_UID
from watcher.kit.metrics import Metrics

__all__ = ["Outcome", "RetryLoop", "RetrySettings", "RetryStore"]

T = TypeVar("T")

PERMANENT_STATUSES: Final = frozenset({400, 404, 422})
"""Create failures that no retry can fix: a malformed body, a deleted namespace, a Job the
apiserver rejects as invalid. Everything else (401, 403, 429, 5xx, no response) may pass later:
credentials rotate, RBAC gets fixed, a Terminating namespace answers 403 until it is gone."""

_MAX_TRACKED_DEFERRALS: Final = 10_000


class Outcome(enum.StrEnum):
    """What firing one ticket did; the ``outcome`` label of ``retries_fired``."""

    CREATED = "created"
    ALREADY_EXISTS = "already_exists"
    ABANDONED = "abandoned"
    DEFERRED = "deferred"


class RetryStore(Protocol):
    """The part of `watcher.adapters.redis.store.RedisStore` the loop uses."""

    async def claim_due_retries(self, now: float, *, limit: int) -> list[ClaimedTicket]: ...

    async def ack_retry(self, ticket_id: str) -> bool: ...

    async def release_retry(self, ticket_id: str, due_at: float) -> bool: ...

    async def pending_retries(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RetrySettings:
    poll_interval_s: float = 5.0
    """How often due tickets are claimed. Retry delays are tens of seconds and more, so 5 s
    late is invisible, and one small Lua call every 5 s costs Redis nothing."""
    batch_size: int = 25
    """Tickets claimed per call. A full batch is followed at once by the next claim, so this
    bounds one claim's work, not the throughput."""
    lease_s: float = 60.0
    """How long a claimed ticket is ours (``redis.retry_claim_lease_s``). A lease that runs out
    mid-batch only costs a 409 on the other replica, never a second Job."""
    request_timeout_s: float = 30.0
    """Upper bound on one create (or the lookup after a 409), so a hung apiserver connection
    cannot hold a batch, or a shutdown, for long."""
    defer_base_s: float = 15.0
    """First delay before a ticket whose create failed transiently is tried again."""
    defer_cap_s: float = 600.0
    """Longest such delay: a broken RBAC binding or a long apiserver outage is retried every
    ten minutes at most, and the ticket is never dropped."""
    error_backoffs_s: tuple[float, ...] = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)
    """Waits after consecutive failed cycles (Redis down); the last one repeats."""

    def __post_init__(self) -> None:
        positive = {
            "poll_interval_s": self.poll_interval_s,
            "lease_s": self.lease_s,
            "request_timeout_s": self.request_timeout_s,
            "defer_cap_s": self.defer_cap_s,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.defer_base_s <= self.defer_cap_s:
            raise ValueError("defer_base_s must be between 0 and defer_cap_s")
        if not self.error_backoffs_s or any(
            not (math.isfinite(s) and s > 0) for s in self.error_backoffs_s
        ):
            raise ValueError("error_backoffs_s must be non-empty finite numbers > 0")


class RetryLoop:
    """Claims due retry tickets and re-creates their Jobs; see the module docstring."""

    def __init__(
        self,
        *,
        sink: RetryStore,
        api: client.ApiClient,
        metrics: Metrics,
        logger: FilteringBoundLogger,
        settings: RetrySettings | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._sink = sink
        self._batch_api = client.BatchV1Api(api)
        self._metrics = metrics
        self._log = logger
        self._settings = settings if settings is not None else RetrySettings()
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
                except Exception:
                    # Guard of a root loop: log with the traceback and carry on; tickets that
                    # were claimed come back when their lease runs out.
                    wait = self._error_wait(failures)
                    failures += 1
                    self._log.exception("retry_cycle_crashed", retry_in_s=wait)
                else:
                    failures = 0
                    wait = self._next_wait(claimed, loop.time() - started)
                await _sleep_unless(stop, wait)
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
            self._sink.claim_due_retries(now, limit=settings.batch_size),
        )
        for index, item in enumerate(claimed):
            if stop is not None and stop.is_set():
                await self._give_back(claimed[index:], now)
                break
            await self._fire_guarded(item, now)
        pending = await self._redis("pending_retries", self._sink.pending_retries())
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
                await self._redis("release_retry", self._sink.release_retry(item.ticket_id, now))
            except SinkError:
                return  # counted; the leases run out and another replica takes them
        self._log.info("retry_tickets_released", count=len(items))

    # --- one ticket ---------------------------------------------------------------------------

    async def _fire_guarded(self, item: ClaimedTicket, now: float) -> None:
        try:
            await self._fire(item, now)
        except (SinkError, asyncio.CancelledError):
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
        try:
            body = manifest_for_ticket(ticket)
        except ValueError as exc:
            await self._abandon(item, log, f"invalid ticket: {exc}", status=None)
            return
        name: str = body["metadata"]["name"]
        log = log.bind(job=name)
        try:
            await self._create(ticket.job.namespace, name, body)
        except KubeAPIError as err:
            await self._settle_failed_create(item, body, err, log, now)
            return
        self._count(Outcome.CREATED)
        log.info("retry_fired", outcome=Outcome.CREATED.value, avoid_node=ticket.avoid_node)
        await self._ack(item)

    async def _settle_failed_create(
        self,
        item: ClaimedTicket,
        body: dict[str, Any],
        err: KubeAPIError,
        log: FilteringBoundLogger,
        now: float,
    ) -> None:
        if err.status in PERMANENT_STATUSES:
            await self._abandon(item, log, err.reason or str(err), status=err.status)
            return
        if not err.is_conflict:
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
        self._count(Outcome.ALREADY_EXISTS)
        log.info("retry_already_exists", outcome=Outcome.ALREADY_EXISTS.value)
        await self._ack(item)

    async def _abandon(
        self, item: ClaimedTicket, log: FilteringBoundLogger, reason: str, *, status: int | None
    ) -> None:
        ticket = item.ticket
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
        )
        await self._ack(item)

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
        await self._redis("release_retry", self._sink.release_retry(item.ticket_id, now + delay))

    async def _ack(self, item: ClaimedTicket) -> None:
        self._deferrals.pop(item.ticket_id, None)
        await self._redis("ack_retry", self._sink.ack_retry(item.ticket_id))

    def _count(self, outcome: Outcome) -> None:
        self._metrics.retries_fired.labels(outcome=outcome.value).inc()

    async def _redis(self, operation: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except SinkError:
            self._metrics.redis_errors.labels(operation=operation).inc()
            raise

    # --- the Kubernetes API -------------------------------------------------------------------

    async def _create(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        """POST the Job; raises `KubeAPIError` unless the apiserver answered 2xx."""
        # The client serialises a plain dict as it is; its V1Job annotation is too narrow.
        raw_body: Any = body
        status, data = await self._request(
            "create Job",
            namespace,
            name,
            lambda timeout: self._batch_api.create_namespaced_job(
                namespace, raw_body, _preload_content=False, _request_timeout=timeout
            ),
        )
        if not 200 <= status < 300:
            raise _api_error("create Job", status, data, namespace, name)

    async def _is_our_retry(self, namespace: str, body: dict[str, Any]) -> bool:
        """After a 409: is the existing Job this ticket's retry (same original uid)?

        A Job deleted again since the 409 (finished with ttlSecondsAfterFinished: 0, or
        removed by hand) counts as ours: creating it again could run it twice.
        """
        name: str = body["metadata"]["name"]
        status, data = await self._request(
            "read Job",
            namespace,
            name,
            lambda timeout: self._batch_api.read_namespaced_job(
                name, namespace, _preload_content=False, _request_timeout=timeout
            ),
        )
        if status == 404:
            return True
        if not 200 <= status < 300:
            raise _api_error("read Job", status, data, namespace, name)
        try:
            existing = json.loads(data)
            found = existing["metadata"]["annotations"][ANNOTATION_ORIGINAL_UID]
        except (ValueError, KeyError, TypeError):
            return False
        expected = body["metadata"]["annotations"][ANNOTATION_ORIGINAL_UID]
        return bool(found == expected)

    async def _request(
        self,
        what: str,
        namespace: str,
        name: str,
        call: Callable[[float], Awaitable[Any]],
    ) -> tuple[int, bytes]:
        """Send one request with ``_preload_content=False``: (status, body), whatever the
        status; a transport failure or timeout raises `KubeAPIError` without a status."""
        timeout = self._settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout):
                response = await call(timeout)
                try:
                    data: bytes = await response.read()
                    status: int = response.status
                finally:
                    response.release()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeAPIError.from_exception(
                f"{what} failed", exc, kind="Job", namespace=namespace, name=name
            ) from exc
        return status, data


def _api_error(what: str, status: int, data: bytes, namespace: str, name: str) -> KubeAPIError:
    exc = ApiException(status=status)
    exc.body = data
    return KubeAPIError.from_exception(
        f"{what} failed", exc, kind="Job", namespace=namespace, name=name
    )


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `stop` is set meanwhile; always yields to the event loop."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
