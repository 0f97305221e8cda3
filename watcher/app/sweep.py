"""`kube-dlq sweep`: one pass over the cluster, then exit (the seed's periodic CronJob).

Lists Nodes, Jobs, their pods and Events, feeds them through the same pipeline as the daemon
(settle time zero), and writes an outcome for every failed or stuck Job in scope that has
none yet. The sink's per-uid marker makes it safe to run beside the daemon or twice. Its list
of Jobs is complete, so afterwards it forgets the markers of Jobs gone from the API
(`watcher.service.markers`), in its scope.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from watcher.adapters.kube import watch
from watcher.adapters.kube.connect import connect
from watcher.adapters.kube.namespaces import namespaces_matching
from watcher.adapters.kube.request import KubeClient
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.store import RedisStore
from watcher.app.components import build
from watcher.app.sealing import build_seal
from watcher.core.errors import SinkError
from watcher.core.settings import Settings
from watcher.kit.logs import get_logger
from watcher.kit.metrics import Metrics
from watcher.service.markers import MarkerSweeper, marker_scope


@dataclass(frozen=True, slots=True)
class SweepResult:
    jobs_seen: int
    failures_found: int
    written: int
    already_handled: int
    unwritten: int
    markers_forgotten: int = 0
    """Outcome markers of Jobs the list showed gone from the API, now set to expire."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def sweep(
    settings: Settings,
    *,
    kube: KubeClient,
    store: RedisStore,
    metrics: Metrics,
    logger: FilteringBoundLogger,
    progress: Callable[[str], None] = _stderr,
) -> SweepResult:
    # Everything there is was just listed: no settle time, no wait for late evidence, and no
    # pods to read again.
    at_once = dataclasses.replace(settings.pipeline, settle_s=0.0, evidence_wait_s=0.0)
    pipeline = build(
        settings,
        kube=kube,
        store=store,
        metrics=metrics,
        logger=logger,
        pipeline=at_once,
        read_pods=False,
    ).pipeline

    await _warn_if_not_durable(store, logger, progress)
    selector = settings.scope.namespace_label_selector
    if selector:
        # The same scope as the daemon's: without this list every namespace would be swept.
        pipeline.selected_namespaces = await namespaces_matching(kube, selector)
        progress(f"{len(pipeline.selected_namespaces)} namespace(s) match {selector!r}")

    markers = MarkerSweeper(store, metrics=metrics, logger=logger)
    await markers.before_list()  # before the Jobs are listed: see watcher.service.markers

    started = time.monotonic()
    feeds = (
        (watch.NODES, pipeline.on_node),
        (watch.JOBS, pipeline.on_job),
        (watch.JOB_PODS, pipeline.on_pod),
        (watch.EVENTS, pipeline.on_event),
    )
    jobs_seen = 0
    job_uids: set[str] = set()
    for resource, on_object in feeds:
        items = await kube.list_all(
            resource.path, what=f"listing {resource.name}", query=resource.selectors()
        )
        progress(f"listed {len(items)} {resource.name}")
        if resource is watch.JOBS:
            jobs_seen = len(items)
            job_uids = {str((item.get("metadata") or {}).get("uid") or "") for item in items}
        for item in items:
            on_object("ADDED", item)
    pipeline.check_stuck()
    failures = pipeline.pending
    progress(f"{failures} failed or stuck Job(s) in scope to handle")

    pipeline.ready.set()
    stop = asyncio.Event()
    stop.set()  # drain what is due, then return
    await pipeline.run_writer(stop)
    forgot = await markers.after_list(
        job_uids, marker_scope(settings.scope, pipeline.selected_namespaces)
    )
    result = SweepResult(
        jobs_seen,
        failures,
        pipeline.written,
        pipeline.already_handled,
        pipeline.pending,
        forgot.forgotten if forgot is not None else 0,
    )
    progress(
        f"sweep done in {time.monotonic() - started:.1f}s: {result.written} written, "
        f"{result.already_handled} already handled, {result.unwritten} not written, "
        f"{result.markers_forgotten} outcome markers of Jobs gone forgotten"
    )
    return result


async def _warn_if_not_durable(
    store: RedisStore, logger: FilteringBoundLogger, progress: Callable[[str], None]
) -> None:
    """Say so when what the sweep writes may not survive a Redis restart (as the daemon does)."""
    try:
        durability = await store.durability()
    except SinkError as exc:
        logger.warning("redis_durability_unknown", error=str(exc))
        return
    if not durability.durable:
        logger.warning("redis_not_durable", missing=list(durability.missing))
        progress("warning: redis is not durable: " + "; ".join(durability.missing))


async def run_sweep(settings: Settings) -> int:
    """`kube-dlq sweep`: 0 when every failure found was written, 1 otherwise."""
    seal = build_seal(settings.security)  # before connecting: no keys, no start (exit 2)
    kube = await connect(settings.kubernetes)
    redis = redis_client(settings.redis)
    try:
        store = RedisStore(redis, settings.redis, cluster_name=settings.cluster_name, seal=seal)
        result = await sweep(
            settings, kube=kube, store=store, metrics=Metrics(), logger=get_logger()
        )
    finally:
        await redis.aclose()
        await kube.close()
    return 0 if result.unwritten == 0 else 1
