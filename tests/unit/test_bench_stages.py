"""bench/stages.py and bench/cpmetrics.py: the step breakdown and the metrics parsing that
bench/latency.py reports, on made-up timelines and metric texts."""

from __future__ import annotations

import os

import pytest

from bench import cpmetrics, stages
from bench.observer import Observations


def _timeline(
    n: int, *, bound_after: float, slow_from: int | None = None
) -> dict[str, dict[str, float]]:
    per_job = {}
    for i in range(n):
        t = 1000.0 + i * 0.02  # created at 50/s
        bound = bound_after * (10 if slow_from is not None and i >= slow_from else 1)
        per_job[f"uid-{i}"] = {
            "created": t,
            "pod": t + 0.01,
            "bound": t + 0.01 + bound,
            "running": t + 0.02 + bound,
            "pod_fail": t + 1.02 + bound,
            "failed": t + 2.02 + bound,
            "lettered": t + 2.03 + bound,
        }
    return per_job


def test_every_step_reports_count_rate_and_latency_since_the_step_before() -> None:
    steps = {s.name: s for s in stages.summarise(_timeline(100, bound_after=0.05))}

    assert list(steps) == list(stages.STEPS)
    assert all(s.reached == 100 for s in steps.values())
    assert steps["created"].rate_per_s == pytest.approx(50.0, rel=0.01)
    assert steps["bound"].since_previous_ms["p50"] == pytest.approx(50.0, abs=0.5)
    assert steps["pod_fail"].since_previous_ms["p50"] == pytest.approx(1000.0, abs=0.5)
    assert steps["lettered"].since_previous_ms["p99"] == pytest.approx(10.0, abs=0.5)


def test_a_step_that_falls_behind_shows_in_its_late_p50_and_its_count() -> None:
    per_job = _timeline(100, bound_after=0.05, slow_from=50)
    for uid in ("uid-98", "uid-99"):  # never scheduled within the run
        per_job[uid] = {"created": per_job[uid]["created"], "pod": per_job[uid]["pod"]}

    steps = {s.name: s for s in stages.summarise(per_job)}

    assert steps["pod"].reached == 100
    assert steps["bound"].reached == 98
    assert steps["bound"].early_p50_ms == pytest.approx(50.0, abs=0.5)
    assert steps["bound"].late_p50_ms == pytest.approx(500.0, abs=0.5)
    assert steps["running"].late_p50_ms == pytest.approx(10.0, abs=0.5)  # not this step's fault


def test_step_times_joins_the_loader_the_pod_watch_the_job_watch_and_redis() -> None:
    per_job = stages.step_times(
        {"a": 1.0, "b": 2.0},
        {"a": {"pod": 1.1, "bound": 1.2, "bogus": 9.0}, "stray": {"pod": 5.0}},
        {"a": 3.0},
        {"a": 3.5, "stray": 6.0},
    )

    assert per_job == {
        "a": {"created": 1.0, "pod": 1.1, "bound": 1.2, "failed": 3.0, "lettered": 3.5},
        "b": {"created": 2.0},
    }


def test_observer_records_each_pod_step_once_and_ignores_pods_of_no_job() -> None:
    seen = Observations()
    job_uid = {"batch.kubernetes.io/controller-uid": "j1"}
    seen.pod({"metadata": {"labels": job_uid}, "spec": {}, "status": {"phase": "Pending"}})
    seen.pod({"metadata": {"labels": job_uid}, "spec": {"nodeName": "n"}, "status": {}})
    seen.pod(
        {"metadata": {"labels": job_uid}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}}
    )
    first = dict(seen.pods["j1"])
    seen.pod(
        {"metadata": {"labels": job_uid}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}}
    )
    seen.pod(
        {"metadata": {"labels": job_uid}, "spec": {"nodeName": "n"}, "status": {"phase": "Failed"}}
    )
    seen.pod({"metadata": {"labels": {"app": "x"}}, "status": {"phase": "Failed"}})
    seen.pod({"metadata": {"labels": {"batch.kubernetes.io/controller-uid": 7}}})
    seen.pod({})

    assert list(seen.pods) == ["j1"]
    assert set(seen.pods["j1"]) == {"pod", "bound", "running", "pod_fail"}
    assert seen.pods["j1"]["running"] == first["running"]  # the first time, not the last


def test_cpu_meter_measures_this_process_and_the_machine() -> None:
    meter = stages.CpuMeter({"me": os.getpid(), "gone": 2**22 + 12345})
    meter.start(0.0)
    sum(i * i for i in range(300_000))  # burn a little CPU
    out = meter.stop(1.0)

    assert out["me"] > 0 and meter.seconds["me"] > 0
    assert "gone" not in out
    assert out["machine"] >= 0 and "load1" in out


METRICS = """\
# HELP rest_client_rate_limiter_duration_seconds [ALPHA] Client side rate limiter latency
# TYPE rest_client_rate_limiter_duration_seconds histogram
rest_client_rate_limiter_duration_seconds_sum{host="127.0.0.1:6443",verb="POST"} 12.5
rest_client_rate_limiter_duration_seconds_sum{host="127.0.0.1:6443",verb="PUT"} 2.5
rest_client_rate_limiter_duration_seconds_count{host="127.0.0.1:6443",verb="PUT"} 40
workqueue_depth{name="job"} 17
workqueue_depth{name="orphaned_pods"} 3
apiserver_request_total{code="201",resource="pods",verb="POST",subresource=""} 100
apiserver_request_total{code="200",resource="jobs",subresource="status",verb="PUT"} 250
apiserver_request_total{code="409",resource="jobs",subresource="status",verb="PUT"} 50
apiserver_request_total{code="200",resource="jobs",verb="LIST"} 9
weird line without value
bad_value{a="b"} notanumber
"""


def test_metrics_text_is_summed_by_name_and_labels() -> None:
    assert cpmetrics.total(METRICS, "rest_client_rate_limiter_duration_seconds_sum") == 15.0
    assert cpmetrics.total(METRICS, "workqueue_depth", name="job") == 17.0
    assert cpmetrics.total(METRICS, "no_such_metric") == 0.0
    assert cpmetrics.total("", "workqueue_depth") == 0.0


def test_writes_are_counted_per_resource_and_verb_without_reads() -> None:
    assert cpmetrics.writes_by_resource(METRICS) == {"POST pods": 100.0, "PUT jobs/status": 300.0}
