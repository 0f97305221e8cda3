"""Every Prometheus metric kube-dlq exports, with its name and labels, in one place.

Labels are bounded: resource kinds, failure classes, actions, queue names (configured, few),
outcomes. Never a Job name, namespace or uid: those belong in logs and dead letters.
Counters change at stage boundaries in the adapters and the app, not in pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "kube_dlq"

# Label values known in advance, created at 0 when the registry is built: a dashboard shows 0
# rather than "no data", and a series' first increment is visible to rate()/increase() (a
# counter that appears at 1 hides that step: "any forbidden restart" would never alert).
# Copies of values owned by other layers (kit may not import them); tests/monitoring checks
# they agree.
WATCHED_RESOURCES = ("jobs", "pods", "events", "nodes")
WATCH_RESTART_REASONS = ("closed", "timeout", "error", "expired", "unauthorized", "forbidden")
RETRY_OUTCOMES = ("created", "already_exists", "abandoned", "deferred")
REDIS_OPERATIONS = (
    "write",
    "forget_markers",
    "claim_due_retries",
    "release_retry",
    "begin_create",
    "settle_created",
    "abandon_retry",
    "pending_retries",
    "due_finalizers",
    "finalizer_released",
)
QUARANTINE_KINDS = ("retry_ticket",)
FORGED_KINDS = ("retry_ticket", "lineage")
"""What the daemon counts as forged (the CLI reports forged dead letters on its stderr)."""
FENCED_OPERATIONS = (
    "dead_letter",
    "schedule_retry",
    "claim_due_retries",
    "begin_create",
    "settle_created",
    "release_retry",
    "abandon_retry",
    "forget_absent",
)
"""Every fenced write script's operation (tests/integration/test_fencing.py calls each)."""
POD_READ_RESULTS = ("found", "missing", "error")
MALFORMED_SOURCES = ("annotation", "job", "pod", "event", "node")
"""Plus list_<resource> and watch_<resource> for each of WATCHED_RESOURCES."""


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.failures = Counter(
            f"{PREFIX}_failures_total",
            "Failed (or stuck) Jobs handled, by failure class and the action taken.",
            ["failure_class", "action"],
            registry=r,
        )
        self.dead_letter_depth = Gauge(
            f"{PREFIX}_dead_letter_queue_depth",
            "Entries in each dead-letter queue (Redis stream length).",
            ["queue"],
            registry=r,
        )
        self.dead_letter_oldest_age = Gauge(
            f"{PREFIX}_dead_letter_oldest_age_seconds",
            "Age of the oldest entry in each dead-letter queue.",
            ["queue"],
            registry=r,
        )
        self.dead_letters_written = Counter(
            f"{PREFIX}_dead_letters_total",
            "Dead letters written (not counting replays that found one already written).",
            ["queue", "failure_class"],
            registry=r,
        )
        self.dead_letters_trimmed = Counter(
            f"{PREFIX}_dead_letters_trimmed_total",
            "Dead letters removed from a queue by its caps (redis.stream_maxlen, "
            "redis.stream_max_age_s) to make room for newer ones.",
            ["queue"],
            registry=r,
        )
        self.duplicates_suppressed = Counter(
            f"{PREFIX}_duplicates_suppressed_total",
            "Failures seen again (replay, relist, restart, another replica) and not rewritten.",
            registry=r,
        )
        self.markers_forgotten = Counter(
            f"{PREFIX}_outcome_markers_forgotten_total",
            "Exactly-once markers of Jobs a complete list showed gone from the API, set to "
            "expire (after redis.outcome_ttl_s).",
            registry=r,
        )
        self.outcome_markers = Gauge(
            f"{PREFIX}_outcome_markers",
            "Exactly-once markers kept for good: one per failed Job that may still be in the API.",
            registry=r,
        )
        self.retries_scheduled = Counter(
            f"{PREFIX}_retries_scheduled_total",
            "Retries scheduled in Redis, by failure class.",
            ["failure_class"],
            registry=r,
        )
        self.retries_fired = Counter(
            f"{PREFIX}_retries_fired_total",
            "Scheduled retries acted on: Job re-created, already existed, or failed to create.",
            ["outcome"],
            registry=r,
        )
        self.retries_pending = Gauge(
            f"{PREFIX}_retries_pending",
            "Retries scheduled and not yet fired.",
            registry=r,
        )
        self.watch_events = Counter(
            f"{PREFIX}_watch_events_total",
            "Watch events received, by resource and type (ADDED, MODIFIED, DELETED, BOOKMARK, "
            "ERROR, and LISTED for objects of a (re)list).",
            ["resource", "type"],
            registry=r,
        )
        self.watch_restarts = Counter(
            f"{PREFIX}_watch_restarts_total",
            "Watch streams restarted, by resource and reason (closed, timeout, error, expired, "
            "unauthorized, forbidden).",
            ["resource", "reason"],
            registry=r,
        )
        self.watch_last_event = Gauge(
            f"{PREFIX}_watch_last_event_timestamp_seconds",
            "Unix time of the last event or bookmark received, by resource.",
            ["resource"],
            registry=r,
        )
        self.watch_synced = Gauge(
            f"{PREFIX}_watch_synced",
            "1 once the resource's initial list is done and its watch is running.",
            ["resource"],
            registry=r,
        )
        self.malformed = Counter(
            f"{PREFIX}_malformed_input_total",
            "Objects, annotations or stored entries that could not be read; reported, skipped.",
            ["source"],
            registry=r,
        )
        self.handling_errors = Counter(
            f"{PREFIX}_handling_errors_total",
            "Unexpected errors (bugs) while handling one object or one failure, by stage; the "
            "object is reported and the failure dead-lettered as unknown, the loop goes on.",
            ["stage"],
            registry=r,
        )
        self.pod_reads = Counter(
            f"{PREFIX}_failed_job_pod_reads_total",
            "Failed Jobs whose failed pods the pod watch had not delivered within "
            "pipeline.evidence_wait_s, so their pods were read from the API directly, by "
            "result: found (the read had them), missing (it had none either), error.",
            ["result"],
            registry=r,
        )
        self.quarantined = Counter(
            f"{PREFIX}_quarantined_entries_total",
            "Stored entries that failed to decode and were set aside (retry tickets: moved to "
            "the corrupt hash instead of being fired), by kind.",
            ["kind"],
            registry=r,
        )
        self.forged = Counter(
            f"{PREFIX}_forged_entries_total",
            "Stored entries whose signature did not check out (unsigned, unknown key, altered, "
            "or moved from another key), by kind; quarantined like undecodable ones, never "
            "acted on.",
            ["kind"],
            registry=r,
        )
        self.out_of_scope = Counter(
            f"{PREFIX}_out_of_scope_refused_total",
            "Job creates and deletes refused because the namespace is outside scope, by action "
            "(create: the retry ticket becomes a dead letter with the reason).",
            ["action"],
            registry=r,
        )
        self.decision_latency = Histogram(
            f"{PREFIX}_decision_latency_seconds",
            "From seeing a Job fail to its dead letter or retry being durably written.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.redis_errors = Counter(
            f"{PREFIX}_redis_errors_total",
            "Redis operations that failed (they are retried; work is kept, not dropped).",
            ["operation"],
            registry=r,
        )
        self.redis_durable = Gauge(
            f"{PREFIX}_redis_durable",
            "1 when the last check found Redis keeps acknowledged outcomes across a restart "
            "(AOF, fsync at least every second, replicas guarded by min-replicas-to-write); "
            "0 when it does not, or before a check succeeded.",
            registry=r,
        )
        self.backlog = Gauge(
            f"{PREFIX}_pending_writes",
            "Failures decided but not yet durably written (grows while Redis is down).",
            registry=r,
        )
        self.tracked_jobs = Gauge(
            f"{PREFIX}_tracked_jobs",
            "Jobs whose pods and events are held in memory.",
            registry=r,
        )
        self.leader = Gauge(
            f"{PREFIX}_leader",
            "1 while this replica holds the leader Lease.",
            registry=r,
        )
        self.fenced_writes = Counter(
            f"{PREFIX}_fenced_writes_total",
            "Writes Redis refused because their leadership term was stale: another replica "
            "had become leader; this one stepped down at once.",
            ["operation"],
            registry=r,
        )
        self.leader_term = Gauge(
            f"{PREFIX}_leader_term",
            "The leadership term of this replica's current or last term as leader (-1: none).",
            registry=r,
        )
        self._known_labels()

    def _known_labels(self) -> None:
        for resource in WATCHED_RESOURCES:
            self.handling_errors.labels(stage=f"watch_{resource}")
            self.malformed.labels(source=f"list_{resource}")
            self.malformed.labels(source=f"watch_{resource}")
            for reason in WATCH_RESTART_REASONS:
                self.watch_restarts.labels(resource=resource, reason=reason)
        self.handling_errors.labels(stage="writer")
        for outcome in RETRY_OUTCOMES:
            self.retries_fired.labels(outcome=outcome)
        for operation in REDIS_OPERATIONS:
            self.redis_errors.labels(operation=operation)
        for kind in QUARANTINE_KINDS:
            self.quarantined.labels(kind=kind)
        for kind in FORGED_KINDS:
            self.forged.labels(kind=kind)
        for operation in FENCED_OPERATIONS:
            self.fenced_writes.labels(operation=operation)
        for source in MALFORMED_SOURCES:
            self.malformed.labels(source=source)
        for result in POD_READ_RESULTS:
            self.pod_reads.labels(result=result)
