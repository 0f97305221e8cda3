"""The whole daemon writing to a Redis Cluster and to a Sentinel-managed primary.

The same Job as everywhere (fails on a network timeout, one retry allowed) goes through the
real control plane; the daemon's only Redis setting is the URL. What a user would notice: the
retry Job is created once, one dead letter lands and the CLI's reader finds it, and /readyz
and the durability gauge describe the topology.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes_asyncio import client

from devtools.devcluster.redis_topology import RedisClusterNodes, RedisSentinelGroup
from tests.support.daemon import StartDaemon, wait_dead_letters
from tests.support.workloads import IO_TIMEOUT_MESSAGE, create_job, failing_job, list_jobs
from watcher.adapters.redis.keys import Keys

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

MAX_RETRIES = "kube-dlq.io/max-retries"
BACKOFF = "kube-dlq.io/backoff"


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    with RedisClusterNodes() as nodes:
        yield nodes


@pytest.fixture
def sentinel_group() -> Iterator[RedisSentinelGroup]:
    guard = ("--min-replicas-to-write", "1")
    with RedisSentinelGroup(primary_args=guard) as group:
        yield group


async def one_retry_then_a_dead_letter(
    start_daemon: StartDaemon, admin_api: client.ApiClient, namespace: str, url: str
) -> None:
    # Given a daemon whose redis.url is the topology's
    daemon = await start_daemon(redis_url=url)

    # When a Job fails on a network timeout and allows one retry, which fails too
    annotations = {MAX_RETRIES: "1", BACKOFF: "1s"}
    await create_job(
        admin_api,
        namespace,
        failing_job("ingest", exit_code=1, message=IO_TIMEOUT_MESSAGE, annotations=annotations),
    )
    [(_, letter)] = await wait_dead_letters(daemon.queries, 1, within=120)

    # Then the retry was created once and the last attempt is the one dead letter
    names = sorted(j["metadata"]["name"] for j in await list_jobs(admin_api, namespace))
    assert names == ["ingest", "ingest-r2"]
    assert (letter.job.name, letter.attempts) == ("ingest-r2", 2)
    assert await daemon.store.pending_retries() == 0
    # And the daemon found the topology durable and ready
    status, body = await daemon.get("/readyz")
    assert (status, body.strip()) == (200, "ok"), body
    assert await daemon.metric("kube_dlq_redis_durable") == 1


async def test_daemon_on_a_redis_cluster_through_a_node_without_its_slot(
    start_daemon: StartDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    cluster_name: str,
    redis_cluster: RedisClusterNodes,
) -> None:
    owner = redis_cluster.owner(Keys(prefix="kube-dlq", cluster=cluster_name).queues)
    elsewhere = next(port for port in redis_cluster.ports if port != owner)
    await one_retry_then_a_dead_letter(
        start_daemon, admin_api, namespace, redis_cluster.url(elsewhere)
    )


async def test_daemon_on_a_sentinel_managed_primary(
    start_daemon: StartDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    sentinel_group: RedisSentinelGroup,
) -> None:
    await one_retry_then_a_dead_letter(start_daemon, admin_api, namespace, sentinel_group.url())
