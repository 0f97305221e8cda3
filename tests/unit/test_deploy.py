"""What deploy/ ships is consistent with the code: its config loads, its probes exist, its RBAC
grants exactly the verbs the code sends, and its pods run hardened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.rbac import (
    LEASE_NAMESPACE,
    Grant,
    Request,
    grant_of,
    manifest_grants,
    used_grants,
)
from watcher.app.config import parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "manifests"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def test_shipped_configmap_is_a_valid_config_with_leader_election() -> None:
    configmap = next(d for d in documents("deployment.yaml") if d["kind"] == "ConfigMap")
    config = parse_config(yaml.safe_load(configmap["data"]["kube-dlq.yaml"]))
    assert config.leader_election.enabled
    deployment = next(d for d in documents("deployment.yaml") if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] >= 2


def test_pod_grace_period_outlasts_the_daemons_shutdown_grace() -> None:
    configmap = next(d for d in documents("deployment.yaml") if d["kind"] == "ConfigMap")
    config = parse_config(yaml.safe_load(configmap["data"]["kube-dlq.yaml"]))
    deployment = next(d for d in documents("deployment.yaml") if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > config.shutdown_grace_s
    probes = pod["containers"][0]
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_sweep_cronjob_runs_the_sweep_command_and_is_not_handled_by_itself() -> None:
    cron = next(d for d in documents("deployment.yaml") if d["kind"] == "CronJob")
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "sweep"
    labels = cron["spec"]["jobTemplate"]["metadata"]["labels"]
    assert labels["kube-dlq.io/enabled"] == "false"


def test_rbac_grants_leader_election_on_leases() -> None:
    role = next(d for d in documents("rbac.yaml") if d["kind"] == "Role")
    rule = next(r for r in role["rules"] if "leases" in r["resources"])
    assert set(rule["verbs"]) >= {"get", "create", "update"}


# --- least privilege: deploy/ grants exactly what the code uses ----------------------------------


def _unused_and_missing(granted: set[Grant], used: set[Grant]) -> tuple[set[Grant], set[Grant]]:
    """(granted but not used, used but not granted), ignoring where each applies."""
    granted_any = {g.anywhere() for g in granted}
    used_any = {g.anywhere() for g in used}
    return granted_any - used_any, used_any - granted_any


async def test_rbac_grants_exactly_the_verbs_the_code_uses() -> None:
    used = await used_grants()
    granted = manifest_grants("rbac.yaml")
    # Cluster-wide (the watches are), plus the leader Lease in the daemon's own namespace
    assert set(granted) == {"", LEASE_NAMESPACE}
    unused, missing = _unused_and_missing(granted[""] | granted[LEASE_NAMESPACE], used)
    assert unused == set(), (
        f"deploy/manifests/rbac.yaml grants verbs no code sends: {sorted(unused)}"
    )
    assert missing == set(), (
        f"the code sends requests deploy/manifests/rbac.yaml denies: {sorted(missing)}"
    )
    leases = {g for g in used if g.resource == "leases"}
    assert granted[LEASE_NAMESPACE] == leases
    assert not any(g.resource == "leases" for g in granted[""]), "Leases only in kube-dlq"


async def test_the_code_uses_what_the_review_found_unused_nowhere() -> None:
    # The verbs dropped from deploy/manifests/rbac.yaml: if code starts sending one, this names it.
    dropped = {
        Grant("batch", "cronjobs", "get"),
        Grant("", "events", "get"),
        Grant("", "events", "patch"),
        Grant("", "pods", "get"),
        Grant("", "nodes", "get"),
        Grant("", "namespaces", "get"),
        Grant("", "namespaces", "watch"),
    }
    assert {g.anywhere() for g in await used_grants()} & dropped == set()


def test_grant_of_maps_requests_as_the_apiserver_does() -> None:
    assert grant_of(Request("GET", "/api/v1/namespaces")) == Grant("", "namespaces", "list")
    assert grant_of(Request("GET", "/api/v1/namespaces/a")) == Grant("", "namespaces", "get")
    assert grant_of(Request("GET", "/api/v1/pods", (("watch", "true"),))) == Grant(
        "", "pods", "watch"
    )
    assert grant_of(Request("GET", "/api/v1/namespaces/a/pods/p")) == Grant(
        "", "pods", "get", namespaced=True
    )
    assert grant_of(Request("PATCH", "/api/v1/namespaces/a/events/e")) == Grant(
        "", "events", "patch", namespaced=True
    )
    assert grant_of(Request("PUT", "/apis/coordination.k8s.io/v1/namespaces/a/leases/l")) == (
        Grant("coordination.k8s.io", "leases", "update", namespaced=True)
    )
    assert grant_of(Request("DELETE", "/apis/batch/v1/namespaces/a/jobs")) == Grant(
        "batch", "jobs", "deletecollection", namespaced=True
    )


async def test_namespaced_rbac_grants_job_writes_only_through_a_role() -> None:
    # deploy/manifests/rbac-namespaced.yaml, for scope.namespaces: the same verbs, but every request
    # about one Job (get, create, delete, its Warning Event) only in a scope namespace's Role
    used = await used_grants()
    granted = manifest_grants("rbac-namespaced.yaml")
    assert set(granted) == {"", LEASE_NAMESPACE, "team-a"}
    # No namespace list: scope.namespaces and namespace_label_selector exclude each other
    in_use = {g for g in used if g.resource != "namespaces"}
    unused, missing = _unused_and_missing(set().union(*granted.values()), in_use)
    assert unused == set() and missing == set(), (sorted(unused), sorted(missing))
    cluster_wide = granted[""]
    assert {g.verb for g in cluster_wide} == {"list", "watch"}
    assert cluster_wide == {g for g in in_use if not g.namespaced}
    per_job = {g for g in in_use if g.namespaced and g.resource != "leases"}
    assert granted["team-a"] == per_job
    assert {Grant("batch", "jobs", v, namespaced=True) for v in ("create", "delete")} <= per_job
    assert granted[LEASE_NAMESPACE] == {g for g in in_use if g.resource == "leases"}


def test_namespaced_rbac_renders_per_namespace_as_its_comment_says() -> None:
    # The sed of the file's comment moves the Role and RoleBinding, and nothing else
    text = (DEPLOY / "rbac-namespaced.yaml").read_text()
    assert "s/namespace: team-a  # scope/namespace: $ns  # scope/" in text
    rendered = [
        d
        for d in yaml.safe_load_all(
            text.replace("namespace: team-a  # scope", "namespace: team-b  # scope")
        )
        if d
    ]
    original = documents("rbac-namespaced.yaml")
    moved = [
        (d["kind"], d["metadata"]["name"])
        for d, before in zip(rendered, original, strict=True)
        if d != before
    ]
    assert moved == [("Role", "kube-dlq-jobs"), ("RoleBinding", "kube-dlq-jobs")]
    assert {d["metadata"]["namespace"] for d in rendered[-2:]} == {"team-b"}


def test_namespaced_rbac_narrows_the_cluster_role_in_place() -> None:
    # Applied over rbac.yaml, it replaces the same ClusterRole: nothing broader stays bound
    def cluster_names(name: str) -> set[tuple[str, str]]:
        return {
            (d["kind"], d["metadata"]["name"])
            for d in documents(name)
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding")
        }

    assert cluster_names("rbac-namespaced.yaml") == cluster_names("rbac.yaml")


# --- pod hardening: the daemon and the sweep alike -----------------------------------------------


def _pod_specs() -> dict[str, dict[str, Any]]:
    docs = documents("deployment.yaml")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    cron = next(d for d in docs if d["kind"] == "CronJob")
    return {
        "Deployment": deployment["spec"]["template"]["spec"],
        "CronJob": cron["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    }


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_pods_run_hardened(kind: str) -> None:
    pod = _pod_specs()[kind]
    assert pod["serviceAccountName"] == "kube-dlq"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "add" not in context["capabilities"], container["name"]
        assert "privileged" not in context or context["privileged"] is False
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        assert "memory" in resources["limits"], container["name"]


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_pods_mount_the_signing_secret_where_the_config_reads_it(kind: str) -> None:
    # kube-dlq refuses to start without signing keys: both pods must have them, as a volume
    configmap = next(d for d in documents("deployment.yaml") if d["kind"] == "ConfigMap")
    security = parse_config(yaml.safe_load(configmap["data"]["kube-dlq.yaml"])).security
    assert security.signing_keys_dir and security.signing_key_id
    assert not security.allow_unsigned
    pod = _pod_specs()[kind]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert secrets[mounts[security.signing_keys_dir]] == "kube-dlq-signing"
