"""Outcome markers with the real daemon and control plane: kept for a Job still in the API,
forgotten by the daemon's list after its Job was deleted (docs/exactly-once.md)."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client
from redis.asyncio import Redis

from tests.support.daemon import StartDaemon, wait_dead_letters
from tests.support.kube import eventually
from tests.support.workloads import create_job, failing_job, read_job
from watcher.adapters.redis.keys import Keys

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


async def test_a_restarted_daemon_forgets_the_marker_of_a_deleted_job_only(
    start_daemon: StartDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    dlq_redis: Redis,
    cluster_name: str,
) -> None:
    # Given a daemon that dead-lettered two failed Jobs
    daemon = await start_daemon()
    stays = await create_job(admin_api, namespace, failing_job("stays", exit_code=2))
    goes = await create_job(admin_api, namespace, failing_job("goes", exit_code=2))
    await wait_dead_letters(daemon.queries, 2, within=60)
    keys = Keys(daemon.daemon.settings.redis.key_prefix, cluster_name)
    uid_stays, uid_goes = stays["metadata"]["uid"], goes["metadata"]["uid"]
    for uid in (uid_stays, uid_goes):
        assert await dlq_redis.ttl(keys.outcome(uid)) == -1
    assert await daemon.stop() == 0

    # When one Job is deleted while no daemon runs, and a daemon starts (and lists the Jobs)
    await client.BatchV1Api(admin_api).delete_namespaced_job(
        "goes", namespace, propagation_policy="Background"
    )

    async def deleted() -> bool:
        return await read_job(admin_api, namespace, "goes") is None

    await eventually(deleted, within=30, what="Job goes to be deleted")
    again = await start_daemon()

    # Then the deleted Job's marker is forgotten: out of the index, expiring; the other Job,
    # still Failed in the API, keeps its marker for good and is not written again
    async def forgotten() -> bool:
        return await again.metric("kube_dlq_outcome_markers_forgotten_total") == 1

    await eventually(forgotten, within=30, what="the marker of the deleted Job to be forgotten")
    assert await dlq_redis.ttl(keys.outcome(uid_goes)) > 0
    assert await dlq_redis.ttl(keys.outcome(uid_stays)) == -1
    members = await dlq_redis.zrange(keys.outcome_index, 0, -1)
    assert members == [f"{namespace}/{uid_stays}".encode()]

    async def replayed() -> bool:
        return await again.metric("kube_dlq_duplicates_suppressed_total") >= 1

    await eventually(replayed, within=30, what="the Job still Failed to be replayed")
    assert len(await again.dead_letters()) == 2
