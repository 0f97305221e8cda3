"""One bad object never ends a watch consumer: the daemon reports it and goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from kubernetes_asyncio import client

from watcher.adapters.kube import watch
from watcher.adapters.kube.request import KubeClient
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.store import RedisStore
from watcher.app.daemon import Daemon
from watcher.core.settings import Settings


async def events(*names: str) -> AsyncIterator[watch.Item]:
    for name in names:
        meta = {"namespace": "batch", "name": name, "uid": f"uid-{name}"}
        yield watch.WatchEvent("ADDED", {"kind": "Job", "metadata": meta})


async def test_watch_event_whose_handling_raises_is_reported_and_the_watch_goes_on() -> None:
    # Given a daemon (clients that never connect) and a consumer that breaks on one object
    settings = Settings(cluster_name="bulkhead")
    api = client.ApiClient(client.Configuration(host="https://127.0.0.1:1"))
    redis = redis_client(settings.redis)
    store = RedisStore(redis, settings.redis, cluster_name=settings.cluster_name)
    daemon = Daemon(settings, kube=KubeClient(api, settings.kubernetes), store=store)
    seen: list[str] = []

    def on_event(_: str, obj: dict[str, Any]) -> None:
        seen.append(obj["metadata"]["name"])
        if obj["metadata"]["name"] == "poison":
            raise RecursionError("maximum recursion depth exceeded")

    # When the watch delivers it between two good ones
    try:
        await daemon._consume(events("first", "poison", "last"), watch.JOBS, on_event, None)
    finally:
        await api.close()
        await redis.aclose()

    # Then every object was handed on, and the bad one counted under its watch
    assert seen == ["first", "poison", "last"]
    errors = daemon.metrics.registry.get_sample_value(
        "kube_dlq_handling_errors_total", {"stage": "watch_jobs"}
    )
    assert errors == 1
