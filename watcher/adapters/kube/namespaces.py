"""The namespaces a label selector matches: `scope.namespace_label_selector`, for the daemon's
periodic refresh and the one-shot sweep alike."""

from __future__ import annotations

from watcher.adapters.kube.request import KubeClient

__all__ = ["namespaces_matching"]


async def namespaces_matching(kube: KubeClient, selector: str) -> frozenset[str]:
    """Names of the namespaces whose labels match `selector` now (one paged list)."""
    listed = await kube.list_all(
        "/api/v1/namespaces", what="listing namespaces", query=[("labelSelector", selector)]
    )
    return frozenset(str((ns.get("metadata") or {}).get("name", "")) for ns in listed)
