"""Every dashboard query and every alert expression, run by a real Prometheus, returns data.

Two kube-dlq replicas with leader election handle real failures on the local control plane
(two app errors and an I/O timeout that is retried once, on a queue capped at one entry so its
caps trim), Debian's Prometheus scrapes both every second with the alert rules loaded, and each
query goes through Prometheus' HTTP API. An empty answer means a query names a metric or a label
value the daemon does not export: the test lists them all. The replicas also show the rules'
aggregation on real series: one leader of two, and a queue counted once, not per replica.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from devtools.devcluster.prometheus import PrometheusServer
from devtools.devcluster.redis_server import RedisServer
from devtools.monitoring import rules
from devtools.monitoring.dashboard import JOB_VALUES
from tests.monitoring.support import (
    NOT_YET_EXPORTED,
    alerts,
    as_instant,
    metric_names,
    panel_queries,
    without_thresholds,
)
from tests.support.daemon import StartDaemon
from tests.support.kube import eventually, raw
from tests.support.workloads import IO_TIMEOUT_MESSAGE, create_job, failing_job

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

LEASE_NAMESPACE = "kube-dlq"
"""Where deploy/manifests/rbac.yaml lets the daemon's identity manage Leases."""
RATE_INTERVAL = "5m"
"""What $__rate_interval stands for here: longer than the whole run, so every rate sees it."""


@pytest.fixture
def capped_redis() -> Iterator[RedisServer]:
    """A redis-server whose stream nodes hold one entry, so the approximate trim of a queue
    capped at one entry really trims (with the default 100 per node it would wait for 100)."""
    with RedisServer(extra_args=("--stream-node-max-entries", "1")) as server:
        yield server


@pytest.fixture
async def lease_name(admin_api: client.ApiClient) -> AsyncIterator[str]:
    """A Lease of this test's own, deleted afterwards (as admin: the daemon may not delete)."""
    name = f"monitoring-test-{uuid.uuid4().hex[:8]}"
    yield name
    await raw(
        client.CoordinationV1Api(admin_api).delete_namespaced_lease(
            name, LEASE_NAMESPACE, _preload_content=False
        )
    )


async def _scraped(prom: PrometheusServer, expr: str, at_least: float) -> bool:
    found = await asyncio.to_thread(prom.query, expr)
    return bool(found) and float(found[0]["value"][1]) >= at_least


async def test_every_panel_query_and_alert_expression_returns_data(
    start_daemon: StartDaemon,
    admin_api: client.ApiClient,
    namespace: str,
    capped_redis: RedisServer,
    lease_name: str,
) -> None:
    # Given two replicas electing a leader, on a queue capped at one entry, both scraped every
    # second by Prometheus with the alert rules loaded
    # Timings roomy enough that a loaded machine does not move the Lease mid-test.
    election = {
        "enabled": True,
        "lease_name": lease_name,
        "lease_namespace": LEASE_NAMESPACE,
        "lease_duration_s": 15,
        "renew_deadline_s": 10,
        "retry_period_s": 1,
    }
    replicas = [
        await start_daemon(
            redis={"url": capped_redis.url, "stream_maxlen": 1},
            redis_url=capped_redis.url,
            leader_election=election,
        )
        for _ in range(2)
    ]
    targets = [f"127.0.0.1:{replica.port}" for replica in replicas]
    with PrometheusServer(targets, rule_files=[rules.RULES_FILE], scrape_interval_s=1) as prom:
        await eventually(
            lambda: _scraped(prom, 'count(up{job="kube-dlq"} == 1)', 2),
            within=20,
            what="a first scrape of both replicas",
        )
        await eventually(
            lambda: _scraped(prom, "sum(kube_dlq_leader)", 1), within=20, what="a leader"
        )

        # When Jobs fail: an app error, a retried I/O timeout, and (once Prometheus has seen
        # the first dead letter, so its counters move between scrapes) a second app error
        await create_job(admin_api, namespace, failing_job("crash-1", exit_code=2))
        await create_job(
            admin_api,
            namespace,
            failing_job(
                "flaky-db",
                exit_code=1,
                message=IO_TIMEOUT_MESSAGE,
                annotations={"kube-dlq.io/max-retries": "1"},
            ),
        )
        await eventually(
            lambda: _scraped(prom, "sum(kube_dlq_dead_letters_total)", 1),
            within=60,
            what="the first dead letter in Prometheus",
        )
        await create_job(admin_api, namespace, failing_job("crash-2", exit_code=2))
        await eventually(
            lambda: _scraped(prom, "sum(kube_dlq_dead_letters_total)", 3),
            within=90,
            what="three dead letters (crash-1, flaky-db-r2, crash-2) in Prometheus",
        )
        await eventually(
            lambda: _scraped(prom, "sum(kube_dlq_dead_letters_trimmed_total)", 1),
            within=20,
            what="a trimmed dead letter in Prometheus",
        )
        # delta() and deriv() need two samples of the depth gauge, which is refreshed every
        # dead_letter.depth_refresh_s (15 s): decided at once, the failures can all land
        # before its second refresh
        await eventually(
            lambda: _scraped(
                prom,
                'min(count_over_time(kube_dlq_dead_letter_queue_depth{queue="default"}[1h]))',
                2,
            ),
            within=40,
            what="two samples of both replicas' queue depth in Prometheus",
        )
        await asyncio.sleep(3)  # a few more scrapes after the last change, for rate()

        # Then one replica of the two leads, and the capped queue is one entry, not one per
        # replica: what the rules' sum and max rely on
        assert await _values(prom, "kube_dlq_leader") == [0.0, 1.0]
        assert await _values(prom, 'kube_dlq_dead_letter_queue_depth{queue="default"}') == [
            1.0,
            1.0,
        ]
        assert await _values(prom, "max by (queue) (kube_dlq_dead_letter_queue_depth)") == [1.0]

        # Then every name the dashboard and the rules use is exported, but the expected-missing
        present = await asyncio.to_thread(prom.metric_names)
        used = set().union(*(metric_names(e) for _, e in panel_queries()))
        used |= set().union(*(metric_names(r["expr"]) for r in alerts()))
        assert used - NOT_YET_EXPORTED - present == set(), "queried, never exported"
        assert NOT_YET_EXPORTED & present == set(), (
            "exported now: remove them from NOT_YET_EXPORTED in tests/monitoring/support.py"
        )

        # And every panel query and every alert expression (thresholds made always true)
        # returns data
        empty: list[str] = []
        for where, expr in panel_queries():
            await _expect_data(prom, where, as_instant(expr, RATE_INTERVAL), empty)
        for rule in alerts():
            expr = rule["expr"]
            if expr.startswith("absent("):
                # absent() answers only when nothing is there: its argument must be
                assert await asyncio.to_thread(prom.query, expr) == [], rule["alert"]
                expr = expr.removeprefix("absent(").removesuffix(")")
            await _expect_data(prom, rule["alert"], without_thresholds(expr), empty)
        assert empty == [], "queries that returned no data:\n" + "\n".join(empty)

        # And the dashboard's job variable finds the scrape job
        metric, label = JOB_VALUES.removeprefix("label_values(").removesuffix(")").split(", ")
        jobs = await asyncio.to_thread(prom.api, f"label/{label}/values", **{"match[]": metric})
        assert jobs == ["kube-dlq"]

        # And Prometheus itself evaluates every rule without an error
        evaluated = await asyncio.to_thread(prom.api, "rules")
        broken = [
            f"{r['name']}: {r.get('lastError')}"
            for group in evaluated["groups"]
            for r in group["rules"]
            if r.get("health") == "err"
        ]
        assert broken == []
        assert sum(len(g["rules"]) for g in evaluated["groups"]) == len(alerts())


async def _values(prom: PrometheusServer, expr: str) -> list[float]:
    return sorted(float(r["value"][1]) for r in await asyncio.to_thread(prom.query, expr))


async def _expect_data(prom: PrometheusServer, where: str, expr: str, empty: list[str]) -> None:
    result: list[dict[str, Any]] = await asyncio.to_thread(prom.query, expr)
    if result:
        return
    if metric_names(expr) & NOT_YET_EXPORTED:
        return  # reads a metric of a branch not merged yet (checked above to be absent)
    empty.append(f"{where}: {expr}")
