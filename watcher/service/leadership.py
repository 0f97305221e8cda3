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

Fencing: the renew deadline cannot stop a leader that froze (a long pause, SIGSTOP, a VM
migration) between deciding to write and writing. So each term has a number, the Lease's
leaseTransitions when this replica took it, and every Redis write carries it; Redis refuses a
term below the highest it has seen (`watcher.adapters.redis.fencing`). Before acting, a new
leader claims its term with the `TermFence`: it must be above every term used before, so it
is; if it is not (the Lease was deleted and re-created, restarting the count at 0), the
leader first moves its Lease's leaseTransitions past Redis's fence. The daemon calls `resign`
when a write was refused: this replica stops leading at once and campaigns again.

API errors and timeouts are logged and retried; `run` never raises except when cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
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

from structlog.typing import FilteringBoundLogger

from watcher.core.errors import KubeAPIError, SinkError
from watcher.core.rawjson import RawObject
from watcher.core.settings import LeaderElectionSettings
from watcher.kit.aio import first_done, sleep_or_stop
from watcher.kit.logs import get_logger
from watcher.kit.metrics import Metrics
from watcher.service.ports import LeasePort, TermFence

__all__ = [
    "DEFAULT_LEASE_NAMESPACE",
    "LeaderElector",
    "default_identity",
    "resolve_lease_namespace",
]

DEFAULT_LEASE_NAMESPACE: Final = "kube-dlq"
"""Lease namespace outside a pod (no ServiceAccount namespace file): the one rbac.yaml uses."""
SERVICE_ACCOUNT_NAMESPACE_FILE: Final = Path(
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
)
ACQUIRE_JITTER: Final = 0.2
"""Standbys poll every retry period times 1 to 1.2, so they do not all ask at once (client-go
jitters by up to 2.2x; a smaller factor keeps a released lease's handover near one period)."""
TERM_CLAIMS: Final = 3
"""Tries to claim a term above Redis's fence per acquisition (each after moving the Lease's
leaseTransitions past it); more are needed only while another leader keeps raising it."""


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
        leases: LeasePort,
        settings: LeaderElectionSettings,
        *,
        identity: str | None = None,
        fence: TermFence | None = None,
        metrics: Metrics | None = None,
        logger: FilteringBoundLogger | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < settings.retry_period_s < settings.renew_deadline_s < settings.lease_duration_s:
            raise ValueError("need 0 < retry_period_s < renew_deadline_s < lease_duration_s")
        self.leases = leases
        self.name = leases.name
        self.namespace = leases.namespace
        self.lease_duration_s = settings.lease_duration_s
        self.renew_deadline_s = settings.renew_deadline_s
        self.retry_period_s = settings.retry_period_s
        self.identity = identity or default_identity()
        self.metrics = metrics or Metrics()
        self.log = (logger or get_logger()).bind(
            lease=f"{self.namespace}/{self.name}", identity=self.identity
        )
        self.clock = clock
        self.rng = rng or random.Random()
        self.is_leader = asyncio.Event()
        self.lost = asyncio.Event()
        self.terms = 0
        """How many times this elector became leader."""
        self.fence = fence
        """Where each term is claimed before it starts; None: terms are not fenced."""
        self.term: int | None = None
        """The number of the current (or last) term: what this replica's writes carry."""
        self._resigned = asyncio.Event()
        """Set by `resign`: wakes `_hold` so it returns to campaigning at once."""
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
        self.metrics.leader_term.set(-1)

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
            held = await self._attempt(self.renew_deadline_s) is _Attempt.HELD
            if held and await self._take_term():
                self._start_term()
                return True
            period = self.retry_period_s * (1 + ACQUIRE_JITTER * self.rng.random())
            if await sleep_or_stop(stop, period):
                break
        return False

    async def _hold(self, stop: asyncio.Event) -> None:
        """Renew every retry period while leading; returns on stop (still leader) or loss."""
        while True:
            deadline = self._renewed_at + self.renew_deadline_s
            if await self._nap(stop, min(self.retry_period_s, deadline - self.clock())):
                return
            if self._resigned.is_set():
                self._resigned.clear()
                return  # `resign` already stepped down
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

    async def _nap(self, stop: asyncio.Event, seconds: float) -> bool:
        """Sleep up to `seconds`, less on `stop` or `resign`; True if `stop` is set."""
        await first_done(stop.wait(), self._resigned.wait(), at_most_s=max(0.0, seconds))
        return stop.is_set()

    def resign(self, reason: str, **fields: object) -> None:
        """Stop leading now, and campaign again (the daemon calls it when Redis refused a
        write of this term: another replica has led since it began). No-op when not leading.

        The Lease is not released: it is most likely another holder's already.
        """
        if not self.is_leader.is_set():
            return
        self._step_down()
        self._resigned.set()
        self.log.warning("leader_lost", reason=reason, fence_term=self.term, **fields)

    async def _take_term(self) -> bool:
        """Claim this term's number before leading: above every term a write carried before.

        The number is the Lease's leaseTransitions. When Redis's fence is at or above it (the
        Lease was deleted and re-created, so the count restarted at 0; or it was edited), the
        Lease's leaseTransitions is first moved to the fence plus one: the term stays the
        Lease's, and the next holder's (transitions + 1) is above it again. False (not leading
        yet; the next poll tries again, still holding the Lease) on an error, a lost race for
        the Lease or the renew deadline passing meanwhile.
        """
        term = _transitions(self._observed)
        if self.fence is None:
            self.term = term
            return True
        try:
            async with asyncio.timeout(self._renewed_at + self.renew_deadline_s - self.clock()):
                for _ in range(TERM_CLAIMS):
                    fence = await self.fence.claim_term(term)
                    if fence is None:
                        self.term = term
                        return True
                    term = fence + 1
                    if not await self._move_transitions(term, fence):
                        return False
        except (SinkError, KubeAPIError, TimeoutError) as exc:
            self.log.warning("leader_term_not_claimed", fence_term=term, error=_describe(exc))
            return False
        except Exception:  # a root loop's guard, as in `_attempt`: log, try again next period
            self.log.exception("leader_election_crashed", claiming_term=term)
            return False
        self.log.warning("leader_term_not_claimed", fence_term=term, error="the fence kept rising")
        return False

    async def _move_transitions(self, term: int, fence: int) -> bool:
        """Write our Lease with leaseTransitions = `term` (a renewal too); False on a conflict."""
        lease = self._lease
        if lease is None:
            return False
        spec = {**(lease.get("spec") or {}), "leaseTransitions": term, "renewTime": _micro_time()}
        started = self.clock()
        written = await self.leases.replace(lease, spec, self.renew_deadline_s)
        if written is None:
            return False  # the Lease changed since: the next poll reads it again
        self._observe(written)
        self._renewed_at = started
        self.log.warning("lease_transitions_moved_past_fence", fence=fence, lease_transitions=term)
        return True

    def _start_term(self) -> None:
        self.terms += 1
        self._resigned.clear()
        self.lost.clear()
        self.is_leader.set()
        self.metrics.leader.set(1)
        self.metrics.leader_term.set(-1 if self.term is None else self.term)
        spec = self._observed or {}
        self.log.info(
            "leader_acquired",
            term=self.terms,
            fence_term=self.term,
            lease_transitions=spec.get("leaseTransitions"),
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
        except (KubeAPIError, TimeoutError) as exc:
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
            lease = await self.leases.get(timeout_s)
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
        transitions = _transitions(old)
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
                    lease = await self.leases.get(self.renew_deadline_s)
        except (KubeAPIError, TimeoutError) as exc:
            self.log.warning("leader_election_error", error=_describe(exc), releasing=True)
        return False

    async def _write(
        self, lease: RawObject | None, spec: RawObject, timeout_s: float
    ) -> RawObject | None:
        """Create (no `lease`) or replace at `lease`'s resourceVersion; None on a conflict."""
        if lease is None:
            return await self.leases.create(spec, timeout_s)
        return await self.leases.replace(lease, spec, timeout_s)


def _transitions(spec: Mapping[str, Any] | None) -> int:
    """The spec's leaseTransitions as a term; 0 when it is not a count (the apiserver checks
    it, but a term must never be what crashes the elector; the fence then moves it)."""
    try:
        return max(0, int((spec or {}).get("leaseTransitions") or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


def _micro_time() -> str:
    """A metav1.MicroTime: RFC 3339 UTC with microseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _describe(exc: BaseException) -> str:
    return "timed out" if isinstance(exc, TimeoutError) else str(exc)
