"""The kube-dlq Grafana dashboard, as code (grafana-foundation-sdk; docs/dashboards.md says why).

`build()` returns the dashboard model; `render()` its JSON, byte for byte what is committed as
deploy/monitoring/dashboard.json. Conventions every panel keeps (tests/monitoring checks them):
the Prometheus data source comes from the `datasource` variable, every selector carries
``job=~"$job"``, every rate or increase spans ``$__rate_interval``, every panel has a unit and
a description, and ids and uids are fixed here, so a re-generation is a no-op diff.
"""

from __future__ import annotations

from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m

UID = "kube-dlq-overview"
TITLE = "kube-dlq"
DATASOURCE = dash_m.DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB_VALUES = "label_values(kube_dlq_leader, job)"
"""The `job` variable's query (a string: every Grafana version's Prometheus plugin reads it)."""
SEL = 'job=~"$job"'
"""The label matcher of every selector: the `job` variable (all kube-dlq jobs by default)."""


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    stat: bool = False
    width: int = 8


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


NO_REDIS_LATENCY = (
    " kube-dlq exports no Redis latency metric; the failure-to-outcome latency panel includes "
    "the time of the Redis write."
)

ROWS: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    (
        "Dead letters",
        (
            PanelSpec(
                "Dead-letter depth",
                "Entries in each dead-letter queue (its Redis stream length). Every replica "
                "reads the same Redis, so replicas are folded with max.",
                "short",
                (q(f"max by (queue) (kube_dlq_dead_letter_queue_depth{{{SEL}}})", "{{queue}}"),),
            ),
            PanelSpec(
                "Oldest dead letter",
                "Age of the oldest entry of each queue: how long nobody has drained it. Past "
                "redis.stream_max_age_s old entries are trimmed.",
                "s",
                (
                    q(
                        f"max by (queue) (kube_dlq_dead_letter_oldest_age_seconds{{{SEL}}})",
                        "{{queue}}",
                    ),
                ),
            ),
            PanelSpec(
                "Dead letters written",
                "Dead letters written per second, by queue and failure class (replays that "
                "found one already written are not counted).",
                "ops",
                (
                    q(
                        "sum by (queue, failure_class) "
                        f"(rate(kube_dlq_dead_letters_total{{{SEL}}}[$__rate_interval]))",
                        "{{queue}} {{failure_class}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "Inflow",
        (
            PanelSpec(
                "Failures by class",
                "Failed (or stuck) Jobs handled per second, by failure class. A spike of one "
                "class (node_lost: a node pool went away) is the KubeDLQFailureClassSpike alert.",
                "ops",
                (
                    q(
                        "sum by (failure_class) "
                        f"(rate(kube_dlq_failures_total{{{SEL}}}[$__rate_interval]))",
                        "{{failure_class}}",
                    ),
                ),
                width=12,
            ),
            PanelSpec(
                "Failures by action",
                "Failed Jobs handled per second, by what kube-dlq did: retry or dead_letter. "
                "Duplicates: failures seen again (replays, relists, the other replica) and not "
                "written twice.",
                "ops",
                (
                    q(
                        f"sum by (action) (rate(kube_dlq_failures_total{{{SEL}}}"
                        "[$__rate_interval]))",
                        "{{action}}",
                    ),
                    q(
                        f"sum(rate(kube_dlq_duplicates_suppressed_total{{{SEL}}}"
                        "[$__rate_interval]))",
                        "duplicates suppressed",
                    ),
                ),
                width=12,
            ),
        ),
    ),
    (
        "Retries",
        (
            PanelSpec(
                "Retries scheduled",
                "Retry tickets written per second, by failure class.",
                "ops",
                (
                    q(
                        "sum by (failure_class) "
                        f"(rate(kube_dlq_retries_scheduled_total{{{SEL}}}[$__rate_interval]))",
                        "{{failure_class}}",
                    ),
                ),
            ),
            PanelSpec(
                "Retries fired, by outcome",
                "Due retries acted on per second: created (the Job re-created), already_exists, "
                "abandoned (could not be created), deferred (tried again later).",
                "ops",
                (
                    q(
                        f"sum by (outcome) (rate(kube_dlq_retries_fired_total{{{SEL}}}"
                        "[$__rate_interval]))",
                        "{{outcome}}",
                    ),
                ),
            ),
            PanelSpec(
                "Retries pending",
                "Retry tickets scheduled and not yet fired.",
                "short",
                (q(f"max(kube_dlq_retries_pending{{{SEL}}})", "pending"),),
            ),
        ),
    ),
    (
        "Latency",
        (
            PanelSpec(
                "Failure to outcome",
                "From kube-dlq seeing a Job fail to its dead letter or retry being durably "
                "written in Redis (kube_dlq_decision_latency_seconds), 50th, 90th and 99th "
                "percentiles." + NO_REDIS_LATENCY,
                "s",
                tuple(
                    q(
                        f"histogram_quantile({quantile}, sum by (le) "
                        f"(rate(kube_dlq_decision_latency_seconds_bucket{{{SEL}}}"
                        "[$__rate_interval])))",
                        f"p{round(quantile * 100)}",
                    )
                    for quantile in (0.5, 0.9, 0.99)
                ),
                width=24,
            ),
        ),
    ),
    (
        "Watches",
        (
            PanelSpec(
                "Last watch event",
                "Seconds since the stalest replica last received an event or bookmark, by "
                "resource. The apiserver sends a bookmark every minute; above 5 minutes is the "
                "KubeDLQWatchStale alert.",
                "s",
                (
                    q(
                        "time() - min by (resource) "
                        f"(kube_dlq_watch_last_event_timestamp_seconds{{{SEL}}})",
                        "{{resource}}",
                    ),
                ),
                width=6,
            ),
            PanelSpec(
                "Watch restarts",
                "Watch streams restarted per second, by resource and reason. expired (410 "
                "Gone) means a relist; unauthorized or forbidden means RBAC is wrong.",
                "ops",
                (
                    q(
                        "sum by (resource, reason) "
                        f"(rate(kube_dlq_watch_restarts_total{{{SEL}}}[$__rate_interval]))",
                        "{{resource}} {{reason}}",
                    ),
                ),
                width=6,
            ),
            PanelSpec(
                "Watch events",
                "Watch events received per second, by resource and type (LISTED: objects of "
                "a list or relist).",
                "ops",
                (
                    q(
                        "sum by (resource, type) "
                        f"(rate(kube_dlq_watch_events_total{{{SEL}}}[$__rate_interval]))",
                        "{{resource}} {{type}}",
                    ),
                ),
                width=6,
            ),
            PanelSpec(
                "Watches synced",
                "1 once every replica has listed the resource and is watching it (min over "
                "replicas); 0 while one is still listing.",
                "bool",
                (q(f"min by (resource) (kube_dlq_watch_synced{{{SEL}}})", "{{resource}}"),),
                width=6,
            ),
        ),
    ),
    (
        "Redis",
        (
            PanelSpec(
                "Redis errors",
                "Failed Redis operations per second, by operation. Work is kept and retried, "
                "not dropped." + NO_REDIS_LATENCY,
                "ops",
                (
                    q(
                        "sum by (operation) "
                        f"(rate(kube_dlq_redis_errors_total{{{SEL}}}[$__rate_interval]))",
                        "{{operation}}",
                    ),
                ),
            ),
            PanelSpec(
                "Pending writes",
                "Failures decided and not yet written to Redis, per replica: grows while "
                "Redis is down.",
                "short",
                (q(f"max by (instance) (kube_dlq_pending_writes{{{SEL}}})", "{{instance}}"),),
            ),
            PanelSpec(
                "Redis durable",
                "1 when Redis keeps acknowledged outcomes across a restart (AOF fsynced, "
                "replicas guarded); 0 when not, or not checked yet.",
                "bool",
                (q(f"max(kube_dlq_redis_durable{{{SEL}}})", "durable"),),
                stat=True,
                width=4,
            ),
            PanelSpec(
                "Outcome markers",
                "Exactly-once markers kept: one per failed Job that may still be in the API.",
                "short",
                (q(f"max(kube_dlq_outcome_markers{{{SEL}}})", "markers"),),
                stat=True,
                width=4,
            ),
        ),
    ),
    (
        "Leadership",
        (
            PanelSpec(
                "Leader",
                "1 for the replica holding the leader Lease. Exactly one line at 1 is healthy; "
                "none for more than a handover is the KubeDLQNoLeader alert.",
                "short",
                (q(f"max by (instance) (kube_dlq_leader{{{SEL}}})", "{{instance}}"),),
                width=12,
            ),
            PanelSpec(
                "Fenced writes",
                "Writes of a replica that had lost the Lease, rejected by Redis, per second "
                "and operation. Any is a replica acting on a stale leadership.",
                "ops",
                (
                    q(
                        "sum by (operation) "
                        f"(rate(kube_dlq_fenced_writes_total{{{SEL}}}[$__rate_interval]))",
                        "{{operation}}",
                    ),
                ),
                width=12,
            ),
        ),
    ),
    (
        "Lost and rejected entries",
        (
            PanelSpec(
                "Dead letters trimmed",
                "Dead letters removed by a queue's caps (redis.stream_maxlen, "
                "redis.stream_max_age_s) in each interval: they are gone.",
                "short",
                (
                    q(
                        "sum by (queue) "
                        f"(increase(kube_dlq_dead_letters_trimmed_total{{{SEL}}}"
                        "[$__rate_interval]))",
                        "{{queue}}",
                    ),
                ),
                width=6,
            ),
            PanelSpec(
                "Entries quarantined",
                "Stored entries that failed to decode and were set aside in each interval "
                "(retry tickets: moved to the retry:corrupt hash).",
                "short",
                (
                    q(
                        "sum by (kind) "
                        f"(increase(kube_dlq_quarantined_entries_total{{{SEL}}}"
                        "[$__rate_interval]))",
                        "{{kind}}",
                    ),
                ),
                width=6,
            ),
            PanelSpec(
                "Forged entries",
                "Redis entries rejected in each interval because their signature did not "
                "verify (forged, or unsigned).",
                "short",
                (
                    q(
                        "sum by (kind) "
                        f"(increase(kube_dlq_forged_entries_total{{{SEL}}}[$__rate_interval]))",
                        "{{kind}}",
                    ),
                ),
                width=6,
            ),
            PanelSpec(
                "Malformed input and bugs",
                "Objects, annotations or entries that could not be read (by source), and "
                "unexpected errors met while handling one object (by stage), in each interval.",
                "short",
                (
                    q(
                        "sum by (source) "
                        f"(increase(kube_dlq_malformed_input_total{{{SEL}}}[$__rate_interval]))",
                        "malformed {{source}}",
                    ),
                    q(
                        "sum by (stage) "
                        f"(increase(kube_dlq_handling_errors_total{{{SEL}}}[$__rate_interval]))",
                        "bug in {{stage}}",
                    ),
                ),
                width=6,
            ),
        ),
    ),
)

HEIGHT = 8


def _panel(spec: PanelSpec, panel_id: int) -> stat_b.Panel | ts_b.Panel:
    panel: stat_b.Panel | ts_b.Panel
    if spec.stat:
        panel = stat_b.Panel().reduce_options(
            common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
        )
    else:
        panel = (
            ts_b.Panel()
            .legend(
                common_b.VizLegendOptions()
                .show_legend(True)
                .display_mode(common_m.LegendDisplayMode.LIST)
                .placement(common_m.LegendPlacement.BOTTOM)
            )
            .min(0)
        )
    panel = (
        panel.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .unit(spec.unit)
        .datasource(DATASOURCE)
        .span(spec.width)
        .height(HEIGHT)
    )
    for index, query in enumerate(spec.queries):
        target = (
            prom_b.Dataquery()
            .expr(query.expr)
            .legend_format(query.legend)
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
        )
        panel = panel.with_target(target.instant() if spec.stat else target.range())
    return panel


def build() -> dash_b.Dashboard:
    board = (
        dash_b.Dashboard(TITLE)
        .uid(UID)
        .description(
            "kube-dlq: dead-letter queues, inflow, retries, latency, watches, Redis and "
            "leadership. Generated by devtools/monitoring/dashboard.py; do not edit by hand."
        )
        .tags(["kube-dlq", "generated"])
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .timezone(common_m.TimeZoneBrowser)
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dash_b.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .description("The Prometheus that scrapes kube-dlq.")
        )
        .with_variable(
            dash_b.QueryVariable("job")
            .label("Job")
            .description("The scrape job(s) of kube-dlq; all of them by default.")
            .datasource(DATASOURCE)
            .query(JOB_VALUES)
            .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".+")
        )
    )
    panel_id = 1
    for title, specs in ROWS:
        board = board.with_row(dash_b.Row(title).id(panel_id))
        panel_id += 1
        for spec in specs:
            board = board.with_panel(_panel(spec, panel_id))
            panel_id += 1
    return board


def render() -> str:
    """The dashboard JSON as committed: sorted keys, two-space indent, a final newline."""
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"
