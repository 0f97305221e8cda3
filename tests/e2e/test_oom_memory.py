"""The OOM policy end to end: real control plane (kwok OOM-kills the pod), real redis-server.

A Job opted in with ``kube-dlq.io/oom-memory`` is OOM-killed on every attempt: the daemon
re-creates it with 1.5x its memory, then again up to the cap, then dead-letters it, and the
dead letter's history (``kube-dlq dlq show``) names each bump.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio import client

from tests.support.daemon import StartDaemon, dlq_list, dlq_show, wait_dead_letters, write_config
from tests.support.kube import RawObject, condition
from tests.support.workloads import create_job, failing_job, list_jobs

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

OOM_MEMORY = "kube-dlq.io/oom-memory"
BACKOFF = "kube-dlq.io/backoff"
MEMORY_BUMP = "kube-dlq.io/memory-bump"


def oom_job(name: str, memory: str, annotations: dict[str, str]) -> RawObject:
    """A Job whose pod runs a second, then is OOM-killed (exit 137), with `memory` set."""
    job = failing_job(name, exit_code=137, reason="OOMKilled", annotations=annotations)
    [main] = job["spec"]["template"]["spec"]["containers"]
    main["resources"] = {"limits": {"memory": memory}, "requests": {"memory": memory}}
    return job


def memory_of(job: RawObject) -> tuple[str, str]:
    [main] = job["spec"]["template"]["spec"]["containers"]
    return main["resources"]["limits"]["memory"], main["resources"]["requests"]["memory"]


async def test_oom_killed_job_is_retried_with_more_memory_until_the_cap(
    start_daemon: StartDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    # Given a daemon, and a 1Gi Job opted in to 1.5x more memory per OOM, capped at 2Gi
    daemon = await start_daemon()
    policy = {OOM_MEMORY: "factor=1.5,cap=2Gi,attempts=3", BACKOFF: "1s"}
    await create_job(admin_api, namespace, oom_job("train", "1Gi", policy))

    # When every attempt is OOM-killed
    await wait_dead_letters(daemon.queries, 1, within=150, what="the dead letter of train-r3")

    # Then it was re-created with 1.5x the memory, then again up to the cap
    jobs = {j["metadata"]["name"]: j for j in await list_jobs(admin_api, namespace)}
    assert sorted(jobs) == ["train", "train-r2", "train-r3"]
    for name, job in jobs.items():
        assert condition(job, "Failed"), f"{name}: {job.get('status')}"
    assert memory_of(jobs["train"]) == ("1Gi", "1Gi")
    assert memory_of(jobs["train-r2"]) == ("1536Mi", "1536Mi")
    assert memory_of(jobs["train-r3"]) == ("2Gi", "2Gi")
    first_bump = "x1.5: main limits 1Gi -> 1536Mi, main requests 1Gi -> 1536Mi"
    second_bump = "x1.5: main limits 1536Mi -> 2Gi, main requests 1536Mi -> 2Gi"
    assert jobs["train-r2"]["metadata"]["annotations"][MEMORY_BUMP] == first_bump
    assert jobs["train-r3"]["metadata"]["annotations"][MEMORY_BUMP] == second_bump

    # And the third attempt, at the cap, is dead-lettered with a reason that says so
    config = write_config(tmp_path / "kube-dlq.yaml", daemon.doc)
    [entry] = await dlq_list(config)
    assert (entry["job"], entry["failure_class"], entry["attempts"]) == (
        "train-r3",
        "oom_killed",
        3,
    )
    assert entry["reason"].endswith("oom_killed: memory is at the cap of 2Gi; not retried")
    shown = await dlq_show(config, entry["id"])
    assert shown["started"] == "yes"
    # And its history shows each bump, attempt by attempt
    assert [(h["attempt"], h["job_name"], h["memory"]) for h in shown["history"]] == [
        (1, "train", first_bump),
        (2, "train-r2", second_bump),
        (3, "train-r3", ""),
    ]
    assert "with more memory (x1.5: main limits 1Gi -> 1536Mi" in shown["history"][0]["reason"]
    assert await daemon.store.pending_retries() == 0
