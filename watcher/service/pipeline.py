"""The daemon's core loop: watch events in, one durable outcome per failed Job out.

Watch consumers call the `on_*` methods (synchronous, cheap: parse to projections, update the
correlator). A Job that turns Failed is handled as soon as its failed pods are in: the Job
controller marks a Job Failed only after it has seen them, so the pod watch (which runs
independently) almost always has them already. When it has not, the Job waits for them
(`pipeline.evidence_wait_s`; a pod arriving wakes it), then its pods are read from the API
once, so a lagging pod watch never decides a failure on stale pods.
One writer task drains the queue through FailureHandler; when Redis is down it keeps the item,
backs off and tries again, and the bounded queue pushes back on the watches instead of
dropping work. A failure that is still unwritten at shutdown is found again on the next start
(the Job is still Failed in the API) and the sink's uid marker keeps that exactly-once.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from structlog.typing import FilteringBoundLogger

from watcher.core import project, snapshot, wire
from watcher.core.backoff import compute_delay
from watcher.core.correlate import Correlator
from watcher.core.errors import FencedWrite, KubeAPIError, SinkError
from watcher.core.settings import (
    ClassifySettings,
    LimitsSettings,
    PipelineSettings,
    ScopeSettings,
)
from watcher.kit.aio import first_done, sleep_or_stop
from watcher.kit.logs import job_context
from watcher.kit.metrics import Metrics
from watcher.service.evidence import DENIED_AGAIN_S, LatePods, failed_pods_missing
from watcher.service.handler import FailureHandler
from watcher.service.ports import JobsPort, PodsPort
from watcher.service.scope import in_scope

RawObject = Mapping[str, Any]

EVIDENCE_EVENT_KINDS = frozenset({"Job", "Pod", "Node"})
"""Events about these kinds are evidence (the correlator keeps only those); Events about
anything else, most of a busy cluster's, are not even projected."""

_CRASH_REASON_CHARS = 500
"""A crashed handling's dead-letter reason is cut to this (the traceback is in the log)."""


class Pipeline:
    def __init__(
        self,
        *,
        handler: FailureHandler,
        jobs: JobsPort,
        scope: ScopeSettings,
        classify: ClassifySettings,
        settings: PipelineSettings,
        limits: LimitsSettings,
        metrics: Metrics,
        logger: FilteringBoundLogger,
        pods: PodsPort | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[asyncio.Event, float], Awaitable[bool]] = sleep_or_stop,
    ) -> None:
        if settings.write_concurrency < 1:
            raise ValueError(f"write_concurrency must be >= 1, got {settings.write_concurrency}")
        self.write_concurrency = settings.write_concurrency
        """Due failures the writer handles at once (their writes share a round trip)."""
        self.handler = handler
        self.jobs = jobs
        """Reads a stuck Job fresh (its manifest is not kept in memory) and deletes it once
        its outcome is written, so it stops holding resources."""
        self.late_pods = None if pods is None else LatePods(pods, metrics=metrics, logger=logger)
        """Reads a failed Job's pods when the pod watch has not delivered them in time (None:
        never; the sweep has just listed every pod there is)."""
        self.scope = scope
        self.stuck_pending_after_s = classify.stuck_pending_after_s
        self.settings = settings
        self.limits = limits
        self.metrics = metrics
        self.log = logger
        self.correlator = Correlator(limits)
        self.clock = clock
        self._sleep = sleep
        """Waits out the writer's backoff (`watcher.kit.aio.sleep_or_stop`; a fake in tests)."""
        self.selected_namespaces: frozenset[str] | None = None
        self._raw_jobs: dict[str, RawObject] = {}
        self._due: list[tuple[float, str]] = []
        self._queued: set[str] = set()
        self._handled: dict[str, None] = {}
        self.ready = asyncio.Event()
        """Set by the owner once every watch has listed (the writer waits for it)."""
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._first_seen: dict[str, float] = {}
        self._deletes_due: dict[str, tuple[str, str]] = {}
        """Stuck Jobs whose outcome is written and whose delete is still to be done."""
        self._crashed: dict[str, str] = {}
        self._awaiting_pods: set[str] = set()
        """Failed Jobs waiting for their failed pods: a failed pod arriving makes them due."""
        """Failures whose handling raised unexpectedly: uid -> the error, their reason."""
        self._flushing = False
        """Shutting down: everything queued is due, no more waiting for evidence."""
        self.written = 0
        """Outcomes written by this process (dead letters and retry tickets)."""
        self.already_handled = 0
        """Failures found already handled (replays, restarts, another replica)."""

    # -- watch consumers ------------------------------------------------------------------

    def on_job(self, event_type: str, raw: RawObject | wire.WireJob) -> None:
        try:
            job = project.job_snapshot(raw)
        except snapshot.MalformedObject as exc:
            self._malformed("job", exc)
            return
        uid = job.ref.uid
        if event_type == "DELETED" or not in_scope(job, self.scope, self.selected_namespaces):
            if uid not in self._queued:
                # Out of scope is not finished: an annotation can bring the Job back in.
                self.correlator.forget(uid, finished=event_type == "DELETED")
            return
        if job.condition("Complete") or uid in self._handled:
            self.correlator.forget(uid, finished=True)
            return
        # The raw object is kept only for failed Jobs, until handled: it is the replayable
        # manifest, and the Job may be deleted (ttlSecondsAfterFinished) before we write. The
        # watch reads a failed Job's line whole (WireJob.wants_whole), so it is a dict here.
        manifest = raw if job.condition("Failed") is not None else None
        if manifest is not None:
            if not isinstance(manifest, dict):  # a bug: reported, never kept half
                self._malformed("job", TypeError("a failed Job came without its whole object"))
                return
            self.correlator.pin(uid)  # before it is tracked: the bound must not evict it
        self.correlator.observe_job(job)
        if manifest is not None:
            self._raw_jobs[uid] = manifest
            self._enqueue(uid, self.clock() + self.settings.settle_s)

    # Pods, Events and Nodes come typed (`watcher.core.wire`) or, off its fast path, as dicts.

    def on_pod(self, event_type: str, raw: RawObject | wire.WirePod) -> None:
        try:
            seen = project.job_pod(raw, deleted=event_type == "DELETED")
        except snapshot.MalformedObject as exc:
            self._malformed("pod", exc)
            return
        if seen is None:
            return  # not a Job's pod
        job_uid, namespace, pod = seen
        self.correlator.observe_pod(job_uid, namespace, pod)
        if job_uid in self._awaiting_pods and (pod.phase == "Failed" or pod.deleted):
            heapq.heappush(self._due, (self.clock(), job_uid))
            self._wakeup.set()

    def on_event(self, event_type: str, raw: RawObject | wire.WireEvent) -> None:
        if event_type == "DELETED":
            return  # an Event expiring is not news; keep what we captured
        try:
            about = project.event_about(raw, EVIDENCE_EVENT_KINDS)
        except snapshot.MalformedObject as exc:
            self._malformed("event", exc)
            return
        if about is None:
            return  # about a Deployment, a ReplicaSet, ...: nothing the correlator keeps
        self.correlator.observe_event(*about)

    def on_node(self, event_type: str, raw: RawObject | wire.WireNode) -> None:
        try:
            node = project.node_state(raw, deleted=event_type == "DELETED")
        except snapshot.MalformedObject as exc:
            self._malformed("node", exc)
            return
        if event_type == "DELETED":
            self.correlator.node_deleted(node.name)
        else:
            self.correlator.observe_node(node)

    def on_jobs_synced(self, present_uids: frozenset[str]) -> None:
        """After a (re)list of Jobs: drop state of Jobs deleted while we were not watching."""
        for uid in self.correlator.retain_only(present_uids | frozenset(self._queued)):
            self._raw_jobs.pop(uid, None)
        self.metrics.tracked_jobs.set(len(self.correlator))

    # -- the writer -----------------------------------------------------------------------

    async def run_writer(
        self, stop: asyncio.Event, *, shutdown: asyncio.Event | None = None
    ) -> None:
        """Handle due failures until `stop` is set and nothing due is left to write.

        Nothing is handled before `ready` is set (every watch has done its first list), so a
        failure is never classified before the evidence that was already there arrives.

        When `shutdown` is set too (the process is stopping, not just this replica's term),
        everything queued is written at once with the evidence at hand, settle time and
        evidence wait or not: a Job with ttlSecondsAfterFinished: 0 may be gone by the next
        start. Failed writes are then retried until done; the caller bounds that with its
        grace period (it cancels the writer).
        """
        await first_done(self.ready.wait(), stop.wait())
        if not self.ready.is_set():
            return  # stopped during the first lists: classify nothing on partial evidence
        errors_in_a_row = 0
        while True:
            if stop.is_set():
                if shutdown is not None and shutdown.is_set():
                    self._flush_now()
                if not self._due_now():
                    break
            # While writes fail, one failure at a time probes Redis (and the API).
            uids = self._pop_due(1 if errors_in_a_row else self.write_concurrency)
            if not uids:
                await self._sleep_until_due(stop)
                continue
            errors = await self._handle_all(uids)
            errors_in_a_row, delay = self._sort_out(uids, errors, errors_in_a_row)
            if delay is not None:
                if not stop.is_set():
                    await self._sleep(stop, delay)
                elif self._flushing:
                    await asyncio.sleep(delay)  # shutting down: keep trying within the grace
                else:
                    return  # the term ended: the next leader (or start) finds the Job again

    def _sort_out(
        self, uids: list[str], errors: list[Exception | None], in_a_row: int
    ) -> tuple[int, float | None]:
        """Requeue, count and report what handling `uids` raised, in their order: the failed
        writes in a row after them, and the backoff to wait (None: no write failed).
        Raises the `FencedWrite` one of them got, once all are queued again."""
        fenced: FencedWrite | None = None
        delay = None
        for uid, error in zip(uids, errors, strict=True):
            if error is None:
                in_a_row = 0
            elif isinstance(error, FencedWrite):
                # Another replica leads: stop writing at once, keep the failure queued (it is
                # dropped once the leader has written it, or written if we lead again).
                self._enqueue(uid, self.clock(), force=True)
                fenced = error
            elif isinstance(error, SinkError | KubeAPIError):
                in_a_row += 1
                delay = self._write_failed(uid, error, in_a_row)
            else:  # a bulkhead: one Job's bug must not stop the writer
                self._crash(uid, error)
        if fenced is not None:
            fenced.refused = max(fenced.refused, sum(isinstance(e, FencedWrite) for e in errors))
            raise fenced
        return in_a_row, delay

    async def _handle_all(self, uids: list[str]) -> list[Exception | None]:
        """Handle each of `uids` (distinct Jobs), at the same time; what each raised, or None.

        Their outcome writes then share one round trip to Redis (the store pipelines writes
        made at once). Each Job is still handled by one call at a time, start to end."""
        if len(uids) == 1:
            return [await self._handle_one(uids[0])]
        return list(await asyncio.gather(*(self._handle_one(uid) for uid in uids)))

    async def _handle_one(self, uid: str) -> Exception | None:
        try:
            await (self._dead_letter_crashed(uid) if uid in self._crashed else self._handle(uid))
        except Exception as exc:  # sorted by the writer loop, in the order of `uids`
            return exc
        return None

    def _write_failed(self, uid: str, exc: SinkError | KubeAPIError, in_a_row: int) -> float:
        """Count and log a failed write, queue `uid` again after a backoff; the backoff."""
        if isinstance(exc, SinkError):
            self.metrics.redis_errors.labels(operation="write").inc()
        delay = compute_delay(
            in_a_row, base_s=0.5, factor=2, cap_s=30, jitter="equal", rng=self.handler.rng
        )
        self.log.warning(
            "outcome_write_failed",
            operation="write" if isinstance(exc, SinkError) else "kubernetes",
            error=str(exc),
            retry_in_s=round(delay, 2),
            pending=len(self._queued),
        )
        # Flushing at shutdown, the writer sleeps the backoff itself and tries again at once.
        self._enqueue(uid, self.clock() + (0.0 if self._flushing else delay), force=True)
        return delay

    def _flush_now(self) -> None:
        """Make every queued failure due now and stop waiting for more evidence (shutdown)."""
        if self._flushing:
            return
        self._flushing = True
        now = self.clock()
        for uid in self._queued:
            heapq.heappush(self._due, (now, uid))
        if self._queued:
            self.log.info("writing_queued_failures_before_exit", pending=len(self._queued))

    def _crash(self, uid: str, exc: Exception) -> None:
        """Handling `uid` raised something unexpected: report it, dead-letter it next."""
        job = self.correlator.job(uid)
        self.metrics.handling_errors.labels(stage="writer").inc()
        self.log.exception(
            "failure_handling_crashed",
            job_uid=uid,
            namespace=job.ref.namespace if job else None,
            job=job.ref.name if job else None,
        )
        self._crashed[uid] = f"{type(exc).__name__}: {exc}"[:_CRASH_REASON_CHARS]
        self._enqueue(uid, self.clock(), force=True)

    async def _dead_letter_crashed(self, uid: str) -> None:
        """Write a Job whose handling crashed as class unknown, the error as its reason."""
        job = self.correlator.job(uid)
        if job is None:
            self._done(uid)
            return
        with job_context(job.ref.namespace, job.ref.name, uid):
            outcome = await self.handler.dead_letter_unhandled(
                job, self._raw_jobs.get(uid), self._crashed[uid]
            )
        self._count_outcome(outcome.write.already_handled)
        self._done(uid)

    async def _handle(self, uid: str) -> None:
        if uid in self._deletes_due:  # the outcome is written; only the stuck Job's delete is left
            await self._delete_stuck(uid)
            self._done(uid)
            return
        job = self.correlator.job(uid)
        raw = self._raw_jobs.get(uid)
        if raw is None and job is not None:
            raw = await self.jobs.get(job.ref.namespace, job.ref.name)
            if raw is not None and (raw.get("metadata") or {}).get("uid") != uid:
                raw = None  # re-created under the same name since: another Job, not this one
        if job is None or raw is None:
            self._done(uid)  # deleted meanwhile, or out of scope now
            return
        stuck_for = None if job.condition("Failed") else self.clock() - (job.created_at or 0)
        report = self.correlator.report(uid, stuck_for_s=stuck_for)
        assert report is not None
        first_seen = self._first_seen.get(uid, self.clock())
        max_pods = self.limits.max_pods_per_job
        if not self._flushing and stuck_for is None and failed_pods_missing(report, max_pods):
            waited_until = first_seen + self.settings.evidence_wait_s
            if self.clock() < waited_until:
                self._awaiting_pods.add(uid)
                self._enqueue(uid, waited_until, force=True)
                return
            self._awaiting_pods.discard(uid)
            if self.late_pods is not None:
                with job_context(job.ref.namespace, job.ref.name, uid):
                    listed = await self.late_pods.read(job.ref, waited_s=self.clock() - first_seen)
                    if listed is None:
                        self._enqueue(uid, self.clock() + DENIED_AGAIN_S, force=True)
                        return
                    for raw_pod in listed:
                        self.on_pod("MODIFIED", raw_pod)
                    report = self.correlator.report(uid, stuck_for_s=None) or report
                    self.late_pods.found(report, pods=len(listed), max_pods_per_job=max_pods)
        if stuck_for is not None and not self._still_stuck(uid, raw):
            self._dequeue(uid)  # started (or finished) since it was found stuck: not a failure
            return
        with job_context(job.ref.namespace, job.ref.name, uid):
            outcome = await self.handler.handle(report, raw)
            self._count_outcome(outcome.write.already_handled)
            self.metrics.decision_latency.observe(max(0.0, self.clock() - first_seen))
            if stuck_for is not None:
                self._deletes_due[uid] = (job.ref.namespace, job.ref.name)
                await self._delete_stuck(uid)
        self._done(uid)

    async def _delete_stuck(self, uid: str) -> None:
        """Delete a stuck Job whose outcome is written, so it stops holding resources.

        A transient failure raises (the writer backs off and calls again, for the delete
        alone); a refusal (403, 422, ...) is logged and the Job is left, since no retry can
        help and the outcome is already safe.
        """
        namespace, name = self._deletes_due[uid]
        try:
            await self.jobs.delete(namespace, name, uid=uid)
        except KubeAPIError as exc:
            if exc.transient:
                raise
            self.log.error(
                "stuck_job_delete_refused", namespace=namespace, job=name, error=str(exc)
            )
        del self._deletes_due[uid]

    def _count_outcome(self, already_handled: bool) -> None:
        if already_handled:
            self.already_handled += 1
        else:
            self.written += 1

    def _still_stuck(self, uid: str, raw: RawObject) -> bool:
        """Right before acting on a stuck Job: is it stuck still, by the API and by its pods?"""
        try:
            fresh = snapshot.job_snapshot(raw)
        except snapshot.MalformedObject:
            return True  # the API's copy is unreadable; what the watch said stands
        if fresh.condition("Failed") or fresh.condition("Complete"):
            return False
        stuck = self.correlator.stuck_jobs(self.clock(), self.stuck_pending_after_s, only=uid)
        return bool(stuck)

    def check_stuck(self) -> int:
        """Queue Jobs whose pods have waited to start past the dwell time. Returns how many."""
        found = 0
        for uid, _waited in self.correlator.stuck_jobs(self.clock(), self.stuck_pending_after_s):
            if uid in self._queued or uid in self._handled:
                continue
            self._enqueue(uid, self.clock())
            found += 1
        return found

    async def prune_handled(self, handled: Callable[[list[str]], Awaitable[set[str]]]) -> int:
        """Drop queued failures whose outcome someone else already wrote. Returns how many.

        A standby replica (leader election) queues every failure but writes none; without
        this its queue would grow until back-pressure paused its watches.
        """
        queued = sorted(self._queued)
        done = await handled(queued) if queued else set()
        for uid in done:
            self._done(uid)
        return len(done)

    @property
    def pending(self) -> int:
        """Failures queued and not yet written."""
        return len(self._queued)

    async def wait_for_space(self) -> None:
        """Back-pressure for watch consumers while too many failures wait to be written."""
        await self._space.wait()

    # -- internals ------------------------------------------------------------------------

    def _enqueue(self, uid: str, due: float, *, force: bool = False) -> None:
        if uid in self._queued and not force:
            return
        self._first_seen.setdefault(uid, self.clock())
        self._queued.add(uid)
        self.correlator.pin(uid)  # unwritten: its evidence must not be evicted for room
        heapq.heappush(self._due, (due, uid))
        self.metrics.backlog.set(len(self._queued))
        if len(self._queued) >= self.limits.max_pending_writes:
            self._space.clear()
        self._wakeup.set()

    def _due_now(self) -> bool:
        return bool(self._due) and self._due[0][0] <= self.clock()

    def _pop_due(self, limit: int) -> list[str]:
        """Up to `limit` distinct queued failures that are due, earliest first."""
        uids: dict[str, None] = {}
        while len(uids) < limit and self._due_now():
            _, uid = heapq.heappop(self._due)
            # Else an earlier due time of a failure settled since, or a second one of a
            # failure already taken (its handling queues it again if it needs to).
            if uid in self._queued:
                uids[uid] = None
        return list(uids)

    async def _sleep_until_due(self, stop: asyncio.Event) -> None:
        timeout = max(0.0, self._due[0][0] - self.clock()) if self._due else None
        self._wakeup.clear()
        await first_done(self._wakeup.wait(), stop.wait(), at_most_s=timeout)

    def _done(self, uid: str) -> None:
        """The failure is settled (written, or gone from the API): forget it for good."""
        self._dequeue(uid)
        self.correlator.forget(uid, finished=True)
        self._handled[uid] = None
        while len(self._handled) > self.limits.handled_memory:
            del self._handled[next(iter(self._handled))]
        self.metrics.tracked_jobs.set(len(self.correlator))

    def _dequeue(self, uid: str) -> None:
        """Nothing to write for `uid` now; its evidence stays tracked (it may fail later)."""
        self._queued.discard(uid)
        self._deletes_due.pop(uid, None)
        self._crashed.pop(uid, None)
        self._awaiting_pods.discard(uid)
        self._first_seen.pop(uid, None)
        self._raw_jobs.pop(uid, None)
        self.correlator.unpin(uid)
        self.metrics.backlog.set(len(self._queued))
        if len(self._queued) < self.limits.max_pending_writes:
            self._space.set()

    def _malformed(self, source: str, exc: Exception) -> None:
        self.metrics.malformed.labels(source=source).inc()
        self.log.warning("object_malformed", source=source, error=str(exc))
