"""The Job step: every pod through POD_RULES, the deciding pod, then JOB_RULES.

`classify` is defined here; the order of both rule tables is the precedence described in
`watcher.core.classify`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from watcher.core.classify.containers import (
    by_config_container,
    by_exit_code,
    by_image_pull,
    by_io_timeout_message,
    by_oom_container,
)
from watcher.core.classify.events import (
    by_disruption_event,
    by_failed_mount,
    by_image_pull_event,
    by_io_timeout_event,
)
from watcher.core.classify.evidence import classified_as, clip, condition_evidence, event_evidence
from watcher.core.classify.facts import Facts, PodRule
from watcher.core.classify.nodes import by_node_not_ready_event, by_node_state, by_oom_node_event
from watcher.core.classify.patterns import DEFAULT_RULES, ClassifyRules
from watcher.core.classify.pods import (
    by_admission,
    by_disruption_target,
    by_legacy_node_lost,
    by_pod_deadline,
    by_pod_reason,
    by_unschedulable,
    ended_badly,
)
from watcher.core.classify.started import started_of
from watcher.core.model import (
    OUTRANKS_DEADLINE_CLASSES,
    Classification,
    FailureClass,
    FailureReport,
    PodSnapshot,
)

__all__ = ["JOB_RULES", "POD_RULES", "JobRule", "classify"]


def classify(report: FailureReport, rules: ClassifyRules = DEFAULT_RULES) -> Classification:
    """Classify one failed (or stuck) Job. Total: every report yields a class, and whether
    the workload started (`watcher.core.classify.started`)."""
    facts = Facts.of(report, rules)
    deciding = _deciding_pod(facts)
    verdict = next(
        (v for rule in JOB_RULES if (v := rule(facts, deciding)) is not None), None
    ) or _unknown(facts)
    return dataclasses.replace(verdict, started=started_of(report))


@dataclass(frozen=True, slots=True)
class _PodVerdict:
    pod: PodSnapshot
    verdict: Classification
    others: tuple[str, ...] = ()
    """'name=class' of the other failed pods whose class differs, for the evidence."""


JobRule = Callable[[Facts, _PodVerdict | None], Classification | None]
POD_RULES: tuple[PodRule, ...] = (
    by_disruption_target,
    by_pod_reason,
    by_node_state,
    by_legacy_node_lost,
    by_disruption_event,
    by_node_not_ready_event,
    by_admission,
    by_oom_container,
    by_oom_node_event,
    by_pod_deadline,
    by_image_pull,
    by_image_pull_event,
    by_config_container,
    by_failed_mount,
    by_io_timeout_message,
    by_io_timeout_event,
    by_unschedulable,
    by_exit_code,
)


def _classify_pod(pod: PodSnapshot, facts: Facts) -> Classification | None:
    for rule in POD_RULES:
        verdict = rule(pod, facts)
        if verdict is not None:
            return verdict
    return None


# --- choosing the deciding pod -----------------------------------------------------------


def _candidate_pods(facts: Facts) -> tuple[PodSnapshot, ...]:
    pods = tuple(p for p in facts.report.pods if p.phase != "Succeeded")
    if pods or facts.report.pods:
        return pods
    # Pod objects already gone (TTL, pod GC): their Events may still say what happened.
    names = dict.fromkeys(e.involved_name for e in facts.report.events if e.involved_kind == "Pod")
    return tuple(PodSnapshot(name=name, uid="", deleted=True) for name in names if name)


def _created(pod: PodSnapshot) -> float:
    return pod.created_at if pod.created_at is not None else float("-inf")


def _deciding_pod(facts: Facts) -> _PodVerdict | None:
    """The most recent failed pod with a class; failed pods before pending or running ones.

    Ties on creation time go to the greater name, so the list order of pods never matters.
    """
    classified = sorted(
        (
            ((ended_badly(pod), _created(pod), pod.name, pod.uid), pod, verdict)
            for pod in _candidate_pods(facts)
            if (verdict := _classify_pod(pod, facts)) is not None
        ),
        key=lambda entry: entry[0],
        reverse=True,
    )
    if not classified:
        return None
    (_, pod, verdict), rest = classified[0], classified[1:]
    others = tuple(
        f"{other.name}={v.failure_class}"
        for _, other, v in rest
        if v.failure_class != verdict.failure_class
    )
    return _PodVerdict(pod, verdict, others)


# --- job rules ---------------------------------------------------------------------------

_MAX_OTHERS = 5


def _job_name(facts: Facts) -> str:
    ref = facts.report.job.ref
    return f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name or "<unnamed>"


def _job_evidence(facts: Facts) -> tuple[str, ...]:
    failure = facts.job_failure()
    return (condition_evidence(f"job {_job_name(facts)}", failure),) if failure else ()


def _pod_evidence(deciding: _PodVerdict | None) -> tuple[str, ...]:
    if deciding is None:
        return ()
    others = deciding.others
    if not others:
        return deciding.verdict.evidence
    listed = ", ".join(others[:_MAX_OTHERS]) + (", …" if len(others) > _MAX_OTHERS else "")
    return (*deciding.verdict.evidence, f"other failed pods: {listed}")


def _job_deadline_signal(facts: Facts) -> str | None:
    failure = facts.job_failure()
    if failure is not None and failure.reason == "DeadlineExceeded":
        return condition_evidence(f"job {_job_name(facts)}", failure)
    job_events = facts.events("Job", facts.report.job.ref.name)
    event = next((e for e in job_events if e.reason == "DeadlineExceeded"), None)
    return event_evidence(event) if event is not None else None


def _by_job_deadline(facts: Facts, deciding: _PodVerdict | None) -> Classification | None:
    signal = _job_deadline_signal(facts)
    if signal is None:
        return None
    if deciding is not None and deciding.verdict.failure_class in OUTRANKS_DEADLINE_CLASSES:
        return None
    return classified_as(
        FailureClass.DEADLINE_EXCEEDED,
        f"job {_job_name(facts)} ran longer than its activeDeadlineSeconds",
        signal,
        *_pod_evidence(deciding),
    )


def _by_pod_failure_policy(facts: Facts, deciding: _PodVerdict | None) -> Classification | None:
    failure = facts.job_failure()
    if failure is None or failure.reason != "PodFailurePolicy":
        return None
    if deciding is not None:
        return classified_as(
            deciding.verdict.failure_class,
            f"podFailurePolicy failed the job: {deciding.verdict.reason}",
            *_pod_evidence(deciding),
            *_job_evidence(facts),
        )
    # The user's policy matched an exit code (or a condition we no longer see): their call.
    detail = f" ({clip(failure.message)})" if failure.message else ""
    return classified_as(
        FailureClass.APP_ERROR,
        f"podFailurePolicy failed the job{detail}",
        *_job_evidence(facts),
    )


def _by_pod_verdict(facts: Facts, deciding: _PodVerdict | None) -> Classification | None:
    if deciding is None:
        return None
    reason = deciding.verdict.reason
    stuck = facts.report.stuck_for_s
    if stuck is not None and facts.job_failure() is None:
        reason += f" (stuck for {stuck:.0f} s)"
    return classified_as(
        deciding.verdict.failure_class,
        reason,
        *_pod_evidence(deciding),
        *_job_evidence(facts),
    )


JOB_RULES: tuple[JobRule, ...] = (_by_job_deadline, _by_pod_failure_policy, _by_pod_verdict)


def _unknown(facts: Facts) -> Classification:
    report, failure = facts.report, facts.job_failure()
    if failure is not None:
        reason = f"job failed ({failure.reason or 'no reason'}) but no pod evidence explains it"
    elif report.stuck_for_s is not None:
        reason = f"job stuck for {report.stuck_for_s:.0f} s without a recognised cause"
    elif not (report.pods or report.events):
        reason = "no failure evidence: no pods, events or Failed condition"
    else:
        reason = "no recognised failure signal in the pods or events"
    return classified_as(FailureClass.UNKNOWN, reason, *_job_evidence(facts))
