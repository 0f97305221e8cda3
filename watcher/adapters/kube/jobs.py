"""The Job calls kube-dlq makes besides watching: read, create, delete, remove a finalizer, and
a Warning Event.

Everything goes through `watcher.adapters.kube.request.KubeClient`, so every failure is a
`KubeAPIError` subclass and bodies are raw JSON.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from watcher.adapters.kube.request import KubeClient, Target
from watcher.core.errors import KubeConflict, KubeInvalid, KubeNotFound
from watcher.core.model import JobRef
from watcher.core.rawjson import RawObject

__all__ = ["COMPONENT", "JobsAPI"]

COMPONENT: Final = "kube-dlq"
"""The Event source and reporting component."""
EVENT_MESSAGE_MAX: Final = 1024
"""Event messages longer than this are cut (the apiserver itself rejects very long ones)."""


def _jobs_path(namespace: str, name: str = "") -> str:
    base = f"/apis/batch/v1/namespaces/{quote(namespace, safe='')}/jobs"
    return f"{base}/{quote(name, safe='')}" if name else base


class JobsAPI:
    """Jobs in any namespace the caller's credentials reach."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def get(self, namespace: str, name: str) -> RawObject | None:
        """The Job as the apiserver has it now, or None if there is no such Job."""
        try:
            return await self.client.call(
                "GET", _jobs_path(namespace, name), what="reading Job", target=_job(namespace, name)
            )
        except KubeNotFound:
            return None

    async def create(self, namespace: str, body: Mapping[str, Any]) -> RawObject:
        """POST a Job; the created object. 409 (the name is taken) raises KubeConflict."""
        name = str((body.get("metadata") or {}).get("name", ""))
        return await self.client.call(
            "POST",
            _jobs_path(namespace),
            what="creating Job",
            target=_job(namespace, name),
            body=body,
        )

    async def delete(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        """Delete a Job and, in the background, its pods. False if it was already gone.

        With `uid`, the delete carries a uid precondition: a different Job of the same name
        (re-created since) is left alone and the answer is False.
        """
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.client.call(
                "DELETE",
                _jobs_path(namespace, name),
                what="deleting Job",
                target=_job(namespace, name),
                body=body,
            )
        except KubeNotFound:
            return False
        except KubeConflict:
            if uid:
                return False  # the precondition failed: the Job there now is another one
            raise
        return True

    async def remove_finalizer(self, job: JobRef, finalizer: str) -> bool:
        """Remove `finalizer` from the Job `job` if it is still that Job (same uid).

        A JSON patch whose ``test`` operations check the uid and the finalizer's position, so
        a Job re-created under the name, or a finalizer list changed since the read, is never
        patched blindly: the first answers False, the second raises KubeConflict (read again
        on the next try). False too when the Job is gone or has no such finalizer.
        """
        current = await self.get(job.namespace, job.name)
        meta = (current or {}).get("metadata") or {}
        finalizers = meta.get("finalizers")
        if meta.get("uid") != job.uid or not isinstance(finalizers, list):
            return False
        if finalizer not in finalizers:
            return False
        index = finalizers.index(finalizer)
        patch = [
            {"op": "test", "path": "/metadata/uid", "value": job.uid},
            {"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"},
        ]
        try:
            await self.client.call(
                "PATCH",
                _jobs_path(job.namespace, job.name),
                what="removing Job finalizer",
                target=_job(job.namespace, job.name),
                body=patch,
                content_type="application/json-patch+json",
            )
        except KubeNotFound:
            return False
        except KubeInvalid as exc:  # a failed test operation: changed since the read
            raise KubeConflict(str(exc), status=409, reason="Conflict") from exc
        return True

    async def warn(self, job: JobRef, reason: str, message: str) -> None:
        """A Warning Event on the Job, visible in `kubectl describe job`."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{job.name}.{uuid.uuid4().hex[:10]}", "namespace": job.namespace},
            "involvedObject": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job.name,
                "namespace": job.namespace,
                "uid": job.uid,
            },
            "reason": reason,
            "message": message[:EVENT_MESSAGE_MAX],
            "type": "Warning",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.client.call(
            "POST",
            f"/api/v1/namespaces/{quote(job.namespace, safe='')}/events",
            what="writing Event",
            target=_job(job.namespace, job.name),
            body=body,
        )


def _job(namespace: str, name: str) -> Target:
    return Target("Job", namespace, name)
