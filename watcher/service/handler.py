"""Turn one failed Job into one durable outcome: a scheduled retry or a dead letter.

classify -> policy -> decide are pure; this module is where their result meets Redis. It is
shared by the daemon (app.py) and the one-shot sweep (sweep.py), so both give the same
exactly-once guarantee: the sink's atomic check-and-write is keyed by the Job's uid.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from structlog.typing import FilteringBoundLogger

from watcher.core.classify import ClassifyRules, classify
from watcher.core.decide import decide
from watcher.core.errors import KubeAPIError, PolicyError
from watcher.core.indexes import failed_indexes_of
from watcher.core.lineage import LINEAGE_ANNOTATIONS, Lineage, lineage_of, record_pointer
from watcher.core.manifest import attempt_of, replayable_manifest
from watcher.core.memory import MemoryBump, bump_memory, without_bump_annotation
from watcher.core.model import (
    NODE_FAULT_CLASSES,
    Action,
    AttemptRecord,
    Classification,
    DeadLetter,
    Decision,
    FailureClass,
    FailureReport,
    JobSnapshot,
    RetryTicket,
    WriteResult,
)
from watcher.core.plain import plain
from watcher.core.policy import RetryPolicy, policy_for
from watcher.core.settings import ClassifySettings
from watcher.kit.metrics import Metrics
from watcher.service.ports import JobsPort, OutcomeStore

MAX_UNSETTLED = 10_000
"""Failed writes remembered (one uid each) until a retry returns; bounds what Jobs deleted
before their retry leave behind."""


@dataclass(frozen=True, slots=True)
class _LineageProblem:
    """What to report about a failed Job's lineage; falsy when there is nothing to report."""

    text: str = ""
    forged: bool = False
    """The create record's lineage failed its seal (counted as forged, not malformed)."""

    def __bool__(self) -> bool:
        return bool(self.text)


@dataclass(frozen=True, slots=True)
class Outcome:
    classification: Classification
    decision: Decision
    write: WriteResult


@dataclass(frozen=True, slots=True)
class RedriveOutcome:
    """What the redrive hook wrote for a failed redriven Job, on `queue`."""

    classification: Classification
    decision: Decision
    write: WriteResult
    queue: str


class RedriveHook(Protocol):
    """Writes the failure of a redriven Job (watcher.service.redrive_settle); None: the Job is
    not a verified redrive, handle it as any other."""

    async def failed(
        self, report: FailureReport, raw_job: Mapping[str, Any]
    ) -> RedriveOutcome | None: ...


class FailureHandler:
    def __init__(
        self,
        *,
        store: OutcomeStore,
        jobs: JobsPort | None,
        policy: RetryPolicy,
        classify: ClassifySettings,
        cluster_name: str,
        metrics: Metrics,
        logger: FilteringBoundLogger,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.jobs = jobs
        """Where a Warning Event reports a malformed annotation (None: log and count only)."""
        self.base_policy = policy
        self.rules = ClassifyRules(io_timeout_patterns=classify.io_timeout_patterns)
        self.cluster_name = cluster_name
        self.metrics = metrics
        self.log = logger
        self.clock = clock
        self.rng = rng or random.Random()
        self._unsettled: dict[str, None] = {}
        self.redrive: RedriveHook | None = None
        """Set by the daemon: redriven Jobs go back to their entry's queue (docs/redrive.md)."""
        """Uids whose outcome write raised (Redis down) in this process, until a retry of it
        returns: such a write may have landed all the same (a timeout)."""

    async def handle(self, report: FailureReport, raw_job: Mapping[str, Any]) -> Outcome:
        """Look up the lineage, classify, decide and write. Raises SinkError if Redis fails
        (the caller retries)."""
        if self.redrive is not None:
            settled = await self.redrive.failed(report, raw_job)
            if settled is not None:
                policy = dataclasses.replace(self.base_policy, queue=settled.queue)
                self._count(settled.classification, settled.decision, settled.write, policy)
                return Outcome(settled.classification, settled.decision, settled.write)
        now = self.clock()
        # The lineage comes from kube-dlq's own record, before anything is decided: a Job's
        # author can write any annotation (watcher.core.lineage).
        lineage, lineage_problem = await self._lineage_of(report.job)
        classification = classify(report, self.rules)
        policy, errors = policy_for(report.job, self.base_policy)
        attempt = lineage.attempt if lineage is not None else 1
        history = lineage.history if lineage is not None else ()
        first_failed_at = (lineage.first_failed_at if lineage is not None else None) or now
        manifest = replayable_manifest(raw_job)
        memory = _memory_bump(classification, policy, manifest)
        decision = decide(
            classification,
            policy,
            history,
            attempt=attempt,
            now=now,
            first_failed_at=first_failed_at,
            pod_failure_policy_failed=_failed_by_pod_failure_policy(report),
            rng=self.rng,
            memory=memory,
        )
        bumped = ""
        if memory is not None:
            # The OOM policy's verdict (a bump, the cap, the count) is the news: say it where
            # people read the reason (ticket, dead letter, history, logs).
            classification = dataclasses.replace(
                classification, reason=f"{classification.reason}; {decision.reason}"
            )
        if decision.action is Action.RETRY:
            if memory is not None and memory.changes:
                manifest, bumped = memory.manifest, memory.summary
            else:
                manifest = without_bump_annotation(manifest)  # an earlier attempt's bump
        record = AttemptRecord(
            attempt=attempt,
            job_name=report.job.ref.name,
            job_uid=report.job.ref.uid,
            failure_class=classification.failure_class,
            reason=classification.reason,
            failed_at=now,
            memory=bumped,
        )
        uid = report.job.ref.uid
        tried_before = uid in self._unsettled
        self._remember_unsettled(uid)  # until the write below returns
        if decision.action is Action.RETRY:
            write = await self.store.schedule_retry(
                delay_s=decision.delay_s,
                ticket=RetryTicket(
                    job=report.job.ref,
                    attempt=attempt + 1,
                    due_at=now + decision.delay_s,
                    failure_class=classification.failure_class,
                    reason=classification.reason,
                    manifest=manifest,
                    history=(*history, record),
                    avoid_node=_failed_node(report, classification, policy),
                    queue=policy.queue,
                    started=classification.started,
                ),
            )
        else:
            write = await self.store.dead_letter(
                DeadLetter(
                    queue=policy.queue,
                    job=report.job.ref,
                    failure_class=classification.failure_class,
                    reason=classification.reason,
                    attempts=attempt,
                    failed_at=now,
                    cluster=self.cluster_name,
                    evidence=classification.evidence,
                    owner=report.job.owner,
                    manifest=manifest,
                    history=(*history, record),
                    report=evidence_document(report, decision),
                    started=classification.started,
                    failed_indexes=failed_indexes_of(
                        raw_job,
                        (p.completion_index for p in report.pods if p.phase == "Failed"),
                    ),
                )
            )
        self._count(classification, decision, write, policy)
        self._unsettled.pop(uid, None)
        if not write.already_handled or tried_before:
            # Reported once per failed Job, after its outcome is settled, by whoever wrote it:
            # not on every attempt while Redis is down, nor on replays (restart, relist,
            # another replica). A write that failed here may have landed all the same (a
            # timeout), so "already handled" after a failed try still counts as ours.
            await self._report_policy_errors(report, errors)
            if lineage_problem:
                if lineage_problem.forged:
                    self.metrics.forged.labels(kind="lineage").inc()
                else:
                    self.metrics.malformed.labels(source="lineage").inc()
                self.log.warning(
                    "lineage_annotation_ignored", error=lineage_problem.text, attempt=attempt
                )
        return Outcome(classification, decision, write)

    async def _lineage_of(self, job: JobSnapshot) -> tuple[Lineage | None, _LineageProblem]:
        """The Job's lineage from its create record (None: an original), and what to report
        when its annotations claim a lineage the record does not confirm (falsy: nothing)."""
        annotations = dict(job.annotations)
        pointer = record_pointer(annotations)
        record = await self.store.create_record(pointer[0]) if pointer else None
        lineage = lineage_of(job.ref, pointer[1] if pointer else "", record)
        if record is not None and record.lineage is None:
            what = "forged" if record.forged else "unreadable"
            problem = f"kube-dlq's lineage record is {what} ({record.error})"
            return None, _LineageProblem(problem, forged=record.forged)
        if lineage is None:
            if any(key in annotations for key in LINEAGE_ANNOTATIONS):
                return None, _LineageProblem("lineage annotations that no kube-dlq record confirms")
            return None, _LineageProblem()
        if attempt_of(annotations) != lineage.attempt:
            return lineage, _LineageProblem("lineage annotations disagree with kube-dlq's record")
        return lineage, _LineageProblem()

    async def dead_letter_unhandled(
        self, job: JobSnapshot, raw_job: Mapping[str, Any] | None, error: str
    ) -> Outcome:
        """Dead-letter a Job whose handling raised unexpectedly: class unknown, `error` as its
        reason, the default queue. Nothing of the Job is parsed again (its annotations may be
        what broke the handling); the manifest is kept when it can be cleaned.
        """
        now = self.clock()
        reason = f"kube-dlq could not handle this failure: {error}"
        try:
            manifest = replayable_manifest(raw_job) if raw_job is not None else {}
        except Exception:  # the manifest may be what broke handling; the outcome still counts
            manifest = {}
        classification = Classification(FailureClass.UNKNOWN, reason)
        decision = Decision(Action.DEAD_LETTER, "handling failed", attempt=1)
        write = await self.store.dead_letter(
            DeadLetter(
                queue=self.base_policy.queue,
                job=job.ref,
                failure_class=FailureClass.UNKNOWN,
                reason=reason,
                attempts=1,
                failed_at=now,
                cluster=self.cluster_name,
                evidence=(error,),
                owner=job.owner,
                manifest=manifest,
            )
        )
        self._count(classification, decision, write, self.base_policy)
        return Outcome(classification, decision, write)

    def _remember_unsettled(self, uid: str) -> None:
        self._unsettled[uid] = None
        while len(self._unsettled) > MAX_UNSETTLED:
            del self._unsettled[next(iter(self._unsettled))]

    async def _report_policy_errors(
        self, report: FailureReport, errors: tuple[PolicyError, ...]
    ) -> None:
        for error in errors:
            self.metrics.malformed.labels(source="annotation").inc()
            self.log.warning(
                "policy_annotation_invalid",
                annotation=error.key,
                value=error.value,
                error=error.message,
            )
            if self.jobs is not None:
                await self._warn(report, error)

    async def _warn(self, report: FailureReport, error: PolicyError) -> None:
        """A Warning Event on the Job, so its author sees the bad annotation in kubectl."""
        assert self.jobs is not None
        try:
            await self.jobs.warn(
                report.job.ref,
                "InvalidRetryPolicy",
                f"{error.key}={error.value!r}: {error.message}; "
                "kube-dlq applied the default for this key",
            )
        except KubeAPIError as exc:  # the outcome is written; the Event is a courtesy
            self.log.warning("event_write_failed", error=str(exc))

    def _count(
        self,
        classification: Classification,
        decision: Decision,
        write: WriteResult,
        policy: RetryPolicy,
    ) -> None:
        fclass = classification.failure_class.value
        if write.already_handled:
            self.metrics.duplicates_suppressed.inc()
            self.log.info("failure_already_handled", failure_class=fclass, outcome=write.ref)
            return
        self.metrics.failures.labels(failure_class=fclass, action=decision.action.value).inc()
        if decision.action is Action.RETRY:
            self.metrics.retries_scheduled.labels(failure_class=fclass).inc()
            self.log.info(
                "retry_scheduled",
                failure_class=fclass,
                reason=classification.reason,
                started=classification.started.value,
                attempt=decision.attempt,
                delay_s=round(decision.delay_s, 1),
                decision=decision.reason,
            )
        else:
            self.metrics.dead_letters_written.labels(queue=policy.queue, failure_class=fclass).inc()
            if write.trimmed:
                self.metrics.dead_letters_trimmed.labels(queue=policy.queue).inc(write.trimmed)
                self.log.warning("dead_letters_trimmed", queue=policy.queue, removed=write.trimmed)
            self.log.info(
                "dead_lettered",
                failure_class=fclass,
                reason=classification.reason,
                started=classification.started.value,
                attempt=decision.attempt,
                queue=policy.queue,
                entry=write.ref,
                decision=decision.reason,
            )


def evidence_document(report: FailureReport, decision: Decision) -> dict[str, Any]:
    """The evidence a person needs later, captured before Kubernetes garbage-collects it.

    Each record as ``dataclasses.asdict`` makes it (`watcher.core.plain`, without its walk)."""
    return {
        "decision": decision.reason,
        "job": {
            "conditions": [plain(c) for c in report.job.conditions],
            "failed": report.job.failed,
            "succeeded": report.job.succeeded,
            "active": report.job.active,
        },
        "pods": [plain(p) for p in report.pods],
        "events": [plain(e) for e in report.events],
        "nodes": [plain(n) for n in report.nodes],
        "stuck_for_s": report.stuck_for_s,
    }


def _memory_bump(
    classification: Classification, policy: RetryPolicy, manifest: Mapping[str, Any]
) -> MemoryBump | None:
    """The OOM policy's bump of the failed Job's memory; None when the policy does not apply."""
    if classification.failure_class is not FailureClass.OOM_KILLED or policy.oom_memory is None:
        return None
    return bump_memory(manifest, policy.oom_memory)


def _failed_by_pod_failure_policy(report: FailureReport) -> bool:
    failed = report.job.condition("Failed")
    return failed is not None and failed.reason == "PodFailurePolicy"


def _failed_node(report: FailureReport, classification: Classification, policy: RetryPolicy) -> str:
    if not policy.avoid_failed_node or classification.failure_class not in NODE_FAULT_CLASSES:
        return ""
    failed = [p for p in report.pods if p.node_name and (p.phase == "Failed" or p.deleted)]
    return failed[-1].node_name if failed else ""
