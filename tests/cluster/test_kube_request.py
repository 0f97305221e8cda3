"""The one Kubernetes request layer against a real apiserver: statuses become typed errors,
never silent error bodies."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from tests.support.kube import RawObject, eventually, job_manifest, raw
from watcher.adapters.kube.jobs import JobsAPI
from watcher.adapters.kube.request import KubeClient
from watcher.core.errors import (
    KubeConflict,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    KubeUnavailable,
)
from watcher.core.model import JobRef
from watcher.core.settings import KubernetesSettings

pytestmark = pytest.mark.cluster


async def test_missing_job_reads_as_none_and_deletes_as_false(
    daemon_api: client.ApiClient, namespace: str
) -> None:
    kube = JobsAPI(KubeClient(daemon_api, KubernetesSettings()))
    assert await kube.get(namespace, "no-such-job") is None
    assert await kube.delete(namespace, "no-such-job") is False


async def test_existing_job_is_read_and_deleted(
    admin_api: client.ApiClient, daemon_api: client.ApiClient, namespace: str
) -> None:
    batch = client.BatchV1Api(admin_api)
    await raw(batch.create_namespaced_job(namespace, job_manifest("real"), _preload_content=False))
    kube = JobsAPI(KubeClient(daemon_api, KubernetesSettings()))
    job = await kube.get(namespace, "real")
    assert job is not None and job["metadata"]["name"] == "real"
    assert await kube.delete(namespace, "real") is True


async def test_forbidden_list_raises_with_the_status(
    daemon_api: client.ApiClient, namespace: str
) -> None:
    kube = JobsAPI(KubeClient(daemon_api, KubernetesSettings()))
    with pytest.raises(KubeForbidden) as err:
        await kube.client.list_all(f"/api/v1/namespaces/{namespace}/secrets", what="listing")
    assert err.value.status == 403


async def test_event_on_a_job_is_written_and_a_bad_one_raises(
    admin_api: client.ApiClient, daemon_api: client.ApiClient, namespace: str
) -> None:
    kube = JobsAPI(KubeClient(daemon_api, KubernetesSettings()))
    await kube.warn(JobRef(namespace, "nightly", "uid-1"), "InvalidRetryPolicy", "x=1")
    core = client.CoreV1Api(admin_api)
    events = await raw(core.list_namespaced_event(namespace, _preload_content=False))
    assert [e["reason"] for e in events["items"]] == ["InvalidRetryPolicy"]
    with pytest.raises(KubeNotFound) as err:
        await kube.warn(JobRef("no-such-namespace", "j", "u"), "InvalidRetryPolicy", "x")
    assert err.value.status == 404


async def test_delete_with_a_uid_leaves_a_recreated_job_alone(
    admin_api: client.ApiClient, daemon_api: client.ApiClient, namespace: str
) -> None:
    # Given a Job deleted and re-created under the same name (a new uid)
    batch = client.BatchV1Api(admin_api)
    first = await raw(
        batch.create_namespaced_job(namespace, job_manifest("same"), _preload_content=False)
    )
    await raw(batch.delete_namespaced_job("same", namespace, _preload_content=False))
    second = await eventually_created(batch, namespace, "same")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    kube = JobsAPI(KubeClient(daemon_api, KubernetesSettings()))
    # When the delete names the first Job's uid, the second Job survives
    assert await kube.delete(namespace, "same", uid=first["metadata"]["uid"]) is False
    assert await kube.get(namespace, "same") is not None
    # and with its own uid it goes
    assert await kube.delete(namespace, "same", uid=second["metadata"]["uid"]) is True


async def test_create_conflict_is_a_typed_error(
    daemon_api: client.ApiClient, namespace: str
) -> None:
    kube = JobsAPI(KubeClient(daemon_api, KubernetesSettings()))
    body = {**job_manifest("twice"), "metadata": {"name": "twice", "namespace": namespace}}
    created = await kube.create(namespace, body)
    assert created["metadata"]["name"] == "twice"
    with pytest.raises(KubeConflict) as err:
        await kube.create(namespace, body)
    assert err.value.status == 409 and "twice" in str(err.value)


async def test_invalid_job_is_a_typed_error(daemon_api: client.ApiClient, namespace: str) -> None:
    kube = JobsAPI(KubeClient(daemon_api, KubernetesSettings()))
    bad = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "Bad_Name"}, "spec": {}}
    with pytest.raises(KubeInvalid) as err:
        await kube.create(namespace, bad)
    assert err.value.status == 422


async def test_unreachable_apiserver_is_unavailable_not_a_library_error() -> None:
    conf = client.Configuration(host="https://127.0.0.1:1")  # nothing listens on port 1
    async with client.ApiClient(conf) as api:
        kube = JobsAPI(KubeClient(api, KubernetesSettings(request_timeout_s=5)))
        with pytest.raises(KubeUnavailable) as err:
            await kube.get("default", "x")
    assert err.value.status is None and err.value.transient


async def eventually_created(batch: client.BatchV1Api, namespace: str, name: str) -> RawObject:
    """Create `name` again once the earlier Job of that name is gone (deletion is async)."""

    async def created() -> RawObject | None:
        manifest = job_manifest(name)
        body = await raw(batch.create_namespaced_job(namespace, manifest, _preload_content=False))
        return body if body.get("kind") == "Job" else None  # a 409 Status until it is gone

    return await eventually(created, within=30, what=f"Job {name} re-created")
