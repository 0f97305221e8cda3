"""Shapes of the raw Kubernetes JSON that kube-dlq reads, as the apiserver sends it.

These are `TypedDict(total=False)` views of list/watch payloads (camelCase keys), trimmed to the
fields some stage reads. They document the contract; they do not validate anything. Real
payloads break them (a `None` status, a string exit code from a hand-written kwok stage), which
is why `watcher.core.snapshot` checks every value's type at runtime before it trusts it.

Where no such view fits (a whole manifest, a request body, a stored report), JSON objects are
typed with the two untyped aliases below, declared here once for every layer:

* `RawObject` (``dict[str, Any]``): a JSON object this code builds, owns or mutates, such as a
  cleaned manifest or the body of a create call.
* `RawMapping` (``Mapping[str, Any]``): a JSON object read as given and never mutated, such as a
  payload from the API or a Job's annotations; any dict is one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeAlias, TypedDict

RawObject: TypeAlias = dict[str, Any]
"""A JSON object we build, own or mutate."""

RawMapping: TypeAlias = Mapping[str, Any]
"""A JSON object we only read; never mutated through this name."""

RawWatchEventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]


class RawOwnerReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool


class RawMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    creationTimestamp: str
    deletionTimestamp: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[RawOwnerReference]


class RawCondition(TypedDict, total=False):
    """A condition of a Job, Pod or Node."""

    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str


class RawContainerStateTerminated(TypedDict, total=False):
    exitCode: int
    signal: int
    reason: str
    message: str
    startedAt: str
    finishedAt: str


class RawContainerStateWaiting(TypedDict, total=False):
    reason: str
    message: str


class RawContainerState(TypedDict, total=False):
    waiting: RawContainerStateWaiting | None
    running: dict[str, str] | None
    terminated: RawContainerStateTerminated | None


class RawContainerStatus(TypedDict, total=False):
    name: str
    image: str
    ready: bool
    started: bool
    restartCount: int
    state: RawContainerState
    lastState: RawContainerState


class RawPodSpec(TypedDict, total=False):
    """Only the scalar we read from a pod spec; the spec itself is never kept."""

    nodeName: str


class RawPodStatus(TypedDict, total=False):
    phase: str
    reason: str
    message: str
    conditions: list[RawCondition]
    initContainerStatuses: list[RawContainerStatus]
    containerStatuses: list[RawContainerStatus]
    startTime: str


class RawPod(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: RawMeta
    spec: RawPodSpec
    status: RawPodStatus | None


class RawJobSpec(TypedDict, total=False):
    backoffLimit: int
    activeDeadlineSeconds: int
    podFailurePolicy: dict[str, object]


class RawJobStatus(TypedDict, total=False):
    conditions: list[RawCondition]
    active: int
    failed: int
    succeeded: int
    startTime: str


class RawJob(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: RawMeta
    spec: RawJobSpec
    status: RawJobStatus | None


class RawObjectReference(TypedDict, total=False):
    kind: str
    namespace: str
    name: str
    uid: str


class RawEventSeries(TypedDict, total=False):
    count: int
    lastObservedTime: str


class RawEvent(TypedDict, total=False):
    """A core/v1 Event. `eventTime` and `series` are set by the newer events recorder."""

    apiVersion: str
    kind: str
    metadata: RawMeta
    involvedObject: RawObjectReference
    reason: str
    message: str
    type: str
    count: int
    firstTimestamp: str | None
    lastTimestamp: str | None
    eventTime: str | None
    series: RawEventSeries | None


class RawTaint(TypedDict, total=False):
    key: str
    value: str
    effect: str


class RawNodeSpec(TypedDict, total=False):
    unschedulable: bool
    taints: list[RawTaint]


class RawNodeStatus(TypedDict, total=False):
    conditions: list[RawCondition]


class RawNode(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: RawMeta
    spec: RawNodeSpec
    status: RawNodeStatus | None


RawKubeObject = RawJob | RawPod | RawEvent | RawNode
"""Any of the typed views above."""


class RawWatchEvent(TypedDict, total=False):
    """One line of a watch stream. With type ERROR, `object` is a Status (e.g. 410 Gone)."""

    type: RawWatchEventType
    object: RawKubeObject
