"""Watch objects -> the frozen projections of `watcher.core.model`, typed or dicts.

The pipeline's one entry point for projecting what a watch yields: the typed values of
`watcher.core.wire` (the fast path) are projected here, dicts (a line those types do not fit,
a list's items) by `watcher.core.snapshot`. Both give the same values for the same object
(tests/unit/test_wire.py checks this on the captured corpus and on damaged copies of it). Two
rules about fields the types cannot see are shared by both: a container's terminated state
with none of the fields read counts as absent, and so does an Event's involvedObject with
neither kind nor name.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from watcher.core import snapshot
from watcher.core.model import (
    Condition,
    ContainerOutcome,
    EventRecord,
    JobRef,
    JobSnapshot,
    NodeState,
    OwnerRef,
    PodSnapshot,
)
from watcher.core.rawjson import RawMapping
from watcher.core.snapshot import (
    JOB_LABELS_READ,
    MalformedObject,
    clip,
    condition_of,
    container_of,
    count_of,
    int_of,
    parse_time,
    positive_of,
    taint_text,
)
from watcher.core.wire import (
    WireCondition,
    WireContainer,
    WireEvent,
    WireInvolved,
    WireJob,
    WireJobMeta,
    WireJobStatus,
    WireMeta,
    WireNode,
    WireNodeSpec,
    WireObject,
    WirePod,
    WirePodMeta,
    WirePodStatus,
    WireSeries,
    WireTerminated,
    WireWaiting,
)

__all__ = [
    "annotations_of",
    "event_about",
    "event_record_about",
    "job_pod",
    "job_snapshot",
    "job_uid_of_pod",
    "namespace_of",
    "node_state",
    "pod_snapshot",
]

_NO_META: Final = WirePodMeta()


def job_snapshot(job: WireJob | RawMapping) -> JobSnapshot:
    """`snapshot.job_snapshot` of this Job, typed or a dict."""
    if not isinstance(job, WireJob):
        return snapshot.job_snapshot(job)
    meta = job.metadata or _NO_JOB_META
    name, uid = _identity(meta, "Job")
    status = job.status or _NO_JOB_STATUS
    owner = next((r for r in meta.ownerReferences or () if r.controller is True), None)
    return JobSnapshot(
        ref=JobRef(namespace=meta.namespace or "", name=name, uid=uid),
        owner=None
        if owner is None
        else OwnerRef(kind=owner.kind or "", name=owner.name or "", uid=owner.uid or ""),
        labels=tuple(sorted((k, v) for k, v in meta.labels.items() if k in JOB_LABELS_READ))
        if meta.labels
        else (),
        annotations=tuple(sorted(meta.annotations.items())) if meta.annotations else (),
        conditions=_conditions(status.conditions),
        active=count_of(status.active),
        failed=count_of(status.failed),
        succeeded=count_of(status.succeeded),
        has_pod_failure_policy=job.spec is not None and job.spec.podFailurePolicy is not None,
        created_at=parse_time(meta.creationTimestamp),
    )


def annotations_of(job: WireJob | RawMapping) -> RawMapping:
    """metadata.annotations as given ({} when there are none, or they are not an object)."""
    if isinstance(job, WireJob):
        return (job.metadata.annotations if job.metadata is not None else None) or {}
    meta = job.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


def job_pod(
    pod: WirePod | RawMapping, *, deleted: bool = False
) -> tuple[str, str, PodSnapshot] | None:
    """`snapshot.job_pod` of this pod, typed or a dict: (its Job's uid, its namespace, its
    projection) for a Job's pod, None for any other."""
    if not isinstance(pod, WirePod):
        return snapshot.job_pod(pod, deleted=deleted)
    job_uid = job_uid_of_pod(pod)
    if job_uid is None:
        return None
    return job_uid, namespace_of(pod), pod_snapshot(pod, deleted=deleted)


def job_uid_of_pod(pod: WirePod) -> str | None:
    """`snapshot.job_uid_of_pod` of this pod."""
    meta = pod.metadata or _NO_META
    for ref in meta.ownerReferences or ():
        if (
            ref.controller is True
            and ref.kind == "Job"
            and (ref.apiVersion or "").startswith("batch/")
            and ref.uid
        ):
            return ref.uid
    labels = meta.labels
    if labels is None:
        return None
    return labels.controller_uid or labels.legacy_controller_uid or None


def pod_snapshot(pod: WirePod, *, deleted: bool = False) -> PodSnapshot:
    """`snapshot.pod_snapshot` of this pod. Raises `MalformedObject` without name or uid."""
    meta = pod.metadata or _NO_META
    name, uid = _identity(meta, "Pod")
    status = pod.status or _NO_POD_STATUS
    annotations = meta.annotations
    index = (annotations.completion_index or "") if annotations is not None else ""
    return PodSnapshot(
        name=name,
        uid=uid,
        phase=status.phase or "",
        reason=status.reason or "",
        message=clip(status.message or ""),
        node_name=(pod.spec.nodeName or "") if pod.spec is not None else "",
        deleted=deleted or bool(meta.deletionTimestamp),
        conditions=_conditions(status.conditions),
        containers=_containers(status.initContainerStatuses, init=True)
        + _containers(status.containerStatuses, init=False),
        created_at=parse_time(meta.creationTimestamp),
        completion_index=index[:20],
    )


def event_about(
    event: WireEvent | RawMapping, kinds: frozenset[str] | None
) -> tuple[str, EventRecord] | None:
    """(its namespace, `snapshot.event_record_about`) of this Event, typed or a dict; None
    when it is about a kind not in `kinds`."""
    if not isinstance(event, WireEvent):
        record = snapshot.event_record_about(event, kinds)
        return None if record is None else (snapshot.namespace_of(event), record)
    record = event_record_about(event, kinds)
    return None if record is None else (namespace_of(event), record)


def event_record_about(event: WireEvent, kinds: frozenset[str] | None) -> EventRecord | None:
    """`snapshot.event_record_about` of this Event."""
    _identity(event.metadata or _NO_META, "Event")
    involved = event.involvedObject
    if involved is None or (involved.kind is None and involved.name is None):
        involved = event.regarding or _NO_INVOLVED
    kind = involved.kind or ""
    if kinds is not None and kind not in kinds:
        return None
    series = event.series or _NO_SERIES
    # lastTimestamp is the legacy recorder's; series/eventTime the newer recorder's.
    last_seen = None
    for text in (event.lastTimestamp, series.lastObservedTime, event.eventTime):
        last_seen = parse_time(text)
        if last_seen is not None:
            break
    if last_seen is None:
        last_seen = parse_time(event.firstTimestamp)
    return EventRecord(
        involved_kind=kind,
        involved_name=involved.name or "",
        reason=event.reason or "",
        message=clip(event.message or "") or clip(event.note or ""),
        type=event.type or "Normal",
        count=positive_of(event.count) or positive_of(series.count) or 1,
        last_seen=last_seen,
    )


def node_state(node: WireNode | RawMapping, *, deleted: bool = False) -> NodeState:
    """`snapshot.node_state` of this Node, typed or a dict."""
    if not isinstance(node, WireNode):
        return snapshot.node_state(node, deleted=deleted)
    name, _ = _identity(node.metadata or _NO_META, "Node")
    spec = node.spec or _NO_NODE_SPEC
    conditions = _conditions(node.status.conditions if node.status is not None else None)
    ready = next((c for c in conditions if c.type == "Ready"), _READY_UNKNOWN)
    return NodeState(
        name=name,
        exists=not deleted,
        ready=ready.status or "Unknown",
        reason=ready.reason,
        unschedulable=spec.unschedulable is True,
        taints=tuple(
            taint_text(t.key, t.value or "", t.effect or "") for t in spec.taints or () if t.key
        ),
    )


def namespace_of(obj: WireObject) -> str:
    """`snapshot.namespace_of` of this object."""
    meta = obj.metadata
    return (meta.namespace or "") if meta is not None else ""


# --- pieces -------------------------------------------------------------------------------

_NO_JOB_META: Final = WireJobMeta()
_NO_JOB_STATUS: Final = WireJobStatus()
_NO_POD_STATUS: Final = WirePodStatus()
_NO_INVOLVED: Final = WireInvolved()
_NO_SERIES: Final = WireSeries()
_NO_NODE_SPEC: Final = WireNodeSpec()
_NO_TERMINATED: Final = WireTerminated()
_NO_WAITING: Final = WireWaiting()
_READY_UNKNOWN: Final = Condition(type="Ready", status="Unknown")


def _identity(meta: WireMeta, kind: str) -> tuple[str, str]:
    name, uid = meta.name, meta.uid
    if not name or not uid:
        raise MalformedObject(f"{kind} without metadata.name or metadata.uid")
    return name, uid


def _conditions(conditions: list[WireCondition] | None) -> tuple[Condition, ...]:
    if not conditions:
        return ()
    return tuple(
        condition_of(c.type, c.status or "", c.reason or "", c.message or "")
        for c in conditions
        if c.type
    )


def _containers(
    containers: list[WireContainer] | None, *, init: bool
) -> tuple[ContainerOutcome, ...]:
    if not containers:
        return ()
    return tuple(_container(c, init=init) for c in containers)


def _container(c: WireContainer, *, init: bool) -> ContainerOutcome:
    state = c.state
    terminated = state.terminated if state is not None else None
    if terminated is None or _empty(terminated):
        last = c.lastState
        terminated = last.terminated if last is not None else None
    terminated = terminated or _NO_TERMINATED
    waiting = (state.waiting if state is not None else None) or _NO_WAITING
    return container_of(
        (
            c.name or "",
            init,
            int_of(terminated.exitCode),
            int_of(terminated.signal),
            terminated.reason or "",
            terminated.message or "",
            waiting.reason or "",
            waiting.message or "",
            count_of(c.restartCount),
        )
    )


def _empty(t: WireTerminated) -> bool:
    return t.exitCode is None and t.signal is None and t.reason is None and t.message is None
