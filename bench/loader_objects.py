"""N Jobs and N Pods that kwok keeps Running, with some Events, created fast.

Why not let the Job controller make the pods: the local controller-manager talks to the
apiserver at client-go's default 20 requests/s, so 100,000 pods would take 80 minutes, and
its pod GC (``--terminated-pod-gc-threshold=1000``) deletes Completed pods beyond 1,000. So
each Job is created suspended, with a manual selector no pod matches (the controller creates
and deletes nothing), and its one Pod is created here: owned by the Job (controller
ownerReference, the ``batch.kubernetes.io/controller-uid`` label the daemon's pod watch
selects on), bound to a kwok node, annotated so kwok's run-for stage keeps it Running. One
Job in ten also gets an Event. All of it over one HTTP session, ``width`` requests at a time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.loader import Admin

RUN_FOR = "run-for.stage.kwok.kube-dlq.io/duration"
EVENT_EVERY = 10


def suspended_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app": "bench-memory"}},
        "spec": {
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
    admin: Admin, namespace: str, names: list[str], nodes: list[str], progress_every: int = 0
) -> float:
    """Create a Job+Pod pair per name; the pairs per second achieved."""
    started = time.monotonic()
    batch = 512  # tasks in flight are bounded by Admin's semaphore; this bounds memory

    for lo in range(0, len(names), batch):
        await asyncio.gather(
            *(
                create_pair(admin, namespace, name, nodes[i % len(nodes)], i % EVENT_EVERY == 0)
                for i, name in enumerate(names[lo : lo + batch], start=lo)
            )
        )
        if progress_every and (lo // batch) % progress_every == 0:
            rate = (lo + batch) / (time.monotonic() - started)
            print(f"  loaded {min(lo + batch, len(names)):,} pairs ({rate:,.0f}/s)", flush=True)
    return len(names) / (time.monotonic() - started)
