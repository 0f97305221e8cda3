"""Build the Kubernetes API transport from a kubeconfig, or from the in-cluster ServiceAccount.

The common cases (in-cluster; a kubeconfig with a server, CA, token and/or client
certificate) are read by `watcher.adapters.kube.kubeconfig` and sent over a `DirectTransport`,
without importing kubernetes_asyncio (about 60 MB of RSS). Whatever that module does not read
(exec plugins, auth providers, merged kubeconfigs, ...) goes to kubernetes_asyncio's loader,
imported only then.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from watcher.adapters.kube import kubeconfig
from watcher.adapters.kube.request import KubeClient
from watcher.adapters.kube.transport import ClientApiTransport, DirectTransport, Transport
from watcher.core.settings import KubernetesSettings

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

__all__ = ["api_client", "connect", "transport"]


def direct_connection(settings: KubernetesSettings) -> kubeconfig.Connection | None:
    """The connection `settings` name, when kube-dlq reads it itself; None: fall back."""
    if settings.kubeconfig:
        return kubeconfig.from_kubeconfig(Path(settings.kubeconfig), settings.context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kubeconfig.in_cluster()
    path = kubeconfig.kubeconfig_path()
    return kubeconfig.from_kubeconfig(path, settings.context) if path is not None else None


async def transport(settings: KubernetesSettings) -> Transport:
    """The transport for `settings.kubeconfig` (and context); without one, the in-cluster
    ServiceAccount when running in a pod, else the default kubeconfig ($KUBECONFIG or
    $HOME/.kube/config)."""
    conn = direct_connection(settings)
    if conn is not None:
        return DirectTransport(conn)
    return ClientApiTransport(await api_client(settings))


async def api_client(settings: KubernetesSettings) -> ApiClient:
    """A kubernetes_asyncio client for `settings`, by kubernetes_asyncio's own loaders (the
    fallback of `transport`; imports kubernetes_asyncio)."""
    from kubernetes_asyncio import client, config

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
    """The request layer over a new transport for `settings`; the caller closes it."""
    return KubeClient(await transport(settings), settings)
