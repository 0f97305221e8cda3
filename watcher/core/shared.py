"""One copy of each repeated value among the projections the correlator keeps.

At 100,000 tracked Jobs and pods most of what a quiet pod or Job holds repeats from one
object to the next: namespaces, node names, phases, label keys, condition tuples
(Initialized/Ready/ContainersReady/PodScheduled, all "True"), a running container's outcome,
creation seconds. Each projection decoded from a watch line holds its own copies of them.
`Shared` rebuilds a projection with those parts replaced by one shared, equal instance, so a
tracked pair costs only what is unique to it (names, uids). The values are equal to what they
replace: nothing a stage reads changes, only how many copies exist.

Bounded on hostile input: strings are interned with `sys.intern` (CPython drops an interned
string once nothing else holds it), only up to `MAX_SHARED_CHARS`; composite values (tuples,
conditions, container outcomes) and floats are kept in tables of at most `max_values` entries
each, emptied when full, and only when every string in them is that short.

Pure: no I/O.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable
from typing import Final, TypeVar, cast

from watcher.core.model import (
    Condition,
    ContainerOutcome,
    JobRef,
    JobSnapshot,
    OwnerRef,
    PodSnapshot,
)

__all__ = ["MAX_SHARED_CHARS", "MAX_SHARED_VALUES", "Shared"]

MAX_SHARED_CHARS: Final = 256
"""Longer strings (messages, big annotation values) are kept as they are, never shared."""
MAX_SHARED_VALUES: Final = 16_384
"""Entries per table of shared composite values (tuples, floats) before it is emptied."""

_T = TypeVar("_T", bound=Hashable)
_Pairs = tuple[tuple[str, str], ...]


def _s(text: str) -> str:
    """`text` interned when it is a short exact str (a subclass cannot be interned)."""
    return sys.intern(text) if len(text) <= MAX_SHARED_CHARS and type(text) is str else text


def _small_condition(c: Condition) -> bool:
    return max(len(c.message), len(c.reason), len(c.type), len(c.status)) <= MAX_SHARED_CHARS


def _small_owner(o: OwnerRef) -> bool:
    return max(len(o.kind), len(o.name), len(o.uid)) <= MAX_SHARED_CHARS


def _small_container(c: ContainerOutcome) -> bool:
    longest = max(
        len(c.name),
        len(c.terminated_reason),
        len(c.terminated_message),
        len(c.waiting_reason),
        len(c.waiting_message),
    )
    return longest <= MAX_SHARED_CHARS


class Shared:
    """The tables of shared values; one per correlator."""

    def __init__(self, max_values: int = MAX_SHARED_VALUES) -> None:
        self.max_values = max_values
        self._values: dict[Hashable, Hashable] = {}
        """Tuples and frozen dataclasses (never equal to each other)."""
        self._floats: dict[float, float] = {}
        """Apart: 1.0 == 1 == True, and a float must stay a float."""

    def _one(self, value: _T) -> _T:
        got = self._values.get(value)
        if got is not None:
            return cast(_T, got)
        return self._keep(value)

    def _keep(self, value: _T) -> _T:
        if len(self._values) >= self.max_values:
            self._values.clear()  # what already shares a value keeps it; new ones start over
        self._values[value] = value
        return value

    def _small_tuple(self, value: tuple[_T, ...], small: Callable[[_T], bool]) -> tuple[_T, ...]:
        """`tuple_of` for tuples kept only when every item is `small`: a hit was small when
        it was kept, so the check runs on misses only."""
        if not value:
            return ()
        got = self._values.get(value)
        if got is not None:
            return cast(tuple[_T, ...], got)
        if not all(small(item) for item in value):
            return value
        return self._keep(value)

    def tuple_of(self, value: tuple[_T, ...]) -> tuple[_T, ...]:
        """The shared instance of a tuple of hashable values equal to `value`."""
        if not value:
            return ()
        return self._one(value)

    def time(self, value: float | None) -> float | None:
        """Creation times are whole seconds: many objects share one."""
        if value is None or type(value) is not float:
            return value
        got = self._floats.get(value)
        if got is not None:
            return got
        if len(self._floats) >= self.max_values:
            self._floats.clear()
        self._floats[value] = value
        return value

    def pairs(self, pairs: _Pairs, *, name: str, uid: str) -> _Pairs:
        """Labels or annotations: keys and short values interned, pairs shared, a value equal
        to the object's own name or uid replaced by that string."""
        if not pairs:
            return ()
        out: list[tuple[str, str]] = []
        whole = True
        for key, value in pairs:
            if len(key) > MAX_SHARED_CHARS or len(value) > MAX_SHARED_CHARS:
                out.append((key, value))
                whole = False
            elif value in (uid, name):
                out.append((_s(key), uid if value == uid else name))
                whole = False
            else:
                out.append(self._one((_s(key), _s(value))))
        return self.tuple_of(tuple(out)) if whole else tuple(out)

    def conditions(self, conditions: tuple[Condition, ...]) -> tuple[Condition, ...]:
        return self._small_tuple(conditions, _small_condition)

    def containers(self, containers: tuple[ContainerOutcome, ...]) -> tuple[ContainerOutcome, ...]:
        return self._small_tuple(containers, _small_container)

    def pod(self, pod: PodSnapshot, previous: PodSnapshot | None = None) -> PodSnapshot:
        """`pod` with its repeated parts shared (an equal PodSnapshot). `previous`, the same
        pod's last kept version, lends its parts where they are equal (an update: cheaper
        than looking them up again)."""
        conditions, containers = pod.conditions, pod.containers
        if previous is not None and previous.conditions == conditions:
            conditions = previous.conditions
        else:
            conditions = self.conditions(conditions)
        if previous is not None and previous.containers == containers:
            containers = previous.containers
        else:
            containers = self.containers(containers)
        return PodSnapshot(
            name=pod.name,
            uid=pod.uid,
            phase=_s(pod.phase),
            reason=_s(pod.reason),
            message=pod.message,
            node_name=_s(pod.node_name),
            deleted=pod.deleted,
            conditions=conditions,
            containers=containers,
            created_at=self.time(pod.created_at),
            completion_index=_s(pod.completion_index),
        )

    def job(self, job: JobSnapshot, previous: JobSnapshot | None = None) -> JobSnapshot:
        """`job` with its repeated parts shared (an equal JobSnapshot); `previous` as for
        `pod`."""
        ref = job.ref
        name, uid = ref.name, ref.uid
        owner, labels, annotations = job.owner, job.labels, job.annotations
        if previous is not None and previous.ref == ref:
            ref = previous.ref
            if previous.labels == labels:
                labels = previous.labels
            else:
                labels = self.pairs(labels, name=name, uid=uid)
            if previous.annotations == annotations:
                annotations = previous.annotations
            else:
                annotations = self.pairs(annotations, name=name, uid=uid)
            if previous.owner == owner:
                owner = previous.owner
        else:
            ref = JobRef(namespace=_s(ref.namespace), name=name, uid=uid)
            labels = self.pairs(labels, name=name, uid=uid)
            annotations = self.pairs(annotations, name=name, uid=uid)
        if owner is not None and (previous is None or owner is not previous.owner):
            owner = self._one(owner) if _small_owner(owner) else owner
        conditions = job.conditions
        if previous is not None and previous.conditions == conditions:
            conditions = previous.conditions  # an update that left them: no lookup again
        else:
            conditions = self.conditions(conditions)
        return JobSnapshot(
            ref=ref,
            owner=owner,
            labels=labels,
            annotations=annotations,
            conditions=conditions,
            active=job.active,
            failed=job.failed,
            succeeded=job.succeeded,
            has_pod_failure_policy=job.has_pod_failure_policy,
            created_at=self.time(job.created_at),
        )

    def namespace(self, namespace: str) -> str:
        return _s(namespace)
