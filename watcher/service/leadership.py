"""Lease-based leader election on a coordination.k8s.io/v1 Lease: client-go's algorithm.

Every replica runs a `LeaderElector` on the same Lease. A candidate takes the Lease when it is
absent (create) or expired, then renews it every `retry_period_s`; the others stand by and
poll at the same period. The record is client-go's: holderIdentity, leaseDurationSeconds,
acquireTime, renewTime, leaseTransitions (incremented when the holder changes).

Expiry is judged as client-go judges it, robust to clock skew between nodes: never from the
timestamps in the record, but from the local monotonic clock at the moment this replica last
saw the record change, plus the record's leaseDurationSeconds. A holder that renews keeps
changing the record, so the lease stays valid in every observer's eyes; a dead holder's record
stops changing and expires `lease_duration_s` after each observer last saw it move.

Safety: the leader counts its renew deadline from the start of its last successful write and
steps down when no renewal succeeded within `renew_deadline_s` (shorter than the lease
duration, so it stops before anyone else may take over), or at once when the Lease names
another holder. Every request is bounded by the time left to that deadline, so a hung
connection cannot keep a stale leader acting. Writes carry the resourceVersion they read
(optimistic concurrency); a 409 re-reads. On a graceful stop the leader releases the Lease
(empty holder, leaseDurationSeconds 1) so a standby takes over at its next poll; a cancelled
elector (a crash) does not, and the standby waits for the lease to expire.

API errors and timeouts are logged and retried; `run` never raises except when cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import math
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from structlog.typing import FilteringBoundLogger

from watcher.core.settings import LeaderElectionSettings
from watcher.kit.logs import get_logger
from watcher.kit.metrics import Metrics

__all__ = [
    "DEFAULT_LEASE_NAMESPACE",
    "LeaderElector",
    "default_identity",
    "resolve_lease_namespace",
]

RawObject = dict[str, Any]

DEFAULT_LEASE_NAMESPACE: Final = "kube-dlq"
"""Lease namespace outside a pod (no ServiceAccount namespace file): the one rbac.yaml uses."""
SERVICE_ACCOUNT_NAMESPACE_FILE: Final = Path(
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
)
ACQUIRE_JITTER: Final = 0.2
"""Standbys poll every retry period times 1 to 1.2, so they do not all ask at once (client-go
jitters by up to 2.2x; a smaller factor keeps a released lease's handover near one period)."""

_API_ERRORS: Final = (ApiException, aiohttp.ClientError, TimeoutError, ValueError)


def default_identity() -> str:
    """This replica's holderIdentity: the pod name ($HOSTNAME) and a random suffix, so a
    restarted pod (same name) is a new candidate and never mistakes an old record for its own."""
    host = os.environ.get("HOSTNAME") or socket.gethostname() or "kube-dlq"
    return f"{host}_{secrets.token_hex(4)}"


def resolve_lease_namespace(
    configured: str, *, namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE
) -> str:
    """The configured namespace, else the pod's own (ServiceAccount file), else kube-dlq."""
    if configured:
        return configured
    with contextlib.suppress(OSError, UnicodeDecodeError):
        found = namespace_file.read_text(encoding="utf-8").strip()
        if found:
            return found
    return DEFAULT_LEASE_NAMESPACE


class _Attempt(enum.Enum):
    HELD = "held"
    """We hold the Lease: created, acquired or renewed by this attempt."""
    OTHER = "other"
    """Another holder's lease is valid."""
    FAILED = "failed"
    """API error, timeout or a write conflict: try again at the next period."""


class LeaderElector:
    """One candidate for the leadership of one Lease.

    `is_leader` is set while this replica leads; `lost` is set when a term ends (step-down,
    lease taken, release, cancellation) and cleared when a new term starts (clear until a
    first term ends). Both flip together, `is_leader` cleared first, and always before the
    Lease can pass to another holder. `metrics.leader` follows `is_leader`.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        lease_name: str,
        lease_namespace: str,
        lease_duration_s: float,
        renew_deadline_s: float,
        retry_period_s: float,
        identity: str | None = None,
        metrics: Metrics | None = None,
        logger: FilteringBoundLogger | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < retry_period_s < renew_deadline_s < lease_duration_s:
            raise ValueError("need 0 < retry_period_s < renew_deadline_s < lease_duration_s")
        self.leases = client.CoordinationV1Api(api)
        self.name = lease_name
        self.namespace = lease_namespace
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.identity = identity or default_identity()
        self.metrics = metrics or Metrics()
        self.log = (logger or get_logger()).bind(
            lease=f"{lease_namespace}/{lease_name}", identity=self.identity
        )
        self.clock = clock
        self.rng = rng or random.Random()
        self.is_leader = asyncio.Event()
        self.lost = asyncio.Event()
        self.terms = 0
        """How many times this elector became leader."""
        self._observed: Mapping[str, Any] | None = None
        """The Lease spec last seen (read or written)."""
        self._observed_at = 0.0
        """Local clock when `_observed` last changed: expiry is measured from here."""
        self._lease: RawObject | None = None
        """The Lease object last read or written (its resourceVersion guards the next write)."""
        self._renewed_at = 0.0
        """Local clock at the start of the last successful write of our own record."""
        self._failures = 0
        self.metrics.leader.set(0)

    @classmethod
    def from_config(
        cls,
        api: client.ApiClient,
        config: LeaderElectionSettings,
        *,
        metrics: Metrics | None = None,
        logger: FilteringBoundLogger | None = None,
    ) -> LeaderElector:
        return cls(
            api,
            lease_name=config.lease_name,
            lease_namespace=resolve_lease_namespace(config.lease_namespace),
            lease_duration_s=config.lease_duration_s,
            renew_deadline_s=config.renew_deadline_s,
            retry_period_s=config.retry_period_s,
            metrics=metrics,
            logger=logger,
        )

    # -- running --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stand by, lead, stand by again... until `stop` is set; then release if leading.

        Cancelling the task ends leadership locally without releasing the Lease (as a crash
        would): the other replicas take over once it expires.
        """
        self.log.info(
            "leader_election_started",
            lease_duration_s=self.lease_duration_s,
            renew_deadline_s=self.renew_deadline_s,
            retry_period_s=self.retry_period_s,
        )
        try:
            while not stop.is_set():
                if await self._acquire(stop):
                    await self._hold(stop)
        except asyncio.CancelledError:
            if self.is_leader.is_set():
                self._step_down()
                self.log.warning("leader_lost", reason="cancelled")
            raise
        if self.is_leader.is_set():
            self._step_down()  # before the write: we stop leading before anyone else may
            released = await self._release()
            self.log.info("leader_released", lease_released=released)

    async def _acquire(self, stop: asyncio.Event) -> bool:
        """Poll until we hold the Lease (True) or `stop` is set (False)."""
        while not stop.is_set():
            if await self._attempt(self.renew_deadline_s) is _Attempt.HELD:
                self._start_term()
                return True
            period = self.retry_period_s * (1 + ACQUIRE_JITTER * self.rng.random())
            if await _wait(stop, period):
                break
        return False

    async def _hold(self, stop: asyncio.Event) -> None:
        """Renew every retry period while leading; returns on stop (still leader) or loss."""
        while True:
            deadline = self._renewed_at + self.renew_deadline_s
            if await _wait(stop, min(self.retry_period_s, deadline - self.clock())):
                return
            left = deadline - self.clock()
            if left <= 0:
                self._step_down()
                self.log.warning(
                    "leader_lost",
                    reason="renew_deadline_exceeded",
                    since_last_renewal_s=round(self.clock() - self._renewed_at, 3),
                )
                return
            if await self._attempt(left) is _Attempt.OTHER:
                self._step_down()
                self.log.warning("leader_lost", reason="lease_taken", holder=self._holder())
                return

    def _start_term(self) -> None:
        self.terms += 1
        self.lost.clear()
        self.is_leader.set()
        self.metrics.leader.set(1)
        spec = self._observed or {}
        self.log.info(
            "leader_acquired", term=self.terms, lease_transitions=spec.get("leaseTransitions")
        )

    def _step_down(self) -> None:
        self.is_leader.clear()
        self.metrics.leader.set(0)
        self.lost.set()

    # -- one try --------------------------------------------------------------------------

    async def _attempt(self, limit_s: float) -> _Attempt:
        """One tryAcquireOrRenew, bounded by `limit_s`; errors are logged, never raised."""
        try:
            async with asyncio.timeout(limit_s):
                outcome = await self._try_acquire_or_renew(limit_s)
        except _API_ERRORS as exc:
            self._failures += 1
            self.log.warning(
                "leader_election_error",
                error=_describe(exc),
                leading=self.is_leader.is_set(),
                failures_in_a_row=self._failures,
            )
            return _Attempt.FAILED
        except Exception:  # a root loop's guard: log with the traceback, carry on
            self._failures += 1
            self.log.exception("leader_election_crashed", failures_in_a_row=self._failures)
            return _Attempt.FAILED
        if outcome is not _Attempt.FAILED:
            self._failures = 0
        return outcome

    async def _try_acquire_or_renew(self, timeout_s: float) -> _Attempt:
        for _ in range(2):  # a write conflict re-reads once
            started = self.clock()
            lease = await self._get(timeout_s)
            if lease is None:
                written = await self._write(None, self._record(None), timeout_s)
            else:
                self._observe(lease)
                if self._held_by_other():
                    return _Attempt.OTHER
                written = await self._write(lease, self._record(lease), timeout_s)
            if written is not None:
                self._observe(written)
                self._renewed_at = started
                return _Attempt.HELD
        return _Attempt.FAILED

    def _record(self, lease: RawObject | None) -> RawObject:
        """Our record, on top of whatever else the existing spec holds."""
        old: Mapping[str, Any] = (lease or {}).get("spec") or {}
        now = _micro_time()
        ours = old.get("holderIdentity") == self.identity
        transitions = int(old.get("leaseTransitions") or 0)
        return {
            **old,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.lease_duration_s)),
            "acquireTime": old.get("acquireTime") if ours else now,
            "renewTime": now,
            "leaseTransitions": transitions if ours or lease is None else transitions + 1,
        }

    def _observe(self, lease: RawObject) -> None:
        spec: Mapping[str, Any] = lease.get("spec") or {}
        self._lease = lease
        if spec != self._observed:
            before = (self._observed or {}).get("holderIdentity")
            self._observed = spec
            self._observed_at = self.clock()
            holder = spec.get("holderIdentity") or ""
            if holder != before and holder != self.identity:
                self.log.info("leader_observed", holder=holder or None)

    def _holder(self) -> str:
        return str((self._observed or {}).get("holderIdentity") or "")

    def _held_by_other(self) -> bool:
        holder = self._holder()
        if not holder or holder == self.identity:
            return False
        duration = float((self._observed or {}).get("leaseDurationSeconds") or 0)
        return self._observed_at + duration > self.clock()

    # -- release --------------------------------------------------------------------------

    async def _release(self) -> bool:
        """Hand the Lease back (empty holder, 1 s) so a standby need not wait for expiry.

        True if released; False if it was not ours any more or the API did not answer in time.
        """
        try:
            async with asyncio.timeout(self.renew_deadline_s):
                lease = self._lease
                for _ in range(2):  # a write conflict re-reads once
                    spec = dict((lease or {}).get("spec") or {})
                    if lease is None or spec.get("holderIdentity") != self.identity:
                        return False
                    now = _micro_time()
                    spec.update(
                        holderIdentity="", leaseDurationSeconds=1, acquireTime=now, renewTime=now
                    )
                    if await self._write(lease, spec, self.renew_deadline_s) is not None:
                        return True
                    lease = await self._get(self.renew_deadline_s)
        except _API_ERRORS as exc:
            self.log.warning("leader_election_error", error=_describe(exc), releasing=True)
        return False

    # -- API calls (raw JSON) -------------------------------------------------------------

    async def _get(self, timeout_s: float) -> RawObject | None:
        status, body = await _send(
            self.leases.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=timeout_s
            )
        )
        if status == 404:
            return None
        _check(status, body)
        return body

    async def _write(
        self, lease: RawObject | None, spec: RawObject, timeout_s: float
    ) -> RawObject | None:
        """Create (no `lease`) or replace at `lease`'s resourceVersion; None on a conflict."""
        if lease is None:
            body: Any = {  # raw JSON, not a V1Lease model
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": spec,
            }
            call = self.leases.create_namespaced_lease(
                self.namespace, body, _preload_content=False, _request_timeout=timeout_s
            )
        else:
            body = {**lease, "spec": spec}
            call = self.leases.replace_namespaced_lease(
                self.name, self.namespace, body, _preload_content=False, _request_timeout=timeout_s
            )
        status, written = await _send(call)
        if status == 409:  # changed (or created) since we read it: re-read
            return None
        _check(status, written)
        return written


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True as soon as `stop` is set. Always yields to the loop."""
    if seconds <= 0:
        await asyncio.sleep(0)
    else:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()
    return stop.is_set()


def _micro_time() -> str:
    """A metav1.MicroTime: RFC 3339 UTC with microseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return repr(exc)


async def _send(call: Any) -> tuple[int, RawObject]:
    """Await a ``_preload_content=False`` call: (status, decoded body), whatever the status
    (the client raises for none of them in this mode)."""
    resp = await call
    try:
        status: int = resp.status
        data = await resp.read()
    finally:
        resp.release()
    try:
        body = json.loads(data)
    except ValueError:
        if 200 <= status < 300:
            raise
        body = {}
    return status, body if isinstance(body, dict) else {}


def _check(status: int, body: Mapping[str, Any]) -> None:
    if not 200 <= status < 300:
        raise ApiException(status=status, reason=str(body.get("message") or body.get("reason")))
    if body.get("kind") != "Lease":
        raise ValueError(f"expected a Lease, got kind {body.get('kind')!r}")
