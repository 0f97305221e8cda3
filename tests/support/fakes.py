"""In-memory fakes of the service layer's Protocols (watcher.service.ports), for unit tests.

Each keeps what a test needs to assert on (the calls it got, what it holds) and behaves like
the real adapter where the service depends on it: the store writes each Job uid's outcome
once and answers "already handled" after; the Jobs fake answers None for a Job it does not
hold and refuses a delete whose uid precondition does not match. The store's markers also
carry a sequence number and a namespace, and `forget_absent` drops them like the real one (the
real one lets them expire; here they are gone at once). Scripted failures (a
`SinkError` or `KubeAPIError` queued with `fail_next`) are raised by the next call.
`FakeClock` stands in for the `clock=` the service takes, and for the writer's backoff sleep.
`FakeLeases` is one Lease with resourceVersions (a stale replace answers None, as a 409 does);
`FakeFence` is Redis's leader fence (`claim_term` as claim_term.lua answers it).
`FakePods` answers a Job's pods as the API has them (which the pod watch may not have yet).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Any

from watcher.core.errors import KubeConflict, SinkError, WatcherError
from watcher.core.lineage import CreateRecord
from watcher.core.model import (
    Action,
    DeadLetter,
    ForgetResult,
    JobRef,
    RetryTicket,
    WriteResult,
)
from watcher.core.rawjson import RawObject
from watcher.service.ports import (
    JobsPort,
    LeasePort,
    MarkerStore,
    OutcomeStore,
    PodsPort,
    TermFence,
)


@dataclass(frozen=True, slots=True)
class ForgetCall:
    """The arguments of one `FakeStore.forget_absent` call."""

    present_uids: frozenset[str]
    written_up_to: int
    namespaces: frozenset[str] | None


@dataclass
class FakeStore:
    """An `OutcomeStore` and a `MarkerStore`: one outcome per Job uid, like the Lua scripts."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    tickets: list[RetryTicket] = field(default_factory=list)
    outcomes: dict[str, WriteResult] = field(default_factory=dict)
    """Job uid -> the outcome first written for it."""
    failures: list[WatcherError] = field(default_factory=list)
    """Raised, in order, by the next writes (Redis down, or a `FencedWrite`)."""
    writes: int = 0
    """Write calls received, failed ones included."""
    trims: list[int] = field(default_factory=list)
    """Reported, in order, as ``trimmed`` by the next dead letters written (a full queue)."""
    marker_index: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Job uid -> (namespace, sequence number) of its marker, as the index holds it."""
    seq: int = 0
    """The last sequence number a marker got."""
    calls: list[str] = field(default_factory=list)
    """Names of the `MarkerStore` methods called, in order."""
    forgets: list[ForgetCall] = field(default_factory=list)
    marker_failures: list[SinkError] = field(default_factory=list)
    """Raised, in order, by the next `MarkerStore` calls."""
    records: dict[str, CreateRecord] = field(default_factory=dict)
    """Ticket id -> its create record (what the retry loop stored), for `create_record`."""
    delays: list[float] = field(default_factory=list)
    """The `delay_s` of every retry scheduled, in order."""

    def fail_next(self, *errors: WatcherError) -> None:
        self.failures.extend(errors)

    async def dead_letter(self, letter: DeadLetter) -> WriteResult:
        result = self._write(
            letter.job,
            Action.DEAD_LETTER,
            f"{letter.queue}/{len(self.dead_letters) + 1}-0",
            lambda: self.dead_letters.append(letter),
        )
        if result.written and self.trims:
            return replace(result, trimmed=self.trims.pop(0))
        return result

    async def schedule_retry(self, ticket: RetryTicket, *, delay_s: float = 0.0) -> WriteResult:
        def keep() -> None:
            self.tickets.append(ticket)
            self.delays.append(delay_s)

        return self._write(ticket.job, Action.RETRY, ticket.job.uid, keep)

    async def create_record(self, ticket_id: str) -> CreateRecord | None:
        return self.records.get(ticket_id)

    async def handled(self, job_uids: Sequence[str]) -> set[str]:
        return {uid for uid in job_uids if uid in self.outcomes}

    async def outcome_watermark(self) -> int:
        self.calls.append("outcome_watermark")
        if self.marker_failures:
            raise self.marker_failures.pop(0)
        return self.seq

    async def forget_absent(
        self,
        present_uids: Set[str],
        *,
        written_up_to: int,
        namespaces: Set[str] | None,
    ) -> ForgetResult:
        self.calls.append("forget_absent")
        scope = frozenset(namespaces) if namespaces is not None else None
        self.forgets.append(ForgetCall(frozenset(present_uids), written_up_to, scope))
        if self.marker_failures:
            raise self.marker_failures.pop(0)
        pending = {t.job.uid for t in self.tickets}
        forgotten = kept = out_of_scope = 0
        for uid, (namespace, seq) in list(self.marker_index.items()):
            if seq > written_up_to or uid in present_uids:
                continue
            if scope is not None and namespace not in scope:
                out_of_scope += 1
            elif uid in pending:
                kept += 1
            else:
                del self.marker_index[uid]
                del self.outcomes[uid]
                forgotten += 1
        return ForgetResult(forgotten, kept, out_of_scope)

    def _write(self, job: JobRef, action: Action, ref: str, keep: Any) -> WriteResult:
        self.writes += 1
        if self.failures:
            raise self.failures.pop(0)
        earlier = self.outcomes.get(job.uid)
        if earlier is not None:
            return WriteResult(False, earlier.action, earlier.ref)
        keep()
        self.seq += 1
        self.marker_index[job.uid] = (job.namespace, self.seq)
        self.outcomes[job.uid] = WriteResult(True, action, ref)
        return self.outcomes[job.uid]


@dataclass
class FakeJobs:
    """A `JobsPort` over a dict of raw Jobs keyed by (namespace, name)."""

    jobs: dict[tuple[str, str], RawObject] = field(default_factory=dict)
    deleted: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(namespace, name, uid precondition) of every delete that removed a Job."""
    events: list[tuple[JobRef, str, str]] = field(default_factory=list)
    """(job, reason, message) of every Warning Event written."""
    failures: list[WatcherError] = field(default_factory=list)
    """Raised, in order, by the next calls of any method."""
    failures_of: dict[str, list[WatcherError]] = field(default_factory=dict)
    """Method name -> raised, in order, by the next calls of that method (before `failures`)."""

    def fail_next(self, *errors: WatcherError, method: str | None = None) -> None:
        """Make the next calls raise `errors`: of any method, or only of `method` ("delete")."""
        if method is None:
            self.failures.extend(errors)
        else:
            self.failures_of.setdefault(method, []).extend(errors)

    created: list[RawObject] = field(default_factory=list)
    """Every Job created, in order (with the uid the fake gave it)."""

    def put(self, raw_job: Mapping[str, Any]) -> None:
        meta = raw_job["metadata"]
        self.jobs[(meta["namespace"], meta["name"])] = copy.deepcopy(dict(raw_job))

    def purge(self, namespace: str, name: str) -> bool:
        """What the TTL controller or a user does: delete the Job. One with finalizers only
        gets a deletionTimestamp (it stays until they are removed). True if it is gone."""
        found = self.jobs.get((namespace, name))
        if found is None:
            return True
        if found["metadata"].get("finalizers"):
            found["metadata"]["deletionTimestamp"] = "now"
            return False
        del self.jobs[(namespace, name)]
        return True

    async def get(self, namespace: str, name: str) -> RawObject | None:
        self._maybe_fail("get")
        found = self.jobs.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def create(self, namespace: str, body: Mapping[str, Any]) -> RawObject:
        self._maybe_fail("create")
        name = body["metadata"]["name"]
        if (namespace, name) in self.jobs:
            raise KubeConflict("creating Job failed", status=409, reason="AlreadyExists")
        uid = f"uid-{name}-{len(self.created) + 1}"
        self.put({**body, "metadata": {**body["metadata"], "namespace": namespace, "uid": uid}})
        self.created.append(copy.deepcopy(self.jobs[(namespace, name)]))
        return copy.deepcopy(self.jobs[(namespace, name)])

    async def remove_finalizer(self, job: JobRef, finalizer: str) -> bool:
        self._maybe_fail("remove_finalizer")
        found = self.jobs.get((job.namespace, job.name))
        if found is None or found["metadata"].get("uid") != job.uid:
            return False
        finalizers = found["metadata"].get("finalizers") or []
        if finalizer not in finalizers:
            return False
        finalizers.remove(finalizer)
        if not finalizers and found["metadata"].get("deletionTimestamp"):
            del self.jobs[(job.namespace, job.name)]
        return True

    async def delete(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        self._maybe_fail("delete")
        found = self.jobs.get((namespace, name))
        if found is None or (uid and found["metadata"].get("uid") != uid):
            return False
        del self.jobs[(namespace, name)]
        self.deleted.append((namespace, name, uid))
        return True

    async def warn(self, job: JobRef, reason: str, message: str) -> None:
        self._maybe_fail("warn")
        self.events.append((job, reason, message))

    def _maybe_fail(self, method: str) -> None:
        scripted = self.failures_of.get(method)
        if scripted:
            raise scripted.pop(0)
        if self.failures:
            raise self.failures.pop(0)


@dataclass
class FakePods:
    """A `PodsPort` over raw pods by Job uid: what the API has, whatever the watch said."""

    pods: dict[str, list[RawObject]] = field(default_factory=dict)
    reads: list[tuple[str, str]] = field(default_factory=list)
    """(namespace, job uid) of every read, failed ones included."""
    failures: list[WatcherError] = field(default_factory=list)
    """Raised, in order, by the next reads."""

    async def of_job(self, namespace: str, job_uid: str) -> list[RawObject]:
        self.reads.append((namespace, job_uid))
        if self.failures:
            raise self.failures.pop(0)
        return copy.deepcopy(self.pods.get(job_uid, []))


@dataclass
class FakeClock:
    """A `clock=` that only moves when told to (unix seconds, like `time.time`).

    `sleep_or_stop` has the signature of `watcher.kit.aio.sleep_or_stop`: passed as a
    Pipeline's `sleep=`, it advances the clock by the time asked for instead of waiting, and
    records it.
    """

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)
    """Seconds asked for by every `sleep_or_stop` call, in order."""

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep_or_stop(self, stop: asyncio.Event, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
        return stop.is_set()


@dataclass
class FakeLeases:
    """One Lease, optimistic concurrency included: a write at an old resourceVersion, or a
    create of a Lease that exists, answers None (the real adapter's 409)."""

    namespace: str = "kube-dlq"
    name: str = "kube-dlq"
    lease: RawObject | None = None
    writes: list[dict[str, Any]] = field(default_factory=list)
    """The spec of every successful write, in order."""

    async def get(self, timeout_s: float) -> RawObject | None:
        return copy.deepcopy(self.lease)

    async def create(self, spec: Mapping[str, Any], timeout_s: float) -> RawObject | None:
        if self.lease is not None:
            return None
        return self._store(spec, 1)

    async def replace(
        self, lease: Mapping[str, Any], spec: Mapping[str, Any], timeout_s: float
    ) -> RawObject | None:
        if self.lease is None:
            return None
        version = self.lease["metadata"]["resourceVersion"]
        if lease.get("metadata", {}).get("resourceVersion") != version:
            return None
        return self._store(spec, int(version) + 1)

    def put(self, spec: Mapping[str, Any]) -> None:
        """Someone else writes the Lease (another replica, or a person re-creating it)."""
        version = int(self.lease["metadata"]["resourceVersion"]) + 1 if self.lease else 1
        self._store(spec, version, record=False)

    def delete(self) -> None:
        self.lease = None

    @property
    def spec(self) -> dict[str, Any]:
        return dict((self.lease or {}).get("spec") or {})

    def _store(self, spec: Mapping[str, Any], version: int, *, record: bool = True) -> RawObject:
        meta = {"name": self.name, "namespace": self.namespace, "resourceVersion": str(version)}
        self.lease = {"kind": "Lease", "metadata": meta, "spec": copy.deepcopy(dict(spec))}
        if record:
            self.writes.append(copy.deepcopy(dict(spec)))
        return copy.deepcopy(self.lease)


@dataclass
class FakeFence:
    """Redis's leader fence: the highest term claimed; `failures` raise first (Redis down)."""

    fence: int | None = None
    failures: list[SinkError] = field(default_factory=list)
    claims: list[int] = field(default_factory=list)

    async def claim_term(self, term: int) -> int | None:
        self.claims.append(term)
        if self.failures:
            raise self.failures.pop(0)
        if self.fence is not None and self.fence >= term:
            return self.fence
        self.fence = term
        return None


def _conforms(
    store: OutcomeStore,
    markers: MarkerStore,
    jobs: JobsPort,
    leases: LeasePort,
    fence: TermFence,
    pods: PodsPort,
) -> None:
    """mypy checks here that the fakes implement the Protocols they stand in for."""


_conforms(FakeStore(), FakeStore(), FakeJobs(), FakeLeases(), FakeFence(), FakePods())
