"""RetryLoop against the real control plane and a real redis-server.

The last test is the at-most-once proof (issue 7 item 7): two loops race on the same tickets
with a lease shorter than their creates (slow to send, reply lost, slow to answer) while every
retry Job is deleted as soon as it appears (what ttlSecondsAfterFinished: 0 does to a quick
Job); Jobs are counted from the apiserver's own watch, distinct uids per name.

Jobs are created with the daemon's own identity (``daemon_api``, bound to
deploy/manifests/rbac.yaml), so every test here also proves those permissions suffice. Counts
and checks go through the admin identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client, config, watch
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from structlog.testing import capture_logs

from devtools.devcluster.kubeapi import kubeconfig_dict
from devtools.devcluster.processes import free_port
from devtools.devcluster.redis_server import RedisServer
from devtools.devcluster.state import ClusterState
from tests.support.kube import RawObject, condition, eventually, job_manifest, raw
from tests.support.workloads import create_job, describe, list_jobs
from watcher.adapters.kube.jobs import JobsAPI
from watcher.adapters.kube.request import KubeClient
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.adapters.redis.store import RedisStore
from watcher.core.annotations import (
    ANNOTATION_ATTEMPT,
    ANNOTATION_HISTORY,
    ANNOTATION_ORIGINAL_NAME,
    ANNOTATION_ORIGINAL_UID,
    FINALIZER_RETRY_ACK,
)
from watcher.core.errors import KubeUnavailable
from watcher.core.lineage import Lineage
from watcher.core.manifest import manifest_for_ticket, replayable_manifest, with_create_token
from watcher.core.model import (
    AttemptRecord,
    ClaimedBatch,
    CreateIntent,
    DeadLetter,
    FailureClass,
    JobRef,
    RetryTicket,
    SettleResult,
    WriteResult,
)
from watcher.core.settings import KubernetesSettings, RedisSettings, RetryLoopSettings
from watcher.kit.logs import get_logger
from watcher.kit.metrics import Metrics
from watcher.service.ports import JobsPort, RetryStore
from watcher.service.retrying import RetryLoop

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

AVOIDED = "kwok-node-0"
FIRED = "kube_dlq_retries_fired_total"
CLUSTER = "retry"
SETTINGS = RedisSettings(key_prefix="kube-dlq-e2e")


# --- fixtures and helpers ------------------------------------------------------------------------


def make_redis(port: int, *, retries: int = 2) -> Redis:
    return Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries),
    )


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    conn = make_redis(redis_server.port)
    await conn.flushdb()
    try:
        yield conn
    finally:
        await conn.aclose()


def make_store(conn: Redis, **changes: Any) -> RedisStore:
    """A store for the test installation; `changes` to its redis settings (the claim lease)."""
    return RedisStore(conn, replace(SETTINGS, **changes), cluster_name=CLUSTER)


@pytest.fixture
def keys() -> Keys:
    return Keys(prefix=SETTINGS.key_prefix, cluster=CLUSTER)


def queries_of(redis: Redis) -> DeadLetterQueries:
    """The CLI's reader of what this module's stores write."""
    return DeadLetterQueries(redis, SETTINGS, cluster_name=CLUSTER)


@pytest.fixture
def store(redis: Redis) -> RedisStore:
    return make_store(redis)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def make_loop(
    store: RetryStore,
    api: client.ApiClient,
    metrics: Metrics,
    *,
    jobs: JobsPort | None = None,
    **settings: Any,
) -> RetryLoop:
    return RetryLoop(
        store=store,
        jobs=jobs or JobsAPI(KubeClient(api, KubernetesSettings())),
        settings=RetryLoopSettings(**settings),
        cluster_name=CLUSTER,
        metrics=metrics,
        logger=get_logger(),
    )


def fired(metrics: Metrics, outcome: str) -> float:
    return metrics.registry.get_sample_value(FIRED, {"outcome": outcome}) or 0.0


def ticket_for(
    namespace: str,
    name: str,
    *,
    manifest: RawObject | None = None,
    uid: str | None = None,
    avoid_node: str = "",
) -> RetryTicket:
    """A due ticket for attempt 2 of Job `name`, which failed on `AVOIDED` a minute ago."""
    uid = uid or str(uuid.uuid4())
    failed_at = time.time() - 60
    body = manifest or {**job_manifest(name), "metadata": {"name": name, "namespace": namespace}}
    return RetryTicket(
        job=JobRef(namespace, name, uid),
        attempt=2,
        due_at=time.time() - 1,
        failure_class=FailureClass.NODE_LOST,
        reason=f"node {AVOIDED} lost",
        manifest=replayable_manifest(body),
        history=(AttemptRecord(1, name, uid, FailureClass.NODE_LOST, "node lost", failed_at),),
        avoid_node=avoid_node,
    )


async def read_job(api: client.ApiClient, namespace: str, name: str) -> RawObject:
    return await raw(
        client.BatchV1Api(api).read_namespaced_job(name, namespace, _preload_content=False)
    )


async def create_namespace(api: client.ApiClient, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    await raw(core.create_namespace({"metadata": {"name": name}}, _preload_content=False))
    return name


async def namespace_phase(api: client.ApiClient, name: str) -> str:
    """The namespace's phase, or "Gone" once it no longer exists."""
    found = await raw(client.CoreV1Api(api).read_namespace(name, _preload_content=False))
    if found.get("kind") == "Status" and found.get("code") == 404:
        return "Gone"
    return str((found.get("status") or {}).get("phase", ""))


async def redis_now(redis: Redis) -> float:
    seconds, micros = await redis.time()
    return float(seconds + micros / 1e6)


async def due_score(redis: Redis, keys: Keys, ticket_id: str) -> float | None:
    score = await redis.zscore(keys.retry_due, ticket_id)
    return None if score is None else float(score) / 1000


@pytest.fixture
async def terminating_namespace(admin_api: client.ApiClient) -> AsyncIterator[str]:
    """A namespace held in Terminating by a finalizer: creates in it get 403 Forbidden."""
    core = client.CoreV1Api(admin_api)
    name = await create_namespace(admin_api, "t-held")
    hold = {"metadata": {"name": "hold", "finalizers": ["kube-dlq.io/test-hold"]}}
    await raw(core.create_namespaced_config_map(name, hold, _preload_content=False))
    await raw(core.delete_namespace(name, _preload_content=False))

    async def terminating() -> bool:
        return await namespace_phase(admin_api, name) == "Terminating"

    await eventually(terminating, within=30, what=f"namespace {name} to be Terminating")
    try:
        yield name
    finally:
        release = [{"op": "remove", "path": "/metadata/finalizers"}]
        await raw(core.patch_namespaced_config_map("hold", name, release, _preload_content=False))


@pytest.fixture
async def bogus_api(cluster: ClusterState, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    """A client for the real apiserver with a token it does not know (401 Unauthorized)."""
    path = tmp_path / "bogus.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            kubeconfig_dict(cluster.api_url, Path(cluster.ca_file), "not-a-token", user="nobody")
        )
    )
    api = await config.new_client_from_config(config_file=str(path))
    async with api:
        yield api


# --- behaviour -----------------------------------------------------------------------------------


async def test_due_ticket_recreates_the_job_which_then_runs(
    admin_api: client.ApiClient,
    daemon_api: client.ApiClient,
    namespace: str,
    store: RedisStore,
    metrics: Metrics,
) -> None:
    # Given a Job as the apiserver returns it, and a due retry ticket that avoids its node
    original = await create_job(
        admin_api,
        namespace,
        job_manifest("report", labels={"team": "data"}, annotations={"owner": "alice"}),
    )
    uid = original["metadata"]["uid"]
    ticket = ticket_for(namespace, "report", manifest=original, uid=uid, avoid_node=AVOIDED)
    assert (await store.schedule_retry(ticket)).written

    # When the loop fires due retries as the daemon
    with capture_logs() as logs:
        claimed = await make_loop(store, daemon_api, metrics).fire_due()

    # Then the Job is re-created under its retry name, with its lineage and node avoidance
    assert claimed == 1
    job = await read_job(admin_api, namespace, "report-r2")
    annotations = job["metadata"]["annotations"]
    assert annotations["owner"] == "alice"
    assert annotations[ANNOTATION_ORIGINAL_NAME] == "report"
    assert annotations[ANNOTATION_ORIGINAL_UID] == uid
    assert annotations[ANNOTATION_ATTEMPT] == "2"
    assert '"job":"report"' in annotations[ANNOTATION_HISTORY]
    assert job["metadata"]["labels"] == {"team": "data"}
    new_uid = job["metadata"]["uid"]
    assert job["spec"]["selector"]["matchLabels"] == {"batch.kubernetes.io/controller-uid": new_uid}
    affinity = job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [AVOIDED]}
            ]
        }
    ]
    # And the ticket is gone, counted and logged
    assert await store.pending_retries() == 0
    assert fired(metrics, "created") == 1
    assert metrics.registry.get_sample_value("kube_dlq_retries_pending") == 0
    assert [e["event"] for e in logs if e["event"].startswith("retry_")] == ["retry_fired"]

    # And the re-created Job runs to completion on another node
    async def complete() -> RawObject | None:
        current = await read_job(admin_api, namespace, "report-r2")
        return current if condition(current, "Complete") else None

    try:
        await eventually(complete, within=60, what="Job report-r2 to complete")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await describe(admin_api, namespace)}") from None
    pods = await raw(
        client.CoreV1Api(admin_api).list_namespaced_pod(
            namespace, label_selector="job-name=report-r2", _preload_content=False
        )
    )
    nodes = {pod["spec"].get("nodeName") for pod in pods["items"]}
    assert nodes and AVOIDED not in nodes


@dataclass
class Replica:
    """One daemon replica: its own Redis connection, API client and metrics."""

    store: RetryStore
    api: client.ApiClient
    metrics: Metrics


MakeReplicas = Callable[..., Awaitable[list[Replica]]]


@pytest.fixture
async def replicas(cluster: ClusterState, redis_server: RedisServer) -> AsyncIterator[MakeReplicas]:
    """Factory: `await replicas(lease_s=...)` makes two replicas whose stores lease claimed
    tickets for `lease_s` (the product's redis.retry_claim_lease_s); all closed afterwards."""
    made: list[Replica] = []
    conns: list[Redis] = []

    async def make(*, lease_s: float) -> list[Replica]:
        pair: list[Replica] = []
        for _ in range(2):
            conn = make_redis(redis_server.port)
            conns.append(conn)
            api = await config.new_client_from_config(config_file=cluster.daemon_kubeconfig)
            replica = Replica(make_store(conn, retry_claim_lease_s=lease_s), api, Metrics())
            made.append(replica)  # closed at teardown even if the second one fails
            pair.append(replica)
        return pair

    try:
        yield make
    finally:
        for replica in made:
            await replica.api.close()
        for conn in conns:
            await conn.aclose()


class ClaimSignal:
    """A RetryStore that passes everything to `inner`, sets `claimed` after each claim, and
    holds every ack until `acks_allowed` is set (so a test controls the interleaving)."""

    def __init__(self, inner: RetryStore) -> None:
        self.inner = inner
        self.claimed = asyncio.Event()
        self.acks_allowed = asyncio.Event()
        self.acks_allowed.set()

    async def claim_due_retries(self, *, limit: int) -> ClaimedBatch:
        got = await self.inner.claim_due_retries(limit=limit)
        self.claimed.set()
        return got

    async def next_due_in(self) -> float | None:
        return await self.inner.next_due_in()

    async def begin_create(
        self, ticket_id: str, *, claim: int, job: JobRef, lineage: Lineage
    ) -> CreateIntent:
        return await self.inner.begin_create(ticket_id, claim=claim, job=job, lineage=lineage)

    async def settle_created(
        self, ticket_id: str, *, claim: int, job: JobRef | None
    ) -> SettleResult:
        await self.acks_allowed.wait()
        return await self.inner.settle_created(ticket_id, claim=claim, job=job)

    async def release_retry(self, ticket_id: str, *, delay_s: float, claim: int = 0) -> bool:
        return await self.inner.release_retry(ticket_id, delay_s=delay_s, claim=claim)

    async def abandon_retry(
        self, ticket_id: str, letter: DeadLetter, *, claim: int = 0
    ) -> WriteResult | None:
        return await self.inner.abandon_retry(ticket_id, letter, claim=claim)

    async def pending_retries(self) -> int:
        return await self.inner.pending_retries()

    async def due_finalizers(self, *, limit: int) -> list[JobRef]:
        return await self.inner.due_finalizers(limit=limit)

    async def finalizer_released(self, job: JobRef) -> None:
        await self.inner.finalizer_released(job)


def outcome_counts(replicas: list[Replica]) -> dict[str, float]:
    return {
        outcome: sum(fired(r.metrics, outcome) for r in replicas)
        for outcome in ("created", "already_exists", "abandoned", "deferred")
    }


async def assert_each_retry_job_exists_once(
    api: client.ApiClient, namespace: str, count: int
) -> None:
    retried = [j for j in await list_jobs(api, namespace) if j["metadata"]["name"].endswith("-r2")]
    names = sorted(j["metadata"]["name"] for j in retried)
    assert names == [f"batch-{i:02d}-r2" for i in range(count)]
    assert all(j["metadata"]["annotations"][ANNOTATION_ATTEMPT] == "2" for j in retried)


@pytest.mark.parametrize("concurrency", [1, 16])
async def test_two_loops_holding_the_same_tickets_create_each_job_exactly_once(
    admin_api: client.ApiClient,
    namespace: str,
    store: RedisStore,
    replicas: MakeReplicas,
    concurrency: int,
) -> None:
    # Given 20 due tickets that replica A claims with a lease that has run out by the time
    # replica B claims (on Redis's clock), so both replicas hold all 20 at once
    for i in range(20):
        assert (await store.schedule_retry(ticket_for(namespace, f"batch-{i:02d}"))).written
    a, b = await replicas(lease_s=1.0)
    signal_a, signal_b = ClaimSignal(a.store), ClaimSignal(b.store)
    signal_a.acks_allowed.clear()  # A may not ack anything before B has claimed
    settings: dict[str, Any] = {"batch_size": 20, "fire_concurrency": concurrency}
    loop_a = make_loop(signal_a, a.api, a.metrics, **settings)
    loop_b = make_loop(signal_b, b.api, b.metrics, **settings)

    # When both fire them at the same time
    fire_a = asyncio.create_task(loop_a.fire_due())
    await signal_a.claimed.wait()
    await asyncio.sleep(1.1)  # A's lease runs out
    fire_b = asyncio.create_task(loop_b.fire_due())
    await signal_b.claimed.wait()
    signal_a.acks_allowed.set()
    claimed = await asyncio.gather(fire_a, fire_b)

    # Then each Job was created once: A created those it had started (one at a time: the
    # first; 16 at once: up to 16) and B found them by their token; B holds the newer claims
    # and created the rest; A, fenced out, created nothing more
    assert list(claimed) == [20, 20]
    await assert_each_retry_job_exists_once(admin_api, namespace, 20)
    by_a = fired(a.metrics, "created")
    assert 1 <= by_a <= concurrency
    counts = outcome_counts([a, b])
    assert counts == {"created": 20, "already_exists": by_a, "abandoned": 0, "deferred": 0}
    assert await store.pending_retries() == 0


async def test_two_running_loops_with_short_leases_create_each_job_exactly_once(
    admin_api: client.ApiClient, namespace: str, store: RedisStore, replicas: MakeReplicas
) -> None:
    # Given 20 due tickets, and two running replicas whose leases run out almost at once, so
    # they may re-claim tickets the other one is still creating
    for i in range(20):
        assert (await store.schedule_retry(ticket_for(namespace, f"batch-{i:02d}"))).written
    running = await replicas(lease_s=0.005)
    settings: dict[str, Any] = {"poll_interval_s": 0.01, "batch_size": 4}
    loops = [make_loop(r.store, r.api, r.metrics, **settings) for r in running]
    stop = asyncio.Event()

    # When both run until no ticket is left
    runs = [asyncio.create_task(loop.run(stop)) for loop in loops]

    async def drained() -> bool:
        return await store.pending_retries() == 0

    try:
        await eventually(drained, within=60, what="every ticket to be acked", every=0.05)
    finally:
        stop.set()
        await asyncio.gather(*runs)

    # Then every Job exists once, and exactly 20 creates succeeded over both replicas
    await assert_each_retry_job_exists_once(admin_api, namespace, 20)
    counts = outcome_counts(running)
    assert counts["created"] == 20, counts
    assert counts["abandoned"] == counts["deferred"] == 0, counts


async def test_ticket_whose_job_already_exists_is_acked_as_already_exists(
    admin_api: client.ApiClient,
    daemon_api: client.ApiClient,
    namespace: str,
    store: RedisStore,
    metrics: Metrics,
    redis: Redis,
) -> None:
    # Given an earlier firing (its create intent recorded, then the create) crashed before
    # settling its ticket, whose lease then ran out
    ticket = ticket_for(namespace, "ingest")
    assert (await store.schedule_retry(ticket)).written
    short = make_store(redis, retry_claim_lease_s=0.2)
    [earlier] = await short.claim_due_retries(limit=1)
    name = manifest_for_ticket(ticket)["metadata"]["name"]
    intent = await short.begin_create(
        earlier.ticket_id,
        claim=earlier.claim,
        job=JobRef(namespace, name, ""),
        lineage=Lineage(ticket.attempt, ticket.history),
    )
    body = with_create_token(
        manifest_for_ticket(ticket), ticket_id=ticket.job.uid, token=intent.token
    )
    existing = await create_job(admin_api, namespace, body)
    await asyncio.sleep(0.3)

    # When the ticket is fired again
    with capture_logs() as logs:
        claimed = await make_loop(store, daemon_api, metrics).fire_due()

    # Then it is acked as already_exists and the existing Job is the only one
    assert claimed == 1
    assert fired(metrics, "already_exists") == 1
    assert fired(metrics, "created") == 0
    assert await store.pending_retries() == 0
    jobs = await list_jobs(admin_api, namespace)
    assert [j["metadata"]["uid"] for j in jobs] == [existing["metadata"]["uid"]]
    assert "retry_already_exists" in [e["event"] for e in logs]
    record = await store.create_record(ticket.job.uid)
    assert record is not None and record.uid == existing["metadata"]["uid"]


async def test_foreign_job_holding_the_retry_name_gets_a_retry_of_its_own_name(
    admin_api: client.ApiClient,
    daemon_api: client.ApiClient,
    namespace: str,
    store: RedisStore,
    metrics: Metrics,
) -> None:
    # Given someone else's Job already has the name the retry would get (a re-created
    # fixed-name Job and its own retry, say)
    foreign = await create_job(admin_api, namespace, job_manifest("ingest-r2"))
    ticket = ticket_for(namespace, "ingest")
    assert (await store.schedule_retry(ticket)).written

    # When the ticket is fired
    with capture_logs() as logs:
        await make_loop(store, daemon_api, metrics).fire_due()

    # Then the retry runs once, under the name unique to its ticket, and the foreign Job is
    # left alone
    assert fired(metrics, "created") == 1
    assert fired(metrics, "abandoned") == 0
    assert await store.pending_retries() == 0
    current = await read_job(admin_api, namespace, "ingest-r2")
    assert current["metadata"]["uid"] == foreign["metadata"]["uid"]
    unique = manifest_for_ticket(ticket, unique_name=True)["metadata"]["name"]
    assert unique.startswith("ingest-") and unique.endswith("-r2") and unique != "ingest-r2"
    retry = await read_job(admin_api, namespace, unique)
    assert retry["metadata"]["annotations"][ANNOTATION_ORIGINAL_UID] == ticket.job.uid
    assert "retry_name_taken" in [e["event"] for e in logs]


async def test_foreign_jobs_holding_both_names_dead_letter_the_ticket_with_the_reason(
    admin_api: client.ApiClient,
    daemon_api: client.ApiClient,
    namespace: str,
    store: RedisStore,
    metrics: Metrics,
    redis: Redis,
) -> None:
    # Given someone else's Jobs hold both the usual and the unique retry name
    ticket = ticket_for(namespace, "ingest")
    unique = manifest_for_ticket(ticket, unique_name=True)["metadata"]["name"]
    for name in ("ingest-r2", unique):
        await create_job(admin_api, namespace, job_manifest(name))
    assert (await store.schedule_retry(ticket)).written

    # When the ticket is fired
    with capture_logs() as logs:
        await make_loop(store, daemon_api, metrics).fire_due()

    # Then it ends as a dead letter that says why, and no Job is created or touched
    assert fired(metrics, "abandoned") == 1
    assert await store.pending_retries() == 0
    [(_, letter)] = list(await queries_of(redis).list_dead_letters(None, count=10))
    assert letter.job == ticket.job and letter.queue == ticket.queue
    assert "could not be created" in letter.reason and "not this ticket's retry" in letter.reason
    assert letter.attempts == ticket.attempt - 1
    abandoned = [e for e in logs if e["event"] == "retry_abandoned"]
    assert len(abandoned) == 1 and abandoned[0]["status"] == 409


async def test_ticket_for_a_deleted_namespace_is_abandoned(
    admin_api: client.ApiClient,
    daemon_api: client.ApiClient,
    store: RedisStore,
    metrics: Metrics,
    redis: Redis,
) -> None:
    # Given a ticket whose namespace has been deleted since the Job failed
    gone = await create_namespace(admin_api, "t-gone")
    await raw(client.CoreV1Api(admin_api).delete_namespace(gone, _preload_content=False))

    async def deleted() -> bool:
        return await namespace_phase(admin_api, gone) == "Gone"

    await eventually(deleted, within=60, what=f"namespace {gone} to be deleted")
    ticket = ticket_for(gone, "cleanup")
    assert (await store.schedule_retry(ticket)).written

    # When it is fired
    with capture_logs() as logs:
        await make_loop(store, daemon_api, metrics).fire_due()

    # Then it is abandoned (acked, logged with its identity), not retried forever
    assert fired(metrics, "abandoned") == 1
    assert await store.pending_retries() == 0
    assert await make_loop(store, daemon_api, metrics).fire_due() == 0
    abandoned = [e for e in logs if e["event"] == "retry_abandoned"]
    assert len(abandoned) == 1
    assert abandoned[0]["status"] == 404
    assert abandoned[0]["namespace"] == gone
    [(_, letter)] = list(await queries_of(redis).list_dead_letters(None, count=10))
    assert letter.job == ticket.job and "could not be created" in letter.reason
    assert abandoned[0]["failed_job"] == "cleanup"
    assert abandoned[0]["failed_job_uid"] == ticket.job.uid


async def test_forbidden_create_is_released_and_stays_pending(
    daemon_api: client.ApiClient,
    terminating_namespace: str,
    redis: Redis,
    keys: Keys,
    store: RedisStore,
    metrics: Metrics,
) -> None:
    # Given a ticket for a namespace that is Terminating: the apiserver answers 403 Forbidden
    ticket = ticket_for(terminating_namespace, "export")
    assert (await store.schedule_retry(ticket)).written

    # When it is fired
    now = await redis_now(redis)
    with capture_logs() as logs:
        loop = make_loop(store, daemon_api, metrics, defer_base_s=30, defer_cap_s=60)
        await loop.fire_due()

    # Then it is released with a backoff, still pending and not due again yet
    assert fired(metrics, "deferred") == 1
    assert await store.pending_retries() == 1
    due = await due_score(redis, keys, ticket.job.uid)
    assert due is not None and now + 15 <= due <= now + 30.5
    assert await loop.fire_due() == 0
    deferred = [e for e in logs if e["event"] == "retry_deferred"]
    assert [e["status"] for e in deferred] == [403]


async def test_unauthorized_client_defers_without_dropping_the_ticket(
    bogus_api: client.ApiClient,
    namespace: str,
    redis: Redis,
    keys: Keys,
    store: RedisStore,
    metrics: Metrics,
) -> None:
    # Given a loop whose API credentials the apiserver rejects
    ticket = ticket_for(namespace, "export")
    assert (await store.schedule_retry(ticket)).written
    loop = make_loop(store, bogus_api, metrics, defer_base_s=10, defer_cap_s=40)

    # When it fires the ticket twice (the second time once its deferral is due)
    now = await redis_now(redis)
    with capture_logs() as logs:
        await loop.fire_due()
        first_due = await due_score(redis, keys, ticket.job.uid)
        await redis.zadd(keys.retry_due, {ticket.job.uid: 0})  # due now
        second_now = await redis_now(redis)
        await loop.fire_due()
        second_due = await due_score(redis, keys, ticket.job.uid)

    # Then both attempts are deferred with a growing delay, and the ticket is still pending
    assert fired(metrics, "deferred") == 2
    assert await store.pending_retries() == 1
    assert first_due is not None and now + 5 <= first_due <= now + 10.5
    assert second_due is not None and second_now + 10 <= second_due <= second_now + 20.5
    assert [e["status"] for e in logs if e["event"] == "retry_deferred"] == [401, 401]


async def test_run_updates_the_pending_gauge_and_stops_promptly(
    daemon_api: client.ApiClient, namespace: str, store: RedisStore, metrics: Metrics
) -> None:
    # Given one ticket that is not due for an hour, and a running loop
    later = ticket_for(namespace, "later")
    assert (await store.schedule_retry(later, delay_s=3600)).written
    stop = asyncio.Event()
    loop = make_loop(store, daemon_api, metrics, poll_interval_s=30.0)
    task = asyncio.create_task(loop.run(stop))

    async def gauge_set() -> bool:
        return metrics.registry.get_sample_value("kube_dlq_retries_pending") == 1

    await eventually(gauge_set, within=10, what="the pending gauge to show 1", every=0.02)

    # When stop is set in the middle of its 30 s wait
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, timeout=5)

    # Then run returns at once and the ticket was not fired
    assert time.monotonic() - started < 1.0
    assert fired(metrics, "created") == 0
    assert await store.pending_retries() == 1


class StopAfterClaim(ClaimSignal):
    """Sets `stop` right after a claim, as a SIGTERM arriving at that moment would."""

    def __init__(self, inner: RetryStore, stop: asyncio.Event) -> None:
        super().__init__(inner)
        self.stop = stop

    async def claim_due_retries(self, *, limit: int) -> ClaimedBatch:
        got = await super().claim_due_retries(limit=limit)
        self.stop.set()
        return got


async def test_stopping_releases_claimed_tickets_not_yet_fired(
    daemon_api: client.ApiClient,
    namespace: str,
    redis: Redis,
    keys: Keys,
    store: RedisStore,
    metrics: Metrics,
) -> None:
    # Given three due tickets, and a stop that arrives just after the loop claimed them
    tickets = [ticket_for(namespace, f"batch-{i:02d}") for i in range(3)]
    for ticket in tickets:
        assert (await store.schedule_retry(ticket)).written
    stop = asyncio.Event()
    leased_long = make_store(redis, retry_claim_lease_s=600)
    loop = make_loop(StopAfterClaim(leased_long, stop), daemon_api, metrics)

    # When the loop runs
    await asyncio.wait_for(loop.run(stop), timeout=5)

    # Then no Job was created and the tickets are due again at once, not after their lease
    assert fired(metrics, "created") == 0
    assert await redis.zcard(keys.retry_inflight) == 0
    for ticket in tickets:
        due = await due_score(redis, keys, ticket.job.uid)
        assert due is not None and due <= await redis_now(redis)


async def test_run_survives_redis_being_down(daemon_api: client.ApiClient) -> None:
    # Given a loop whose Redis refuses connections
    dead = make_redis(free_port(), retries=0)
    metrics = Metrics()
    stop = asyncio.Event()
    loop = make_loop(
        make_store(dead), daemon_api, metrics, poll_interval_s=0.01, error_backoffs_s=(0.02,)
    )

    # When it runs for a while
    with capture_logs() as logs:
        task = asyncio.create_task(loop.run(stop))

        async def failed_thrice() -> bool:
            errors = metrics.registry.get_sample_value(
                "kube_dlq_redis_errors_total", {"operation": "claim_due_retries"}
            )
            return (errors or 0) >= 3

        try:
            await eventually(failed_thrice, within=10, what="three failed claims", every=0.02)
        finally:
            # Then it keeps going until told to stop, and stops promptly
            assert not task.done()
            stop.set()
            await asyncio.wait_for(task, timeout=5)
            await dead.aclose()
    assert {e["event"] for e in logs} >= {"retry_cycle_failed", "retry_loop_stopped"}


# --- at most once, under faults -----------------------------------------------------------

TICKETS = 30
LEASE_S = 0.4
SLOW_S = 1.0


class FaultyCreates:
    """The daemon's JobsAPI, with the create of each Job faulted by its index: slow to send
    (0), reply lost after the create happened (1), slow to answer (2). Each fault hits the
    first create of that name only; later ones pass (the fault was the network's)."""

    def __init__(self, api: client.ApiClient, faulted: set[str]) -> None:
        self.inner = JobsAPI(KubeClient(api, KubernetesSettings()))
        self.faulted = faulted

    async def get(self, namespace: str, name: str) -> RawObject | None:
        return await self.inner.get(namespace, name)

    async def create(self, namespace: str, body: Mapping[str, Any]) -> RawObject:
        name = body["metadata"]["name"]
        kind = int(name.split("-")[1]) % 3
        first = name not in self.faulted
        self.faulted.add(name)
        if first and kind == 0:
            await asyncio.sleep(SLOW_S)
        created = await self.inner.create(namespace, body)
        if first and kind == 1:
            raise KubeUnavailable("creating Job failed", reason="reply lost", timed_out=True)
        if first and kind == 2:
            await asyncio.sleep(SLOW_S)
        return created

    async def delete(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        return await self.inner.delete(namespace, name, uid=uid)

    async def remove_finalizer(self, job: JobRef, finalizer: str) -> bool:
        return await self.inner.remove_finalizer(job, finalizer)

    async def warn(self, job: JobRef, reason: str, message: str) -> None:
        await self.inner.warn(job, reason, message)


@contextlib.asynccontextmanager
async def deleting_every_job(
    api: client.ApiClient, namespace: str
) -> AsyncIterator[dict[str, set[str]]]:
    """Watch the namespace's Jobs from now: record the uids created per name, and delete each
    one as soon as it is seen (it may stay Terminating while kube-dlq's finalizer holds it)."""
    batch = client.BatchV1Api(api)
    listed = await raw(batch.list_namespaced_job(namespace, _preload_content=False))
    assert listed["items"] == []
    seen: dict[str, set[str]] = defaultdict(set)

    async def run() -> None:
        stream = watch.Watch()
        async with stream:
            async for event in stream.stream(
                batch.list_namespaced_job,
                namespace,
                resource_version=listed["metadata"]["resourceVersion"],
                timeout_seconds=300,
                _preload_content=False,
            ):
                job = event["raw_object"]
                meta = job["metadata"]
                if event["type"] == "ADDED":
                    uid = meta["uid"]
                    seen[meta["name"]].add(uid)
                    body = {
                        "propagationPolicy": "Background",
                        "preconditions": {"uid": meta["uid"]},
                    }
                    await raw(
                        batch.delete_namespaced_job(
                            meta["name"], namespace, body=body, _preload_content=False
                        )
                    )

    task = asyncio.create_task(run())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_racing_loops_with_lost_replies_and_deleted_jobs_create_each_job_once(
    admin_api: client.ApiClient, namespace: str, store: RedisStore, replicas: MakeReplicas
) -> None:
    # Given 30 due tickets and two replicas whose leases run out during their creates
    for i in range(TICKETS):
        assert (await store.schedule_retry(ticket_for(namespace, f"batch-{i:02d}"))).written
    pair: list[Replica] = await replicas(lease_s=LEASE_S)
    faulted: set[str] = set()
    settings: dict[str, Any] = {
        "poll_interval_s": 0.02,
        "batch_size": 3,
        "defer_base_s": 0.05,
        "defer_cap_s": 0.2,
    }
    loops = [make_loop(r.store, r.api, r.metrics, **settings) for r in pair]
    for loop, replica in zip(loops, pair, strict=True):
        loop._jobs = FaultyCreates(replica.api, faulted)  # the faults sit in front of the API
    stop = asyncio.Event()

    # When both run until every ticket is settled, while every retry Job is deleted at once
    async with deleting_every_job(admin_api, namespace) as seen:
        runs = [asyncio.create_task(loop.run(stop)) for loop in loops]

        async def drained() -> bool:
            return await store.pending_retries() == 0

        try:
            await eventually(drained, within=120, what="every ticket to be settled", every=0.1)
            await asyncio.sleep(2 * SLOW_S)  # any create still on its way lands (or not) now
        finally:
            stop.set()
            await asyncio.gather(*runs)

    # Then the apiserver saw exactly one Job per ticket: one uid for every retry name
    assert sorted(seen) == [f"batch-{i:02d}-r2" for i in range(TICKETS)]
    assert {name: len(uids) for name, uids in seen.items() if len(uids) != 1} == {}
    counts = outcome_counts(pair)
    assert counts["abandoned"] == 0, counts
    # And each Job is held only by kube-dlq's finalizer until its grace has passed: the ones
    # whose creates did not race are already gone
    left = await raw(
        client.BatchV1Api(admin_api).list_namespaced_job(namespace, _preload_content=False)
    )
    for job in left["items"]:
        assert job["metadata"].get("deletionTimestamp")
        assert job["metadata"]["finalizers"] == [FINALIZER_RETRY_ACK]
