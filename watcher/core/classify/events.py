"""Rules that read the pod's own Events: disruptions, and start-up trouble of a pod that never ran.

TaintManagerEviction, Preempted and Evicted Events (5); image pull (9), FailedMount (10) and
I/O timeout (11) Warnings, numbered as in the order of `watcher.core.classify`. Events come after
status because they expire and are lossy; they rescue cases whose status is gone. Start-up
Events are ignored once a container has run: what happened after explains the failure better.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from watcher.core.classify.containers import never_ran
from watcher.core.classify.evidence import classified_as, event_evidence
from watcher.core.classify.facts import Facts
from watcher.core.classify.patterns import matched_part
from watcher.core.model import Classification, EventRecord, FailureClass, PodSnapshot

__all__ = [
    "by_disruption_event",
    "by_failed_mount",
    "by_image_pull_event",
    "by_io_timeout_event",
]


def _startup_event(
    pod: PodSnapshot, facts: Facts, wanted: Callable[[EventRecord], bool]
) -> EventRecord | None:
    """The first wanted Warning Event about `pod`, if no container of it ever ran."""
    if not never_ran(pod):
        return None
    events = facts.events("Pod", pod.name)
    return next((e for e in events if e.type == "Warning" and wanted(e)), None)


_EVENT_DISRUPTIONS: tuple[tuple[str, FailureClass, str], ...] = (
    ("TaintManagerEviction", FailureClass.NODE_LOST, "was deleted by the taint manager"),
    ("Preempted", FailureClass.PREEMPTED, "was preempted"),
    ("Evicted", FailureClass.EVICTED, "was evicted by the kubelet"),
)


def by_disruption_event(pod: PodSnapshot, facts: Facts) -> Classification | None:
    events = facts.events("Pod", pod.name)
    for reason, cls, what in _EVENT_DISRUPTIONS:
        for event in events:
            # The taint manager also reports "Cancelling deletion" when a taint goes away.
            if event.reason == reason and not event.message.startswith("Cancelling"):
                return classified_as(cls, f"pod {pod.name} {what}", event_evidence(event))
    return None


_IMAGE_PULL_EVENT_REASONS = frozenset({"Failed", "BackOff", "InspectFailed", "ErrImageNeverPull"})
_IMAGE_PULL_TEXT = re.compile(
    r"pull(?:ing)? image|ErrImagePull|ImagePullBackOff|InvalidImageName", re.IGNORECASE
)


def _is_pull_failure(e: EventRecord) -> bool:
    if e.reason not in _IMAGE_PULL_EVENT_REASONS:
        return False
    return _IMAGE_PULL_TEXT.search(matched_part(e.message)) is not None


def by_image_pull_event(pod: PodSnapshot, facts: Facts) -> Classification | None:
    event = _startup_event(pod, facts, _is_pull_failure)
    if event is None:
        return None
    return classified_as(
        FailureClass.IMAGE_PULL, f"pod {pod.name} could not pull an image", event_evidence(event)
    )


def by_failed_mount(pod: PodSnapshot, facts: Facts) -> Classification | None:
    io_timeout = facts.rules.io_timeout_in
    event = _startup_event(
        pod, facts, lambda e: e.reason == "FailedMount" and not io_timeout(e.message)
    )
    if event is None:
        return None
    return classified_as(
        FailureClass.CONFIG_ERROR,
        f"pod {pod.name} could not mount a volume",
        event_evidence(event),
    )


def by_io_timeout_event(pod: PodSnapshot, facts: Facts) -> Classification | None:
    io_timeout = facts.rules.io_timeout_in
    event = _startup_event(pod, facts, lambda e: io_timeout(e.message))
    if event is None:
        return None
    return classified_as(
        FailureClass.IO_TIMEOUT,
        f"pod {pod.name} could not start: {event.reason} timed out",
        event_evidence(event),
    )
