"""A malformed kube-dlq.io/ annotation is reported once per failed Job, however often its
outcome write is attempted (Redis down) or replayed (restart, relist, another replica)."""

from __future__ import annotations

import random

import pytest
import structlog

from watcher.adapters.redis.store import WriteResult
from watcher.core.classify import ClassifyRules
from watcher.core.errors import PolicyError, SinkError
from watcher.core.model import (
    Action,
    Condition,
    ContainerOutcome,
    DeadLetter,
    FailureReport,
    JobRef,
    JobSnapshot,
    PodSnapshot,
)
from watcher.core.policy import RetryPolicy
from watcher.kit.metrics import Metrics
from watcher.service.handler import FailureHandler

WRITTEN = WriteResult(True, Action.DEAD_LETTER, "default/1-0")
ALREADY = WriteResult(False, Action.DEAD_LETTER, "default/1-0")
DOWN = SinkError("redis dead_letter failed: ConnectionError")


class ScriptedSink:
    """Answers each dead_letter call with the next scripted result (or raises it)."""

    def __init__(self, *results: WriteResult | SinkError) -> None:
        self.results = list(results)
        self.calls = 0

    async def dead_letter(self, letter: DeadLetter) -> WriteResult:
        self.calls += 1
        result = self.results.pop(0)
        if isinstance(result, SinkError):
            raise result
        return result


def failed_report(annotations: tuple[tuple[str, str], ...]) -> FailureReport:
    job = JobSnapshot(
        ref=JobRef("batch", "cleanup", "job-uid"),
        annotations=annotations,
        conditions=(Condition("Failed", "True", "BackoffLimitExceeded"),),
        failed=1,
    )
    pod = PodSnapshot(
        name="cleanup-x",
        uid="pod-uid",
        phase="Failed",
        containers=(ContainerOutcome("main", exit_code=3, terminated_reason="Error"),),
    )
    return FailureReport(job=job, pods=(pod,))


MALFORMED = (("kube-dlq.io/max-retries", "lots"),)


async def attempts(
    results: tuple[WriteResult | SinkError, ...],
    annotations: tuple[tuple[str, str], ...] = MALFORMED,
) -> tuple[list[str], float]:
    """Handle one failed Job until a write returns; (keys reported, malformed metric)."""
    reported: list[str] = []
    metrics = Metrics()

    async def report(_: FailureReport, error: PolicyError) -> None:
        reported.append(error.key)

    handler = FailureHandler(
        sink=ScriptedSink(*results),  # type: ignore[arg-type]
        base_policy=RetryPolicy(),
        rules=ClassifyRules(),
        cluster_name="test",
        metrics=metrics,
        logger=structlog.get_logger(),
        on_policy_error=report,
        rng=random.Random(0),
    )
    for result in results:
        try:
            outcome = await handler.handle(failed_report(annotations=annotations), {})
        except SinkError:
            assert isinstance(result, SinkError)
            continue
        assert outcome.classification.failure_class.value == "app_error"
    count = metrics.registry.get_sample_value(
        "kube_dlq_malformed_input_total", {"source": "annotation"}
    )
    return reported, count or 0.0


CASES = {
    "written at once": ((WRITTEN,), 1),
    "written after Redis was down twice": ((DOWN, DOWN, WRITTEN), 1),
    "a replay of a Job another writer handled": ((ALREADY,), 0),
    "a timed-out write that landed after all": ((DOWN, ALREADY), 1),
}


@pytest.mark.parametrize(("results", "reports"), CASES.values(), ids=list(CASES))
async def test_malformed_annotation_is_reported_once_by_whoever_wrote_the_outcome(
    results: tuple[WriteResult | SinkError, ...], reports: int
) -> None:
    reported, metric = await attempts(results)
    assert reported == ["kube-dlq.io/max-retries"] * reports
    assert metric == reports


async def test_unreadable_history_annotation_is_reported_and_lineage_restarts() -> None:
    # Given a retried Job whose kube-dlq.io/history annotation was mangled by hand
    mangled = (("kube-dlq.io/attempt", "2"), ("kube-dlq.io/history", "{not json"))

    # When it fails and its outcome is written
    reported, metric = await attempts((WRITTEN,), annotations=mangled)

    # Then the bad annotation is reported like any malformed kube-dlq.io/ annotation
    assert reported == ["kube-dlq.io/history"]
    assert metric == 1
