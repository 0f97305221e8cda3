"""The one way kube-dlq builds its Redis client, from the ``redis`` settings section.

``redis.url`` names one server, a Redis Cluster or a Sentinel-managed primary
(`watcher.core.redis_url`); each gets the client that can follow it:

* one server: `redis.asyncio.Redis` from the URL;
* ``redis+cluster://``: `redis.asyncio.cluster.RedisCluster`, which reads the slot map from
  the seed nodes and follows MOVED and ASK redirects, so the URL may name any node. Every key
  of one installation carries one hash tag (`watcher.adapters.redis.keys`): the Lua scripts
  and the transactions see keys of one slot, as the cluster requires;
* ``redis+sentinel://``: a `Redis` whose pool asks the Sentinels for the current primary on
  each new connection and drops its connections when that changes, so writes follow a
  failover. Closing it closes the Sentinel connections too.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from watcher.core.redis_url import RedisTarget, parse_redis_url
from watcher.core.settings import RedisSettings

__all__ = ["RedisClient", "redis_client"]

RedisClient: TypeAlias = Redis | RedisCluster
"""What `RedisStore` and `DeadLetterQueries` take: the commands they use exist on both."""


def redis_client(settings: RedisSettings) -> RedisClient:
    """A client for ``settings.url`` with bounded connect and read timeouts.

    ``socket_timeout_s`` bounds both, so a dead or unreachable Redis is an error in seconds,
    not a hang. Replies stay bytes (``decode_responses=False``): `RedisStore` and
    `DeadLetterQueries` refuse anything else. The caller closes the client (``aclose``).
    """
    target = parse_redis_url(settings.url)
    timeouts: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
    }
    if target.kind == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            ssl=target.tls,
            decode_responses=False,
            **timeouts,
        )
    if target.kind == "sentinel":
        return _sentinel_master(target, timeouts)
    return Redis.from_url(settings.url, decode_responses=False, **timeouts)


class _SentinelMaster(Redis):
    """The primary's client; ``aclose`` also closes the Sentinel connections it asks through."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.sentinels is not None:
                await self.sentinels.aclose()


def _sentinel_master(target: RedisTarget, timeouts: dict[str, Any]) -> Redis:
    # The Sentinels take no credentials here: the URL's belong to the primary (docs/install.md).
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        list(target.nodes), sentinel_kwargs={**timeouts, "ssl": target.tls}
    )
    master: _SentinelMaster = sentinel.master_for(
        target.service,
        redis_class=_SentinelMaster,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        decode_responses=False,
        **timeouts,
    )
    master.sentinels = sentinel
    return master
