"""What deploy/ ships is consistent with the code: its config loads, its probes exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from watcher.app.config import parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


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
