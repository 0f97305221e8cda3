"""Build the Kubernetes API client from a kubeconfig, or from the in-cluster ServiceAccount."""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config

from watcher.adapters.kube.request import KubeClient
from watcher.core.settings import KubernetesSettings

__all__ = ["api_client", "connect"]


async def api_client(settings: KubernetesSettings) -> client.ApiClient:
    """A client for `settings.kubeconfig` (and context); without one, the in-cluster
    ServiceAccount when running in a pod, else the default kubeconfig ($HOME/.kube/config)."""
    if settings.kubeconfig:
        return await config.new_client_from_config(
            config_file=settings.kubeconfig, context=settings.context
        )
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    return await config.new_client_from_config(context=settings.context)


async def connect(settings: KubernetesSettings) -> KubeClient:
    """The request layer over a new client for `settings`; the caller closes it."""
    return KubeClient(await api_client(settings), settings)
