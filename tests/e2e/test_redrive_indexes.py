"""`dlq redrive --failed-indexes` end to end: an Indexed Job of 4 completions whose indexes 1
and 3 fail (kwok stage pod-fail-index) is dead-lettered by the daemon with its failed indexes,
and the redrive creates one Job that runs only those two, told which they were."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.e2e.test_redrive import Installation, Started, installation, redriven_jobs
from tests.support.kube import eventually, job_manifest
from tests.support.workloads import FAIL_STAGE, create_job, list_jobs, running_job
from watcher.core.annotations import ANNOTATION_MAX_RETRIES
from watcher.core.model import DeadLetter

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

__all__ = ["installation"]  # the fixture, shared with test_redrive.py

FAIL_INDEX_STAGE = "fail-index.stage.kwok.kube-dlq.io"


def indexed_job(name: str) -> dict[str, Any]:
    """4 indexes, each tried once: 1 and 3 exit 1, 0 and 2 complete."""
    job = job_manifest(
        name,
        pod_labels={FAIL_INDEX_STAGE: "true"},
        pod_annotations={f"{FAIL_STAGE}/exit-code": "1", f"{FAIL_STAGE}/delay": "1s"},
        annotations={ANNOTATION_MAX_RETRIES: "0"},  # straight to the dead-letter queue
    )
    spec = job["spec"]
    del spec["backoffLimit"]  # the per-index limit decides, so every index runs
    spec.update(completionMode="Indexed", completions=4, parallelism=4, backoffLimitPerIndex=0)
    return job


async def test_failed_index_redrive_creates_only_the_failed_indexes(
    installation: Installation,
    admin_api: client.ApiClient,
    namespace: str,
    start_daemon: Started,
) -> None:
    await start_daemon()
    await create_job(admin_api, namespace, indexed_job("shards"))

    async def dead_lettered() -> list[tuple[str, DeadLetter]]:
        return await installation.queued()

    [(entry, letter)] = await eventually(dead_lettered, within=90, what="the Job's dead letter")
    assert letter.job.name == "shards"
    assert letter.failed_indexes == (1, 3)

    dry = await installation.redrive(entry, "--failed-indexes", "--dry-run")
    assert dry.returncode == 0, str(dry)
    assert "failed-indexes=1,3" in dry.stdout, dry.stdout
    assert len(await list_jobs(admin_api, namespace)) == 1

    done = await installation.redrive(entry, "--failed-indexes")
    assert done.returncode == 0, str(done)
    [job] = (await redriven_jobs(admin_api, namespace))[entry]
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    [container] = spec["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    assert env["KUBE_DLQ_ORIGINAL_INDEXES"] == "1,3"
    assert len(await list_jobs(admin_api, namespace)) == 2  # the original and one redrive


async def test_failed_indexes_refuses_a_job_that_is_not_indexed(
    installation: Installation, admin_api: client.ApiClient, namespace: str
) -> None:
    entry = await installation.write(namespace, running_job("plain", "1h"), "uid-plain")
    refused = await installation.redrive(entry, "--failed-indexes")
    assert refused.returncode == 1, str(refused)
    assert f"skipped: {entry}" in refused.stdout and "not Indexed" in refused.stdout
    assert await list_jobs(admin_api, namespace) == []
    assert [e for e, _ in await installation.queued()] == [entry]
