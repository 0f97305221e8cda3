"""A standby's queue of failures shrinks as the leader writes their outcomes (real Redis)."""

from __future__ import annotations

import random

import pytest
import structlog

from tests.support.fakes import FakeJobs
from tests.support.objects import raw_job
from watcher.adapters.redis.store import RedisStore
from watcher.core.model import DeadLetter, FailureClass, JobRef
from watcher.core.settings import Settings
from watcher.kit.metrics import Metrics
from watcher.service.handler import FailureHandler
from watcher.service.pipeline import Pipeline

pytestmark = pytest.mark.redis


async def test_standby_drops_queued_failures_the_leader_already_wrote(store: RedisStore) -> None:
    # Given a standby whose pipeline queued two failed Jobs (its writer is not running)
    metrics = Metrics()
    settings = Settings(cluster_name="it")
    jobs = FakeJobs()
    handler = FailureHandler(
        store=store, jobs=jobs, policy=settings.retry, classify=settings.classify,
        cluster_name="it", metrics=metrics, logger=structlog.get_logger(), rng=random.Random(0),
    )  # fmt: skip
    pipeline = Pipeline(
        handler=handler, jobs=jobs, scope=settings.scope, classify=settings.classify,
        settings=settings.pipeline, limits=settings.limits, metrics=metrics,
        logger=structlog.get_logger(),
    )  # fmt: skip
    pipeline.on_job("ADDED", raw_job(name="written", uid="uid-written"))
    pipeline.on_job("ADDED", raw_job(name="not-yet", uid="uid-not-yet"))
    assert pipeline.pending == 2

    # When the leader has written the outcome of one of them
    await store.dead_letter(DeadLetter(
        queue="default", job=JobRef("batch", "written", "uid-written"),
        failure_class=FailureClass.APP_ERROR, reason="exit 1", attempts=1, failed_at=0.0,
        cluster="it",
    ))  # fmt: skip

    # Then pruning drops exactly that one, and keeps the other for a takeover
    assert await pipeline.prune_handled(store.handled) == 1
    assert pipeline.pending == 1
    assert pipeline.correlator.job("uid-written") is None
    assert pipeline.correlator.job("uid-not-yet") is not None
    assert await pipeline.prune_handled(store.handled) == 0
