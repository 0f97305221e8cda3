"""`kube-dlq dlq redrive` end to end: the real control plane, a real redis-server, the CLI as a
subprocess (killed with SIGKILL halfway), and the daemon settling what it redrove.

Dead letters are written with the store the daemon uses (signed with the test key), each
naming a Job of the test's namespace and holding a manifest kwok runs: one that stays
Running (so nothing settles under the kill test), one that fails, one that succeeds. The
CLI runs with the daemon's identity (deploy/rbac.yaml), so these permissions are proved too.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from redis.asyncio import Redis

from devtools.devcluster.redis_server import RedisServer
from devtools.devcluster.state import ClusterState
from tests.support.daemon import (
    REPO_ROOT,
    _cli_env,
    config_doc,
    kube_dlq,
    write_config,
)
from tests.support.kube import eventually
from tests.support.workloads import failing_job, list_jobs, running_job
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.adapters.redis.store import RedisStore
from watcher.app.config import parse_config
from watcher.app.sealing import build_seal
from watcher.core.annotations import ANNOTATION_REDRIVE_OF, FINALIZER_REDRIVE_ACK
from watcher.core.dlq_filter import DeadLetterFilter
from watcher.core.manifest import replayable_manifest
from watcher.core.model import DeadLetter, FailureClass, JobRef
from watcher.core.settings import Settings

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

RawObject = dict[str, Any]


class Installation:
    """The test's config file, and the store and reader of the keys it names."""

    def __init__(self, path: Path, settings: Settings, redis: Redis) -> None:
        self.path = path
        self.settings = settings
        seal = build_seal(settings.security)
        name = settings.cluster_name
        self.store = RedisStore(redis, settings.redis, cluster_name=name, seal=seal)
        self.queries = DeadLetterQueries(redis, settings.redis, cluster_name=name, seal=seal)

    async def write(self, namespace: str, manifest: RawObject, uid: str) -> str:
        """A dead letter of `manifest`'s Job; its entry id."""
        name = manifest["metadata"]["name"]
        clean = replayable_manifest({**manifest, "metadata": {**manifest["metadata"]}})
        clean["metadata"]["namespace"] = namespace
        letter = DeadLetter(
            queue="default",
            job=JobRef(namespace, name, uid),
            failure_class=FailureClass.APP_ERROR,
            reason="exit code 1",
            attempts=1,
            failed_at=time.time(),
            cluster=self.settings.cluster_name,
            manifest=clean,
        )
        written = await self.store.dead_letter(letter)
        assert written.written, written
        return written.ref

    async def queued(self) -> list[tuple[str, DeadLetter]]:
        page = await self.queries.select(DeadLetterFilter(), limit=1000)
        assert page.corrupt == [], page.corrupt
        return page.entries

    async def redrive(self, *args: str, limit_s: float = 120.0) -> Any:
        return await kube_dlq("dlq", "redrive", "--config", str(self.path), *args, limit_s=limit_s)


@pytest.fixture
async def installation(
    cluster: ClusterState,
    namespace: str,
    dlq_redis: Redis,
    redis_server: RedisServer,
    cluster_name: str,
    tmp_path: Path,
) -> Installation:
    doc = config_doc(
        cluster, namespace=namespace, redis_url=redis_server.url, cluster_name=cluster_name
    )
    path = write_config(tmp_path / "kube-dlq.yaml", doc)
    return Installation(path, parse_config(doc), dlq_redis)


async def redriven_jobs(api: client.ApiClient, namespace: str) -> dict[str, list[RawObject]]:
    """The namespace's Jobs by the entry their redrive-of annotation names."""
    found: dict[str, list[RawObject]] = defaultdict(list)
    for job in await list_jobs(api, namespace):
        of = (job["metadata"].get("annotations") or {}).get(ANNOTATION_REDRIVE_OF)
        if of:
            found[of].append(job)
    return found


async def test_a_redrive_killed_halfway_and_run_again_creates_every_job_exactly_once(
    installation: Installation, admin_api: client.ApiClient, namespace: str
) -> None:
    entries = [
        await installation.write(namespace, running_job(f"work-{i}", "1h"), f"uid-{i}")
        for i in range(12)
    ]
    args = ["-m", "watcher", "dlq", "redrive", "--config", str(installation.path), "--all"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        "--rate",
        "3/s",
        cwd=REPO_ROOT,
        env=_cli_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def some_created() -> bool:
            return len(await redriven_jobs(admin_api, namespace)) >= 4

        await eventually(some_created, within=60, what="the first redriven Jobs", every=0.05)
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    halfway = await redriven_jobs(admin_api, namespace)
    assert 4 <= len(halfway) < len(entries), "the kill did not land halfway"

    second = await installation.redrive("--all")
    assert second.returncode == 0, str(second)

    jobs = await redriven_jobs(admin_api, namespace)
    assert sorted(jobs) == sorted(entries), "an entry was lost, or a Job points elsewhere"
    twice = {entry: len(found) for entry, found in jobs.items() if len(found) != 1}
    assert twice == {}, f"created more than once: {twice}"
    assert await installation.queued() == []  # every entry is being redriven, none still queued
    for entry in entries:
        record = await installation.store.redrive_record(entry)
        assert record is not None and record.uid == jobs[entry][0]["metadata"]["uid"]
        assert FINALIZER_REDRIVE_ACK in jobs[entry][0]["metadata"]["finalizers"]
    assert "already redriven" in second.stdout or "redriven" in second.stdout

    third = await installation.redrive("--all")
    assert third.returncode == 0, str(third)
    assert len(await list_jobs(admin_api, namespace)) == len(entries)


async def test_dry_run_creates_nothing_and_leaves_the_queue_as_it_was(
    installation: Installation, admin_api: client.ApiClient, namespace: str
) -> None:
    entries = [
        await installation.write(namespace, running_job(f"dry-{i}", "1h"), f"uid-{i}")
        for i in range(3)
    ]
    done = await installation.redrive("--all", "--dry-run", "--memory", "2Gi")
    assert done.returncode == 0, str(done)
    assert done.stdout.count("would redrive: ") == 3, done.stdout
    assert "memory=2Gi" in done.stdout
    assert await list_jobs(admin_api, namespace) == []
    assert [entry for entry, _ in await installation.queued()] == entries
    assert await installation.store.redriving_ids() == []


Started = Callable[..., Awaitable[Any]]


async def test_a_redriven_job_that_fails_is_back_with_redrive_count_1_and_max_redrives_stops_it(
    installation: Installation,
    admin_api: client.ApiClient,
    namespace: str,
    start_daemon: Started,
) -> None:
    await start_daemon()
    first = await installation.write(namespace, failing_job("flaky", exit_code=1), "uid-orig")
    done = await installation.redrive(first, "--memory", "1Gi")
    assert done.returncode == 0, str(done)
    assert f"redriven: {first} -> {namespace}/flaky-" in done.stdout, done.stdout

    async def back() -> list[tuple[str, DeadLetter]]:
        return [(e, got) for e, got in await installation.queued() if got.redrive_count == 1]

    [(again, letter)] = await eventually(back, within=90, what="the redriven Job's dead letter")
    assert letter.redrive_of == first and letter.job.name.startswith("flaky-")
    assert letter.failure_class is FailureClass.APP_ERROR
    assert "memory=1Gi" in letter.history[-1].reason  # the override is in the history
    assert await installation.store.redrive_record(first) is None

    async def released() -> bool:
        jobs = await list_jobs(admin_api, namespace)
        return len(jobs) == 1 and FINALIZER_REDRIVE_ACK not in (
            jobs[0]["metadata"].get("finalizers") or []
        )

    await eventually(released, within=30, what="the failed Job's redrive-ack finalizer to go")

    refused = await installation.redrive(again, "--max-redrives", "1")
    assert refused.returncode == 1, str(refused)
    assert f"skipped: {again}" in refused.stdout and "--max-redrives 1" in refused.stdout
    assert len(await list_jobs(admin_api, namespace)) == 1
    assert [entry for entry, _ in await installation.queued()] == [again]


async def test_a_redriven_job_that_succeeds_archives_its_entry(
    installation: Installation,
    admin_api: client.ApiClient,
    namespace: str,
    start_daemon: Started,
) -> None:
    await start_daemon()
    entry = await installation.write(namespace, running_job("report", "1s"), "uid-ok")
    done = await installation.redrive(entry)
    assert done.returncode == 0, str(done)

    async def archived() -> Any:
        listed = await kube_dlq("dlq", "list", "--config", str(installation.path), "--archived")
        return listed if entry in listed.stdout else None

    listed = await eventually(archived, within=90, what="the entry in dlq list --archived")
    assert listed.returncode == 0, str(listed)
    assert await installation.queued() == []
    assert await installation.store.redrive_record(entry) is None

    async def released() -> bool:
        jobs = await list_jobs(admin_api, namespace)
        return len(jobs) == 1 and not jobs[0]["metadata"].get("finalizers")

    await eventually(released, within=30, what="the succeeded Job's finalizer to go")
