"""Real redis-server fixtures for the Redis edge (no fakeredis, no mocks)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from devtools.devcluster.redis_server import RedisServer
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.adapters.redis.store import RedisStore
from watcher.core.settings import RedisSettings

# Short timeouts and few retries so a dead Redis fails a test in seconds, not minutes.
SOCKET_TIMEOUT_S = 0.5
RETRIES = 2

ClientFactory = Callable[..., Awaitable[Redis]]

PREFIX = "kube-dlq-test"
CLUSTER = "it"
SETTINGS = RedisSettings(key_prefix=PREFIX)
"""The test installation's settings: documented defaults, its own key prefix."""


def make_redis(port: int) -> Redis:
    return Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), RETRIES),
    )


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client on an empty db 0; its pool is closed after the test."""
    client = make_redis(redis_server.port)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def make_client(redis_server: RedisServer) -> AsyncIterator[ClientFactory]:
    """Factory for extra clients, each with its own connection pool; all closed afterwards."""
    made: list[Redis] = []

    async def create(port: int | None = None) -> Redis:
        client = make_redis(port if port is not None else redis_server.port)
        made.append(client)
        return client

    try:
        yield create
    finally:
        for client in made:
            await client.aclose()


def make_store(redis: Redis, **changes: Any) -> RedisStore:
    """A store for the test installation, with `changes` to its redis settings."""
    return RedisStore(redis, replace(SETTINGS, **changes), cluster_name=CLUSTER)


def make_queries(redis: Redis, **changes: Any) -> DeadLetterQueries:
    """The CLI's reader of the same keys."""
    return DeadLetterQueries(redis, replace(SETTINGS, **changes), cluster_name=CLUSTER)


@pytest.fixture
def keys() -> Keys:
    """The key names the test installation's store and queries use, for raw assertions."""
    return Keys(prefix=PREFIX, cluster=CLUSTER)


@pytest.fixture
def store(redis: Redis) -> RedisStore:
    return make_store(redis)


@pytest.fixture
def queries(redis: Redis) -> DeadLetterQueries:
    return make_queries(redis)


@pytest.fixture
async def small_stream_nodes(redis: Redis) -> AsyncIterator[None]:
    """Make approximate (~) trimming observable: it only drops whole nodes of this size."""
    before = (await redis.config_get("stream-node-max-entries"))["stream-node-max-entries"]
    assert before is not None
    await redis.config_set("stream-node-max-entries", 4)
    try:
        yield
    finally:
        await redis.config_set("stream-node-max-entries", before)


@pytest.fixture
def private_server() -> Iterator[Callable[..., RedisServer]]:
    """Factory for a redis-server of the test's own, for tests that stop or restart it."""
    made: list[RedisServer] = []

    def create(*, persistent: bool = False, extra_args: tuple[str, ...] = ()) -> RedisServer:
        server = RedisServer(persistent=persistent, extra_args=extra_args).start()
        made.append(server)
        return server

    try:
        yield create
    finally:
        for server in made:
            server.close()


async def redis_now(redis: Redis) -> float:
    """Redis's clock (TIME), in unix seconds: what due and lease times are measured on."""
    seconds, micros = await redis.time()
    return seconds + micros / 1e6


async def travel(redis: Redis, keys: Keys, seconds: float) -> None:
    """As if Redis's clock moved on by `seconds`: every due time and lease expiry moves back."""
    for key in (keys.retry_due, keys.retry_inflight, keys.retry_finalize):
        for member, score in await redis.zrange(key, 0, -1, withscores=True):
            await redis.zadd(key, {member: score - seconds * 1000})
