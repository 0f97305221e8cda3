"""The store on a Sentinel-managed primary: real redis-server primary, replica and Sentinel.

A ``redis+sentinel://`` URL names the Sentinels and the service; the client asks them for the
primary and, when the primary dies, follows the replica they promote. The failover test kills
the primary with SIGKILL in the middle of a stream of writes and checks what the exactly-once
promise says: every Job ends with one outcome, none twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from devtools.devcluster.redis_topology import SERVICE, RedisSentinelGroup
from tests.integration.conftest import CLUSTER, SETTINGS
from tests.integration.test_sink import letter, ticket
from watcher.adapters.redis import codec
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.adapters.redis.store import RedisStore
from watcher.core.errors import SinkError
from watcher.core.model import BeginStatus, WriteResult

pytestmark = pytest.mark.redis

KEYS = Keys(prefix=SETTINGS.key_prefix, cluster=CLUSTER)
JOBS = 300
KILL_AFTER = 100


@pytest.fixture
def group() -> Iterator[RedisSentinelGroup]:
    with RedisSentinelGroup() as started:
        yield started


@pytest.fixture
async def store(group: RedisSentinelGroup) -> AsyncIterator[RedisStore]:
    client = redis_client(replace(SETTINGS, url=group.url(), socket_timeout_s=0.5))
    try:
        yield RedisStore(client, replace(SETTINGS, operation_timeout_s=2.0), cluster_name=CLUSTER)
    finally:
        await client.aclose()


def test_the_url_names_the_sentinels_and_the_service(group: RedisSentinelGroup) -> None:
    assert group.url().endswith(f"/{SERVICE}/0")
    assert group.url().startswith("redis+sentinel://127.0.0.1:")


async def test_store_paths_run_on_the_primary(group: RedisSentinelGroup, store: RedisStore) -> None:
    written = await store.dead_letter(letter("d1"))
    assert not (await store.dead_letter(letter("d1"))).written
    await store.schedule_retry(ticket("t1"))
    [claimed] = await store.claim_due_retries(limit=5)
    assert claimed.ticket_id == "t1"
    settled = await store.settle_created("t1", claim=claimed.claim, job=None)
    assert settled.status is BeginStatus.BEGUN

    # The writes are on the primary the Sentinel names, and the CLI's reader sees them
    primary = Redis(host="127.0.0.1", port=group.primary.port)
    try:
        assert await primary.exists(KEYS.outcome("d1"))
    finally:
        await primary.aclose()
    # The CLI builds its own client from the same URL
    cli_client = redis_client(replace(SETTINGS, url=group.url()))
    try:
        queries = DeadLetterQueries(cli_client, SETTINGS, cluster_name=CLUSTER)
        assert [e for e, _ in await queries.list_dead_letters(None, count=5)] == [written.ref]
    finally:
        await cli_client.aclose()


async def test_durability_judges_the_primary_and_its_replica(
    group: RedisSentinelGroup, store: RedisStore
) -> None:
    # A primary with a replica but min-replicas-to-write 0 acknowledges writes the replica may
    # not have; a failover then promotes the replica without them.
    found = await store.durability()
    assert not found.durable
    assert any("min-replicas-to-write 0" in why for why in found.missing)


async def test_durable_when_the_primary_refuses_writes_no_replica_has() -> None:
    guard = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10")
    with RedisSentinelGroup(primary_args=guard) as group:
        client = redis_client(replace(SETTINGS, url=group.url()))
        try:
            found = await RedisStore(client, SETTINGS, cluster_name=CLUSTER).durability()
        finally:
            await client.aclose()
    assert found.durable, found.missing


async def _write_until_done(store: RedisStore, uid: str, errors: list[str]) -> WriteResult:
    """What the daemon's writer does with one failure: retry the idempotent write until it
    lands (a failover is a few seconds of SinkError)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if uid.endswith(("0", "5")):
                return await store.schedule_retry(ticket(uid))
            return await store.dead_letter(letter(uid))
        except SinkError as exc:
            errors.append(str(exc))
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_writes_follow_a_failover_with_no_outcome_lost_or_doubled(
    group: RedisSentinelGroup, store: RedisStore
) -> None:
    # Given a stream of failures being written, and the primary killed (kill -9) a third in
    old_primary = group.primary
    assert group.replica is not None
    new_port = group.replica.port
    errors: list[str] = []
    results: dict[str, WriteResult] = {}
    uids = [f"job-{i:04d}" for i in range(JOBS)]
    for uid in uids[:KILL_AFTER]:
        results[uid] = await _write_until_done(store, uid, errors)
    old_primary.crash()
    for uid in uids[KILL_AFTER:]:
        results[uid] = await _write_until_done(store, uid, errors)

    # Then the writes went on, on the replica the Sentinel promoted
    assert errors, "the kill was not noticed: the test did not exercise a failover"
    group.wait_for_primary(new_port)
    # A relist (the sweep, or a restarted daemon) replays every Job still Failed in the API:
    # what async replication lost in the last moment before the kill is written now, and what
    # survived is not written again.
    replayed = [await _write_until_done(store, uid, errors) for uid in uids]
    lost_before_relist = sum(1 for r in replayed if r.written)

    promoted = Redis(host="127.0.0.1", port=new_port)
    try:
        entries = await promoted.xrange(KEYS.dlq("batch"))
        tickets = await promoted.hkeys(KEYS.retry_tickets)
        markers = [await promoted.get(KEYS.outcome(uid)) for uid in uids]
    finally:
        await promoted.aclose()
    written_uids = [
        codec.decode_dead_letter(fields[STREAM_FIELD.encode()]).job.uid for _, fields in entries
    ] + sorted(t.decode() for t in tickets)
    # Each Job exactly once: one stream entry or one ticket, and its marker
    assert sorted(written_uids) == sorted(uids)
    assert all(markers)
    print(
        f"\nsentinel failover: {JOBS} jobs, {len(errors)} write errors during failover, "
        f"{lost_before_relist} acknowledged outcomes lost and rewritten by the relist"
    )
