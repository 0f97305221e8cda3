"""The Prometheus metrics of `kube-dlq dlq consume` (served with ``--metrics-port``).

A registry of their own, not the daemon's `Metrics`: a consumer is another process, and its
/metrics should carry what it does and nothing the daemon owns. The ``group`` label is one
value per process (the operator's ``--group``), so cardinality stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

__all__ = ["ENTRY_OUTCOMES", "RUN_RESULTS", "ConsumeMetrics"]

ENTRY_OUTCOMES = ("acked", "parked", "refused", "gone")
"""refused: forged or undecodable, never run (and parked). gone: deleted while pending."""
RUN_RESULTS = ("ok", "failed", "timed_out", "stopped")


@dataclass
class ConsumeMetrics:
    group: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.entries = Counter(
            "kube_dlq_consume_entries_total",
            "Dead letters this consumer settled, by how",
            ["group", "outcome"],
            registry=r,
        )
        self.runs = Counter(
            "kube_dlq_consume_handler_runs_total",
            "Handler runs, by result",
            ["group", "result"],
            registry=r,
        )
        self.run_seconds = Histogram(
            "kube_dlq_consume_handler_seconds",
            "How long one handler run took",
            ["group"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.redis_errors = Counter(
            "kube_dlq_consume_redis_errors_total",
            "Redis calls that failed (the consumer waits and tries again)",
            ["group"],
            registry=r,
        )
        # At 0 from the start: a rate() over a series that appears at 1 misses that step.
        for outcome in ENTRY_OUTCOMES:
            self.entries.labels(group=self.group, outcome=outcome)
        for result in RUN_RESULTS:
            self.runs.labels(group=self.group, result=result)
        self.redis_errors.labels(group=self.group)

    def entry(self, outcome: str) -> None:
        self.entries.labels(group=self.group, outcome=outcome).inc()

    def run(self, result: str, seconds: float) -> None:
        self.runs.labels(group=self.group, result=result).inc()
        self.run_seconds.labels(group=self.group).observe(seconds)

    def redis_error(self) -> None:
        self.redis_errors.labels(group=self.group).inc()

    def serve(self, port: int, address: str) -> None:
        """/metrics on a thread of its own (prometheus_client's server)."""
        start_http_server(port, addr=address, registry=self.registry)
