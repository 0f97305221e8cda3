"""The RBAC grants kube-dlq's code needs, found by running the code, and those a manifest gives.

`requests_the_code_makes` drives every Kubernetes call site of the product over a
`RecordingKube` (a `KubeClient` that sends nothing): each public method of `JobsAPI` and
`LeaseAPI` (the one-object requests of the pipeline, the handler, the retry loop and leader
election), the daemon's namespace list (`scope.namespace_label_selector`), and the list+watch
of each resource in the daemon's watch plan (the sweep lists the same resources). `grant_of`
turns each request into the (apiGroup, resource, verb) that RBAC checks, the way the apiserver
does. A test can then compare that set with what deploy/ grants, in both directions.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from redis.asyncio import Redis

from watcher.adapters.kube.jobs import JobsAPI
from watcher.adapters.kube.leases import LeaseAPI
from watcher.adapters.kube.request import NO_TARGET, KubeClient, Query, Target
from watcher.adapters.redis.store import RedisStore
from watcher.app.daemon import Daemon
from watcher.core.annotations import FINALIZER_RETRY_ACK
from watcher.core.model import JobRef
from watcher.core.rawjson import RawObject
from watcher.core.settings import KubernetesSettings, ScopeSettings, Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "manifests"

LEASE_NAMESPACE = "kube-dlq"
"""Where deploy/ puts the leader Lease (the daemon's own namespace)."""

EVERY_VERB = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
"""The verbs RBAC knows for a resource: what a grant is compared against."""


@dataclass(frozen=True, order=True)
class Grant:
    """One (apiGroup, resource, verb) RBAC decision; `namespaced` when made in one namespace."""

    group: str
    resource: str
    verb: str
    namespaced: bool = False

    def anywhere(self) -> Grant:
        return dataclasses.replace(self, namespaced=False)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()


class RecordingKube(KubeClient):
    """A `KubeClient` that records each request and sends nothing.

    Every one-object answer is a Lease-shaped object: `LeaseAPI` checks the kind, and no other
    caller reads what comes back.
    """

    def __init__(self) -> None:  # no ApiClient: nothing is ever sent
        self.settings = KubernetesSettings()
        self.requests: list[Request] = []

    async def close(self) -> None:
        return None

    async def send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        target: Target = NO_TARGET,
        query: Query = (),
        body: Mapping[str, Any] | Sequence[Any] | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
        content_type: str = "application/json",
    ) -> aiohttp.ClientResponse:
        raise AssertionError(f"unexpected streaming request {method} {path} ({what})")

    async def call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        target: Target = NO_TARGET,
        query: Query = (),
        body: Mapping[str, Any] | Sequence[Any] | None = None,
        timeout_s: float | None = None,
        content_type: str = "application/json",
    ) -> RawObject:
        self.requests.append(Request(method, path, tuple(query)))
        # A Job with kube-dlq's finalizer, so remove_finalizer goes on to its PATCH.
        meta = {"uid": "uid-1", "finalizers": [FINALIZER_RETRY_ACK]}
        return {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": meta}

    async def list_all(self, path: str, *, what: str, query: Query = ()) -> list[RawObject]:
        self.requests.append(Request("GET", path, tuple(query)))
        return []


def public_methods(cls: type) -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }


async def requests_the_code_makes() -> list[Request]:
    """Every kind of request the product sends to the Kubernetes API."""
    kube = RecordingKube()
    jobs = JobsAPI(kube)
    # A new method on an adapter must be added here, so its request is checked against RBAC.
    assert public_methods(JobsAPI) == {"get", "create", "delete", "remove_finalizer", "warn"}
    await jobs.get("team-a", "nightly")
    await jobs.create("team-a", {"metadata": {"name": "nightly-r1"}})
    await jobs.delete("team-a", "nightly", uid="uid-1")
    await jobs.remove_finalizer(JobRef("team-a", "nightly-r2", "uid-1"), FINALIZER_RETRY_ACK)
    await jobs.warn(JobRef("team-a", "nightly", "uid-1"), "InvalidRetryPolicy", "bad")
    lease = LeaseAPI(kube, namespace=LEASE_NAMESPACE, name="kube-dlq")
    assert public_methods(LeaseAPI) == {"get", "create", "replace"}
    await lease.get(1.0)
    await lease.create({"holderIdentity": "a"}, 1.0)
    await lease.replace({"metadata": {"resourceVersion": "1"}}, {"holderIdentity": "a"}, 1.0)

    settings = Settings(cluster_name="rbac", scope=ScopeSettings(namespace_label_selector="a=b"))
    redis = Redis()  # never connects: nothing here talks to Redis
    try:
        daemon = Daemon(
            settings, kube=kube, store=RedisStore(redis, settings.redis, cluster_name="rbac")
        )
        await daemon._refresh_namespaces()
        requests = list(kube.requests)
        for _, resource, _, _ in daemon._watch_plan():
            # watch.Watcher: a (paged) list of the cluster-wide path, then a watch from it.
            requests.append(Request("GET", resource.path, tuple(resource.selectors())))
            requests.append(Request("GET", resource.path, (("watch", "true"),)))
    finally:
        await redis.aclose()
    return requests


def grant_of(request: Request) -> Grant:
    """The RBAC check the apiserver makes for `request` (resource requests only)."""
    parts = request.path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        raise ValueError(f"not a resource path: {request.path}")
    namespaced = len(rest) >= 3 and rest[0] == "namespaces"
    if namespaced:
        rest = rest[2:]
    resource, name = rest[0], (rest[1] if len(rest) > 1 else "")
    if request.method == "GET":
        verb = "get" if name else ("watch" if ("watch", "true") in request.query else "list")
    else:
        verb = {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }[request.method]
    return Grant(group, resource, verb, namespaced)


async def used_grants() -> set[Grant]:
    """What the code needs, each grant cluster-wide or not as the code asks for it."""
    return {grant_of(r) for r in await requests_the_code_makes()}


# --- what a manifest grants ---------------------------------------------------------------------


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def rule_grants(rules: Iterable[Mapping[str, Any]], *, namespaced: bool) -> set[Grant]:
    """Every (group, resource, verb) the rules allow; '*' is refused, never expanded."""
    found: set[Grant] = set()
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field} of {rule}"
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert verb in EVERY_VERB, f"unknown verb {verb!r}"
                    found.add(Grant(group, resource, verb, namespaced))
    return found


def bound_roles(docs: Sequence[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """(where, role) for each role bound to kube-dlq's ServiceAccount in `docs`: where is ""
    for a ClusterRoleBinding (cluster-wide), else the RoleBinding's namespace (a Role, or a
    ClusterRole bound by a RoleBinding, takes effect only there)."""
    roles = {
        (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs
    }
    bound = []
    for doc in docs:
        if doc["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        service_account = {"kind": "ServiceAccount", "name": "kube-dlq", "namespace": "kube-dlq"}
        assert doc["subjects"] == [service_account], doc
        where = doc["metadata"]["namespace"] if doc["kind"] == "RoleBinding" else ""
        ref = doc["roleRef"]
        role_namespace = "" if ref["kind"] == "ClusterRole" else where
        bound.append((where, roles[(ref["kind"], role_namespace, ref["name"])]))
    return bound


def manifest_grants(name: str) -> dict[str, set[Grant]]:
    """What deploy/<name> grants kube-dlq, by where: "" (cluster-wide) or a namespace."""
    by_scope: dict[str, set[Grant]] = {}
    for where, role in bound_roles(documents(name)):
        grants = rule_grants(role["rules"], namespaced=bool(where))
        by_scope.setdefault(where, set()).update(grants)
    return by_scope
