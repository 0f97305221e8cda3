"""Rules whose evidence is about the pod's node: its Node object and the Events it reported.

The node is gone, or NotReady and tainted unreachable/not-ready (3); a NodeNotReady Event (5);
a node OOMKilling Event with a SIGKILLed container (7), numbered as in the order of
`watcher.core.classify`. Node state and NodeNotReady are circumstantial (the node may have gone
bad after the pod ended), so those two rules stand aside when a container exited on its own.
"""

from __future__ import annotations

import re

from watcher.core.classify.containers import kubelet_saw_end, signal_of
from watcher.core.classify.evidence import (
    classified_as,
    container_evidence,
    container_label,
    event_evidence,
)
from watcher.core.classify.facts import Facts
from watcher.core.classify.pods import ended_badly
from watcher.core.model import Classification, FailureClass, NodeState, PodSnapshot

__all__ = ["by_node_not_ready_event", "by_node_state", "by_oom_node_event"]

_UNREACHABLE_TAINTS = frozenset({"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"})
_TAINT_KEY_END = re.compile(r"[=:]")


def _taint_key(taint: str) -> str:
    return _TAINT_KEY_END.split(taint, maxsplit=1)[0]


def _lost_taint(node: NodeState) -> str | None:
    return next((t for t in node.taints if _taint_key(t) in _UNREACHABLE_TAINTS), None)


def by_node_state(pod: PodSnapshot, facts: Facts) -> Classification | None:
    if not pod.node_name or not ended_badly(pod) or kubelet_saw_end(pod) is not None:
        return None
    node = facts.report.node(pod.node_name)
    if node is None:  # not looked up: no evidence either way
        return None
    if not node.exists:
        return classified_as(
            FailureClass.NODE_LOST,
            f"pod {pod.name} was lost with its node {node.name}, which no longer exists",
            f"node {node.name}: missing",
            f"pod {pod.name}: phase={pod.phase or '-'} deleted={pod.deleted}",
        )
    taint = _lost_taint(node)
    if node.ready != "True" and taint is not None:
        return classified_as(
            FailureClass.NODE_LOST,
            f"pod {pod.name} was lost with its node {node.name} (Ready={node.ready})",
            f"node {node.name}: Ready={node.ready} reason={node.reason or '-'} taint={taint}",
            f"pod {pod.name}: phase={pod.phase or '-'} deleted={pod.deleted}",
        )
    return None


def by_node_not_ready_event(pod: PodSnapshot, facts: Facts) -> Classification | None:
    if not ended_badly(pod) or kubelet_saw_end(pod) is not None:
        return None
    events = facts.events("Pod", pod.name) + facts.events("Node", pod.node_name)
    event = next((e for e in events if e.reason == "NodeNotReady"), None)
    if event is None:
        return None
    where = f" {pod.node_name}" if pod.node_name else ""
    return classified_as(
        FailureClass.NODE_LOST,
        f"pod {pod.name} failed while its node{where} was not ready",
        event_evidence(event),
    )


def by_oom_node_event(pod: PodSnapshot, facts: Facts) -> Classification | None:
    # A node OOMKilling Event names a process, not a pod; it explains this pod only when one of
    # its containers on that node died of SIGKILL (the runtime did not say OOMKilled).
    killed = next((c for c in pod.containers if signal_of(c) == 9), None)
    if killed is None:
        return None
    event = next((e for e in facts.events("Node", pod.node_name) if e.reason == "OOMKilling"), None)
    if event is None:
        return None
    return classified_as(
        FailureClass.OOM_KILLED,
        f"{container_label(killed)} was SIGKILLed while node {pod.node_name} reported an OOM kill",
        container_evidence(pod, killed),
        event_evidence(event),
    )
