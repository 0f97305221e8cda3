"""Every documented ``redis.*`` key reaches the store: config file -> Settings -> RedisStore.

Regression tests for ``redis.stream_maxlen`` and ``redis.stream_max_age_s``, which were
documented but never reached the store (it always capped streams at 10 000 entries and 30
days). Each test parses a config document with `watcher.app.config.parse_config` and builds
the client and store the way the daemon does (`redis_client(config.redis)`,
``RedisStore(redis, config.redis, cluster_name=config.cluster_name)``), against a real
redis-server.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis

from devtools.devcluster.redis_server import RedisServer
from tests.support import objects
from watcher.adapters.redis import codec
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.adapters.redis.store import RedisStore
from watcher.app.config import parse_config
from watcher.core.model import DeadLetter, FailureClass, JobRef, RetryTicket
from watcher.core.settings import Settings
from watcher.kit.metrics import Metrics
from watcher.service.handler import FailureHandler

pytestmark = pytest.mark.redis

PREFIX = "kube-dlq-cfg"
NODE_ENTRIES = 4
"""stream-node-max-entries during these tests (the `small_stream_nodes` fixture). Approximate
trimming (MAXLEN ~, MINID ~) only drops whole stream nodes, so with nodes of 4 entries a
stream capped at N keeps between N and N + 3 entries: the first node is dropped only while
dropping it still leaves at least N."""


def config_for(server: RedisServer, cluster: str, **redis: Any) -> Settings:
    """The daemon's settings for a config document with these ``redis`` keys."""
    return parse_config(
        {
            "cluster_name": cluster,
            "redis": {"url": server.url, "key_prefix": PREFIX, **redis},
        }
    )


@pytest.fixture
async def app_client(redis_server: RedisServer, redis: Redis) -> AsyncIterator[Redis]:
    """A client built like the daemon's (every config here has the same url and timeouts);
    depending on `redis` makes db 0 flushed first."""
    client = redis_client(config_for(redis_server, "client").redis)
    try:
        yield client
    finally:
        await client.aclose()


def store_of(config: Settings, client: Redis) -> RedisStore:
    # The daemon's and the sweep's construction, verbatim.
    return RedisStore(client, config.redis, cluster_name=config.cluster_name)


def letter(uid: str, cluster: str) -> DeadLetter:
    return DeadLetter(
        queue="batch",
        job=JobRef(namespace="ns", name=f"job-{uid}", uid=uid),
        failure_class=FailureClass.APP_ERROR,
        reason="exit code 1",
        attempts=1,
        failed_at=time.time(),
        cluster=cluster,
    )


@pytest.mark.usefixtures("small_stream_nodes")
async def test_configured_stream_maxlen_caps_each_queue(
    redis_server: RedisServer, app_client: Redis, redis: Redis
) -> None:
    # Given a config document that caps each queue at 5 entries, and one that keeps the default
    capped = config_for(redis_server, "capped", stream_maxlen=5)
    default = config_for(redis_server, "default-cap")
    assert capped.redis.stream_maxlen == 5

    # When 30 different jobs are dead-lettered through each installation's store
    for config in (capped, default):
        store = store_of(config, app_client)
        for i in range(30):
            uid = f"{config.cluster_name}-{i}"
            assert (await store.dead_letter(letter(uid, config.cluster_name))).written

    # Then the capped queue holds about 5 (5 to 5 + NODE_ENTRIES - 1, see NODE_ENTRIES), and
    # the default one (10 000) all 30, so the trim came from the setting, not the node size
    capped_len = await redis.xlen(Keys(PREFIX, "capped").dlq("batch"))
    assert 5 <= capped_len <= 5 + NODE_ENTRIES - 1, capped_len
    assert await redis.xlen(Keys(PREFIX, "default-cap").dlq("batch")) == 30
    # And the newest entry is among those kept
    newest = await DeadLetterQueries(
        app_client, capped.redis, cluster_name="capped"
    ).list_dead_letters("batch", count=10)
    assert newest[-1][1].job.uid == "capped-29"


@pytest.mark.usefixtures("small_stream_nodes")
async def test_entries_trimmed_by_the_configured_cap_are_counted_by_queue(
    redis_server: RedisServer, app_client: Redis, redis: Redis
) -> None:
    # Given the handler the daemon builds, over a store whose queues are capped at 5 entries
    config = config_for(redis_server, "counted", stream_maxlen=5)
    metrics = Metrics()
    handler = FailureHandler(
        store=store_of(config, app_client), jobs=None, policy=config.retry,
        classify=config.classify, cluster_name=config.cluster_name, metrics=metrics,
        logger=structlog.get_logger(),
    )  # fmt: skip

    # When 30 Jobs fail with a class that is not retried (exit code 2: app_error)
    for i in range(30):
        job = objects.raw_job(name=f"flood-{i}", uid=f"flood-uid-{i}")
        pods = [objects.raw_pod(containers=[objects.terminated(exit_code=2)])]
        outcome = await handler.handle(objects.report(job, pods), job)
        assert outcome.write.written

    # Then what the queue lost to its cap is counted on that queue, exactly: 30 written minus
    # what the stream still holds
    queue = config.retry.queue
    held = await redis.xlen(Keys(PREFIX, "counted").dlq(queue))
    assert 5 <= held < 5 + NODE_ENTRIES
    trimmed = metrics.registry.get_sample_value(
        "kube_dlq_dead_letters_trimmed_total", {"queue": queue}
    )
    assert trimmed == 30 - held
    written = metrics.registry.get_sample_value(
        "kube_dlq_dead_letters_total", {"queue": queue, "failure_class": "app_error"}
    )
    assert written == 30


@pytest.mark.usefixtures("small_stream_nodes")
async def test_configured_stream_max_age_trims_older_entries(
    redis_server: RedisServer, app_client: Redis, redis: Redis
) -> None:
    # Given queues of two installations, each holding one full stream node of entries written
    # two hours ago and one of entries written ten minutes ago
    now_ms = int(time.time() * 1000)
    old = codec.encode_dead_letter(letter("old", "any"))
    for cluster in ("short-age", "default-age"):
        stream = Keys(PREFIX, cluster).dlq("batch")
        for minutes_ago in (120, 10):
            for i in range(NODE_ENTRIES):
                entry_id = f"{now_ms - minutes_ago * 60_000}-{i}"
                await redis.xadd(stream, {STREAM_FIELD: old}, id=entry_id)
    # And a config document that keeps dead letters for one hour, and one with the default
    short = config_for(redis_server, "short-age", stream_max_age_s="1h")
    default = config_for(redis_server, "default-age")
    assert short.redis.stream_max_age_s == 3600

    # When a new dead letter is written to each queue
    for config in (short, default):
        store = store_of(config, app_client)
        assert (await store.dead_letter(letter("new", config.cluster_name))).written

    # Then the one-hour queue lost exactly the two-hour-old node; the default (30 days) kept all
    assert await redis.xlen(Keys(PREFIX, "short-age").dlq("batch")) == NODE_ENTRIES + 1
    assert await redis.xlen(Keys(PREFIX, "default-age").dlq("batch")) == 2 * NODE_ENTRIES + 1


async def test_configured_prefix_marker_ttl_and_claim_lease_reach_the_store(
    redis_server: RedisServer, app_client: Redis, redis: Redis
) -> None:
    # Given a config document with its own marker TTL and claim lease
    config = config_for(redis_server, "tuned", outcome_ttl_s="2h", retry_claim_lease_s="90s")
    store = store_of(config, app_client)
    keys = Keys(PREFIX, "tuned")

    # When a dead letter is written and a list of Jobs shows its Job gone, and a retry ticket
    # is scheduled and claimed
    await store.dead_letter(letter("dl", "tuned"))
    mark = await store.outcome_watermark()
    await store.forget_absent(set(), written_up_to=mark, namespaces=None)
    now = time.time()
    await store.schedule_retry(
        RetryTicket(
            job=JobRef("ns", "job-rt", "rt"),
            attempt=2,
            due_at=now - 1,
            failure_class=FailureClass.NODE_LOST,
            reason="node lost",
            manifest={"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "job-rt"}},
        )
    )
    seconds, micros = await redis.time()
    (claimed,) = await store.claim_due_retries(limit=1)
    redis_now = seconds + micros / 1e6

    # Then the keys carry the configured prefix and cluster, the forgotten marker the
    # configured TTL, and the claim the configured lease
    assert 7_190_000 < await redis.pttl(keys.outcome("dl")) <= 7_200_000
    assert redis_now + 90 - 0.001 <= claimed.lease_until <= redis_now + 90.5
    assert await redis.zscore(keys.retry_inflight, "rt") == round(claimed.lease_until * 1000)
    # And the CLI's reader built from the same config finds what the store wrote
    queries = DeadLetterQueries(app_client, config.redis, cluster_name=config.cluster_name)
    assert [ltr.job.uid for _, ltr in await queries.list_dead_letters(None, count=5)] == ["dl"]
