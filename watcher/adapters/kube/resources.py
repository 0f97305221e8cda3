"""The resource kinds kube-dlq lists and watches, and where their list paths are."""

from __future__ import annotations

import dataclasses
from typing import Final
from urllib.parse import quote

__all__ = ["EVENTS", "JOBS", "JOB_PODS", "JOB_PODS_SELECTOR", "NODES", "PODS", "Resource"]


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    """One resource kind: where to list and watch it."""

    name: str
    """Plural resource name; the ``resource`` label of the watch metrics and logs."""
    path: str
    """Cluster-wide list path, e.g. ``/apis/batch/v1/jobs``."""
    namespaced_path: str | None = None
    """List path in one namespace, with a ``{namespace}`` placeholder; None if the kind is
    cluster-scoped."""
    label_selector: str | None = None
    """Only objects matching this label selector, e.g. ``JOB_PODS_SELECTOR``."""
    field_selector: str | None = None
    """Only objects matching this field selector, e.g. ``involvedObject.kind=Job``."""

    def selectors(self) -> list[tuple[str, str]]:
        """The selector query parameters of every list and watch request."""
        pairs = [("labelSelector", self.label_selector), ("fieldSelector", self.field_selector)]
        return [(key, value) for key, value in pairs if value]

    def list_path(self, namespace: str | None = None) -> str:
        if namespace is None:
            return self.path
        if self.namespaced_path is None:
            raise ValueError(f"{self.name} is cluster-scoped; it has no namespace {namespace!r}")
        if not namespace:
            raise ValueError("namespace must not be empty (use None for all namespaces)")
        return self.namespaced_path.format(namespace=quote(namespace, safe=""))


JOB_PODS_SELECTOR: Final = "batch.kubernetes.io/controller-uid"
"""Label selector (the key exists) matching only pods created by the Job controller."""

JOBS: Final = Resource("jobs", "/apis/batch/v1/jobs", "/apis/batch/v1/namespaces/{namespace}/jobs")
PODS: Final = Resource("pods", "/api/v1/pods", "/api/v1/namespaces/{namespace}/pods")
JOB_PODS: Final = dataclasses.replace(PODS, label_selector=JOB_PODS_SELECTOR)
"""Pods of Jobs only: the daemon's pod watch, so other pods never cost a byte."""
EVENTS: Final = Resource("events", "/api/v1/events", "/api/v1/namespaces/{namespace}/events")
NODES: Final = Resource("nodes", "/api/v1/nodes")
