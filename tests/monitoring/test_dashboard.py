"""The Grafana dashboard: regenerated from code, and keeping the conventions of every panel."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from prometheus_client import CollectorRegistry

from devtools.monitoring import dashboard as generator
from devtools.monitoring import rules
from devtools.monitoring.__main__ import main as generate
from tests.monitoring.support import (
    NOT_YET_EXPORTED,
    alerts,
    dashboard,
    metric_names,
    panel_queries,
    panels,
)
from watcher.adapters.kube import watch
from watcher.kit import metrics
from watcher.service.retrying import Outcome


def test_committed_dashboard_is_what_the_code_generates() -> None:
    assert rules.DASHBOARD_FILE.read_text() == generator.render(), (
        "deploy/monitoring/dashboard.json is out of date: run python -m devtools.monitoring"
    )


def test_check_mode_reports_a_stale_file_and_leaves_it(tmp_path: Path) -> None:
    # Given a generated file edited by hand
    path = tmp_path / "dashboard.json"
    path.write_text(generator.render().replace("Dead-letter depth", "Depth", 1))
    files = {path: generator.render()}

    # Then --check fails and leaves it, and a plain run rewrites it
    assert generate(["--check"], files) == 1
    assert "Depth" in path.read_text()
    assert generate([], files) == 0
    assert path.read_text() == generator.render()
    assert generate(["--check"], files) == 0


def test_dashboard_has_a_stable_uid_and_a_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"] == "kube-dlq-overview"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_every_panel_has_a_unit_a_description_and_the_datasource_variable() -> None:
    for panel in panels():
        title = panel["title"]
        assert panel.get("description"), f"{title}: no description"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", title


def test_every_rate_spans_the_rate_interval_and_every_selector_the_job() -> None:
    for where, expr in panel_queries():
        ranges = re.findall(r"\[([^\]]+)\]", expr)
        assert all(r == "$__rate_interval" for r in ranges), f"{where}: ranges {ranges}"
        if re.search(r"\b(rate|increase|irate)\(", expr):
            assert ranges, f"{where}: a rate without a range"
        for selector in re.findall(r"kube_dlq_\w+(\{[^}]*\})?", expr):
            assert selector == '{job=~"$job"}', f"{where}: selector {selector!r}"


def test_the_issue_panels_are_there() -> None:
    exprs = " ".join(expr for _, expr in panel_queries())
    for name in (
        "kube_dlq_dead_letter_queue_depth",
        "kube_dlq_dead_letter_oldest_age_seconds",
        "kube_dlq_failures_total",
        "kube_dlq_retries_scheduled_total",
        "kube_dlq_retries_fired_total",
        "kube_dlq_decision_latency_seconds_bucket",
        "kube_dlq_watch_last_event_timestamp_seconds",
        "kube_dlq_watch_restarts_total",
        "kube_dlq_watch_synced",
        "kube_dlq_redis_errors_total",
        "kube_dlq_leader",
        "kube_dlq_dead_letters_trimmed_total",
        "kube_dlq_quarantined_entries_total",
        "kube_dlq_forged_entries_total",
        "kube_dlq_fenced_writes_total",
    ):
        assert name in exprs, f"no panel reads {name}"


def test_every_metric_queried_is_one_the_daemon_defines() -> None:
    # Static twin of test_prometheus.py: the registry's families, without running anything.
    registry = metrics.Metrics(CollectorRegistry()).registry
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    defined = {
        family.name + suffix
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
    used = set().union(*(metric_names(expr) for _, expr in panel_queries()))
    used |= set().union(*(metric_names(rule["expr"]) for rule in alerts()))
    assert used - defined == NOT_YET_EXPORTED


def test_pre_initialised_label_values_match_their_sources() -> None:
    assert set(metrics.WATCH_RESTART_REASONS) == set(get_args(watch.RestartReason))
    assert set(metrics.RETRY_OUTCOMES) == {o.value for o in Outcome}
    resources = {watch.JOBS.name, watch.PODS.name, watch.EVENTS.name, watch.NODES.name}
    assert set(metrics.WATCHED_RESOURCES) == resources
