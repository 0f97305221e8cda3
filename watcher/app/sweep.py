"""`kube-dlq sweep`: one pass over the cluster, then exit (the seed's periodic CronJob).

Lists Nodes, Jobs, their pods and Events, feeds them through the same pipeline as the daemon
(settle time zero), and writes an outcome for every failed or stuck Job in scope that has
none yet. The sink's per-uid marker makes it safe to run beside the daemon or twice.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes_asyncio import client
from redis.asyncio import Redis
from structlog.typing import FilteringBoundLogger

from watcher.adapters.kube import watch
from watcher.adapters.kube.api import KubeAPI
from watcher.adapters.redis.store import RedisStore
from watcher.core.classify import ClassifyRules
from watcher.core.settings import Settings
from watcher.kit.metrics import Metrics
from watcher.service.handler import FailureHandler
from watcher.service.pipeline import Pipeline, PipelineSettings, Scope


@dataclass(frozen=True, slots=True)
class SweepResult:
    jobs_seen: int
    failures_found: int
    written: int
    already_handled: int
    unwritten: int


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def sweep(
    config: Settings,
    api: client.ApiClient,
    redis: Redis,
    *,
    metrics: Metrics,
    logger: FilteringBoundLogger,
    progress: Callable[[str], None] = _stderr,
) -> SweepResult:
    kube = KubeAPI(api, request_timeout_s=config.kubernetes.request_timeout_s)
    handler = FailureHandler(
        sink=RedisStore(redis, config.redis, cluster_name=config.cluster_name),
        base_policy=config.retry,
        rules=ClassifyRules(io_timeout_patterns=config.classify.io_timeout_patterns),
        cluster_name=config.cluster_name,
        metrics=metrics,
        logger=logger,
        rng=random.Random(),
    )
    scope = Scope(
        namespaces=frozenset(config.scope.namespaces), opt_in=config.scope.jobs == "opt-in"
    )
    pipeline = Pipeline(
        handler=handler,
        scope=scope,
        metrics=metrics,
        logger=logger,
        settings=PipelineSettings(
            settle_s=0.0,
            evidence_wait_s=0.0,  # everything there is was just listed
            stuck_pending_after_s=config.classify.stuck_pending_after_s,
        ),
    )
    pipeline.fetch_job = kube.get_job
    pipeline.stuck_deleter = kube.delete_job

    started = time.monotonic()
    feeds = (
        (watch.NODES, pipeline.on_node),
        (watch.JOBS, pipeline.on_job),
        (watch.JOB_PODS, pipeline.on_pod),
        (watch.EVENTS, pipeline.on_event),
    )
    jobs_seen = 0
    for resource, on_object in feeds:
        query = {"labelSelector": resource.label_selector} if resource.label_selector else {}
        listed = await kube.list_raw(resource.path, **query)
        items = listed["items"]
        progress(f"listed {len(items)} {resource.name}")
        if resource is watch.JOBS:
            jobs_seen = len(items)
        for item in items:
            on_object("ADDED", item)
    pipeline.check_stuck()
    failures = pipeline.pending
    progress(f"{failures} failed or stuck Job(s) in scope to handle")

    pipeline.ready.set()
    stop = asyncio.Event()
    stop.set()  # drain what is due, then return
    await pipeline.run_writer(stop)
    result = SweepResult(
        jobs_seen, failures, pipeline.written, pipeline.already_handled, pipeline.pending
    )
    progress(
        f"sweep done in {time.monotonic() - started:.1f}s: {result.written} written, "
        f"{result.already_handled} already handled, {result.unwritten} not written"
    )
    return result
