"""Deciding early must not change a classification: the captured corpus through the Pipeline.

The pipeline classifies a failed Job as soon as its failed pods are in (no settle time). Each
file in tests/data/captured is one failure recorded on the local control plane as the watch
events arrived; replayed in that order through the whole Pipeline, the writer running after
every event, each failed Job must get the class the recording expects, exactly as the
classifier gives it with every event of the recording in (tests/unit/test_classify_captured.py).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.support.capture import load, stored
from tests.support.fakes import FakeClock, FakeJobs, FakePods, FakeStore
from watcher.core import snapshot
from watcher.core.settings import Settings
from watcher.kit.metrics import Metrics
from watcher.service.handler import FailureHandler
from watcher.service.pipeline import Pipeline

CAPTURED = Path(__file__).resolve().parents[1] / "data" / "captured"
FAILED = [
    path
    for path in stored(CAPTURED)
    if any(
        e["resource"] == "jobs"
        and snapshot.job_snapshot(e["object"]).condition("Failed") is not None
        for e in load(path)["watch"]
    )
]


def pipeline_on(store: FakeStore, captured_at: float) -> Pipeline:
    settings = Settings(cluster_name="captured")
    clock = FakeClock(captured_at)
    metrics = Metrics()
    logger = structlog.get_logger()
    handler = FailureHandler(
        store=store, jobs=FakeJobs(), policy=settings.retry, classify=settings.classify,
        cluster_name=settings.cluster_name, metrics=metrics, logger=logger, clock=clock,
        rng=random.Random(0),
    )  # fmt: skip
    pipeline = Pipeline(
        handler=handler, jobs=FakeJobs(), pods=FakePods(), scope=settings.scope,
        classify=settings.classify, settings=settings.pipeline, limits=settings.limits,
        metrics=metrics, logger=logger, clock=clock, sleep=clock.sleep_or_stop,
    )  # fmt: skip
    pipeline.ready.set()
    return pipeline


def feed(pipeline: Pipeline, entry: dict[str, Any]) -> None:
    on = {
        "jobs": pipeline.on_job,
        "pods": pipeline.on_pod,
        "events": pipeline.on_event,
        "nodes": pipeline.on_node,
    }
    on[entry["resource"]](entry["type"], entry["object"])


@pytest.mark.parametrize("path", FAILED, ids=[p.stem for p in FAILED])
async def test_failed_job_decided_as_soon_as_possible_keeps_its_captured_class(
    path: Path,
) -> None:
    # Given a recorded failure, its watch events in arrival order
    record = load(path)
    store = FakeStore()
    captured_at = snapshot.parse_time(record["captured_at"]) or 0.0
    pipeline = pipeline_on(store, captured_at)
    stop = asyncio.Event()
    stop.set()

    # When each event is delivered and the writer runs after each one, no time passing
    for entry in record["watch"]:
        feed(pipeline, entry)
        await pipeline.run_writer(stop)
        if store.dead_letters or store.tickets:
            break

    # Then the Job is decided before the recording ends, with the class it expects
    decided = [d.failure_class.value for d in store.dead_letters] + [
        t.failure_class.value for t in store.tickets
    ]
    assert decided == [record["expected_class"]]
