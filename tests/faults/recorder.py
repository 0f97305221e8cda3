"""Every Job that ever existed in a namespace while a fault test ran, by uid.

A retry Job created twice for one ticket is only visible as two uids under one name: if the
first one was deleted before the second create (ttlSecondsAfterFinished), a list at the end
sees one Job. `JobRecorder` therefore lists and then watches the namespace's Jobs for the
whole test, keeping the newest version of each uid, deleted ones included. It outlives the
faults the suite injects: a watch that breaks (apiserver killed) or expires (410 Gone after a
compaction) is followed by a fresh list, and a list merges into what was recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from types import TracebackType
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from tests.support.kube import RawObject

RECONNECT_S = 0.5
WATCH_TIMEOUT_S = 30
REQUEST_TIMEOUT_S = 10.0


class JobRecorder:
    """``async with JobRecorder(api, ns) as rec``: `rec.jobs` is uid -> newest version seen."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.jobs: dict[str, RawObject] = {}
        self.deleted: set[str] = set()
        self.relists = 0
        self.watch_errors = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> JobRecorder:
        await self.relist()  # the first list must work: the cluster is up when a test starts
        self._task = asyncio.create_task(self._run(), name="job-recorder")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def record(self, obj: RawObject, *, deleted: bool = False) -> None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        self.jobs[uid] = obj
        if deleted:
            self.deleted.add(uid)

    async def relist(self) -> str:
        """List the namespace's Jobs into the record; the list's resourceVersion."""
        batch = client.BatchV1Api(self.api)
        resp = await batch.list_namespaced_job(
            self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
        )
        try:
            listed: RawObject = json.loads(await resp.read())
        finally:
            resp.release()
        if listed.get("kind") != "JobList":
            raise RuntimeError(f"listing Jobs failed: {listed}")
        for item in listed.get("items") or []:
            self.record(item)
        self.relists += 1
        rv: str = listed["metadata"]["resourceVersion"]
        return rv

    async def _run(self) -> None:
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self.relist()
                rv = await self._watch(rv)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, RuntimeError):
                self.watch_errors += 1
                rv = None
                await asyncio.sleep(RECONNECT_S)

    async def _watch(self, rv: str) -> str | None:
        """One watch stream from `rv`; the rv to resume from, or None to relist (410)."""
        batch = client.BatchV1Api(self.api)
        resp = await batch.list_namespaced_job(
            self.namespace,
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_S,
            _preload_content=False,
        )
        try:
            async for line in resp.content:
                event: dict[str, Any] = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    return None  # 410 Gone (or another error): start over with a list
                rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.record(obj, deleted=kind == "DELETED")
        finally:
            resp.release()
        return rv
