"""A small latency run in `make test`: failing Jobs at 3/s for 10 s on the test run's cluster,
the daemon as a subprocess, an observer of its own; fails if a Job is not dead-lettered, or
on a gross regression of the Failed -> dead letter p99 (bench/thresholds-cluster.json
"latency_smoke"). The goal's run is `python -m bench.latency` (docs/performance.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.latency import parse_args, run
from devtools.devcluster.state import ClusterState

THRESHOLDS = Path(__file__).resolve().parents[2] / "bench" / "thresholds-cluster.json"

pytestmark = [pytest.mark.cluster, pytest.mark.redis, pytest.mark.timeout(300)]


def test_every_failing_job_is_dead_lettered_and_each_step_is_accounted_for(
    cluster: ClusterState,
) -> None:
    bounds = json.loads(THRESHOLDS.read_text())["latency_smoke"]
    args = parse_args([*bounds["argv"], "--state-dir", cluster.state_dir])

    (result,) = run(args)

    expected = int(args.rate * args.seconds)
    assert result.jobs_created == expected
    assert result.create_errors <= bounds["create_errors_max"]
    assert result.never_failed <= bounds["never_failed_max"], result
    assert result.no_outcome <= bounds["no_outcome_max"], result
    assert result.dead_lettered == result.failed_seen == expected, result
    assert 0 < result.latency_ms["p99"] <= bounds["latency_p99_ms_max"], result
    # The breakdown follows every Job through every step, and the CPU meter saw the work.
    assert {s["name"]: s["reached"] for s in result.steps} == {
        name: expected
        for name in ("created", "pod", "bound", "running", "pod_fail", "failed", "lettered")
    }
    assert result.cpu_ms_per_job["daemon"] > 0
    assert result.cpu_ms_per_job["kube-apiserver"] > 0
