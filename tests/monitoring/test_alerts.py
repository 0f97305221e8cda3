"""The alert rules: valid for promtool, unit-tested by promtool, the PrometheusRule in step.

promtool comes with Debian's prometheus package (scripts/install-deps.sh installs it); these
tests fail, not skip, without it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from devtools.monitoring import rules
from tests.monitoring.support import (
    ALERTS_DOC,
    RUNBOOKS,
    UNIT_TESTS,
    alerts,
    anchors,
    run_promtool,
    without_thresholds,
)

RUNBOOK_PREFIX = "https://kube-dlq.invalid/docs/runbooks.md#"


def test_promtool_accepts_the_rules_file() -> None:
    done = run_promtool("check", "rules", str(rules.RULES_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_every_alert_fires_when_it_should_and_only_then(tmp_path: Path) -> None:
    # Given the rules without annotations (promtool would compare their text verbatim), next
    # to the unit tests, which name the rules file by its plain name
    doc = yaml.safe_load(rules.RULES_FILE.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / rules.RULES_FILE.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / UNIT_TESTS.name).write_text(UNIT_TESTS.read_text())

    # When promtool runs them
    done = run_promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)

    # Then every case passes
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fired == set(), "alerts never shown to fire"
    assert names - silent == set(), "alerts never shown to stay silent"


def test_unit_tests_include_two_replicas_for_every_alert() -> None:
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        alertnames = {c["alertname"] for c in case["alert_rule_test"]}
        if not any(s["series"].startswith("kube_dlq_") for s in case["input_series"]):
            continue  # the daemon-absent case: no replica is scraped
        instances = {s["series"].split('instance="')[1].split('"')[0] for s in case["input_series"]}
        assert len(instances) >= 2, f"{sorted(alertnames)}: one replica only"


def test_prometheus_rule_carries_exactly_the_rules_file_groups() -> None:
    committed = yaml.safe_load(rules.PROMETHEUS_RULE_FILE.read_text())
    assert committed["apiVersion"] == "monitoring.coreos.com/v1"
    assert committed["kind"] == "PrometheusRule"
    assert committed["spec"]["groups"] == rules.load_groups()


def test_prometheus_rule_is_regenerated() -> None:
    assert rules.PROMETHEUS_RULE_FILE.read_text() == rules.render(), (
        "deploy/monitoring/prometheusrule.yaml is out of date: run python -m devtools.monitoring"
    )


def test_every_alert_has_summary_description_and_a_runbook_section() -> None:
    runbook_anchors = anchors(RUNBOOKS)
    documented = ALERTS_DOC.read_text()
    for rule in alerts():
        name, notes = rule["alert"], rule.get("annotations", {})
        assert notes.get("summary") and notes.get("description"), name
        url = notes.get("runbook_url", "")
        assert url == RUNBOOK_PREFIX + name.lower(), f"{name}: runbook_url {url!r}"
        assert name.lower() in runbook_anchors, f"{name}: no '## {name}' in docs/runbooks.md"
        assert f"`{name}`" in documented, f"{name}: not described in docs/alerts.md"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name


def test_no_alert_keeps_a_replica_label() -> None:
    # An alert labelled by pod or instance would resolve and fire again on every rollout.
    for rule in alerts():
        expr = " ".join(rule["expr"].split())
        assert "by (instance" not in expr and "by (pod" not in expr, rule["alert"]
        aggregated = any(
            f"{agg} " in expr or f"{agg}(" in expr for agg in ("max", "min", "sum", "count")
        )
        assert aggregated or expr.startswith("absent("), f"{rule['alert']} does not aggregate"


def test_thresholds_are_made_always_true_and_vector_comparisons_kept() -> None:
    # The rewrite test_prometheus.py evaluates alert expressions with.
    assert without_thresholds("max(x) > 100") == "max(x) > -Inf"
    assert without_thresholds("max(x) == 0") == "max(x) > -Inf"
    assert without_thresholds("max(x) < 1") == "max(x) < +Inf"
    assert without_thresholds("time() - min(x) > 300") == "time() - min(x) > -Inf"
    assert without_thresholds("sum(x > 0)") == "sum(x > -Inf)"
    assert without_thresholds("a > 3 * b") == "a > 3 * b"
