"""The retry scheduler benchmark, small (10,000 tickets), against a real redis-server.

Two RetryLoop processes fire the same Redis's tickets: a ticket created twice, a due ticket
never fired, one fired before it was due, or lateness/memory far beyond
bench/thresholds-cluster.json fail the test. The full run is `python -m bench.scheduler`.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.scheduler import run
from devtools.devcluster.redis_server import RedisServer

THRESHOLDS = Path(__file__).resolve().parents[2] / "bench" / "thresholds-cluster.json"


def test_two_loops_fire_every_due_ticket_once_and_on_time() -> None:
    # Given the smoke settings and their bounds, and an empty private redis-server
    bounds = json.loads(THRESHOLDS.read_text())["scheduler_smoke"]
    with RedisServer() as server:
        # When two loops fire 10,000 stored tickets' due window
        result = run(server.port, bounds["argv"])

    # Then each due ticket was created exactly once, none early, none left behind
    assert result.fired == result.window_tickets > 0
    assert result.double_fires <= bounds["double_fires_max"]
    assert result.missed <= bounds["missed_max"]
    assert result.not_due_fired <= bounds["not_due_fired_max"]
    # And lateness and Redis memory per ticket are within the gross-regression bounds
    assert result.lateness_ms["p99"] <= bounds["lateness_p99_ms_max"], result
    assert 0 < result.used_memory_per_ticket_b <= bounds["used_memory_per_ticket_b_max"], result
