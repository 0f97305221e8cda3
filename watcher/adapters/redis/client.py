"""The one way kube-dlq builds its Redis client, from the ``redis`` settings section."""

from __future__ import annotations

from redis.asyncio import Redis

from watcher.core.settings import RedisSettings

__all__ = ["redis_client"]


def redis_client(settings: RedisSettings) -> Redis:
    """A client for ``settings.url`` with bounded connect and read timeouts.

    ``socket_timeout_s`` bounds both, so a dead or unreachable Redis is an error in seconds,
    not a hang. Replies stay bytes (``decode_responses=False``): `RedisStore` and
    `DeadLetterQueries` refuse anything else. The caller closes the client (``aclose``).
    """
    return Redis.from_url(
        settings.url,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        decode_responses=False,
    )
