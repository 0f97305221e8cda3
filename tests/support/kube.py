"""Small helpers for tests that talk to the real local control plane as raw JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from kubernetes_asyncio import client

T = TypeVar("T")

RawObject = dict[str, Any]

FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"
RUN_FOR = "run-for.stage.kwok.kube-dlq.io/duration"
IMAGE_PULL_LABEL = "image-pull-failed.stage.kwok.kube-dlq.io"
NODE_NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float, what: str, every: float = 0.25
) -> T:
    """Poll `probe` until it returns something other than None/False, or fail naming `what`."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what}; last: {last!r}")


async def raw(call: Awaitable[Any]) -> RawObject:
    """Await an API call made with _preload_content=False and decode its JSON body."""
    resp = await call
    try:
        body: RawObject = json.loads(await resp.read())
        return body
    finally:
        resp.release()


def job_manifest(
    name: str,
    *,
    backoff_limit: int = 0,
    pod_labels: dict[str, str] | None = None,
    pod_annotations: dict[str, str] | None = None,
    active_deadline_s: int | None = None,
    node_selector: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    image: str = "registry.invalid/batch/worker:1.0",
) -> RawObject:
    spec: RawObject = {
        "backoffLimit": backoff_limit,
        "template": {
            "metadata": {"labels": pod_labels or {}, "annotations": pod_annotations or {}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": image, "command": ["/bin/work"]}],
                **({"nodeSelector": node_selector} if node_selector else {}),
            },
        },
    }
    if active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = active_deadline_s
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "spec": spec,
    }


def failing_pod(
    exit_code: int, reason: str = "Error", message: str = "", delay: str = "1s"
) -> tuple[dict[str, str], dict[str, str]]:
    """Pod labels and annotations that make kwok's chaos stage fail the running container."""
    annotations = {
        f"{FAIL_LABEL}/exit-code": str(exit_code),
        f"{FAIL_LABEL}/reason": reason,
        f"{FAIL_LABEL}/delay": delay,
        f"{FAIL_LABEL}/jitter-delay": "0s",
    }
    if message:
        annotations[f"{FAIL_LABEL}/message"] = message
    return {FAIL_LABEL: "true"}, annotations


def condition(obj: RawObject, type_: str) -> RawObject | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


@contextlib.asynccontextmanager
async def watch_pods(api: client.ApiClient, namespace: str) -> AsyncIterator[list[RawObject]]:
    """Record every version of every pod in `namespace` while the block runs.

    Pods that kwok deletes right after a controller marks them (taint eviction, the Eviction
    API) are gone before a GET could see them; a watch sees each intermediate version.
    """
    core = client.CoreV1Api(api)
    seen: list[RawObject] = []
    listed = await raw(core.list_namespaced_pod(namespace, _preload_content=False))
    seen.extend(listed.get("items") or [])
    rv = listed["metadata"]["resourceVersion"]

    async def pump() -> None:
        nonlocal rv
        while True:
            resp = await core.list_namespaced_pod(
                namespace,
                watch=True,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=60,
                _preload_content=False,
            )
            try:
                async for line in resp.content:
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        seen.append(obj)
            finally:
                resp.release()

    task = asyncio.create_task(pump())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
