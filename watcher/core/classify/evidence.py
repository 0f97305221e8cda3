"""Evidence text: one line per signal, naming the object and what it showed.

For example "pod p-1: DisruptionTarget reason=DeletionByTaintManager". Messages are clipped to
one line of 160 characters; termination messages keep their end, where logs put the error.
"""

from __future__ import annotations

from watcher.core.model import (
    Classification,
    Condition,
    ContainerOutcome,
    EventRecord,
    FailureClass,
    PodSnapshot,
)

__all__ = [
    "classified_as",
    "clip",
    "condition_evidence",
    "container_evidence",
    "container_label",
    "event_evidence",
    "with_message",
]

_CLIP = 160


def clip(text: str, *, tail: bool = False) -> str:
    """One line of at most _CLIP characters; `tail` keeps the end, where logs put the error."""
    # Slice before splitting: termination messages can be 4 KiB.
    text = " ".join((text[-2 * _CLIP :] if tail else text[: 2 * _CLIP]).split())
    if len(text) <= _CLIP:
        return text
    return "…" + text[1 - _CLIP :] if tail else text[: _CLIP - 1] + "…"


def with_message(text: str, message: str, *, tail: bool = False) -> str:
    return f"{text} message={clip(message, tail=tail)!r}" if message else text


def container_label(c: ContainerOutcome) -> str:
    return f"{'init container' if c.init else 'container'} {c.name or '<unnamed>'}"


def container_evidence(pod: PodSnapshot, c: ContainerOutcome) -> str:
    if c.waiting_reason and c.exit_code is None:
        text = f"{container_label(c)} waiting reason={c.waiting_reason}"
        return f"pod {pod.name}: {with_message(text, c.waiting_message)}"
    text = f"{container_label(c)} terminated reason={c.terminated_reason or '-'}"
    text += f" exitCode={c.exit_code}"
    if c.signal:
        text += f" signal={c.signal}"
    return f"pod {pod.name}: {with_message(text, c.terminated_message, tail=True)}"


def event_evidence(event: EventRecord) -> str:
    text = f"event {event.involved_kind}/{event.involved_name}: {event.reason}"
    if event.count > 1:
        text += f" (x{event.count})"
    return with_message(text, event.message)


def condition_evidence(owner: str, c: Condition) -> str:
    return with_message(f"{owner}: {c.type} reason={c.reason or '-'}", c.message)


def classified_as(cls: FailureClass, reason: str, *evidence: str) -> Classification:
    return Classification(failure_class=cls, reason=reason, evidence=evidence)
