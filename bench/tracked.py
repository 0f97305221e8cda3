"""What the daemon holds per tracked Job and Running Pod, measured without a cluster.

    .venv/bin/python -m bench.tracked [--n 100000] [--top 15] [--churn 0] [--json PATH]

(run from the repository root, as a module). Builds N Jobs and N Running Pods shaped as the
local control plane serves them (the bench/loader_objects.py pairs: a Job with its labels, a
Pod owned by it on one of 50 kwok nodes, Running, four conditions, one running container),
each one decoded from its own JSON text as a watch line is, and feeds them through the
daemon's `Pipeline` (`on_job`, `on_pod`), its limits raised to hold them all. tracemalloc
counts what stays allocated afterwards: bytes per Job+Pod pair, and the source lines that
hold the most.

With ``--churn K``, K pairs are then replaced as bench/memory.py's churn does (the oldest
Job DELETED, then its Pod DELETED, as the garbage collector does after it, then a new pair
ADDED), and what the heap grew by is reported per replaced pair: at a constant object count
it should be none.

This is the Python heap only; the daemon's RSS per pair (bench/memory.py) adds allocator
overhead and fragmentation on top.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import tracemalloc
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from tests.support.fakes import FakeClock, FakeJobs, FakePods, FakeStore
from watcher.core.settings import Settings
from watcher.kit.metrics import Metrics
from watcher.service.handler import FailureHandler
from watcher.service.pipeline import Pipeline

NODES = 50
NAMESPACES = 4
_UIDS = uuid.UUID("5d3f0f4e-2c1b-4d7a-9e8f-6a5b4c3d2e1f")


@dataclass
class Tracked:
    n: int
    bytes_per_pair: float
    total_bytes: int
    tracked_jobs: int
    seconds: float
    top: list[dict[str, Any]] = field(default_factory=list)
    churn: int = 0
    churn_bytes_per_pair: float = 0.0
    """Heap growth over the churn, per pair replaced."""


def job_json(i: int, namespace: str, uid: str) -> str:
    name = f"bench-{i:06d}"
    labels = {
        "app": "bench-memory",
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    }
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "creationTimestamp": "2026-12-02T08:01:53Z",
                "generation": 1,
                "labels": labels,
                "name": name,
                "namespace": namespace,
                "resourceVersion": str(1000 + 3 * i),
                "uid": uid,
            },
            "spec": {
                "backoffLimit": 0,
                "completionMode": "NonIndexed",
                "completions": 1,
                "parallelism": 1,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
                "suspend": False,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [{"name": "main", "image": "registry.invalid/bench:1"}],
                        "restartPolicy": "Never",
                    },
                },
            },
            "status": {
                "active": 1,
                "ready": 1,
                "startTime": "2026-12-02T08:01:53Z",
                "terminating": 0,
                "uncountedTerminatedPods": {},
            },
        }
    )


def pod_json(i: int, namespace: str, job_uid: str, pod_uid: str | None = None) -> str:
    job = f"bench-{i:06d}"
    at = "2026-12-02T08:01:54Z"
    condition = {"lastProbeTime": None, "lastTransitionTime": at, "status": "True"}
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "annotations": {"run-for.stage.kwok.kube-dlq.io/duration": "24h"},
                "creationTimestamp": at,
                "labels": {
                    "app": "bench-memory",
                    "batch.kubernetes.io/controller-uid": job_uid,
                    "batch.kubernetes.io/job-name": job,
                },
                "name": f"{job}-p",
                "namespace": namespace,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "blockOwnerDeletion": True,
                        "controller": True,
                        "kind": "Job",
                        "name": job,
                        "uid": job_uid,
                    }
                ],
                "resourceVersion": str(1001 + 3 * i),
                "uid": pod_uid or str(uuid.UUID(int=random.getrandbits(128), version=4)),
            },
            "spec": {
                "containers": [{"name": "main", "image": "registry.invalid/bench:1"}],
                "nodeName": f"kwok-node-{i % NODES}",
                "restartPolicy": "Never",
            },
            "status": {
                "conditions": [
                    {**condition, "type": t}
                    for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
                ],
                "containerStatuses": [
                    {
                        "image": "registry.invalid/bench:1",
                        "imageID": "",
                        "lastState": {},
                        "name": "main",
                        "ready": True,
                        "restartCount": 0,
                        "started": True,
                        "state": {"running": {"startedAt": at}},
                    }
                ],
                "phase": "Running",
                "podIP": f"10.244.{i // 250 % 250}.{i % 250}",
                "qosClass": "BestEffort",
                "startTime": at,
            },
        }
    )


def pipeline_for(n: int) -> Pipeline:
    """The daemon's Pipeline over fakes, with room for `n` Jobs."""
    settings = Settings(cluster_name="tracked")
    limits = replace(  # as bench/memory.py's tracking_limits: room for every pair
        settings.limits,
        max_tracked_jobs=max(n, settings.limits.max_tracked_jobs),
        max_orphan_pods=max(n, settings.limits.max_orphan_pods),
    )
    clock = FakeClock(time.time())
    metrics = Metrics()
    logger = structlog.get_logger()
    handler = FailureHandler(
        store=FakeStore(), jobs=FakeJobs(), policy=settings.retry, classify=settings.classify,
        cluster_name=settings.cluster_name, metrics=metrics, logger=logger, clock=clock,
        rng=random.Random(0),
    )  # fmt: skip
    return Pipeline(
        handler=handler, jobs=FakeJobs(), pods=FakePods(), scope=settings.scope,
        classify=settings.classify, settings=settings.pipeline, limits=limits,
        metrics=metrics, logger=logger, clock=clock, sleep=clock.sleep_or_stop,
    )  # fmt: skip


def measure(n: int, top: int = 15, churn: int = 0) -> Tracked:
    random.seed(0)
    pipeline = pipeline_for(n)
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    started = time.monotonic()
    for i in range(n):
        _add(pipeline, i)
    seconds = time.monotonic() - started
    gc.collect()
    after = tracemalloc.take_snapshot()
    for i in range(churn):  # the oldest pair out, a new one in
        job, pod = _texts(i)
        pipeline.on_job("DELETED", json.loads(job))
        pipeline.on_pod("DELETED", json.loads(pod))
        _add(pipeline, n + i)
    gc.collect()
    churned = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(d.size_diff for d in churned.compare_to(after, "lineno"))
    diff = after.compare_to(before, "lineno")
    total = sum(d.size_diff for d in diff)
    return Tracked(
        churn=churn,
        churn_bytes_per_pair=grown / churn if churn else 0.0,
        n=n,
        bytes_per_pair=total / n,
        total_bytes=total,
        tracked_jobs=len(pipeline.correlator),
        seconds=seconds,
        top=[
            {
                "where": f"{Path(d.traceback[0].filename).name}:{d.traceback[0].lineno}",
                "bytes_per_pair": d.size_diff / n,
                "blocks_per_pair": d.count_diff / n,
            }
            for d in diff[:top]
        ],
    )


def _texts(i: int) -> tuple[str, str]:
    """Job and Pod of pair `i`, the same text each time (uids derived from `i`), so nothing
    is kept to delete them later."""
    namespace = f"bench-ns-{i % NAMESPACES}"
    uid, pod_uid = (str(uuid.uuid5(_UIDS, f"{i}/{kind}")) for kind in ("job", "pod"))
    return job_json(i, namespace, uid), pod_json(i, namespace, uid, pod_uid)


def _add(pipeline: Pipeline, i: int) -> None:
    """Pair `i` ADDED, each object decoded from its own text."""
    job, pod = _texts(i)
    pipeline.on_job("ADDED", json.loads(job))
    pipeline.on_pod("ADDED", json.loads(pod))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.tracked", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="Job+Pod pairs (100,000)")
    parser.add_argument("--top", type=int, default=15, help="source lines shown")
    parser.add_argument("--churn", type=int, default=0, help="pairs replaced after the load")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    result = measure(args.n, args.top, args.churn)
    print(
        f"{result.n:,} Jobs + {result.n:,} Running Pods, {result.tracked_jobs:,} tracked: "
        f"{result.total_bytes / 2**20:,.1f} MiB held, {result.bytes_per_pair:,.0f} B per pair "
        f"(fed in {result.seconds:.1f} s)"
    )
    for row in result.top:
        per, blocks = row["bytes_per_pair"], row["blocks_per_pair"]
        print(f"  {per:8,.0f} B {blocks:6.2f} blocks  {row['where']}")
    if result.churn:
        print(
            f"churn: {result.churn:,} pairs replaced, the heap grew "
            f"{result.churn_bytes_per_pair:,.0f} B per pair replaced"
        )
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
