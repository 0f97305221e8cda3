"""What every rule reads: the report, the rules, and the report's Events indexed by object.

A pod rule is ``(pod, facts) -> Classification | None``; the table that orders them is
``POD_RULES`` in `watcher.core.classify.jobs`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from watcher.core.classify.patterns import ClassifyRules
from watcher.core.model import Classification, Condition, EventRecord, FailureReport, PodSnapshot

__all__ = ["Facts", "PodRule"]


@dataclass(frozen=True, slots=True)
class Facts:
    """A report plus the lookups every rule needs, built once per `classify` call."""

    report: FailureReport
    rules: ClassifyRules
    events_by_object: Mapping[tuple[str, str], tuple[EventRecord, ...]]

    @classmethod
    def of(cls, report: FailureReport, rules: ClassifyRules) -> Facts:
        index: dict[tuple[str, str], list[EventRecord]] = {}
        for event in report.events:
            index.setdefault((event.involved_kind, event.involved_name), []).append(event)
        return cls(report, rules, {key: tuple(found) for key, found in index.items()})

    def events(self, kind: str, name: str) -> tuple[EventRecord, ...]:
        return self.events_by_object.get((kind, name), ()) if name else ()

    def job_failure(self) -> Condition | None:
        """The Job's Failed condition, or FailureTarget (1.31+) while pods are still stopping."""
        job = self.report.job
        return job.condition("Failed") or job.condition("FailureTarget")


PodRule = Callable[[PodSnapshot, Facts], Classification | None]
