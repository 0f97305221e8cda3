"""The local control plane produces every failure signal kube-dlq classifies.

Real controllers write these objects (the Job controller, node lifecycle and taint eviction,
the Eviction API, kwok standing in for kubelets); no daemon is involved yet. Each test
asserts on what Kubernetes itself wrote, which is what kube-dlq will later read.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from devtools.devcluster.kubeapi import node_manifest
from devtools.devcluster.state import ClusterState
from tests.support.kube import (
    IMAGE_PULL_LABEL,
    NODE_NOT_READY_LABEL,
    RUN_FOR,
    RawObject,
    condition,
    eventually,
    failing_pod,
    job_manifest,
    raw,
    watch_pods,
)
from tests.support.rbac import DEPLOY, EVERY_VERB, LEASE_NAMESPACE, Grant, used_grants
from watcher.adapters.kube.jobs import JobsAPI
from watcher.adapters.kube.request import KubeClient
from watcher.core.errors import KubeForbidden
from watcher.core.model import JobRef
from watcher.core.settings import KubernetesSettings

pytestmark = pytest.mark.cluster


async def create_job(api: client.ApiClient, namespace: str, manifest: RawObject) -> RawObject:
    batch = client.BatchV1Api(api)
    return await raw(batch.create_namespaced_job(namespace, manifest, _preload_content=False))


async def read_job(api: client.ApiClient, namespace: str, name: str) -> RawObject:
    batch = client.BatchV1Api(api)
    return await raw(batch.read_namespaced_job(name, namespace, _preload_content=False))


async def job_pods(api: client.ApiClient, namespace: str, job: str) -> list[RawObject]:
    core = client.CoreV1Api(api)
    listed = await raw(
        core.list_namespaced_pod(
            namespace, label_selector=f"job-name={job}", _preload_content=False
        )
    )
    items: list[RawObject] = listed.get("items") or []
    return items


async def wait_job_failed(
    api: client.ApiClient, namespace: str, name: str, within: float = 60
) -> RawObject:
    async def failed() -> RawObject | None:
        job = await read_job(api, namespace, name)
        return job if condition(job, "Failed") else None

    return await eventually(failed, within=within, what=f"Job {name} to fail")


async def wait_pod_running(api: client.ApiClient, namespace: str, job: str) -> RawObject:
    async def running() -> RawObject | None:
        pods = await job_pods(api, namespace, job)
        return next((p for p in pods if p["status"].get("phase") == "Running"), None)

    return await eventually(running, within=60, what=f"a Running pod of Job {job}")


def disruption(versions: list[RawObject], pod_name: str) -> RawObject | None:
    """The DisruptionTarget condition any recorded version of the pod carried."""
    for pod in versions:
        if pod["metadata"]["name"] != pod_name:
            continue
        for cond in pod.get("status", {}).get("conditions") or []:
            if cond.get("type") == "DisruptionTarget":
                return dict(cond)
    return None


async def test_exit_code_fails_job_with_backoff_limit_exceeded(
    admin_api: client.ApiClient, namespace: str
) -> None:
    # Given a Job whose only pod exits 1 and no retries allowed
    labels, annotations = failing_pod(1, reason="Error", message="bad input row 17")
    await create_job(
        admin_api,
        namespace,
        job_manifest("exit-one", pod_labels=labels, pod_annotations=annotations),
    )

    # When the pod fails, the Job controller fails the Job
    job = await wait_job_failed(admin_api, namespace, "exit-one")

    # Then the Job says why, and a Warning Event on the Job says it too
    failed = condition(job, "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded"
    assert job["status"].get("failed") == 1
    core = client.CoreV1Api(admin_api)

    async def warning() -> RawObject | None:
        events = await raw(
            core.list_namespaced_event(
                namespace,
                field_selector="involvedObject.kind=Job,involvedObject.name=exit-one",
                _preload_content=False,
            )
        )
        return next((e for e in events["items"] if e["reason"] == "BackoffLimitExceeded"), None)

    event = await eventually(warning, within=30, what="BackoffLimitExceeded Event")
    assert event["type"] == "Warning"
    pods = await job_pods(admin_api, namespace, "exit-one")
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["message"]) == (1, "bad input row 17")


async def test_oom_killed_container_status(admin_api: client.ApiClient, namespace: str) -> None:
    labels, annotations = failing_pod(137, reason="OOMKilled", message="memory limit 256Mi")
    await create_job(
        admin_api, namespace, job_manifest("oom", pod_labels=labels, pod_annotations=annotations)
    )

    await wait_job_failed(admin_api, namespace, "oom")

    pod = (await job_pods(admin_api, namespace, "oom"))[0]
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled"
    assert terminated["exitCode"] == 137


@pytest.fixture
async def doomed_node(admin_api: client.ApiClient) -> Any:
    """A kwok node of its own for a test that breaks it, deleted afterwards."""
    core = client.CoreV1Api(admin_api)
    name = f"kwok-doomed-{uuid.uuid4().hex[:6]}"
    await raw(core.create_node(node_manifest(name, cpu="8"), _preload_content=False))

    async def ready() -> bool:
        node = await raw(core.read_node(name, _preload_content=False))
        return condition(node, "Ready") is not None

    await eventually(ready, within=30, what=f"node {name} Ready")
    yield name
    await raw(core.delete_node(name, _preload_content=False))


async def test_node_not_ready_evicts_pod_by_taint_manager(
    admin_api: client.ApiClient, namespace: str, doomed_node: str
) -> None:
    # Given a Job's pod running on a node
    await create_job(
        admin_api,
        namespace,
        job_manifest(
            "on-doomed-node",
            pod_annotations={RUN_FOR: "1h"},
            node_selector={"kubernetes.io/hostname": doomed_node},
        ),
    )
    async with watch_pods(admin_api, namespace) as versions:
        pod = await wait_pod_running(admin_api, namespace, "on-doomed-node")

        # When the node goes NotReady (its kubelet reports it; kwok's chaos stage)
        core = client.CoreV1Api(admin_api)
        await raw(
            core.patch_node(
                doomed_node,
                {"metadata": {"labels": {NODE_NOT_READY_LABEL: "true"}}},
                _preload_content=False,
            )
        )

        # Then node lifecycle taints it, taint eviction deletes the pod with a reason...
        name = pod["metadata"]["name"]

        async def evicted() -> RawObject | None:
            return disruption(versions, name)

        cond = await eventually(evicted, within=90, what="DisruptionTarget on the pod")
    assert cond["reason"] == "DeletionByTaintManager"
    node = await raw(core.read_node(doomed_node, _preload_content=False))
    taints = {t["key"] for t in node["spec"].get("taints") or []}
    assert "node.kubernetes.io/not-ready" in taints
    # ...and the Job controller records the lost pod as a failure.
    job = await wait_job_failed(admin_api, namespace, "on-doomed-node")
    assert job["status"].get("failed", 0) >= 1


async def test_active_deadline_fails_job_with_deadline_exceeded(
    admin_api: client.ApiClient, namespace: str
) -> None:
    await create_job(
        admin_api,
        namespace,
        job_manifest("slow", pod_annotations={RUN_FOR: "1h"}, active_deadline_s=3),
    )

    job = await wait_job_failed(admin_api, namespace, "slow")

    failed = condition(job, "Failed")
    assert failed is not None and failed["reason"] == "DeadlineExceeded"


async def test_eviction_api_marks_disruption_target(
    admin_api: client.ApiClient, namespace: str
) -> None:
    await create_job(admin_api, namespace, job_manifest("drained", pod_annotations={RUN_FOR: "1h"}))
    async with watch_pods(admin_api, namespace) as versions:
        pod = await wait_pod_running(admin_api, namespace, "drained")
        name = pod["metadata"]["name"]

        # When someone drains the node through the Eviction API
        core = client.CoreV1Api(admin_api)
        await raw(
            core.create_namespaced_pod_eviction(
                name,
                namespace,
                {
                    "apiVersion": "policy/v1",
                    "kind": "Eviction",
                    "metadata": {"name": name, "namespace": namespace},
                },
                _preload_content=False,
            )
        )

        async def evicted() -> RawObject | None:
            return disruption(versions, name)

        cond = await eventually(evicted, within=30, what="DisruptionTarget on the pod")
    assert cond["reason"] == "EvictionByEvictionAPI"


async def test_unpullable_image_leaves_pod_pending(
    admin_api: client.ApiClient, namespace: str
) -> None:
    await create_job(
        admin_api,
        namespace,
        job_manifest("bad-image", pod_labels={IMAGE_PULL_LABEL: "true"}, backoff_limit=6),
    )

    async def waiting() -> str | None:
        for pod in await job_pods(admin_api, namespace, "bad-image"):
            for status in pod["status"].get("containerStatuses") or []:
                reason = (status.get("state", {}).get("waiting") or {}).get("reason")
                if reason in ("ErrImagePull", "ImagePullBackOff"):
                    return str(reason)
        return None

    await eventually(waiting, within=30, what="an image-pull waiting reason")
    # Kubernetes never fails such a Job by itself: that is kube-dlq's job (dwell time).
    pods = await job_pods(admin_api, namespace, "bad-image")
    assert [p["status"]["phase"] for p in pods] == ["Pending"]
    job = await read_job(admin_api, namespace, "bad-image")
    assert condition(job, "Failed") is None


async def test_daemon_identity_is_limited_to_its_rbac(
    daemon_api: client.ApiClient, cluster: ClusterState, namespace: str
) -> None:
    core = client.CoreV1Api(daemon_api)
    batch = client.BatchV1Api(daemon_api)
    # What deploy/manifests/rbac.yaml grants works...
    jobs = await raw(batch.list_job_for_all_namespaces(_preload_content=False))
    assert jobs["kind"] == "JobList"
    # ...and what it does not is refused with 403.
    with pytest.raises(ApiException) as denied:
        await core.list_namespaced_secret(namespace)
    assert denied.value.status == 403
    with pytest.raises(ApiException) as denied_delete:
        await core.delete_namespaced_pod("anything", namespace)
    assert denied_delete.value.status == 403


# --- least privilege: the daemon's identity has exactly what the code uses -----------------------

CLUSTER_SCOPED = frozenset({"nodes", "namespaces"})


async def access(
    api: client.ApiClient, group: str, resource: str, verb: str, namespace: str
) -> bool:
    """Whether the identity of `api` may `verb` `resource`, as the apiserver decides it."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "group": group,
                "resource": resource,
                "verb": verb,
                "namespace": namespace,
            }
        },
    }
    auth = client.AuthorizationV1Api(api)
    answer = await raw(auth.create_self_subject_access_review(review, _preload_content=False))
    return bool(answer["status"].get("allowed"))


async def test_daemon_identity_may_use_exactly_the_verbs_the_code_sends(
    daemon_api: client.ApiClient, namespace: str
) -> None:
    # Given what the code sends (found by running every call site, tests/support/rbac.py),
    # and every verb on every resource it touches, the CronJobs it once read included
    used = {g.anywhere() for g in await used_grants()}
    resources = {(g.group, g.resource) for g in used} | {("batch", "cronjobs")}
    wrong: list[str] = []
    for group, resource in sorted(resources):
        if resource == "leases":  # only in the daemon's own namespace, nowhere else
            places = {LEASE_NAMESPACE: True, namespace: False}
        else:
            places = {"" if resource in CLUSTER_SCOPED else namespace: True}
        for where, may in places.items():
            for verb in EVERY_VERB:
                expected = may and Grant(group, resource, verb) in used
                if await access(daemon_api, group, resource, verb, where) != expected:
                    wrong.append(f"{verb} {group}/{resource} in {where or 'cluster'}: {expected=}")
    # Then the apiserver allows each verb the code sends and refuses every other one
    assert wrong == []


async def test_daemon_identity_is_refused_the_dropped_verbs_on_real_objects(
    admin_api: client.ApiClient,
    daemon_api: client.ApiClient,
    cluster: ClusterState,
    namespace: str,
) -> None:
    # Given a pod, an Event kube-dlq wrote itself, a node and a namespace that all exist
    core = client.CoreV1Api(admin_api)
    pod = {
        "metadata": {"name": "some-pod"},
        "spec": {"containers": [{"name": "main", "image": "registry.invalid/x:1"}]},
    }
    await raw(core.create_namespaced_pod(namespace, pod, _preload_content=False))
    kube = KubeClient(daemon_api, KubernetesSettings())
    await JobsAPI(kube).warn(JobRef(namespace, "nightly", "uid-1"), "InvalidRetryPolicy", "x=1")

    # Then what the daemon does with them works: the lists its watches make, the Event write
    pods = await kube.list_all(f"/api/v1/namespaces/{namespace}/pods", what="listing pods")
    assert [p["metadata"]["name"] for p in pods] == ["some-pod"]
    events = await kube.list_all(f"/api/v1/namespaces/{namespace}/events", what="listing")
    ours = [e for e in events if e["reason"] == "InvalidRetryPolicy"]  # (the scheduler's too)
    assert len(ours) == 1
    event_name = ours[0]["metadata"]["name"]
    nodes = await kube.list_all("/api/v1/nodes", what="listing nodes")
    assert cluster.nodes[0] in {n["metadata"]["name"] for n in nodes}
    selected = await kube.list_all(
        "/api/v1/namespaces",
        what="listing namespaces",
        query=[("labelSelector", f"kubernetes.io/metadata.name={namespace}")],
    )
    assert [n["metadata"]["name"] for n in selected] == [namespace]

    # And what deploy/manifests/rbac.yaml no longer grants is refused with 403, object by object
    refused = {
        "get one pod": ("GET", f"/api/v1/namespaces/{namespace}/pods/some-pod", None),
        "patch an Event": (
            "PATCH",
            f"/api/v1/namespaces/{namespace}/events/{event_name}",
            {"message": "changed"},
        ),
        "get an Event": ("GET", f"/api/v1/namespaces/{namespace}/events/{event_name}", None),
        "get a node": ("GET", f"/api/v1/nodes/{cluster.nodes[0]}", None),
        "get a namespace": ("GET", f"/api/v1/namespaces/{namespace}", None),
        "get a CronJob": ("GET", f"/apis/batch/v1/namespaces/{namespace}/cronjobs/any", None),
    }
    for what, (method, path, body) in refused.items():
        # (authorization comes before everything else: a PATCH is refused before its body
        # or content type is looked at, a GET before the object is looked up)
        with pytest.raises(KubeForbidden) as denied:
            await kube.call(method, path, what=what, body=body)
        assert denied.value.status == 403, what
    with pytest.raises(KubeForbidden):  # namespaces are listed, never watched
        await kube.list_all("/api/v1/namespaces", what="watching", query=[("watch", "true")])


def rendered_namespaced_rbac(namespace: str, account: str, suffix: str) -> list[RawObject]:
    """deploy/manifests/rbac-namespaced.yaml rendered for `namespace` as its comment says, bound
    to the ServiceAccount `account` of that namespace instead of kube-dlq's, cluster objects
    renamed with `suffix` and the Lease Role moved into `namespace` too: applying it touches
    neither the daemon's identity nor other tests, and it is gone with the namespace."""
    text = (DEPLOY / "rbac-namespaced.yaml").read_text()
    text = text.replace("namespace: team-a  # scope", f"namespace: {namespace}  # scope")
    docs = [d for d in yaml.safe_load_all(text) if d and d["kind"] != "ServiceAccount"]
    for doc in docs:  # RBAC decides by the user name: the account itself need not exist
        meta = doc["metadata"]
        if meta.get("namespace") == LEASE_NAMESPACE:
            meta["namespace"] = namespace
        if doc["kind"].startswith("Cluster"):
            meta["name"] = f"{meta['name']}-{suffix}"
        if doc.get("roleRef", {}).get("kind") == "ClusterRole":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{suffix}"
        for subject in doc.get("subjects", ()):
            subject.update(name=account, namespace=namespace)
    return docs


async def apply_rbac(rbac: client.RbacAuthorizationV1Api, doc: RawObject) -> None:
    kind, namespace = doc["kind"], doc["metadata"].get("namespace", "")
    if kind == "ClusterRole":
        await raw(rbac.create_cluster_role(doc, _preload_content=False))
    elif kind == "ClusterRoleBinding":
        await raw(rbac.create_cluster_role_binding(doc, _preload_content=False))
    elif kind == "Role":
        await raw(rbac.create_namespaced_role(namespace, doc, _preload_content=False))
    else:
        await raw(rbac.create_namespaced_role_binding(namespace, doc, _preload_content=False))


async def subject_may(
    admin_api: client.ApiClient, user: str, group: str, resource: str, verb: str, where: str
) -> bool:
    """Whether `user` (a ServiceAccount's user name) may `verb` `resource`, asked as admin."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "group": group,
                "resource": resource,
                "verb": verb,
                "namespace": where,
            },
        },
    }
    auth = client.AuthorizationV1Api(admin_api)
    answer = await raw(auth.create_subject_access_review(review, _preload_content=False))
    return bool(answer["status"].get("allowed"))


async def test_namespaced_rbac_grants_job_writes_only_in_its_namespaces(
    admin_api: client.ApiClient, namespace: str
) -> None:
    # Given deploy/manifests/rbac-namespaced.yaml applied for one scope namespace, to an
    # account of its own
    suffix = uuid.uuid4().hex[:6]
    account = f"kube-dlq-ns-{suffix}"
    docs = rendered_namespaced_rbac(namespace, account, suffix)
    rbac = client.RbacAuthorizationV1Api(admin_api)
    user = f"system:serviceaccount:{namespace}:{account}"

    async def may(group: str, resource: str, verb: str, where: str) -> bool:
        return await subject_may(admin_api, user, group, resource, verb, where)

    try:
        for doc in docs:
            await apply_rbac(rbac, doc)

        async def bound() -> bool:  # the authorizer sees new bindings through its informers
            return (
                await may("batch", "jobs", "create", namespace)
                and await may("batch", "jobs", "list", "")
                and await may("coordination.k8s.io", "leases", "update", namespace)
            )

        await eventually(bound, within=10, what="the applied roles to take effect")
        # Then Jobs are read, created and deleted, and Events written, in the scope namespace
        for verb in ("get", "create", "delete"):
            assert await may("batch", "jobs", verb, namespace), verb
        assert await may("", "events", "create", namespace)
        # But in no other namespace
        for verb in ("get", "create", "delete"):
            assert not await may("batch", "jobs", verb, "default"), verb
        assert not await may("", "events", "create", "default")
        # While the watches still see the whole cluster, and namespaces are not listed at all
        for group, resource in (("batch", "jobs"), ("", "pods"), ("", "events"), ("", "nodes")):
            for verb in ("list", "watch"):
                assert await may(group, resource, verb, ""), (resource, verb)
        assert not await may("", "namespaces", "list", "")
        assert await may("coordination.k8s.io", "leases", "update", namespace)
    finally:  # the namespaced objects go with the namespace; the cluster ones go here
        for doc in docs:
            name = doc["metadata"]["name"]
            with contextlib.suppress(ApiException):  # never created: the apply failed first
                if doc["kind"] == "ClusterRole":
                    await raw(rbac.delete_cluster_role(name, _preload_content=False))
                elif doc["kind"] == "ClusterRoleBinding":
                    await raw(rbac.delete_cluster_role_binding(name, _preload_content=False))
