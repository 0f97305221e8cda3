"""Read, create and replace one coordination.k8s.io/v1 Lease, as raw JSON (leader election).

Writes use optimistic concurrency: a replace carries the resourceVersion it read, and a write
that lost the race (409) answers None so the caller reads again. Every other failure is a
`KubeAPIError` from `watcher.adapters.kube.request`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from watcher.adapters.kube.request import KubeClient, Target
from watcher.core.errors import KubeConflict, KubeNotFound, KubeUnavailable
from watcher.core.rawjson import RawObject

__all__ = ["LeaseAPI"]


class LeaseAPI:
    """One named Lease in one namespace."""

    def __init__(self, client: KubeClient, *, namespace: str, name: str) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self._target = Target("Lease", namespace, name)
        base = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace, safe='')}/leases"
        self._collection = base
        self._path = f"{base}/{quote(name, safe='')}"

    async def get(self, timeout_s: float) -> RawObject | None:
        """The Lease, or None if it does not exist."""
        try:
            lease = await self.client.call(
                "GET", self._path, what="reading Lease", target=self._target, timeout_s=timeout_s
            )
        except KubeNotFound:
            return None
        return self._checked(lease)

    async def create(self, spec: Mapping[str, Any], timeout_s: float) -> RawObject | None:
        """Create the Lease with `spec`; None if someone else created it first."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": dict(spec),
        }
        return await self._write("POST", self._collection, body, timeout_s)

    async def replace(
        self, lease: Mapping[str, Any], spec: Mapping[str, Any], timeout_s: float
    ) -> RawObject | None:
        """Replace `lease` (at its resourceVersion) with `spec`; None if it changed since."""
        return await self._write("PUT", self._path, {**lease, "spec": dict(spec)}, timeout_s)

    async def _write(
        self, method: str, path: str, body: Mapping[str, Any], timeout_s: float
    ) -> RawObject | None:
        try:
            written = await self.client.call(
                method,
                path,
                what="writing Lease",
                target=self._target,
                body=body,
                timeout_s=timeout_s,
            )
        except KubeConflict:
            return None  # changed (or created) since we read it: the caller reads again
        return self._checked(written)

    def _checked(self, obj: RawObject) -> RawObject:
        if obj.get("kind") != "Lease":
            raise KubeUnavailable(
                "reading Lease failed",
                reason=f"expected a Lease, got kind {obj.get('kind')!r}",
                kind="Lease",
                namespace=self.namespace,
                name=self.name,
            )
        return obj
