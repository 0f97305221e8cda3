"""What `RedisStore.durability` reads from a real redis-server: each way a server can
acknowledge an outcome and still lose it is named, and a durable one reports nothing missing.

Every server here is the test's own (`private_server`), started with the settings under test;
`RedisServer` starts without persistence (``--appendonly no --save ""``) unless persistent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from devtools.devcluster.redis_server import RedisServer
from tests.integration.conftest import make_redis, make_store
from watcher.adapters.redis.durability import Durability

pytestmark = pytest.mark.redis

Servers = Callable[..., RedisServer]

NO_CONFIG = ("--rename-command", "CONFIG", "")
"""CONFIG renamed away, as managed Redis services do: only INFO can be read."""


async def durability_of(server: RedisServer) -> Durability:
    redis = make_redis(server.port)
    try:
        return await make_store(redis).durability()
    finally:
        await redis.aclose()


async def test_redis_with_aof_is_durable(private_server: Servers) -> None:
    # Given appendonly yes (appendfsync everysec, the default), no replicas
    found = await durability_of(private_server(persistent=True))
    # Then nothing is missing and everything could be read
    assert found.durable
    assert found.missing == () and found.unchecked == ()
    assert len(found.run_id) == 40


async def test_redis_without_persistence_is_not_durable_and_says_why(
    private_server: Servers,
) -> None:
    # Given --appendonly no --save ""
    found = await durability_of(private_server())
    # Then it is not durable, and the reason names both settings and what it costs
    assert not found.durable
    assert len(found.missing) == 1
    assert "no persistence" in found.missing[0]
    assert "appendonly no" in found.missing[0] and 'save ""' in found.missing[0]
    assert "a restart loses every outcome" in found.missing[0]


async def test_rdb_snapshots_alone_are_not_durable(private_server: Servers) -> None:
    found = await durability_of(private_server(extra_args=("--save", "3600 1")))
    assert not found.durable
    assert found.missing == (
        "appendonly no: at most RDB snapshots (save 3600 1); a restart loses every outcome "
        "written since the last one",
    )


async def test_aof_without_fsync_is_not_durable(private_server: Servers) -> None:
    found = await durability_of(private_server(persistent=True, extra_args=("--appendfsync", "no")))
    assert not found.durable
    assert len(found.missing) == 1 and found.missing[0].startswith("appendfsync no:")


async def test_a_redis_refusing_config_is_judged_from_info_alone(private_server: Servers) -> None:
    # Given two servers where CONFIG does not exist: one with AOF, one without persistence
    with_aof = await durability_of(private_server(persistent=True, extra_args=NO_CONFIG))
    without = await durability_of(private_server(extra_args=NO_CONFIG))
    # Then INFO alone decides (the check does not fail), naming what it could not read
    assert with_aof.durable and with_aof.unchecked == ("appendfsync",)
    assert not without.durable and without.unchecked == ("save",)
    assert without.missing[0].startswith("appendonly no: at most RDB snapshots;")


async def test_replicas_count_only_with_min_replicas_to_write(private_server: Servers) -> None:
    # Given a primary with AOF and one replica attached to it
    primary = private_server(persistent=True)
    replica = private_server(
        persistent=True, extra_args=("--replicaof", "127.0.0.1", str(primary.port))
    )
    redis = make_redis(primary.port)
    try:
        for _ in range(200):
            if (await redis.info("replication")).get("connected_slaves") == 1:
                break
            await asyncio.sleep(0.05)
        # Then without min-replicas-to-write a failover can lose acknowledged outcomes
        found = await make_store(redis).durability()
        assert found.missing == (
            "1 replica(s) but min-replicas-to-write 0: a failover can promote a replica "
            "without the latest acknowledged outcomes",
        )
        # And with it, the primary is durable
        await redis.config_set("min-replicas-to-write", 1)
        assert (await make_store(redis).durability()).durable
    finally:
        await redis.aclose()
    # And a daemon pointed at the replica is told it is not the primary
    on_replica = await durability_of(replica)
    assert any(m.startswith("role slave:") for m in on_replica.missing)


async def test_a_restart_shows_as_a_new_run_id(private_server: Servers) -> None:
    server = private_server()
    before = await durability_of(server)
    server.restart()
    after = await durability_of(server)
    assert after.run_id != before.run_id
    assert after.missing == before.missing
