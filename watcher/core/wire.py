"""Typed watch lines of Jobs, Pods, Events and Nodes: only the fields kube-dlq reads.

`watcher.core.snapshot` projects a generic JSON object: every key of a 2 KB pod line becomes
a Python object, then each value read is type-checked. The Structs here describe only what
the projections read, with the types the apiserver sends; msgspec decodes a line into them
in C, skipping every other field without building it (a pod's spec, most of its status, a
Node's images), and checks the types on the way. `watcher.core.project` projects them.

A line these types do not fit (a value of another type where one is read: a boolean exit
code, a hostile Event) fails to decode with `msgspec.ValidationError`; the watch then decodes
it generically, as before. A failed Job's whole object is kept (its replayable manifest), so
a Job line whose typed value says Failed (`wants_whole`) is decoded generically too.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import msgspec

from watcher.core.indexes import COMPLETION_INDEX_ANNOTATION
from watcher.core.snapshot import JOB_UID_LABELS

__all__ = [
    "LINE_TYPES",
    "EventLine",
    "JobLine",
    "NodeLine",
    "PodLine",
    "WireEvent",
    "WireJob",
    "WireLine",
    "WireNode",
    "WireObject",
    "WirePod",
]


Text = str | None
"""Text, or null: the apiserver omits empty fields, but null is valid JSON for each."""
Number = int | str | None
"""An integer field, also as integral text (kwok renders exit codes from annotations)."""


class _Base(msgspec.Struct, gc=False):
    """No cycles are possible, so the garbage collector never needs to track these."""

    WHOLE_HINT: ClassVar[bytes | None] = None
    """Lines of this type holding this text are decoded as dicts without trying the type."""

    def wants_whole(self) -> bool:
        """True when the consumer needs the object's every field: decode the line as a dict."""
        return False


class WireOwnerRef(_Base):
    apiVersion: Text = None
    kind: Text = None
    name: Text = None
    uid: Text = None
    controller: bool | None = None


class WirePodLabels(_Base):
    controller_uid: Text = msgspec.field(default=None, name=JOB_UID_LABELS[0])
    legacy_controller_uid: Text = msgspec.field(default=None, name=JOB_UID_LABELS[1])


class WirePodAnnotations(_Base):
    completion_index: Text = msgspec.field(default=None, name=COMPLETION_INDEX_ANNOTATION)


class WireMeta(_Base):
    name: Text = None
    uid: Text = None
    namespace: Text = None
    resourceVersion: Text = None
    creationTimestamp: Text = None


class WirePodMeta(WireMeta):
    deletionTimestamp: Text = None
    labels: WirePodLabels | None = None
    annotations: WirePodAnnotations | None = None
    ownerReferences: list[WireOwnerRef] | None = None


class WireCondition(_Base):
    type: Text = None
    status: Text = None
    reason: Text = None
    message: Text = None


class WireTerminated(_Base):
    exitCode: Number = None
    signal: Number = None
    reason: Text = None
    message: Text = None


class WireWaiting(_Base):
    reason: Text = None
    message: Text = None


class WireState(_Base):
    terminated: WireTerminated | None = None
    waiting: WireWaiting | None = None


class WireLastState(_Base):
    terminated: WireTerminated | None = None


class WireContainer(_Base):
    name: Text = None
    state: WireState | None = None
    lastState: WireLastState | None = None
    restartCount: Number = None


class WirePodStatus(_Base):
    phase: Text = None
    reason: Text = None
    message: Text = None
    conditions: list[WireCondition] | None = None
    initContainerStatuses: list[WireContainer] | None = None
    containerStatuses: list[WireContainer] | None = None


class WirePodSpec(_Base):
    nodeName: Text = None


class WirePod(_Base):
    metadata: WirePodMeta | None = None
    spec: WirePodSpec | None = None
    status: WirePodStatus | None = None


class WireInvolved(_Base):
    kind: Text = None
    name: Text = None


class WireSeries(_Base):
    count: Number = None
    lastObservedTime: Text = None


class WireEvent(_Base):
    metadata: WireMeta | None = None
    involvedObject: WireInvolved | None = None
    regarding: WireInvolved | None = None  # events.k8s.io/v1's name for involvedObject
    reason: Text = None
    message: Text = None
    note: Text = None  # events.k8s.io/v1's name for message
    type: Text = None
    count: Number = None
    series: WireSeries | None = None
    lastTimestamp: Text = None
    eventTime: Text = None
    firstTimestamp: Text = None


class WireTaint(_Base):
    key: Text = None
    value: Text = None
    effect: Text = None


class WireNodeSpec(_Base):
    unschedulable: bool | None = None
    taints: list[WireTaint] | None = None


class WireNodeStatus(_Base):
    conditions: list[WireCondition] | None = None


class WireNode(_Base):
    metadata: WireMeta | None = None
    spec: WireNodeSpec | None = None
    status: WireNodeStatus | None = None


class WireJobMeta(WireMeta):
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    ownerReferences: list[WireOwnerRef] | None = None


class WireJobSpec(_Base):
    podFailurePolicy: Any = None  # only whether there is one is read


class WireJobStatus(_Base):
    conditions: list[WireCondition] | None = None
    active: Number = None
    failed: Number = None
    succeeded: Number = None


class WireJob(_Base):
    metadata: WireJobMeta | None = None
    spec: WireJobSpec | None = None
    status: WireJobStatus | None = None

    def wants_whole(self) -> bool:
        """A failed Job: the pipeline keeps its whole object as the manifest to replay."""
        status = self.status
        return status is not None and any(
            c.type == "Failed" and c.status == "True" for c in status.conditions or ()
        )


class JobLine(_Base):
    type: Text = None
    object: WireJob | None = None

    WHOLE_HINT: ClassVar[bytes] = b'"Failed"'
    """A failed Job's line holds this text (its condition's type): a line with it is decoded
    whole at once, without trying the type first. The default podReplacementPolicy,
    TerminatingOrFailed, has no quote before it. `wants_whole` still decides for the other
    lines, since JSON text can be escaped."""


class PodLine(_Base):
    """One watch line of Pods: ``{"type": ..., "object": {...}}``."""

    type: Text = None
    object: WirePod | None = None


class EventLine(_Base):
    type: Text = None
    object: WireEvent | None = None


class NodeLine(_Base):
    type: Text = None
    object: WireNode | None = None


WireObject = WireJob | WirePod | WireEvent | WireNode
WireLine = JobLine | PodLine | EventLine | NodeLine
LINE_TYPES: Final[dict[str, type[WireLine]]] = {
    "jobs": JobLine,
    "pods": PodLine,
    "events": EventLine,
    "nodes": NodeLine,
}
"""The typed line of each watched resource that has one, by resource name."""
