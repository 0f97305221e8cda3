"""The daemon's direct API calls read status codes themselves (no silent error bodies)."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from tests.support.kube import job_manifest, raw
from watcher.adapters.kube.api import KubeAPI
from watcher.core.errors import KubeAPIError
from watcher.core.model import JobRef

pytestmark = pytest.mark.cluster


async def test_missing_job_reads_as_none_and_deletes_as_false(
    daemon_api: client.ApiClient, namespace: str
) -> None:
    kube = KubeAPI(daemon_api)
    assert await kube.get_job(namespace, "no-such-job") is None
    assert await kube.delete_job(namespace, "no-such-job") is False


async def test_existing_job_is_read_and_deleted(
    admin_api: client.ApiClient, daemon_api: client.ApiClient, namespace: str
) -> None:
    batch = client.BatchV1Api(admin_api)
    await raw(batch.create_namespaced_job(namespace, job_manifest("real"), _preload_content=False))
    kube = KubeAPI(daemon_api)
    job = await kube.get_job(namespace, "real")
    assert job is not None and job["metadata"]["name"] == "real"
    assert await kube.delete_job(namespace, "real") is True


async def test_forbidden_list_raises_with_the_status(
    daemon_api: client.ApiClient, namespace: str
) -> None:
    kube = KubeAPI(daemon_api)
    with pytest.raises(KubeAPIError) as err:
        await kube.list_raw(f"/api/v1/namespaces/{namespace}/secrets")
    assert err.value.status == 403


async def test_event_on_a_job_is_written_and_a_bad_one_raises(
    admin_api: client.ApiClient, daemon_api: client.ApiClient, namespace: str
) -> None:
    kube = KubeAPI(daemon_api)
    await kube.warn_on_job(JobRef(namespace, "nightly", "uid-1"), "InvalidRetryPolicy", "x=1")
    core = client.CoreV1Api(admin_api)
    events = await raw(core.list_namespaced_event(namespace, _preload_content=False))
    assert [e["reason"] for e in events["items"]] == ["InvalidRetryPolicy"]
    with pytest.raises(KubeAPIError) as err:
        await kube.warn_on_job(JobRef("no-such-namespace", "j", "u"), "InvalidRetryPolicy", "x")
    assert err.value.status == 404
