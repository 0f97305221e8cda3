"""The shutdown grace period counts from the signal, as the kubelet's SIGKILL does."""

from __future__ import annotations

import asyncio
import signal
import time

from kubernetes_asyncio import client

from watcher.adapters.kube.request import KubeClient
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.store import RedisStore
from watcher.app.daemon import EXIT_MARGIN_S, Daemon
from watcher.core.settings import Settings

GRACE_S = 4.0
NOTICED_AFTER_S = 2.0


async def test_time_spent_noticing_sigterm_comes_out_of_the_grace_period() -> None:
    # Given a daemon (clients that never connect) with a 4 s grace period, and a duty that
    # never finishes on its own
    settings = Settings(cluster_name="grace", shutdown_grace_s=GRACE_S)
    api = client.ApiClient(client.Configuration(host="https://127.0.0.1:1"))
    redis = redis_client(settings.redis)
    store = RedisStore(redis, settings.redis, cluster_name=settings.cluster_name)
    daemon = Daemon(settings, kube=KubeClient(api, settings.kubernetes), store=store)
    stuck = asyncio.create_task(asyncio.sleep(3600), name="stuck-duty")

    # When SIGTERM arrives and the shutdown only starts 2 s later (root tasks slow to notice)
    signalled = time.monotonic()
    daemon._on_signal(signal.SIGTERM)
    await asyncio.sleep(NOTICED_AFTER_S)
    try:
        await daemon._shutdown([], [stuck])
    finally:
        await api.close()
        await redis.aclose()
    ended = time.monotonic() - signalled

    # Then the stuck duty was cancelled by grace - margin after the signal, not after the
    # shutdown began (that would be 2 s later, past the kubelet's SIGKILL)
    assert stuck.cancelled()
    assert ended < GRACE_S - EXIT_MARGIN_S + 0.5, f"ended {ended:.2f}s after SIGTERM"
