"""The store, the CLI's reads and the durability check on a real 3-primary Redis Cluster.

The cluster is three Debian redis-server processes with ``cluster-enabled yes``, joined by
``redis-cli --cluster create``. The URL names only a node that does not serve the slot of
kube-dlq's keys, so every command first gets MOVED: the cluster client must follow it (a
plain client at the same node fails, which is what kube-dlq did before). Every key of one
installation shares one hash tag, so the multi-key Lua scripts and MULTI/EXEC run in one slot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MovedError

from devtools.devcluster.redis_topology import RedisClusterNodes, command
from tests.integration.conftest import CLUSTER, SETTINGS
from tests.integration.test_quarantine import POISON_TICKETS
from tests.integration.test_sink import T0, letter, ticket
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.purge import DeadLetterPurger
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.adapters.redis.store import RedisStore
from watcher.cli.main import main
from watcher.core.dlq_filter import DeadLetterFilter
from watcher.core.errors import SinkError
from watcher.core.model import Action, BeginStatus

pytestmark = pytest.mark.redis

KEYS = Keys(prefix=SETTINGS.key_prefix, cluster=CLUSTER)


@pytest.fixture(scope="module")
def nodes() -> Iterator[RedisClusterNodes]:
    with RedisClusterNodes() as cluster:
        yield cluster


@pytest.fixture
def elsewhere(nodes: RedisClusterNodes) -> int:
    """A node that does not serve kube-dlq's slot: the only one the URL names."""
    owner = nodes.owner(KEYS.queues)
    return next(port for port in nodes.ports if port != owner)


@pytest.fixture
async def client(nodes: RedisClusterNodes, elsewhere: int) -> AsyncIterator[RedisCluster]:
    made = redis_client(replace(SETTINGS, url=nodes.url(elsewhere), socket_timeout_s=2.0))
    assert isinstance(made, RedisCluster)
    await made.flushall(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
def store(client: RedisCluster) -> RedisStore:
    return RedisStore(client, SETTINGS, cluster_name=CLUSTER)


async def test_a_plain_client_at_that_node_is_refused_with_moved(elsewhere: int) -> None:
    # What kube-dlq did before: one connection, no redirects followed.
    plain = Redis(host="127.0.0.1", port=elsewhere)
    try:
        with pytest.raises(MovedError):
            await plain.set(KEYS.outcome("uid-x"), b"x")
    finally:
        await plain.aclose()


async def test_every_key_lives_in_one_slot_on_its_owner(
    nodes: RedisClusterNodes, store: RedisStore
) -> None:
    # Given one of each kind of write through the URL's (wrong) node
    await store.dead_letter(letter("d1"))
    await store.schedule_retry(ticket("t1"))

    # Then all of kube-dlq's keys sit on the node that serves the hash tag's slot
    owner = nodes.owner(KEYS.queues)
    on_owner = set(command(owner, "--scan", "--pattern", f"{KEYS.base}:*").split())
    assert {KEYS.queues, KEYS.dlq("batch"), KEYS.outcome("d1"), KEYS.retry_tickets} <= on_owner
    indexes = KEYS.dlq_entry_indexes(
        "batch", letter("d1").failure_class, letter("d1").job.namespace
    )
    assert set(indexes) <= on_owner
    for port in nodes.ports:
        if port != owner:
            assert command(port, "DBSIZE") == "0"


async def test_dead_letters_are_written_once_and_read_back_by_the_cli_reader(
    client: RedisCluster, store: RedisStore
) -> None:
    # Given a dead letter written, then replayed (a relist, a restart)
    first = await store.dead_letter(letter("d1"))
    again = await store.dead_letter(letter("d1"))
    other = await store.dead_letter(letter("d2", queue="etl"))

    # Then one entry each, and the reads and gauges see them
    assert (first.written, again.written, again.ref) == (True, False, first.ref)
    assert await store.handled(["d1", "d2", "nope"]) == {"d1", "d2"}
    assert await store.queue_depths() == {"batch": 1, "etl": 1}
    assert set(await store.oldest_age_s(T0 + 10**9)) == {"batch", "etl"}
    queries = DeadLetterQueries(client, SETTINGS, cluster_name=CLUSTER)
    listed = await queries.list_dead_letters(None, count=10)
    assert [entry_id for entry_id, _ in listed] == [first.ref, other.ref]
    assert await queries.get_dead_letter(first.ref) == (first.ref, letter("d1"))


async def test_indexes_are_trimmed_purged_and_read_in_the_cluster(
    nodes: RedisClusterNodes, client: RedisCluster
) -> None:
    # Given a queue capped at 5 in stream nodes of 2 entries (the trim and the purge touch
    # every index the registry names, keys the scripts are not passed: they must be in the
    # script's slot) and 12 entries
    owner = nodes.owner(KEYS.queues)
    command(owner, "CONFIG", "SET", "stream-node-max-entries", "2")
    try:
        await _trim_purge_and_read(client)
    finally:
        command(owner, "CONFIG", "SET", "stream-node-max-entries", "100")


async def _trim_purge_and_read(client: RedisCluster) -> None:
    store = RedisStore(client, replace(SETTINGS, stream_maxlen=5), cluster_name=CLUSTER)
    written = [
        (
            await store.dead_letter(
                replace(letter(f"c{i}"), job=replace(letter(f"c{i}").job, namespace=f"n{i % 3}"))
            )
        ).ref
        for i in range(12)
    ]
    queries = DeadLetterQueries(client, SETTINGS, cluster_name=CLUSTER)
    kept = [e for e, _ in await queries.list_dead_letters("batch", count=100)]
    assert 5 <= len(kept) < 12  # trimmed
    # Then a namespace listing reads the index and only what the stream still holds
    page = await queries.select(DeadLetterFilter(namespace="n0"), limit=100)
    assert [e for e, _ in page.entries] == [e for e in kept if written.index(e) % 3 == 0]
    # And a purge removes entries and index members together
    purger = DeadLetterPurger(client, SETTINGS, cluster_name=CLUSTER)
    done = await purger.purge("batch", [e.partition("/")[2] for e in kept])
    assert done.deleted == len(kept)
    assert (await queries.select(DeadLetterFilter(namespace="n0"), limit=100)).entries == []
    assert await client.exists(KEYS.dlq_indexes("batch")) == 0


async def test_retries_schedule_claim_release_ack_and_abandon(store: RedisStore) -> None:
    # Given three retry tickets due at T0
    for uid in ("t1", "t2", "t3"):
        assert (await store.schedule_retry(ticket(uid))).written
    assert not (await store.schedule_retry(ticket("t1"))).written
    assert await store.pending_retries() == 3

    # When they are claimed, one released, one settled as created and one abandoned
    batch = await store.claim_due_retries(limit=10)
    assert sorted(c.ticket_id for c in batch) == ["t1", "t2", "t3"]
    claims = {c.ticket_id: c.claim for c in batch}
    assert len(await store.claim_due_retries(limit=10)) == 0
    assert await store.release_retry("t1", delay_s=0.2, claim=claims["t1"])
    settled = await store.settle_created("t2", claim=claims["t2"], job=None)
    assert settled.status is BeginStatus.BEGUN
    abandoned = await store.abandon_retry(
        "t3", letter("t3", reason="namespace gone"), claim=claims["t3"]
    )

    # Then each ended once: t1 due again later, t2 gone, t3 a dead letter
    assert abandoned is not None and abandoned.action is Action.DEAD_LETTER
    assert await store.abandon_retry("t3", letter("t3")) is None
    again = await store.settle_created("t2", claim=claims["t2"], job=None)
    assert again.status is BeginStatus.SETTLED
    assert await store.pending_retries() == 1
    assert len(await store.claim_due_retries(limit=10)) == 0  # not due yet
    await asyncio.sleep(0.3)
    assert [c.ticket_id for c in await store.claim_due_retries(limit=10)] == ["t1"]


async def test_poison_tickets_are_quarantined_in_a_transaction(
    client: RedisCluster, store: RedisStore
) -> None:
    await store.schedule_retry(ticket("good"))
    for ticket_id, body in POISON_TICKETS.items():
        await client.hset(KEYS.retry_tickets, ticket_id, body)
        await client.zadd(KEYS.retry_due, {ticket_id: T0 * 1000})

    batch = await store.claim_due_retries(limit=100)

    assert [c.ticket_id for c in batch] == ["good"]
    assert {q.ticket_id for q in batch.quarantined} == set(POISON_TICKETS)
    assert set(await store.corrupt_retries()) == set(POISON_TICKETS)
    assert await store.pending_retries() == 1


async def test_forget_absent_forgets_markers_of_jobs_gone(store: RedisStore) -> None:
    for uid in ("gone", "listed"):
        await store.dead_letter(letter(uid))
    mark = await store.outcome_watermark()

    result = await store.forget_absent({"listed"}, written_up_to=mark, namespaces=None)

    assert result.forgotten == 1
    assert await store.outcome_markers() == 1


async def test_durability_names_the_weakest_primary(
    nodes: RedisClusterNodes, store: RedisStore
) -> None:
    # Given three primaries with the append-only file on, then one turned off
    assert (await store.durability()).durable
    weak = nodes.ports[1]
    command(weak, "CONFIG", "SET", "appendonly", "no")
    try:
        found = await store.durability()
    finally:
        command(weak, "CONFIG", "SET", "appendonly", "yes")

    # Then the verdict is "not durable", and the reason names that node and only it
    assert not found.durable
    assert len(found.missing) == 1
    assert found.missing[0].startswith(f"127.0.0.1:{weak}: no persistence (appendonly no")
    assert found.run_id.count("=") == 3
    assert await store.server_problems() == []
    await store.ping(1.0)


def test_dlq_list_reads_the_cluster_from_a_cluster_url(
    tmp_path: Path,
    nodes: RedisClusterNodes,
    elsewhere: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("KUBE_DLQ_REDIS_URL", "KUBE_DLQ_CONFIG", "KUBE_DLQ_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    url = nodes.url(elsewhere)

    async def fill() -> str:
        made = redis_client(replace(SETTINGS, url=url))
        try:
            await made.flushall(target_nodes=RedisCluster.PRIMARIES)
            store = RedisStore(made, SETTINGS, cluster_name=CLUSTER)
            return (await store.dead_letter(letter("cli-1"))).ref
        finally:
            await made.aclose()

    ref = asyncio.run(fill())
    config = tmp_path / "kube-dlq.yaml"
    config.write_text(
        f"cluster_name: {CLUSTER}\nredis:\n  url: {url}\n  key_prefix: {SETTINGS.key_prefix}\n"
        # written unsigned above (a store without a seal): the CLI is told to read such entries
        "security:\n  allow_unsigned: true\n"
    )

    code = main(["dlq", "list", "--config", str(config), "-o", "json"])

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert [row["id"] for row in json.loads(out)] == [ref]


async def test_a_cluster_nobody_answers_is_a_sink_error_not_a_crash() -> None:
    # Given a cluster URL whose only seed node is down (the slot map cannot be read)
    down = redis_client(replace(SETTINGS, url="redis+cluster://127.0.0.1:1/", socket_timeout_s=0.3))
    store = RedisStore(down, SETTINGS, cluster_name=CLUSTER)
    try:
        # Then every call fails as the one error the writer and the loops retry
        with pytest.raises(SinkError, match="cannot be connected"):
            await store.dead_letter(letter("d1"))
        with pytest.raises(SinkError):
            await store.durability()
    finally:
        await down.aclose()
