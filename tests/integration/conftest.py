"""Real redis-server fixtures for the Redis edge (no fakeredis, no mocks)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from devtools.devcluster.redis_server import RedisServer
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.sink import RedisSink

# Short timeouts and few retries so a dead Redis fails a test in seconds, not minutes.
SOCKET_TIMEOUT_S = 0.5
RETRIES = 2

ClientFactory = Callable[..., Awaitable[Redis]]


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


@pytest.fixture
def keys() -> Keys:
    return Keys(prefix="kube-dlq-test", cluster="it")


@pytest.fixture
def sink(redis: Redis, keys: Keys) -> RedisSink:
    return RedisSink(redis, keys=keys)


@pytest.fixture
def private_server() -> Iterator[Callable[..., RedisServer]]:
    """Factory for a redis-server of the test's own, for tests that stop or restart it."""
    made: list[RedisServer] = []

    def create(*, persistent: bool = False) -> RedisServer:
        server = RedisServer(persistent=persistent).start()
        made.append(server)
        return server

    try:
        yield create
    finally:
        for server in made:
            server.close()
