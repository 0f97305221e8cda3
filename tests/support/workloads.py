"""Failing batch workloads for end-to-end tests, and the admin-side reads that check on them.

Jobs fail through the project's own kwok stages (devtools/devcluster/stages.yaml), the same way
`kube-dlq demo` makes them fail: `fail.stage.kwok.kube-dlq.io` ends a Running pod with an
exit code, reason and quoted message of the test's choosing; `run-for` keeps a pod Running;
the image-pull stage keeps it Pending in ErrImagePull/ImagePullBackOff. A node of the test's
own (tainted, so only the Job that tolerates it lands there) is broken with kwok's
node-not-ready chaos label.
"""

from __future__ import annotations

import contextlib
import copy
import uuid
from collections.abc import AsyncIterator

from kubernetes_asyncio import client

from devtools.devcluster.kubeapi import node_manifest
from tests.support.kube import (
    IMAGE_PULL_LABEL,
    NODE_NOT_READY_LABEL,
    RUN_FOR,
    RawObject,
    condition,
    eventually,
    job_manifest,
    raw,
)
from watcher.core.annotations import FINALIZER_REDRIVE_ACK, FINALIZER_RETRY_ACK

FAIL_STAGE = "fail.stage.kwok.kube-dlq.io"
FLAKY_TAINT_KEY = "e2e.kube-dlq.io/flaky"
IO_TIMEOUT_MESSAGE = "dial tcp 10.96.0.12:5432: i/o timeout"

__all__ = [
    "FAIL_STAGE",
    "FLAKY_TAINT_KEY",
    "IMAGE_PULL_LABEL",
    "IO_TIMEOUT_MESSAGE",
    "NODE_NOT_READY_LABEL",
    "RUN_FOR",
    "break_node",
    "create_job",
    "deadline_job",
    "delete_node",
    "describe",
    "evict",
    "failing_job",
    "flaky_node",
    "image_pull_job",
    "job_events",
    "job_pods",
    "list_jobs",
    "pinned_to",
    "read_job",
    "running_job",
    "wait_job_condition",
    "wait_pod_running",
]


# --- manifests -----------------------------------------------------------------------------------


def failing_job(
    name: str,
    *,
    exit_code: int,
    reason: str = "Error",
    message: str = "",
    delay: str = "1s",
    annotations: dict[str, str] | None = None,
    pass_job: str | None = None,
) -> RawObject:
    """A Job (backoffLimit 0) whose one pod runs `delay`, then exits as told.

    With `pass_job` (a Job name such as ``work-r3``), the pods of the Job of that name complete
    instead: retries keep the pod template, so the Job fails until that retry, which succeeds.
    """
    pod_annotations = {
        f"{FAIL_STAGE}/exit-code": str(exit_code),
        f"{FAIL_STAGE}/reason": reason,
        f"{FAIL_STAGE}/message": message,
        f"{FAIL_STAGE}/delay": delay,
    }
    if pass_job is not None:
        pod_annotations[f"{FAIL_STAGE}/pass-job"] = pass_job
    return job_manifest(
        name,
        pod_labels={FAIL_STAGE: "true"},
        pod_annotations=pod_annotations,
        annotations=annotations,
    )


def running_job(name: str, run_for: str, *, annotations: dict[str, str] | None = None) -> RawObject:
    """A Job whose pod stays Running for `run_for`, then succeeds."""
    return job_manifest(name, pod_annotations={RUN_FOR: run_for}, annotations=annotations)


def image_pull_job(name: str) -> RawObject:
    """A Job whose pod never starts: its image cannot be pulled (Kubernetes never fails it)."""
    return job_manifest(name, pod_labels={IMAGE_PULL_LABEL: "true"})


def deadline_job(name: str, deadline_s: int) -> RawObject:
    """A Job that runs longer than its activeDeadlineSeconds."""
    return job_manifest(name, pod_annotations={RUN_FOR: "1h"}, active_deadline_s=deadline_s)


def pinned_to(manifest: RawObject, node: str) -> RawObject:
    """`manifest` tolerating the flaky taint and preferring `node`, so its first pod lands there
    while a retry that must avoid `node` can still run elsewhere."""
    job = copy.deepcopy(manifest)
    pod_spec = job["spec"]["template"]["spec"]
    pod_spec["tolerations"] = [
        {"key": FLAKY_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
    ]
    pod_spec["affinity"] = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "preference": {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                        ]
                    },
                }
            ]
        }
    }
    return job


# --- API calls (raw JSON) ------------------------------------------------------------------------


async def create_job(api: client.ApiClient, namespace: str, body: RawObject) -> RawObject:
    created = await raw(
        client.BatchV1Api(api).create_namespaced_job(namespace, body, _preload_content=False)
    )
    assert created.get("kind") == "Job", created
    return created


async def read_job(api: client.ApiClient, namespace: str, name: str) -> RawObject | None:
    """The Job, or None if it does not exist."""
    found = await raw(
        client.BatchV1Api(api).read_namespaced_job(name, namespace, _preload_content=False)
    )
    if found.get("kind") == "Status" and found.get("code") == 404:
        return None
    assert found.get("kind") == "Job", found
    return found


async def release_retry_finalizers(api: client.ApiClient, namespace: str) -> None:
    """Remove kube-dlq's retry-ack and redrive-ack finalizers from every Job in `namespace` (a
    test's loops may have stopped before their grace ran out), so the namespace can go."""
    ours = (FINALIZER_RETRY_ACK, FINALIZER_REDRIVE_ACK)
    for job in await list_jobs(api, namespace):
        finalizers = job["metadata"].get("finalizers") or []
        if any(f in finalizers for f in ours):
            kept = [f for f in finalizers if f not in ours]
            patch = [{"op": "replace", "path": "/metadata/finalizers", "value": kept}]
            await raw(
                client.BatchV1Api(api).patch_namespaced_job(
                    job["metadata"]["name"], namespace, patch, _preload_content=False
                )
            )


async def list_jobs(api: client.ApiClient, namespace: str) -> list[RawObject]:
    listed = await raw(
        client.BatchV1Api(api).list_namespaced_job(namespace, _preload_content=False)
    )
    items: list[RawObject] = listed.get("items") or []
    return items


async def job_pods(api: client.ApiClient, namespace: str, job: str) -> list[RawObject]:
    listed = await raw(
        client.CoreV1Api(api).list_namespaced_pod(
            namespace, label_selector=f"job-name={job}", _preload_content=False
        )
    )
    items: list[RawObject] = listed.get("items") or []
    return items


async def job_events(api: client.ApiClient, namespace: str, job: str) -> list[RawObject]:
    listed = await raw(
        client.CoreV1Api(api).list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.kind=Job,involvedObject.name={job}",
            _preload_content=False,
        )
    )
    items: list[RawObject] = listed.get("items") or []
    return items


async def wait_job_condition(
    api: client.ApiClient, namespace: str, name: str, type_: str, *, within: float = 60
) -> RawObject:
    """Wait until Job `name` has condition `type_` (Failed, Complete) and return it."""

    async def reached() -> RawObject | None:
        job = await read_job(api, namespace, name)
        return job if job is not None and condition(job, type_) else None

    try:
        return await eventually(reached, within=within, what=f"Job {name} to be {type_}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await describe(api, namespace)}") from None


async def wait_pod_running(
    api: client.ApiClient, namespace: str, job: str, *, within: float = 60
) -> RawObject:
    async def running() -> RawObject | None:
        pods = await job_pods(api, namespace, job)
        return next((p for p in pods if p["status"].get("phase") == "Running"), None)

    return await eventually(running, within=within, what=f"a Running pod of Job {job}")


async def evict(api: client.ApiClient, namespace: str, pod: str) -> None:
    """Evict `pod` through the Eviction API, as `kubectl drain` does."""
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": namespace},
    }
    result = await raw(
        client.CoreV1Api(api).create_namespaced_pod_eviction(
            pod, namespace, body, _preload_content=False
        )
    )
    assert result.get("status") == "Success" or result.get("kind") == "Eviction", result


async def describe(api: client.ApiClient, namespace: str) -> str:
    """Jobs, pods and Events of `namespace`, for a failure message."""
    core = client.CoreV1Api(api)
    pods = await raw(core.list_namespaced_pod(namespace, _preload_content=False))
    events = await raw(core.list_namespaced_event(namespace, _preload_content=False))
    lines = [
        f"job {j['metadata']['name']}: {j.get('status')}" for j in await list_jobs(api, namespace)
    ]
    lines += [
        f"pod {p['metadata']['name']} on {p['spec'].get('nodeName')}: {p.get('status')}"
        for p in pods.get("items") or []
    ]
    lines += [
        f"event {e['involvedObject'].get('name')}: {e.get('reason')} {e.get('message')}"
        for e in events.get("items") or []
    ]
    return "\n".join(lines)


# --- a node of the test's own --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def flaky_node(api: client.ApiClient) -> AsyncIterator[str]:
    """A Ready kwok node tainted FLAKY_TAINT_KEY (only Jobs `pinned_to` it land there), deleted
    when the block ends."""
    core = client.CoreV1Api(api)
    name = f"kwok-flaky-{uuid.uuid4().hex[:6]}"
    taint = {"key": FLAKY_TAINT_KEY, "value": "true", "effect": "NoSchedule"}
    node = node_manifest(name, taints=(taint,))
    await raw(core.create_node(node, _preload_content=False))
    try:

        async def ready() -> bool:
            # Ready, and node lifecycle has lifted its not-ready taint: until then only the
            # other nodes can take the Job's pod.
            found = await raw(core.read_node(name, _preload_content=False))
            taints = {t["key"] for t in (found.get("spec") or {}).get("taints") or []}
            return condition(found, "Ready") is not None and taints == {FLAKY_TAINT_KEY}

        await eventually(ready, within=30, what=f"node {name} Ready and schedulable")
        yield name
    finally:
        await delete_node(api, name)


async def break_node(api: client.ApiClient, name: str) -> None:
    """Make the node's (kwok) kubelet report NotReady: node lifecycle then taints it and taint
    eviction deletes its pods."""
    await raw(
        client.CoreV1Api(api).patch_node(
            name, {"metadata": {"labels": {NODE_NOT_READY_LABEL: "true"}}}, _preload_content=False
        )
    )


async def delete_node(api: client.ApiClient, name: str) -> None:
    await raw(client.CoreV1Api(api).delete_node(name, _preload_content=False))
