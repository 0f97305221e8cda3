"""N Jobs and N Pods that kwok keeps Running, with some Events, created fast.

Why not let the Job controller make the pods: the local controller-manager talks to the
apiserver at client-go's default 20 requests/s, so 100,000 pods would take 80 minutes, and
its pod GC (``--terminated-pod-gc-threshold=1000``) deletes Completed pods beyond 1,000. So
each Job is created suspended, with a manual selector no pod matches (the controller creates
and deletes nothing), and its one Pod is created here: owned by the Job (controller
ownerReference, the ``batch.kubernetes.io/controller-uid`` label the daemon's pod watch
selects on), bound to a kwok node, annotated so kwok's run-for stage keeps it Running. One
Job in ten also gets an Event. All of it over one HTTP session, ``width`` pairs at a time.
The Jobs name another controller in ``spec.managedBy``, so the Job controller leaves them
alone (no status write or Suspended Event per Job while loading).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.loader import Admin

RUN_FOR = "run-for.stage.kwok.kube-dlq.io/duration"
EVENT_EVERY = 10
MANAGED_BY = "bench.kube-dlq.io/loader"
WIDTH = 128
"""Pairs in flight (each a Job POST, then its Pod POST): what the apiserver of the local
control plane absorbs on a shared 2-core machine (64: 65 pairs/s, 128: 140 pairs/s)."""


def suspended_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app": "bench-memory"}},
        "spec": {
            # Not the Job controller's (spec.managedBy, GA in 1.35): it neither syncs the Job
            # nor writes its status or a Suspended Event, one write and one Event per Job less.
            "managedBy": MANAGED_BY,
            "suspend": True,
            "manualSelector": True,
            "selector": {"matchLabels": {"bench.kube-dlq.io/never": name}},
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"bench.kube-dlq.io/never": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "registry.invalid/bench:1"}],
                },
            },
        },
    }


def owned_pod(job: dict[str, Any], node: str) -> dict[str, Any]:
    meta = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-p",
            "labels": {
                "app": "bench-memory",
                "batch.kubernetes.io/controller-uid": meta["uid"],
                "batch.kubernetes.io/job-name": meta["name"],
            },
            "annotations": {RUN_FOR: "24h"},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "registry.invalid/bench:1"}],
        },
    }


def job_event(job: dict[str, Any], namespace: str) -> dict[str, Any]:
    meta = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.bench", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta["uid"],
        },
        "reason": "SuccessfulCreate",
        "message": f"Created pod: {meta['name']}-p",
        "type": "Normal",
        "source": {"component": "bench-loader"},
        "count": 1,
    }


async def create_pair(admin: Admin, namespace: str, name: str, node: str, event: bool) -> bool:
    """One Job, its Pod and maybe an Event; False if any create failed."""
    job = await admin.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", suspended_job(name))
    if job is None:
        return False
    pod = await admin.post(f"/api/v1/namespaces/{namespace}/pods", owned_pod(job, node))
    if event:
        await admin.post(f"/api/v1/namespaces/{namespace}/events", job_event(job, namespace))
    return pod is not None


async def delete_pair(admin: Admin, namespace: str, name: str) -> None:
    """The Job with its Pod (background propagation: the garbage collector takes the Pod)."""
    await admin.delete(
        f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}?propagationPolicy=Background"
    )
    await admin.delete(f"/api/v1/namespaces/{namespace}/pods/{name}-p?gracePeriodSeconds=0")


async def load(
    admin: Admin,
    namespace: str,
    names: list[str],
    nodes: list[str],
    progress_every: int = 0,
    width: int = WIDTH,
) -> float:
    """Create a Job+Pod pair per name, `width` at a time; the pairs per second achieved.

    A fixed set of workers each takes the next name as soon as its pair is done (no batch
    waiting for its slowest request). `admin`'s own bound applies on top: give it `width`.
    """
    started = time.monotonic()
    todo = iter(enumerate(names))
    done = 0

    async def worker() -> None:
        nonlocal done
        for i, name in todo:  # one shared iterator: each name is taken once
            await create_pair(admin, namespace, name, nodes[i % len(nodes)], i % EVENT_EVERY == 0)
            done += 1
            if progress_every and done % (progress_every * 512) == 0:
                rate = done / (time.monotonic() - started)
                print(f"  loaded {done:,} pairs ({rate:,.0f}/s)", flush=True)

    await asyncio.gather(*(worker() for _ in range(max(1, min(width, len(names))))))
    return len(names) / (time.monotonic() - started)
