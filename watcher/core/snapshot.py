"""Raw Kubernetes JSON -> the frozen projections of `watcher.core.model`.

Every function here is pure and total. List/watch payloads are untrusted: a field can be
missing, `None`, or of the wrong type (kwok stages render exit codes from annotation strings,
old apiservers omit newer fields), and one bad object must never stop the watch loop. So each
value is type-checked where it is read and falls back to the model's default. The one error is
`MalformedObject`, raised when an object has no usable `metadata.name` or `metadata.uid`:
without an identity nothing can be correlated, and the caller logs and counts it.

Only status-level data is kept. Pod specs are read for `nodeName` alone and never stored, so
the daemon's memory does not grow with the size of users' pod templates. For the same reason
messages (pod, condition, container and Event messages) are kept up to MAX_MESSAGE_CHARS: their
head and their tail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from watcher.core.annotations import ANNOTATION_ENABLED
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
from watcher.core.rawjson import RawEvent, RawJob, RawMapping, RawNode, RawPod

__all__ = [
    "JOB_LABELS_READ",
    "MAX_MESSAGE_CHARS",
    "MalformedObject",
    "event_record",
    "event_record_about",
    "job_pod",
    "job_snapshot",
    "job_uid_of_pod",
    "namespace_of",
    "node_state",
    "parse_time",
    "pod_snapshot",
]

# Labels the Job controller puts on its pods; the first is current, the second pre-1.27.
JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
JOB_LABELS_READ: frozenset[str] = frozenset({ANNOTATION_ENABLED})
"""The Job labels a JobSnapshot keeps: what the scope check reads. The others (the four the
Job controller defaults from the pod template hold the Job's own name and uid) are read by
nothing and cost some 300 B a Job; a re-created Job's labels come from its kept manifest."""

_EMPTY: Mapping[str, object] = {}
_K = TypeVar("_K")
_V = TypeVar("_V")
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"

# RFC 3339 as Kubernetes writes it (metav1.Time, metav1.MicroTime); the fraction is cut to
# microseconds because that is all `datetime` keeps.
_RFC3339 = re.compile(
    r"(?P<main>\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<frac>\d+))?"
    r"(?P<zone>[Zz]|[+-]\d{2}:\d{2})?"
)
_INT_TEXT = re.compile(r"[+-]?\d{1,10}")

MESSAGE_HEAD_CHARS = 8 * 1024
MESSAGE_TAIL_CHARS = 8 * 1024
MAX_MESSAGE_CHARS = MESSAGE_HEAD_CHARS + MESSAGE_TAIL_CHARS
"""Longest message a projection keeps; a longer one keeps its first and last 8 KiB. What
Kubernetes writes is far shorter (a termination message is at most 4 KiB, an Event note 1 KiB),
but the fields are free text: a hand-written status or a hostile Event can hold megabytes, which
would otherwise sit in the correlator's memory and in every dead letter's report. The classifier
matches a shorter part still (`watcher.core.classify.patterns.MAX_MATCHED_CHARS`)."""
_MESSAGE_CUT = "\n…\n"


class MalformedObject(ValueError):
    """A raw object without the identity (metadata.name, metadata.uid) needed to use it."""


# --- public projections -----------------------------------------------------------------


def job_snapshot(raw: RawJob | RawMapping) -> JobSnapshot:
    """Project a batch/v1 Job. Raises `MalformedObject` only when name or uid is missing."""
    body = _mapping(raw)
    meta = _mapping(body.get("metadata"))
    name, uid = _identity(meta, "Job")
    spec = _mapping(body.get("spec"))
    status = _mapping(body.get("status"))
    return JobSnapshot(
        ref=JobRef(namespace=_str(meta, "namespace"), name=name, uid=uid),
        owner=_controller_owner(meta),
        labels=_string_pairs(meta.get("labels"), JOB_LABELS_READ),
        annotations=_string_pairs(meta.get("annotations")),
        conditions=_conditions(status),
        active=_count(status, "active"),
        failed=_count(status, "failed"),
        succeeded=_count(status, "succeeded"),
        has_pod_failure_policy=spec.get("podFailurePolicy") is not None,
        created_at=parse_time(meta.get("creationTimestamp")),
    )


def pod_snapshot(raw: RawPod | RawMapping, *, deleted: bool = False) -> PodSnapshot:
    """Project a core/v1 Pod's status.

    `deleted` is for watch DELETED events, whose object may predate its deletionTimestamp.
    """
    body = _mapping(raw)
    meta = _mapping(body.get("metadata"))
    name, uid = _identity(meta, "Pod")
    status = _mapping(body.get("status"))
    return PodSnapshot(
        name=name,
        uid=uid,
        phase=_str(status, "phase"),
        reason=_str(status, "reason"),
        message=_message(status, "message"),
        node_name=_str(_mapping(body.get("spec")), "nodeName"),
        deleted=deleted or _is_set(meta.get("deletionTimestamp")),
        conditions=_conditions(status),
        containers=_containers(status, "initContainerStatuses", init=True)
        + _containers(status, "containerStatuses", init=False),
        created_at=parse_time(meta.get("creationTimestamp")),
        completion_index=_str(_mapping(meta.get("annotations")), COMPLETION_INDEX)[:20],
    )


def event_record(raw: RawEvent | RawMapping) -> EventRecord:
    """Project a core/v1 Event (also accepts the events.k8s.io/v1 field names)."""
    record = event_record_about(raw, None)
    assert record is not None  # every kind is wanted
    return record


def event_record_about(
    raw: RawEvent | RawMapping, kinds: frozenset[str] | None
) -> EventRecord | None:
    """`event_record`, or None for an Event about an object of a kind not in `kinds` (None:
    every kind), which is then not projected at all. The identity is checked first either way:
    an Event without one raises `MalformedObject`, whatever it is about."""
    body = _mapping(raw)
    meta = _mapping(body.get("metadata"))
    _identity(meta, "Event")
    # events.k8s.io/v1 renames involvedObject -> regarding and message -> note. An
    # involvedObject with neither kind nor name names nothing: regarding is read instead (the
    # rule `watcher.core.wire` follows too, which cannot see fields it does not read).
    involved = _mapping(body.get("involvedObject"))
    if involved.get("kind") is None and involved.get("name") is None:
        involved = _mapping(body.get("regarding"))
    kind = _str(involved, "kind")
    if kinds is not None and kind not in kinds:
        return None
    series = _mapping(body.get("series"))
    return EventRecord(
        involved_kind=kind,
        involved_name=_str(involved, "name"),
        reason=_str(body, "reason"),
        message=_message(body, "message") or _message(body, "note"),
        type=_str(body, "type") or "Normal",
        count=positive_of(body.get("count")) or positive_of(series.get("count")) or 1,
        last_seen=_event_last_seen(body, series),
    )


def node_state(raw: RawNode | RawMapping, *, deleted: bool = False) -> NodeState:
    """Project a core/v1 Node. A Node without a Ready condition counts as Ready=Unknown."""
    body = _mapping(raw)
    meta = _mapping(body.get("metadata"))
    name, _ = _identity(meta, "Node")
    spec = _mapping(body.get("spec"))
    ready = next(
        (c for c in _conditions(_mapping(body.get("status"))) if c.type == "Ready"),
        Condition(type="Ready", status="Unknown"),
    )
    return NodeState(
        name=name,
        exists=not deleted,
        ready=ready.status or "Unknown",
        reason=ready.reason,
        unschedulable=spec.get("unschedulable") is True,
        taints=tuple(
            taint_text(_str(t, "key"), _str(t, "value"), _str(t, "effect"))
            for t in _mappings(spec.get("taints"))
            if _str(t, "key")
        ),
    )


def job_pod(
    raw: RawPod | RawMapping, *, deleted: bool = False
) -> tuple[str, str, PodSnapshot] | None:
    """(its Job's uid, its namespace, its projection) for a pod of a Job, None for any other
    pod. Raises `MalformedObject` only for a Job's pod without name or uid."""
    job_uid = job_uid_of_pod(raw)
    if job_uid is None:
        return None
    return job_uid, namespace_of(raw), pod_snapshot(raw, deleted=deleted)


def job_uid_of_pod(raw: RawPod | RawMapping | None) -> str | None:
    """The uid of the Job controlling a pod, or None. Never raises.

    The controller ownerReference is authoritative; the labels are a fallback for pods whose
    references were stripped (e.g. orphaned with `--cascade=orphan`).
    """
    body = _mapping(raw)
    meta = _mapping(body.get("metadata"))
    for ref in _mappings(meta.get("ownerReferences")):
        # apiVersion batch/*: other CRDs are also kind "Job" (e.g. batch.volcano.sh).
        if (
            ref.get("controller") is True
            and _str(ref, "kind") == "Job"
            and _str(ref, "apiVersion").startswith("batch/")
            and _str(ref, "uid")
        ):
            return _str(ref, "uid")
    labels = _mapping(meta.get("labels"))
    return next((_str(labels, key) for key in JOB_UID_LABELS if _str(labels, key)), None)


def namespace_of(raw: RawPod | RawEvent | RawMapping) -> str:
    """metadata.namespace, or "" when it is missing or not text. Never raises."""
    return _str(_mapping(_mapping(raw).get("metadata")), "namespace")


def parse_time(value: object) -> float | None:
    """RFC 3339 text -> unix seconds; None for anything else. A missing zone means UTC."""
    if not isinstance(value, str):
        return None
    try:
        return _TIMES[value]
    except KeyError:
        parsed = _parse_time(value)
    _intern(_TIMES, value, parsed)
    return parsed


def _parse_time(value: str) -> float | None:
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        return None
    frac = (match["frac"] or "0")[:6]
    zone = match["zone"] if match["zone"] not in (None, "Z", "z") else "+00:00"
    try:
        return datetime.fromisoformat(f"{match['main'].upper()}.{frac}{zone}").timestamp()
    except (ValueError, OverflowError):  # right shape, impossible date, e.g. 2024-02-30
        return None


# --- pieces -------------------------------------------------------------------------------


def _identity(meta: Mapping[str, object], kind: str) -> tuple[str, str]:
    name, uid = _str(meta, "name"), _str(meta, "uid")
    if not name or not uid:
        raise MalformedObject(f"{kind} without metadata.name or metadata.uid")
    return name, uid


def _controller_owner(meta: Mapping[str, object]) -> OwnerRef | None:
    for ref in _mappings(meta.get("ownerReferences")):
        if ref.get("controller") is True:
            return OwnerRef(kind=_str(ref, "kind"), name=_str(ref, "name"), uid=_str(ref, "uid"))
    return None


def _conditions(status: Mapping[str, object]) -> tuple[Condition, ...]:
    found = []
    for c in _mappings(status.get("conditions")):
        get = c.get
        # Looked up by the raw values first: a table key is four str, and only those very
        # strings compare equal to it, so a hit is what the type-checked reads would give.
        seen = (get("type"), get("status", ""), get("reason", ""), get("message", ""))
        try:
            condition = _CONDITIONS.get(seen)
        except TypeError:  # an unhashable value (a list, an object) where text belongs
            condition = None
        if condition is None:
            ctype = _str(c, "type")
            if not ctype:
                continue
            cstatus, reason, message = _str(c, "status"), _str(c, "reason"), _str(c, "message")
            condition = condition_of(ctype, cstatus, reason, message)
        found.append(condition)
    return tuple(found)


def condition_of(ctype: str, status: str, reason: str, message: str) -> Condition:
    """The (interned) Condition of these texts; the message is clipped."""
    key = (ctype, status, reason, message)
    condition = _CONDITIONS.get(key)
    if condition is None:
        condition = Condition(type=ctype, status=status, reason=reason, message=clip(message))
        _intern(_CONDITIONS, key, condition)
    return condition


def _containers(
    status: Mapping[str, object], key: str, *, init: bool
) -> tuple[ContainerOutcome, ...]:
    return tuple(_container(c, init=init) for c in _mappings(status.get(key)))


def _container(raw: Mapping[str, object], *, init: bool) -> ContainerOutcome:
    state = _mapping(raw.get("state"))
    # A restarted container (restartPolicy OnFailure) is waiting or running again; its crash
    # is only in lastState, and that crash is what made the Job fail. A terminated state that
    # holds none of the fields read counts as none (`watcher.core.wire` cannot tell it apart).
    terminated = _mapping(state.get("terminated"))
    if all(terminated.get(k) is None for k in _TERMINATED_FIELDS):
        terminated = _mapping(_mapping(raw.get("lastState")).get("terminated"))
    waiting = _mapping(state.get("waiting"))
    return container_of(
        (
            _str(raw, "name"),
            init,
            int_of(terminated.get("exitCode")),
            int_of(terminated.get("signal")),
            _str(terminated, "reason"),
            _str(terminated, "message"),
            _str(waiting, "reason"),
            _str(waiting, "message"),
            count_of(raw.get("restartCount")),
        )
    )


_TERMINATED_FIELDS = ("exitCode", "signal", "reason", "message")

ContainerKey = tuple[str, bool, int | None, int | None, str, str, str, str, int]
"""name, init, exit code, signal, terminated reason and message, waiting reason and message,
restart count: what a ContainerOutcome is built of."""


def container_of(key: ContainerKey) -> ContainerOutcome:
    """The (interned) ContainerOutcome of these values; the messages are clipped."""
    outcome = _CONTAINERS.get(key)
    if outcome is None:
        outcome = ContainerOutcome(
            name=key[0],
            init=key[1],
            exit_code=key[2],
            signal=key[3],
            terminated_reason=key[4],
            terminated_message=clip(key[5]),
            waiting_reason=key[6],
            waiting_message=clip(key[7]),
            restart_count=key[8],
        )
        _intern(_CONTAINERS, key, outcome)
    return outcome


def _event_last_seen(raw: Mapping[str, object], series: Mapping[str, object]) -> float | None:
    # lastTimestamp is the legacy recorder's; series/eventTime the newer recorder's.
    candidates = (
        raw.get("lastTimestamp"),
        series.get("lastObservedTime"),
        raw.get("eventTime"),
        raw.get("firstTimestamp"),
    )
    return next((t for t in map(parse_time, candidates) if t is not None), None)


def taint_text(key: str, value: str, effect: str) -> str:
    """kubectl's notation: key[=value]:Effect, e.g. node.kubernetes.io/unreachable:NoExecute."""
    if value:
        key = f"{key}={value}"
    return f"{key}:{effect}" if effect else key


def _string_pairs(value: object, keys: frozenset[str] | None = None) -> tuple[tuple[str, str], ...]:
    """The text pairs of a mapping, sorted; only those of `keys` if given."""
    mapping = _mapping(value)
    if not mapping:
        return ()
    pairs = mapping.items()
    return tuple(
        sorted(
            (k, v)
            for k, v in pairs
            if isinstance(k, str) and isinstance(v, str) and (keys is None or k in keys)
        )
    )


# --- type-checked readers -----------------------------------------------------------------


def _mapping(value: object) -> Mapping[str, object]:
    if type(value) is dict:  # what json.loads makes: no ABC check needed
        return value
    return value if isinstance(value, Mapping) else _EMPTY


def _mappings(value: object) -> Sequence[Mapping[str, object]]:
    if not isinstance(value, list | tuple):
        return ()
    return [item for item in value if type(item) is dict or isinstance(item, Mapping)]


def _str(raw: Mapping[str, object], key: str) -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else ""


def _message(raw: Mapping[str, object], key: str) -> str:
    """A free-text message, cut to its head and tail past MAX_MESSAGE_CHARS."""
    return clip(_str(raw, key))


def clip(text: str) -> str:
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[:MESSAGE_HEAD_CHARS] + _MESSAGE_CUT + text[-MESSAGE_TAIL_CHARS:]


# --- interning ----------------------------------------------------------------------------
# Pods of one Job, and the versions of one pod, repeat the same conditions, container
# outcomes and timestamps over and over. Projections are pure, so each one is built once and
# shared: equal inputs give the very same frozen value, which costs neither the frozen
# dataclass's construction (a large part of a projection) nor its memory again. Bounded: a
# table past INTERN_MAX entries starts over, and values with long text are not kept.

INTERN_MAX = 4096
"""Entries per interning table (conditions, container outcomes, timestamps)."""
INTERN_MAX_CHARS = 1024
"""Values whose text fields add up to more than this are built every time, never kept."""

_CONDITIONS: dict[tuple[object, ...], Condition] = {}
_CONTAINERS: dict[ContainerKey, ContainerOutcome] = {}
_TIMES: dict[str, float | None] = {}


def _intern(table: dict[_K, _V], key: _K, value: _V) -> None:
    if isinstance(key, tuple):
        if sum(len(part) for part in key if isinstance(part, str)) > INTERN_MAX_CHARS:
            return
    elif isinstance(key, str) and len(key) > INTERN_MAX_CHARS:
        return
    if len(table) >= INTERN_MAX:
        table.clear()
    table[key] = value


def _is_set(value: object) -> bool:
    return value is not None and value != ""


def int_of(value: object) -> int | None:
    """An integer, or None. Integral text is accepted: kwok renders exit codes from strings."""
    if type(value) is int or value is None:  # the usual cases first (a bool is not an int here)
        return value
    if isinstance(value, bool):  # bool is an int subclass; True is not exit code 1
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value)
    return None


def _count(raw: Mapping[str, object], key: str) -> int:
    return count_of(raw.get(key))


def count_of(value: object) -> int:
    """A count: a non-negative integer (integral text accepted), 0 for anything else."""
    if type(value) is int:
        return value if value > 0 else 0
    return max(int_of(value) or 0, 0)


def positive_of(value: object) -> int | None:
    number = int_of(value)
    return number if number is not None and number > 0 else None
