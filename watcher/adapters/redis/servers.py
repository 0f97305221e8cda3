"""Reading the servers behind a client: each primary of a Redis Cluster, or the one server.

INFO and CONFIG GET describe one server, but a `RedisCluster` client sends them to whichever
node it picks. Durability and the eviction policy must hold on every primary: kube-dlq's keys
sit in one slot today, but resharding moves slots between primaries without telling kube-dlq,
so a weak primary that holds none of them now may hold all of them tomorrow. Replicas are not
read: their role makes them "not durable" by definition, and what a failover promotes is
judged by its primary's ``min-replicas-to-write``.

A Sentinel-managed client is a plain `Redis` whose connections go to the current primary, so
it reads as one server; after a failover the new primary's run id reads as a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError

from watcher.adapters.redis.client import RedisClient
from watcher.adapters.redis.durability import Durability, assess_durability, weakest
from watcher.adapters.redis.guard import text

__all__ = ["DURABILITY_CONFIG", "durability", "server_problems"]

DURABILITY_CONFIG: Final = ("save", "appendfsync", "min-replicas-to-write")
"""The settings `durability` reads with CONFIG GET (one name per call: Redis 6.2 takes one
pattern per CONFIG GET)."""

_MIN_REDIS: Final = (6, 2)


async def _primaries(redis: RedisClient) -> list[ClusterNode | None]:
    """The nodes to read: every cluster primary, or [None] for "the server" of a `Redis`."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()  # the slot map is read lazily; INFO must not be the first use
        return list(redis.get_primaries())
    return [None]


async def _info(redis: RedisClient, node: ClusterNode | None) -> Mapping[str, Any]:
    if isinstance(redis, RedisCluster):
        reply: Mapping[str, Any] = await redis.info(target_nodes=node)
        return reply
    return await redis.info()


async def _config(redis: RedisClient, node: ClusterNode | None, name: str) -> Mapping[Any, Any]:
    if isinstance(redis, RedisCluster):
        reply: Mapping[Any, Any] = await redis.config_get(name, target_nodes=node)
        return reply
    return await redis.config_get(name)


async def _one(redis: RedisClient, node: ClusterNode | None) -> Durability:
    info = await _info(redis, node)
    read: dict[str, str] = {}
    try:
        for name in DURABILITY_CONFIG:
            for key, value in (await _config(redis, node, name)).items():
                if key is not None and value is not None:
                    read[text(key)] = text(value)
    except ResponseError:  # unknown command or NOPERM: not an outage, just unknown
        return assess_durability(info, None)
    return assess_durability(info, read)


async def durability(redis: RedisClient) -> Durability:
    """What the server (or, in a cluster, the weakest primary) does to keep acknowledged writes.

    CONFIG GET is refused on many managed Redis (the command renamed away, or an ACL): then
    only INFO is used, and the settings it could not read are named in ``unchecked``.
    """
    if not isinstance(redis, RedisCluster):
        return await _one(redis, None)
    nodes = await _primaries(redis)
    return weakest({node.name: await _one(redis, node) for node in nodes if node is not None})


async def server_problems(redis: RedisClient) -> list[str]:
    """Settings of the server (of each cluster primary) that break the store's guarantees."""
    problems: list[str] = []
    for node in await _primaries(redis):
        info = await _info(redis, node)
        where = "" if node is None else f"{node.name}: "
        version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])
        if version < _MIN_REDIS:
            problems.append(
                f"{where}redis {info.get('redis_version')} is too old: need >= 6.2 "
                "(ZRANGE BYSCORE, XTRIM MINID)"
            )
        policy = info.get("maxmemory_policy", "noeviction")
        if policy != "noeviction":
            problems.append(
                f"{where}maxmemory-policy is {policy}, not noeviction: evicted outcome markers "
                "break exactly-once"
            )
    return problems
