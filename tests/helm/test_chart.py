"""The chart on its own, with a real helm: it lints, its schema refuses bad values, what it
renders is a config the daemon accepts, and deploy/manifests/ is what it renders today."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools import helmrender
from tests.helm.conftest import Helm
from watcher.app.config import parse_config

pytestmark = pytest.mark.cluster

EVERYTHING = str(Path(__file__).with_name("values-everything.yaml"))


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def rendered(helm: Helm, chart: str, *args: str) -> list[dict[str, Any]]:
    result = helm("template", "kube-dlq", chart, "--namespace", "kube-dlq", *args)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("values", [[], ["--values", EVERYTHING]], ids=["defaults", "everything"])
def test_helm_lint_passes(helm: Helm, chart: str, values: list[str]) -> None:
    result = helm("lint", "--strict", chart, *values)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        (["--set", "replicaCount=-1"], "replicaCount"),
        (["--set", "config.cluster_name=prod eu"], "cluster_name"),
        (["--set", "config.retyr.infra_budget=3"], "retyr"),  # a typo'd config section
        (["--set", "config.retry.max_attemps=3"], "max_attemps"),
        (["--set-json", 'config.scope.namespaces=["Team_A"]'], "namespaces"),
        (["--set", "config.server.port=70000"], "port"),
        (["--set", "config.shutdown_grace_s=soon"], "shutdown_grace_s"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "secrets.signing.keyId="], "keyId"),
        (["--set", "sweep.enabled=yes please"], "enabled"),
    ],
)
def test_schema_rejects_a_bad_value_naming_it(
    helm: Helm, chart: str, setting: list[str], named: str
) -> None:
    for command in ("lint", "template"):
        result = helm(command, chart, *setting)
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"helm {command} accepted {setting}: {output[-500:]}"
        assert "values don't meet the specifications of the schema" in output, output
        assert named in output, output


def test_schema_accepts_durations_as_the_daemon_does(helm: Helm, chart: str) -> None:
    docs = rendered(
        helm,
        chart,
        "--set",
        "config.shutdown_grace_s=1m30s",
        "--set",
        "config.redis.stream_max_age_s=14d",
        "--set-json",
        "config.pipeline.settle_s=2.5",
    )
    [configmap] = by_kind(docs, "ConfigMap")
    config = parse_config(yaml.safe_load(configmap["data"]["kube-dlq.yaml"]))
    assert config.shutdown_grace_s == 90
    assert config.pipeline.settle_s == 2.5


def test_every_rendered_config_is_one_the_daemon_accepts(helm: Helm, chart: str) -> None:
    docs = rendered(helm, chart, "--values", EVERYTHING)
    configmap = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "kube-dlq")
    config = parse_config(yaml.safe_load(configmap["data"]["kube-dlq.yaml"]))
    # The chart points the config at the key volumes it mounts
    assert config.security.encryption_key_id == "e1"
    assert config.scope.namespaces == ("scope-a", "scope-b")
    deployment = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "kube-dlq")
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets[mounts[config.security.signing_keys_dir]] == "kube-dlq-signing"
    assert secrets[mounts[config.security.encryption_keys_dir]] == "kube-dlq-encryption"
    # The bundled Redis replaces the Secret's URL, and writes an append-only file
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["KUBE_DLQ_REDIS_URL"]["value"] == "redis://kube-dlq-redis:6379/0"
    redis_conf = next(
        d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "kube-dlq-redis"
    )
    assert "appendonly yes" in redis_conf["data"]["redis.conf"].splitlines()


def test_scope_namespaces_make_the_rbac_per_namespace(helm: Helm, chart: str) -> None:
    cluster_wide = rendered(helm, chart)
    [role] = by_kind(cluster_wide, "ClusterRole")
    assert any("create" in r["verbs"] for r in role["rules"])
    assert {r["metadata"]["namespace"] for r in by_kind(cluster_wide, "Role")} == {"kube-dlq"}

    scoped = rendered(helm, chart, "--set-json", 'config.scope.namespaces=["a","b"]')
    [role] = by_kind(scoped, "ClusterRole")
    assert {v for r in role["rules"] for v in r["verbs"]} == {"list", "watch"}
    jobs_roles = [r for r in by_kind(scoped, "Role") if r["metadata"]["name"] == "kube-dlq-jobs"]
    assert sorted(r["metadata"]["namespace"] for r in jobs_roles) == ["a", "b"]
    bindings = [
        b for b in by_kind(scoped, "RoleBinding") if b["roleRef"]["name"] == "kube-dlq-jobs"
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["a", "b"]


def test_optional_parts_are_off_by_default_and_on_when_asked(helm: Helm, chart: str) -> None:
    optional = {"ServiceMonitor", "PrometheusRule"}
    assert not {d["kind"] for d in rendered(helm, chart)} & optional
    docs = rendered(helm, chart, "--values", EVERYTHING)
    assert {d["kind"] for d in docs} >= optional | {"PersistentVolumeClaim", "PodDisruptionBudget"}
    dashboard = next(d for d in docs if d["metadata"]["name"] == "kube-dlq-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    embedded = Path(helmrender.DASHBOARD_SOURCE).read_text()
    assert dashboard["data"]["kube-dlq.json"].strip() == embedded.strip()
    [rule] = by_kind(docs, "PrometheusRule")
    source = yaml.safe_load(Path(helmrender.RULES_SOURCE).read_text())
    assert rule["spec"] == source
    [monitor] = by_kind(docs, "ServiceMonitor")
    [service] = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "kube-dlq"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_sweep_cronjob_takes_tolerations_and_affinity_from_values(helm: Helm, chart: str) -> None:
    toleration = {
        "key": "batch-pool",
        "operator": "Equal",
        "value": "sweep",
        "effect": "NoSchedule",
    }
    required = {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["batch"]}]}
        ]
    }
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    docs = rendered(
        helm,
        chart,
        "--set-json",
        f"sweep.tolerations={json.dumps([toleration])}",
        "--set-json",
        f"sweep.affinity={json.dumps(affinity)}",
    )
    [cron] = by_kind(docs, "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["tolerations"] == [toleration]
    # (helm merges maps: the default preference for the control-plane pool stays beside it)
    node_affinity = pod["affinity"]["nodeAffinity"]
    assert node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] == required
    assert cron["spec"]["jobTemplate"]["metadata"]["labels"]["kube-dlq.io/enabled"] == "false"


def test_plain_manifests_are_what_the_chart_renders() -> None:
    assert helmrender.main(["--check"]) == 0, (
        "deploy/manifests/ is out of date: run python -m devtools.helmrender"
    )


def test_the_documented_example_config_passes_the_schema_as_values(
    helm: Helm, chart: str, tmp_path: Path
) -> None:
    # config/kube-dlq.yaml sets every key the daemon knows: all of it must get through
    example = yaml.safe_load((Path(chart).parents[2] / "config" / "kube-dlq.yaml").read_text())
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": example}))
    docs = rendered(helm, chart, "--values", str(values))
    [configmap] = by_kind(docs, "ConfigMap")
    config = parse_config(yaml.safe_load(configmap["data"]["kube-dlq.yaml"]))
    assert config.cluster_name == example["cluster_name"]
    assert config.security.signing_keys_dir == "/var/run/secrets/kube-dlq/signing"
