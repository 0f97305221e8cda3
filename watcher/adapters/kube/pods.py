"""A Job's pods read straight from the API: the evidence a lagging pod watch has not delivered.

The pipeline reads them once for a failed Job whose failed pods have not arrived within
`pipeline.evidence_wait_s` (watcher.service.pipeline), e.g. while the pod watch reconnects
after an apiserver restart, so that Job is not classified on the stale pods the watch left.
"""

from __future__ import annotations

import re
from typing import Final

from watcher.adapters.kube.request import KubeClient
from watcher.adapters.kube.watch import JOB_PODS_SELECTOR, PODS
from watcher.core.rawjson import RawObject

__all__ = ["PodsAPI"]

_UID: Final = re.compile(r"[0-9a-z][0-9a-z-]{0,62}")
"""What a uid the apiserver assigns looks like; anything else is not put in a selector."""


class PodsAPI:
    """Pods in any namespace the caller's credentials reach (the pod watch's permission)."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def of_job(self, namespace: str, job_uid: str) -> list[RawObject]:
        """The pods of the Job with uid `job_uid` as the apiserver has them now.

        Selected by the controller-uid label the Job controller puts on every pod it makes;
        empty for a uid that is not one (nothing to select safely).
        """
        if not _UID.fullmatch(job_uid) or not namespace:
            return []
        return await self.client.list_all(
            PODS.list_path(namespace),
            what="listing a failed Job's pods",
            query=[("labelSelector", f"{JOB_PODS_SELECTOR}={job_uid}")],
        )
