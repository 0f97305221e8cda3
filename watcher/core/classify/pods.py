"""Rules that read the pod's own status: its conditions, status.reason and message.

DisruptionTarget (1), status.reason Evicted/Terminated/Shutdown/NodeShutdown (2), the legacy
NodeLost (4), admission rejection (6), the pod deadline (8) and unschedulable (12), numbered as in
the order of `watcher.core.classify`; and `ended_badly`, which other rules and the choice of the
deciding pod share.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from watcher.core.classify.evidence import (
    classified_as,
    condition_evidence,
    container_evidence,
    event_evidence,
    with_message,
)
from watcher.core.classify.facts import Facts
from watcher.core.classify.patterns import matched_part
from watcher.core.model import Classification, Condition, FailureClass, PodSnapshot

__all__ = [
    "by_admission",
    "by_disruption_target",
    "by_legacy_node_lost",
    "by_pod_deadline",
    "by_pod_reason",
    "by_unschedulable",
    "ended_badly",
    "rejected_at_admission",
]

_SHUTDOWN_TEXT = re.compile(r"shut\s?down", re.IGNORECASE)
_SHUTDOWN_REASONS = frozenset({"Terminated", "Shutdown", "NodeShutdown"})
_REJECTED = "Pod was rejected"  # the kubelet's prefix for every admission failure message


def _disruption(pod: PodSnapshot) -> Condition | None:
    condition = pod.condition("DisruptionTarget")
    return condition if condition is not None and condition.status == "True" else None


def ended_badly(pod: PodSnapshot) -> bool:
    """Failed, Unknown, or deleted before it could succeed."""
    if pod.phase in ("Failed", "Unknown") or _disruption(pod) is not None:
        return True
    return pod.deleted and pod.phase != "Succeeded"


_DISRUPTIONS: Mapping[str, tuple[FailureClass, str]] = {
    "DeletionByTaintManager": (
        FailureClass.NODE_LOST,
        "was deleted by the taint manager: its node became unreachable or not ready",
    ),
    "DeletionByPodGC": (
        FailureClass.NODE_LOST,
        "was garbage-collected: its node no longer exists",
    ),
    "EvictionByEvictionAPI": (
        FailureClass.API_EVICTION,
        "was evicted through the Eviction API (drain or autoscaler)",
    ),
    "PreemptionByScheduler": (
        FailureClass.PREEMPTED,
        "was preempted by the scheduler for a higher-priority pod",
    ),
}


def by_disruption_target(pod: PodSnapshot, facts: Facts) -> Classification | None:
    condition = _disruption(pod)
    if condition is None:
        return None
    evidence = condition_evidence(f"pod {pod.name}", condition)
    if condition.reason == "TerminationByKubelet":
        return _kubelet_termination(pod, condition.message, evidence)
    known = _DISRUPTIONS.get(condition.reason)
    if known is None:
        return None
    cls, what = known
    return classified_as(cls, f"pod {pod.name} {what}", evidence)


def _kubelet_termination(pod: PodSnapshot, message: str, evidence: str) -> Classification:
    shutdown = pod.reason in _SHUTDOWN_REASONS or any(
        _SHUTDOWN_TEXT.search(matched_part(text)) for text in (message, pod.message)
    )
    if shutdown:
        return classified_as(
            FailureClass.NODE_SHUTDOWN,
            f"pod {pod.name} was terminated by the kubelet for a node shutdown",
            evidence,
        )
    return classified_as(
        FailureClass.EVICTED,
        f"pod {pod.name} was evicted by the kubelet (node pressure)",
        evidence,
    )


def by_pod_reason(pod: PodSnapshot, facts: Facts) -> Classification | None:
    if pod.reason != "Evicted" and pod.reason not in _SHUTDOWN_REASONS:
        return None
    # The kubelet's eviction manager also rejects pods at admission with reason Evicted
    # ("Pod was rejected: The node had condition: [DiskPressure]"); the pod never ran.
    if pod.reason == "Evicted" and _REJECTED in pod.message:
        return None
    evidence = with_message(f"pod {pod.name}: status.reason={pod.reason}", pod.message)
    if pod.reason == "Evicted":
        return classified_as(
            FailureClass.EVICTED, f"pod {pod.name} was evicted by the kubelet", evidence
        )
    return classified_as(
        FailureClass.NODE_SHUTDOWN,
        f"pod {pod.name} was stopped by a node shutdown ({pod.reason})",
        evidence,
    )


def by_legacy_node_lost(pod: PodSnapshot, facts: Facts) -> Classification | None:
    if pod.reason != "NodeLost":
        return None
    return classified_as(
        FailureClass.NODE_LOST,
        f"pod {pod.name} was lost with its node (NodeLost)",
        with_message(f"pod {pod.name}: status.reason=NodeLost", pod.message),
    )


_ADMISSION_REASONS = frozenset(
    {
        "UnexpectedAdmissionError",
        "NodeAffinity",
        "NodeSelectorMismatching",
        "TopologyAffinityError",
        "InvalidNodeInfo",
    }
)


def rejected_at_admission(pod: PodSnapshot) -> bool:
    """The kubelet refused the pod before running it."""
    return (
        pod.reason in _ADMISSION_REASONS
        or pod.reason.startswith("OutOf")  # OutOfcpu, OutOfmemory, OutOfpods, ...
        or _REJECTED in pod.message
    )


def by_admission(pod: PodSnapshot, facts: Facts) -> Classification | None:
    if not rejected_at_admission(pod):
        return None
    return classified_as(
        FailureClass.ADMISSION_REJECTED,
        f"pod {pod.name} was rejected by the kubelet at admission ({pod.reason or 'rejected'})",
        with_message(f"pod {pod.name}: status.reason={pod.reason or '-'}", pod.message),
    )


def by_pod_deadline(pod: PodSnapshot, facts: Facts) -> Classification | None:
    if pod.reason == "DeadlineExceeded":
        evidence = with_message(f"pod {pod.name}: status.reason=DeadlineExceeded", pod.message)
    else:
        c = next((c for c in pod.containers if c.terminated_reason == "DeadlineExceeded"), None)
        if c is None:
            return None
        evidence = container_evidence(pod, c)
    return classified_as(
        FailureClass.DEADLINE_EXCEEDED,
        f"pod {pod.name} ran longer than its activeDeadlineSeconds",
        evidence,
    )


def by_unschedulable(pod: PodSnapshot, facts: Facts) -> Classification | None:
    scheduled = pod.condition("PodScheduled")
    if (
        pod.phase == "Pending"
        and scheduled is not None
        and scheduled.status == "False"
        and scheduled.reason == "Unschedulable"
    ):
        evidence = condition_evidence(f"pod {pod.name}", scheduled)
    elif pod.node_name:  # it was scheduled in the end; old FailedScheduling events are moot
        return None
    else:
        event = next(
            (e for e in facts.events("Pod", pod.name) if e.reason == "FailedScheduling"), None
        )
        if event is None:
            return None
        evidence = event_evidence(event)
    return classified_as(
        FailureClass.UNSCHEDULABLE,
        f"pod {pod.name} could not be scheduled on any node",
        evidence,
    )
