"""The whole daemon against the real local control plane and a real redis-server.

Each test submits Jobs that fail the way batch work fails (through the project's kwok
stages), lets a kube-dlq daemon (in-process, or `kube-dlq run` as a subprocess) handle them,
and checks what a user would notice: the dead letters `kube-dlq dlq list/show` print, the Jobs
`kubectl get jobs` shows, the Events on a Job, /metrics and /readyz. Every test has its own
namespace, its own cluster_name (so its own Redis keys) on a flushed Redis, and its own daemon.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client
from redis.asyncio import Redis

from devtools.devcluster.kubeapi import kubeconfig_dict
from devtools.devcluster.redis_server import RedisServer
from devtools.devcluster.state import ClusterState
from tests.support.daemon import (
    SHUTDOWN_GRACE_S,
    STUCK_DWELL_S,
    DaemonProcess,
    RunningDaemon,
    SpawnDaemon,
    StartDaemon,
    all_dead_letters,
    by_uid,
    config_doc,
    dlq_list,
    dlq_show,
    kube_dlq,
    try_get,
    wait_dead_letters,
    write_config,
)
from tests.support.kube import RawObject, condition, eventually
from tests.support.workloads import (
    IO_TIMEOUT_MESSAGE,
    break_node,
    create_job,
    deadline_job,
    delete_node,
    describe,
    evict,
    failing_job,
    flaky_node,
    image_pull_job,
    job_events,
    job_pods,
    list_jobs,
    pinned_to,
    read_job,
    running_job,
    wait_job_condition,
    wait_pod_running,
)
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.app.config import parse_config
from watcher.app.sealing import build_seal
from watcher.core.annotations import ANNOTATION_ATTEMPT, ANNOTATION_HISTORY

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

MAX_RETRIES = "kube-dlq.io/max-retries"
BACKOFF = "kube-dlq.io/backoff"
QUEUE = "kube-dlq.io/queue"
HOSTNAME = "kubernetes.io/hostname"


# --- helpers -------------------------------------------------------------------------------------


def config_file(tmp_path: Path, running: RunningDaemon) -> Path:
    """The running daemon's config as a file, for `kube-dlq dlq list --config`."""
    return write_config(tmp_path / "kube-dlq.yaml", running.doc)


def queries_of(process: DaemonProcess, redis: Redis) -> DeadLetterQueries:
    """A reader of the dead letters the daemon process writes (its cluster's keys)."""
    config = parse_config(yaml.safe_load(process.config.read_text()))
    seal = build_seal(config.security)
    return DeadLetterQueries(redis, config.redis, cluster_name=config.cluster_name, seal=seal)


def uid_of(job: RawObject) -> str:
    return str(job["metadata"]["uid"])


async def job_or_describe(
    admin_api: client.ApiClient, namespace: str, name: str, *, within: float
) -> RawObject:
    """Wait until Job `name` exists; on timeout, say what the namespace holds."""

    async def exists() -> RawObject | None:
        return await read_job(admin_api, namespace, name)

    try:
        return await eventually(exists, within=within, what=f"Job {name} to be created")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await describe(admin_api, namespace)}") from None


async def settled(
    process: DaemonProcess, jobs: int, *, within: float = 60, what: str = ""
) -> tuple[float, float]:
    """Wait until the daemon process has handled `jobs` failures (written or found already
    handled); returns (dead letters written, duplicates suppressed) from its /metrics."""

    async def counts() -> tuple[float, float] | None:
        written = await process.metric("kube_dlq_dead_letters_total")
        dupes = await process.metric("kube_dlq_duplicates_suppressed_total")
        return (written, dupes) if written + dupes >= jobs else None

    try:
        return await eventually(counts, within=within, what=what or f"{jobs} failures handled")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{process.log_tail()}") from None


# --- 1. one dead letter per failure class --------------------------------------------------------


@dataclass(frozen=True)
class Case:
    manifest: Callable[[str], RawObject]
    failure_class: str
    reason: str
    """A fragment of the dead letter's reason."""
    stuck: bool = False
    """Kubernetes never fails the Job; kube-dlq does after the stuck dwell, and deletes it."""


CASES = {
    "exit-2": Case(
        lambda name: failing_job(name, exit_code=2, message="ValueError: bad input in row 17"),
        "app_error",
        "exited with code 2",
    ),
    "oom-killed": Case(
        lambda name: failing_job(
            name, exit_code=137, reason="OOMKilled", message="memory limit 512Mi exceeded"
        ),
        "oom_killed",
        "OOM-killed",
    ),
    "exit-137-not-oom": Case(
        lambda name: failing_job(name, exit_code=137, reason="Error", message="Killed"),
        "app_error",
        "137",
    ),
    "deadline": Case(lambda name: deadline_job(name, 3), "deadline_exceeded", "activeDeadline"),
    "image-pull": Case(image_pull_job, "image_pull", "pull", stuck=True),
    "io-timeout-no-retries": Case(
        lambda name: failing_job(
            name, exit_code=1, message=IO_TIMEOUT_MESSAGE, annotations={MAX_RETRIES: "0"}
        ),
        "io_timeout",
        "I/O timeout",
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_failed_job_is_dead_lettered_once_with_its_class(
    case: Case,
    start_daemon: StartDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    cluster_name: str,
    tmp_path: Path,
) -> None:
    # Given a running daemon
    daemon = await start_daemon()

    # When a Job fails in this way
    job = await create_job(admin_api, namespace, case.manifest("work"))
    within = STUCK_DWELL_S + 60 if case.stuck else 60
    [(_, letter)] = await wait_dead_letters(daemon.queries, 1, within=within)

    # Then `kube-dlq dlq list` shows exactly one dead letter for it, with its class
    entries = await dlq_list(config_file(tmp_path, daemon))
    assert len(entries) == 1, entries
    [entry] = entries
    assert entry["failure_class"] == case.failure_class, entry
    assert case.reason in entry["reason"], entry
    assert (entry["namespace"], entry["job"], entry["job_uid"]) == (
        namespace,
        "work",
        uid_of(job),
    )
    assert entry["attempts"] == 1
    assert entry["cluster"] == cluster_name
    assert entry["queue"] == "default"
    assert await daemon.store.pending_retries() == 0
    if case.stuck:
        # And the stuck Job, which Kubernetes would have left Pending forever, is deleted
        async def deleted() -> bool:
            return await read_job(admin_api, namespace, "work") is None

        await eventually(deleted, within=30, what="the stuck Job to be deleted")

    # And its manifest replays: POSTed back under a new name, the apiserver takes it as is
    replay = {**letter.manifest, "metadata": {**letter.manifest["metadata"], "name": "work-again"}}
    again = await create_job(admin_api, namespace, replay)
    assert uid_of(again) != uid_of(job)
    template = again["spec"]["template"]["metadata"]
    original = job["spec"]["template"]["metadata"]
    assert template.get("annotations") == original.get("annotations")
    assert again["spec"].get("activeDeadlineSeconds") == job["spec"].get("activeDeadlineSeconds")


# --- 2. retries, then one dead letter ------------------------------------------------------------


async def test_retried_job_is_dead_lettered_once_when_its_retries_run_out(
    start_daemon: StartDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    # Given a daemon, and a Job that fails on a network timeout and allows two retries
    daemon = await start_daemon()
    annotations = {MAX_RETRIES: "2", BACKOFF: "1s"}
    await create_job(
        admin_api,
        namespace,
        failing_job("ingest", exit_code=1, message=IO_TIMEOUT_MESSAGE, annotations=annotations),
    )

    # When every attempt fails the same way
    await wait_dead_letters(daemon.queries, 1, within=120, what="the dead letter of ingest-r3")

    # Then the Job was re-created twice, and each attempt failed
    jobs = {j["metadata"]["name"]: j for j in await list_jobs(admin_api, namespace)}
    assert sorted(jobs) == ["ingest", "ingest-r2", "ingest-r3"]
    for name, job in jobs.items():
        assert condition(job, "Failed"), f"{name}: {job.get('status')}"
    assert jobs["ingest-r3"]["metadata"]["annotations"][ANNOTATION_ATTEMPT] == "3"

    # And there is exactly one dead letter: the last attempt, with the whole history
    config = config_file(tmp_path, daemon)
    entries = await dlq_list(config)
    assert len(entries) == 1, entries
    [entry] = entries
    assert (entry["job"], entry["failure_class"], entry["attempts"]) == (
        "ingest-r3",
        "io_timeout",
        3,
    )
    assert entry["job_uid"] == uid_of(jobs["ingest-r3"])
    shown = await dlq_show(config, entry["id"])
    history = shown["history"]
    assert [(h["attempt"], h["job_name"], h["failure_class"]) for h in history] == [
        (1, "ingest", "io_timeout"),
        (2, "ingest-r2", "io_timeout"),
        (3, "ingest-r3", "io_timeout"),
    ]
    assert [h["job_uid"] for h in history] == [uid_of(jobs[n]) for n in sorted(jobs)]
    assert await daemon.store.pending_retries() == 0


# --- 3. infrastructure failures are retried ------------------------------------------------------


@pytest.fixture
async def node(admin_api: client.ApiClient) -> AsyncIterator[str]:
    async with flaky_node(admin_api) as name:
        yield name


async def test_job_on_a_lost_node_is_retried_elsewhere_and_succeeds(
    start_daemon: StartDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    node: str,
) -> None:
    # Given a daemon, and a Job running on a node of its own
    daemon = await start_daemon()
    await create_job(admin_api, namespace, pinned_to(running_job("nightly", "15s"), node))
    pod = await wait_pod_running(admin_api, namespace, "nightly")
    assert pod["spec"]["nodeName"] == node

    # When that node goes NotReady (its pods are evicted by the taint manager)
    await break_node(admin_api, node)

    # Then the Job is re-created away from that node, and the retry runs to completion
    retry = await wait_job_condition(admin_api, namespace, "nightly-r2", "Complete", within=120)
    affinity = retry["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    required = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": HOSTNAME, "operator": "NotIn", "values": [node]} in [
        expr for term in required for expr in term["matchExpressions"]
    ]
    nodes = {p["spec"].get("nodeName") for p in await job_pods(admin_api, namespace, "nightly-r2")}
    assert nodes and node not in nodes
    history = json.loads(retry["metadata"]["annotations"][ANNOTATION_HISTORY])
    assert [(h["job"], h["class"]) for h in history] == [("nightly", "node_lost")]
    original = await read_job(admin_api, namespace, "nightly")
    assert original is not None and condition(original, "Failed")

    # And nothing was dead-lettered, and no retry is left pending
    assert await daemon.dead_letters() == []
    assert await daemon.store.pending_retries() == 0


async def test_job_whose_node_is_deleted_is_retried_as_node_lost(
    start_daemon: StartDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    node: str,
) -> None:
    # Given a daemon, and a Job running on a node of its own
    daemon = await start_daemon()
    await create_job(admin_api, namespace, pinned_to(running_job("hourly", "1h"), node))
    await wait_pod_running(admin_api, namespace, "hourly")

    # When the node vanishes (a VM gone for good): pod GC deletes its pods (DeletionByPodGC)
    await delete_node(admin_api, node)

    # Then the Job is re-created as node_lost, and nothing is dead-lettered
    retry = await job_or_describe(admin_api, namespace, "hourly-r2", within=150)
    history = json.loads(retry["metadata"]["annotations"][ANNOTATION_HISTORY])
    assert [(h["job"], h["class"]) for h in history] == [("hourly", "node_lost")]
    assert await daemon.dead_letters() == []


async def test_pod_evicted_through_the_eviction_api_is_retried(
    start_daemon: StartDaemon,
    admin_api: client.ApiClient,
    namespace: str,
) -> None:
    # Given a daemon and a running Job
    daemon = await start_daemon()
    await create_job(admin_api, namespace, running_job("drained", "1h"))
    pod = await wait_pod_running(admin_api, namespace, "drained")

    # When someone drains its node through the Eviction API
    await evict(admin_api, namespace, pod["metadata"]["name"])

    # Then the Job is re-created as attempt 2, its history naming the eviction
    retry = await job_or_describe(admin_api, namespace, "drained-r2", within=60)
    annotations = retry["metadata"]["annotations"]
    assert annotations[ANNOTATION_ATTEMPT] == "2"
    history = json.loads(annotations[ANNOTATION_HISTORY])
    assert [(h["job"], h["class"]) for h in history] == [("drained", "api_eviction")]
    assert await daemon.dead_letters() == []


# --- 4. a malformed annotation -------------------------------------------------------------------


async def test_malformed_annotation_is_reported_and_defaults_apply(
    start_daemon: StartDaemon,
    admin_api: client.ApiClient,
    namespace: str,
) -> None:
    # Given a daemon, and a failing Job with an unreadable retry count and a valid queue
    daemon = await start_daemon()
    await create_job(
        admin_api,
        namespace,
        failing_job(
            "cleanup",
            exit_code=3,
            message="permission denied: /data/tmp",
            annotations={MAX_RETRIES: "lots", QUEUE: "ops"},
        ),
    )

    # When it fails, it is still dead-lettered: the bad key keeps its default (app_error is
    # not retried), the valid one applies (its queue)
    [(entry_id, letter)] = await wait_dead_letters(daemon.queries, 1, within=60)
    assert entry_id.startswith("ops/")
    assert (letter.job.name, letter.failure_class.value, letter.attempts) == (
        "cleanup",
        "app_error",
        1,
    )

    # And the owner sees why on the Job: a Warning Event InvalidRetryPolicy
    async def warned() -> RawObject | None:
        events = await job_events(admin_api, namespace, "cleanup")
        return next((e for e in events if e.get("reason") == "InvalidRetryPolicy"), None)

    event = await eventually(warned, within=30, what="an InvalidRetryPolicy Event on the Job")
    assert event["type"] == "Warning"
    assert MAX_RETRIES in event["message"] and "lots" in event["message"]

    # And the metric counts it
    malformed = {"source": "annotation"}
    assert await daemon.metric("kube_dlq_malformed_input_total", malformed) == 1

    # And the daemon keeps working: the next failing Job is dead-lettered as usual
    healthy = await create_job(admin_api, namespace, failing_job("report", exit_code=2))
    letters = await wait_dead_letters(daemon.queries, 2, within=60)
    assert [(lt.job.uid, lt.queue) for _, lt in letters if lt.job.name == "report"] == [
        (uid_of(healthy), "default")
    ]
    assert await daemon.metric("kube_dlq_malformed_input_total", malformed) == 1

    # And a restart, which replays both failed Jobs, does not report the annotation again
    assert await daemon.stop() == 0
    restarted = await start_daemon()

    async def replayed() -> bool:
        return await restarted.metric("kube_dlq_duplicates_suppressed_total") == 2

    await eventually(replayed, within=30, what="the restarted daemon to replay both Jobs")
    assert await restarted.metric("kube_dlq_malformed_input_total", malformed) == 0
    events = await job_events(admin_api, namespace, "cleanup")
    assert [e["reason"] for e in events].count("InvalidRetryPolicy") == 1


# --- 5. exactly once across restarts and replicas ------------------------------------------------


async def submit_failing_batch(admin_api: client.ApiClient, namespace: str, count: int) -> set[str]:
    """`count` Jobs exiting 2, failing over a few seconds; their uids."""
    uids = set()
    for i in range(count):
        job = failing_job(f"batch-{i:02d}", exit_code=2, delay=f"{1 + i // 2}s")
        uids.add(uid_of(await create_job(admin_api, namespace, job)))
    return uids


async def test_restarts_neither_lose_nor_repeat_dead_letters(
    spawn_daemon: SpawnDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    dlq_redis: Redis,
) -> None:
    # Given `kube-dlq run`, and ten Jobs failing one after another
    daemon = spawn_daemon()
    queries = queries_of(daemon, dlq_redis)
    await daemon.wait_ready()
    uids = await submit_failing_batch(admin_api, namespace, 10)

    # When the daemon is SIGKILLed as soon as the first dead letter lands
    await wait_dead_letters(queries, 1, within=60, every=0.02)
    assert await daemon.kill() == -signal.SIGKILL
    by_first = len(await all_dead_letters(queries))
    assert by_first < 10  # the batch fails over seconds: the rest are the restart's to write

    # And started again
    daemon.start()
    await daemon.wait_ready()

    # Then every Job has exactly one dead letter
    letters = await wait_dead_letters(queries, 10, within=90)
    written, _ = await settled(daemon, 10, what="the restarted daemon to see all ten failures")
    assert {uid: len(ids) for uid, ids in by_uid(letters).items()} == dict.fromkeys(uids, 1)
    # (with the evidence relisted after the restart: pods may be listed before their Jobs)
    assert {lt.job.name: lt.failure_class.value for _, lt in letters} == {
        f"batch-{i:02d}": "app_error" for i in range(10)
    }
    assert written == 10 - by_first, (written, by_first)

    # And a third start replays every Failed Job on its relist, and writes nothing again
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(SHUTDOWN_GRACE_S + 5) == 0
    daemon.start()
    await daemon.wait_ready()
    written, dupes = await settled(daemon, 10, what="the third start to replay all ten")
    assert (written, dupes) == (0, 10)
    entries = await dlq_list(daemon.config)
    assert sorted(e["job_uid"] for e in entries) == sorted(uids)


async def test_two_daemons_at_once_write_each_dead_letter_once(
    spawn_daemon: SpawnDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    dlq_redis: Redis,
) -> None:
    # Given two `kube-dlq run` processes watching the same namespace with the same Redis
    first, second = spawn_daemon(), spawn_daemon()
    await asyncio.gather(first.wait_ready(), second.wait_ready())

    # When ten Jobs fail
    uids = await submit_failing_batch(admin_api, namespace, 10)

    # Then both daemons handle all ten, and each Job has exactly one dead letter
    one = await settled(first, 10)
    two = await settled(second, 10)
    assert one[0] + two[0] == 10, (one, two)
    assert one[1] + two[1] == 10, (one, two)
    entries = await dlq_list(first.config)
    assert sorted(e["job_uid"] for e in entries) == sorted(uids)
    assert {e["failure_class"] for e in entries} == {"app_error"}
    letters = await all_dead_letters(queries_of(first, dlq_redis))
    assert len(letters) == 10


# --- 6. shutdown and readiness -------------------------------------------------------------------


async def test_sigterm_stops_the_daemon_cleanly_within_the_grace_period(
    spawn_daemon: SpawnDaemon,
    admin_api: client.ApiClient,
    namespace: str,
) -> None:
    # Given `kube-dlq run`, ready, with a retry scheduled an hour from now
    daemon = spawn_daemon()
    await daemon.wait_ready()
    annotations = {BACKOFF: "1h,jitter=none"}
    await create_job(
        admin_api,
        namespace,
        failing_job("later", exit_code=1, message=IO_TIMEOUT_MESSAGE, annotations=annotations),
    )

    async def scheduled() -> bool:
        return await daemon.metric("kube_dlq_retries_scheduled_total") == 1

    await eventually(scheduled, within=60, what="the retry to be scheduled")

    # When it gets SIGTERM (as the kubelet sends it)
    started = time.monotonic()
    daemon.send(signal.SIGTERM)

    # Then it exits 0 well within its grace period, saying so
    code = await daemon.wait(SHUTDOWN_GRACE_S + 10)
    elapsed = time.monotonic() - started
    assert code == 0, daemon.log_tail()
    assert elapsed < SHUTDOWN_GRACE_S, f"took {elapsed:.1f}s\n{daemon.log_tail()}"
    stopped = [e for e in daemon.log_events() if e.get("event") == "daemon_stopped"]
    assert [e["exit_code"] for e in stopped] == [0]


async def test_sigterm_while_redis_hangs_exits_in_time_and_loses_nothing(
    spawn_daemon: SpawnDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    own_redis: RedisServer,
) -> None:
    # Given `kube-dlq run` whose Redis hangs (SIGSTOP) while two Jobs fail
    daemon = spawn_daemon(redis_url=own_redis.url)
    await daemon.wait_ready()
    own_redis.freeze()
    try:
        uids = set()
        for name in ("one", "two"):
            uids.add(uid_of(await create_job(admin_api, namespace, failing_job(name, exit_code=2))))
        for name in ("one", "two"):
            await wait_job_condition(admin_api, namespace, name, "Failed")

        async def write_failed() -> bool:
            return await daemon.metric("kube_dlq_redis_errors_total", {"operation": "write"}) > 0

        await eventually(write_failed, within=60, what="a failed Redis write to be counted")

        # When it gets SIGTERM with those failures unwritten
        started = time.monotonic()
        daemon.send(signal.SIGTERM)

        # Then it still exits 0 within its grace period
        code = await daemon.wait(SHUTDOWN_GRACE_S + 10)
        elapsed = time.monotonic() - started
        assert code == 0, daemon.log_tail()
        assert elapsed < SHUTDOWN_GRACE_S, f"took {elapsed:.1f}s\n{daemon.log_tail()}"
    finally:
        own_redis.thaw()

    # And once Redis answers and the daemon is back, both failures are dead-lettered, once
    daemon.start()
    await daemon.wait_ready()
    reader = Redis.from_url(own_redis.url)
    try:
        await wait_dead_letters(queries_of(daemon, reader), 2, within=60)
        await settled(daemon, 2)
        letters = await all_dead_letters(queries_of(daemon, reader))
    finally:
        await reader.aclose()
    assert {uid: len(ids) for uid, ids in by_uid(letters).items()} == dict.fromkeys(uids, 1)
    assert {lt.failure_class.value for _, lt in letters} == {"app_error"}


async def test_readyz_follows_the_initial_sync_and_redis(
    start_daemon: StartDaemon,
    cluster: ClusterState,
    own_redis: RedisServer,
    tmp_path: Path,
) -> None:
    # Given a daemon whose credentials the apiserver rejects: it can never list anything
    bogus = tmp_path / "bogus.kubeconfig"
    bogus.write_text(
        yaml.safe_dump(
            kubeconfig_dict(cluster.api_url, Path(cluster.ca_file), "not-a-token", user="x")
        )
    )
    unsynced = await start_daemon(kubeconfig=str(bogus), redis_url=own_redis.url, ready=False)

    # Then it is alive but not ready, and says what it waits for
    assert await unsynced.get("/healthz") == (200, "ok\n")
    status, body = await unsynced.get("/readyz")
    assert status == 503
    assert "jobs not synced" in body and "nodes not synced" in body
    assert await unsynced.stop() == 0

    # Given a daemon with working credentials: ready once every watch has listed
    daemon = await start_daemon(redis_url=own_redis.url)
    assert await daemon.get("/readyz") == (200, "ok\n")

    # When its Redis hangs, it is not ready, naming Redis
    own_redis.freeze()
    try:
        status, body = await daemon.get("/readyz")
        assert status == 503 and "redis" in body, body
        assert (await daemon.get("/healthz"))[0] == 200
    finally:
        own_redis.thaw()

    # And when Redis answers again, it is ready again
    async def ready_again() -> bool:
        return await daemon.get("/readyz") == (200, "ok\n")

    await eventually(ready_again, within=15, what="/readyz to say 200 again")


async def test_a_redis_without_persistence_is_reported_but_the_daemon_stays_ready(
    start_daemon: StartDaemon, redis_server: RedisServer, own_redis: RedisServer
) -> None:
    # Given a daemon on a Redis started with --appendonly no --save "" (the session's)
    daemon = await start_daemon(redis_url=redis_server.url)
    # Then it is ready, and /readyz and the gauge say its outcomes would not survive a restart
    status, body = await daemon.get("/readyz")
    assert status == 200, body
    first, warning = body.splitlines()
    assert first == "ok"
    assert warning.startswith("warning: redis not durable: no persistence (appendonly no")
    assert await daemon.metric("kube_dlq_redis_durable") == 0
    assert await daemon.stop() == 0

    # Given a daemon on a Redis with the append-only file: durable, nothing to warn of
    durable = await start_daemon(redis_url=own_redis.url)
    assert await durable.get("/readyz") == (200, "ok\n")
    assert await durable.metric("kube_dlq_redis_durable") == 1


# --- 7. Redis down -------------------------------------------------------------------------------


OUTAGES = {
    # how Redis fails, and how many failed writes to wait for: enough that some Job's write
    # was tried twice (a hung server times each one out after 5 s, a stopped one refuses)
    "frozen": 1,
    "stopped": 4,
}


@pytest.mark.parametrize(("outage", "failed_writes"), OUTAGES.items(), ids=list(OUTAGES))
async def test_failures_during_a_redis_outage_are_written_when_it_is_back(
    outage: str,
    failed_writes: int,
    start_daemon: StartDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    own_redis: RedisServer,
) -> None:
    # Given a daemon whose Redis then hangs (SIGSTOP) or goes away
    daemon = await start_daemon(redis_url=own_redis.url)
    if outage == "frozen":
        own_redis.freeze()
    else:
        own_redis.stop()
    try:
        # When three Jobs fail meanwhile (each with an annotation kube-dlq cannot read)
        uids = set()
        for name in ("one", "two", "three"):
            job = failing_job(name, exit_code=2, annotations={MAX_RETRIES: "lots"})
            uids.add(uid_of(await create_job(admin_api, namespace, job)))
        for name in ("one", "two", "three"):
            await wait_job_condition(admin_api, namespace, name, "Failed")

        # Then the daemon counts its failed writes, is not ready, and keeps running
        async def write_failed() -> bool:
            errors = await daemon.metric("kube_dlq_redis_errors_total", {"operation": "write"})
            return errors >= failed_writes

        await eventually(write_failed, within=60, what=f"{failed_writes} failed Redis writes")
        ready = await try_get(daemon.port, "/readyz")
        assert ready is not None and ready[0] == 503
        assert not daemon.task.done()
    finally:
        # And when Redis is back
        if outage == "frozen":
            own_redis.thaw()
        else:
            own_redis.start()

    # Then all three dead letters arrive, one each
    letters = await wait_dead_letters(daemon.queries, 3, within=90)
    assert {uid: len(ids) for uid, ids in by_uid(letters).items()} == dict.fromkeys(uids, 1)
    assert {lt.failure_class.value for _, lt in letters} == {"app_error"}
    assert await daemon.metric("kube_dlq_redis_errors_total") > 0

    # And each malformed annotation was reported once, not once per failed write
    assert await daemon.metric("kube_dlq_malformed_input_total", {"source": "annotation"}) == 3
    for name in ("one", "two", "three"):
        events = await job_events(admin_api, namespace, name)
        assert [e["reason"] for e in events].count("InvalidRetryPolicy") == 1, name


# --- 8. sweep ------------------------------------------------------------------------------------


async def test_sweep_writes_failures_no_daemon_saw_and_only_once(
    cluster: ClusterState,
    admin_api: client.ApiClient,
    namespace: str,
    dlq_redis: Redis,
    redis_server: RedisServer,
    cluster_name: str,
    tmp_path: Path,
) -> None:
    # Given three Jobs that failed while no daemon was running
    jobs = {
        "bad-input": failing_job("bad-input", exit_code=2),
        "oom": failing_job("oom", exit_code=137, reason="OOMKilled"),
        "too-slow": deadline_job("too-slow", 2),
    }
    uids = {name: uid_of(await create_job(admin_api, namespace, j)) for name, j in jobs.items()}
    for name in jobs:
        await wait_job_condition(admin_api, namespace, name, "Failed")
    config = write_config(
        tmp_path / "kube-dlq.yaml",
        config_doc(
            cluster, namespace=namespace, redis_url=redis_server.url, cluster_name=cluster_name
        ),
    )

    # When `kube-dlq sweep` runs
    first = await kube_dlq("sweep", "--config", str(config))

    # Then it writes one dead letter per failed Job, with its class
    assert first.returncode == 0, str(first)
    assert "3 written, 0 already handled" in first.stderr, str(first)
    entries = await dlq_list(config)
    assert {e["job"]: (e["job_uid"], e["failure_class"]) for e in entries} == {
        "bad-input": (uids["bad-input"], "app_error"),
        "oom": (uids["oom"], "oom_killed"),
        "too-slow": (uids["too-slow"], "deadline_exceeded"),
    }

    # And a second sweep writes nothing
    second = await kube_dlq("sweep", "--config", str(config))
    assert second.returncode == 0, str(second)
    assert "0 written, 3 already handled" in second.stderr, str(second)
    assert await dlq_list(config) == entries
