"""The consumer group's commands and scripts on a real 3-primary Redis Cluster.

The URL names a node that does not serve the installation's slot (every command is MOVED
first). Reading two queues at once is one multi-key XREADGROUP, and the attempt, keep and
settle scripts take the stream, the attempts hash and the parked list: all must share the slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
from redis.asyncio.cluster import RedisCluster

from devtools.devcluster.redis_topology import RedisClusterNodes
from tests.integration.conftest import CLUSTER, SETTINGS
from tests.integration.test_sink import letter
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.consumer import (
    ParkedList,
    StreamConsumer,
    attempts_key,
    parked_key,
)
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.seal import Seal
from watcher.adapters.redis.store import RedisStore

pytestmark = pytest.mark.redis

KEYS = Keys(prefix=SETTINGS.key_prefix, cluster=CLUSTER)
SEAL = Seal(signing=None, allow_unsigned=True)


@pytest.fixture(scope="module")
def nodes() -> Iterator[RedisClusterNodes]:
    with RedisClusterNodes() as cluster:
        yield cluster


@pytest.fixture
async def client(nodes: RedisClusterNodes) -> AsyncIterator[RedisCluster]:
    owner = nodes.owner(KEYS.queues)
    elsewhere = next(port for port in nodes.ports if port != owner)
    made = redis_client(replace(SETTINGS, url=nodes.url(elsewhere), socket_timeout_s=2.0))
    assert isinstance(made, RedisCluster)
    await made.flushall(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield made
    finally:
        await made.aclose()


def consumer(client: RedisCluster, name: str, claim_idle_s: float = 60.0) -> StreamConsumer:
    return StreamConsumer(
        client,
        SETTINGS,
        cluster_name=CLUSTER,
        seal=SEAL,
        group="g",
        consumer=name,
        claim_idle_s=claim_idle_s,
    )


def test_the_consumers_keys_share_the_installations_slot(nodes: RedisClusterNodes) -> None:
    slot_owner = nodes.owner(KEYS.queues)
    for key in (attempts_key(KEYS, "g"), parked_key(KEYS, "g"), KEYS.dlq("batch")):
        assert nodes.owner(key) == slot_owner


async def test_read_count_keep_park_and_reclaim_work_on_a_cluster(client: RedisCluster) -> None:
    store = RedisStore(client, SETTINGS, cluster_name=CLUSTER, seal=SEAL)
    first = (await store.dead_letter(letter("u1", queue="batch"))).ref
    second = (await store.dead_letter(letter("u2", queue="etl"))).ref

    # Two queues read at once (one multi-key XREADGROUP), group made at their start
    a = consumer(client, "a")
    await a.prepare()
    got = await a.next(block_s=0.1)
    assert sorted(d.entry_id for d in got) == sorted([first, second])
    one, two = sorted(got, key=lambda d: d.entry_id)
    assert one.letter is not None and one.letter.job.uid == "u1"

    # Counting, keeping and parking: the multi-key scripts
    assert await a.begin_attempt(one) == 1
    assert await a.keep(one)
    await a.park(one, attempts=1, reason="handler exit 1")
    [parked] = await ParkedList(client, SETTINGS, cluster_name=CLUSTER, seal=SEAL).entries(
        "g", count=10
    )
    assert (parked.entry_id, parked.reason, parked.letter is not None) == (
        first,
        "handler exit 1",
        True,
    )

    # "a" dies holding the other entry: "b" takes it over once idle, its count carried over
    assert await a.begin_attempt(two) == 1
    b = consumer(client, "b", claim_idle_s=0.001)
    taken = await b.reclaim()
    assert taken is not None and taken.entry_id == two.entry_id
    assert not await a.keep(two)  # no longer a's
    assert await a.begin_attempt(two) is None
    assert await b.begin_attempt(taken) == 2
    await b.ack(taken)
    assert await client.hlen(attempts_key(KEYS, "g")) == 0
    for queue in ("batch", "etl"):
        assert (await client.xpending(KEYS.dlq(queue), "g"))["pending"] == 0
