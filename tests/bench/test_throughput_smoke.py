"""A small throughput run in `make test`: kube-dlq's daemon against the bare consumer and
kubernetes_asyncio models, on a real redis-server, failing on a gross regression.

The minimum ratios are in bench/thresholds.json ("smoke"); the full run with kopf is
`make bench` (docs/performance.md). Ratios of the same run, so a loaded machine slows every
consumer alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.throughput import THRESHOLDS, below_thresholds, run

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


def test_daemon_keeps_its_lead_and_writes_every_failure(tmp_path: Path) -> None:
    smoke = json.loads(THRESHOLDS.read_text())["smoke"]
    doc = run(smoke["copies"], smoke["consumers"], timeout_s=60.0, workdir=tmp_path)

    failed = doc["corpus"]["failed_jobs"]
    assert failed == 11 * smoke["copies"]  # 11 of the 13 captured scenarios end Failed
    assert doc["results"]["b"]["outcomes"] == failed, doc["invalid"]
    assert doc["invalid"] == []
    for result in doc["results"].values():
        assert result["events"] == doc["corpus"]["watched_events"]
        assert result["cpu_s"] > 0, result  # a consumer that did no work measured nothing
    assert below_thresholds(doc, smoke["min_ratios"]) == [], doc["ratios"]
