"""Wiring shared by the daemon and the one-shot sweep: the pipeline and what it is built on.

Both turn failed Jobs into outcomes the same way, so both get their pipeline here, each part
given its own settings section and its collaborators at construction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from watcher.adapters.kube.jobs import JobsAPI
from watcher.adapters.kube.pods import PodsAPI
from watcher.adapters.kube.request import KubeClient
from watcher.adapters.redis.store import RedisStore
from watcher.core.settings import PipelineSettings, Settings
from watcher.kit.metrics import Metrics
from watcher.service.handler import FailureHandler
from watcher.service.pipeline import Pipeline
from watcher.service.ports import JobsPort
from watcher.service.redrive_settle import RedriveSettler
from watcher.service.scope import ScopedJobs, namespace_allowed

__all__ = ["Components", "build"]


@dataclass(frozen=True, slots=True)
class Components:
    jobs: JobsPort
    """Creates and deletes only in namespaces within scope (`ScopedJobs`), reads anywhere."""
    handler: FailureHandler
    pipeline: Pipeline
    redrive: RedriveSettler
    """Settles redriven Jobs: failed ones through the handler's hook, completed ones when the
    daemon runs it (docs/redrive.md)."""


def build(
    settings: Settings,
    *,
    kube: KubeClient,
    store: RedisStore,
    metrics: Metrics,
    logger: FilteringBoundLogger,
    pipeline: PipelineSettings | None = None,
    read_pods: bool = True,
) -> Components:
    """The pipeline for `settings`; `pipeline` replaces the settings' own section (the sweep
    classifies at once: everything there is was just listed, so it has no pods to read
    again either: `read_pods` False)."""

    def selected() -> frozenset[str] | None:
        return pipeline_.selected_namespaces  # refreshed by the daemon; read at each call

    jobs = ScopedJobs(
        JobsAPI(kube), scope=settings.scope, selected=selected, metrics=metrics, logger=logger
    )
    handler = FailureHandler(
        store=store,
        jobs=jobs,
        policy=settings.retry,
        classify=settings.classify,
        cluster_name=settings.cluster_name,
        metrics=metrics,
        logger=logger,
        rng=random.Random(),
    )
    pipeline_ = Pipeline(
        handler=handler,
        jobs=jobs,
        pods=PodsAPI(kube) if read_pods else None,
        scope=settings.scope,
        classify=settings.classify,
        settings=pipeline or settings.pipeline,
        limits=settings.limits,
        metrics=metrics,
        logger=logger,
    )
    redrive = RedriveSettler(
        store=store,
        jobs=jobs,
        rules=handler.rules,
        in_scope=lambda ns: namespace_allowed(ns, settings.scope, pipeline_.selected_namespaces),
        logger=logger,
    )
    handler.redrive = redrive
    return Components(jobs=jobs, handler=handler, pipeline=pipeline_, redrive=redrive)
