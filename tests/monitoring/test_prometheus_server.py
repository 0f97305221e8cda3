"""devtools/devcluster/prometheus.py: a real Prometheus process, loud when it cannot be had."""

from __future__ import annotations

import pytest

from devtools.devcluster.prometheus import PrometheusError, PrometheusServer
from devtools.monitoring import rules


def test_a_missing_binary_is_an_error_that_names_it() -> None:
    with pytest.raises(PrometheusError, match="'no-such-prometheus' not found on PATH"):
        PrometheusServer([], binary="no-such-prometheus").start()


def test_it_serves_the_rules_and_reports_a_bad_query_with_prometheus_reason() -> None:
    with PrometheusServer([], rule_files=[rules.RULES_FILE]) as prom:
        loaded = prom.api("rules")["groups"]
        assert [group["name"] for group in loaded] == ["kube-dlq"]
        assert prom.query("vector(1)")[0]["value"][1] == "1"
        with pytest.raises(PrometheusError, match="parse error"):
            prom.query("rate(kube_dlq_failures_total[")
    assert prom.pid is None  # stopped by the with block
