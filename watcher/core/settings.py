"""The settings tree: every knob kube-dlq has, with its default, in one place.

One frozen dataclass per section of the config file (``config/kube-dlq.yaml`` documents every
key); ``watcher.app.config`` reads and validates a file into a `Settings` and layers the
environment on top. Each component receives its own section when it is constructed (the watch
gets ``kubernetes``, the Redis store ``redis``, the retry loop ``retry_loop``, ...), so a value
set in the file is the value the component uses: there is no second default anywhere.

Field names are the YAML keys. Durations are seconds (fields ending in ``_s``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from watcher.core.classify import DEFAULT_IO_TIMEOUT_PATTERNS
from watcher.core.policy import DEFAULT_QUEUE, RetryPolicy

__all__ = [
    "ClassifySettings",
    "DeadLetterSettings",
    "JobScopeMode",
    "KubernetesSettings",
    "LeaderElectionSettings",
    "LimitsSettings",
    "LogFormat",
    "LogLevel",
    "LogSettings",
    "PipelineSettings",
    "RedisSettings",
    "RetryLoopSettings",
    "ScopeSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
]

JobScopeMode = Literal["all", "opt-in"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]
SCOPE_MODES: Final[tuple[JobScopeMode, ...]] = get_args(JobScopeMode)
LOG_LEVELS: Final[tuple[LogLevel, ...]] = get_args(LogLevel)
LOG_FORMATS: Final[tuple[LogFormat, ...]] = get_args(LogFormat)

DAY_S: Final = 24 * 3600.0
DEFAULT_SHUTDOWN_GRACE_S: Final = 20.0


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where dead letters and retry tickets are stored."""

    url: str = "redis://localhost:6379/0"
    """redis://, rediss:// (TLS) or unix:// URL, or redis+cluster://host:port[,...]/ (Redis
    Cluster) or redis+sentinel://host:port[,...]/<service>[/<db>] (watcher.core.redis_url),
    password included if any; prefer setting it through KUBE_DLQ_REDIS_URL from a Secret. The
    default suits a sidecar or local test."""
    key_prefix: str = "kube-dlq"
    """First part of every key, so several installations can share one Redis."""
    stream_maxlen: int = 10_000
    """Approximate cap on entries per dead-letter queue stream (XTRIM MAXLEN ~): entries carry
    manifests and pod reports, about 4.7 KB each in Redis (measured: docs/dead-letters.md), so
    10 000 keep a queue at about 45 MiB."""
    stream_max_age_s: float = 30 * DAY_S
    """Dead letters older than this are trimmed: 30 days is time to notice, fix and redrive."""
    outcome_ttl_s: float = 30 * DAY_S
    """How long the exactly-once marker of a failed Job's uid lives once a complete list of Jobs
    has shown the Job gone from the API (until then it has no TTL: docs/exactly-once.md). It
    covers a writer that still holds the failure of a Job deleted meanwhile (a queued write,
    Redis unreachable for it); about 340 bytes per failed Job, index entry included."""
    retry_claim_lease_s: float = 60.0
    """A claimed retry ticket goes back to the queue if not acknowledged within this: longer than
    one Job re-creation including API retries, short enough that a crashed replica's tickets
    are picked up within a minute."""
    socket_timeout_s: float = 5.0
    """Connect and read timeout of one Redis command: a dead Redis is an error in seconds, not
    a hang."""
    operation_timeout_s: float = 10.0
    """Upper bound on one store operation (a script, a pipeline), retries included."""


@dataclass(frozen=True, slots=True)
class KubernetesSettings:
    """How to reach the Kubernetes API, and how to list and watch it."""

    kubeconfig: str | None = None
    """Path to a kubeconfig file; None uses $KUBECONFIG if set, else the in-cluster service
    account (the normal case for the Deployment)."""
    context: str | None = None
    """Context to use from the kubeconfig; None uses its current-context."""
    request_timeout_s: float = 30.0
    """Client-side timeout of one non-watch API request: generous for a loaded apiserver, short
    enough that a hung connection does not stall the retry loop."""
    watch_timeout_s: float | None = 300.0
    """Server-side timeoutSeconds of one watch request, drawn from [t, 2t) so watchers do not
    reconnect in step; the watch is re-opened after it. Five minutes keeps connections spread
    across apiserver replicas. null sends none: the apiserver then ends watches after its
    --min-request-timeout (30-60 min by default)."""
    watch_inactivity_timeout_s: float = 70.0
    """Re-open a watch that delivered nothing for this long: bookmarks arrive about every 60 s
    on a resource that changes, so silence beyond 70 s likely means a dead connection."""
    connect_timeout_s: float = 10.0
    """TCP and TLS connect timeout of every request."""
    list_timeout_s: float = 60.0
    """Total time allowed for one list page, reading the body included."""
    list_page_size: int = 500
    """Objects per list page: the apiserver's own recommendation for informers; bounds the
    memory one page takes while keeping a relist of 10 000 pods to 20 requests."""
    watch_backoff_base_s: float = 0.5
    """First reconnect delay after a failed list or watch; doubles with each failure in a row."""
    watch_backoff_cap_s: float = 30.0
    """Longest reconnect delay; also the delay after 401/403 (RBAC may be fixed live)."""


@dataclass(frozen=True, slots=True)
class ScopeSettings:
    """Which Jobs kube-dlq handles."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty (or "all" in YAML) watches every namespace."""
    namespace_label_selector: str = ""
    """With all namespaces: only those whose labels match this selector, e.g. "team=data".
    Cannot be combined with an explicit namespaces list."""
    namespace_refresh_s: float = 30.0
    """How often the namespaces matching the label selector are listed again (labels change)."""
    jobs: JobScopeMode = "all"
    """"all": every Job in scope except those labelled or annotated kube-dlq.io/enabled=false.
    "opt-in": only Jobs labelled or annotated kube-dlq.io/enabled=true. Default "all" because
    the point is to catch the failures nobody planned for."""


@dataclass(frozen=True, slots=True)
class ClassifySettings:
    """Knobs of the failure classifier and of the stuck-Job check."""

    io_timeout_patterns: tuple[str, ...] = DEFAULT_IO_TIMEOUT_PATTERNS
    """Case-insensitive regexes (plain text matches as a substring): found in a termination
    message or a Warning Event, they mark a failure as io_timeout (an infrastructure class,
    retried) rather than app_error. The defaults are network and volume timeouts that a new pod,
    often on another node, usually does not hit again."""
    stuck_pending_after_s: float = 900.0
    """A pod Pending (unschedulable, image pull, config error) this long makes its Job count as
    failed. 15 min lets cluster autoscaling (2-10 min) and large image pulls finish first."""
    stuck_check_interval_s: float = 10.0
    """How often tracked Jobs are checked for pods stuck past stuck_pending_after_s."""


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """How a failed Job travels from the watch to its written outcome."""

    settle_s: float = 0.0
    """Extra wait after a Job turns Failed, before classifying it. None by default: a Job is
    classified as soon as its failed pods are in (the Job controller marks a Job Failed only
    after it has seen them, so the pod watch almost always has them already)."""
    evidence_wait_s: float = 2.0
    """How long a failed Job whose failed pods have not arrived waits for the pod watch before
    its pods are read from the API directly (one list); it is then classified with what that
    read found. A pod watch that lags (reconnecting, relisting) must not decide a failure on
    stale pods."""
    write_concurrency: int = 32
    """Due failures the writer handles at once; their outcome writes share one Redis round
    trip. One at a time, 11,000 failures arriving together were written at about 55 a second
    (docs/performance.md, "Writing outcomes"). While writes fail the writer takes one at a
    time, whatever this says."""


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """Bounds on what is held in memory, so a big cluster cannot exhaust the pod's memory."""

    max_tracked_jobs: int = 20_000
    """Jobs whose evidence is tracked at once; beyond it the least recently updated Job's
    evidence is dropped (it is rebuilt from the API when that Job changes)."""
    max_pods_per_job: int = 32
    """Newest pods kept per Job (a Job with backoffLimit 100 keeps its last 32 attempts)."""
    max_events_per_object: int = 16
    """Newest distinct Events kept per Job, pod or node."""
    max_orphan_events: int = 4_096
    """Events whose Job or pod has not been seen yet, held until it shows up."""
    max_orphan_pods: int = 10_000
    """Pods whose Job has not been seen yet, held until it shows up: the pod watch can be ahead
    of the Job watch, and after a restart the pods may be listed before the Jobs."""
    max_pending_writes: int = 10_000
    """Failures decided but not yet written (Redis down) before the watches are paused: back
    pressure instead of unbounded memory."""
    handled_memory: int = 50_000
    """Recently handled Job uids remembered to skip Redis round-trips on replays."""


@dataclass(frozen=True, slots=True)
class RetryLoopSettings:
    """The loop that fires due retries: re-creates failed Jobs from their Redis tickets."""

    poll_interval_s: float = 5.0
    """How often due tickets are claimed. Retry delays are tens of seconds and more, so 5 s
    late is invisible, and one small Lua call every 5 s costs Redis nothing."""
    batch_size: int = 25
    """Tickets claimed per call. A full batch is followed at once by the next claim, so this
    bounds one claim's work, not the throughput."""
    fire_concurrency: int = 16
    """Tickets of a claimed batch fired at once. Each ticket costs three or four Redis
    round-trips and a POST; one after the other they cap a loop at a few hundred fires per
    second (docs/performance.md, "Retry scheduler"). 1 fires them one by one; more raises the
    burst of creates the apiserver sees."""
    defer_base_s: float = 15.0
    """First delay before a ticket whose create failed transiently is tried again."""
    defer_cap_s: float = 600.0
    """Longest such delay: a broken RBAC binding or a long apiserver outage is retried every
    ten minutes at most, and the ticket is never dropped."""
    error_backoffs_s: tuple[float, ...] = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)
    """Waits after consecutive failed cycles (Redis down); the last one repeats."""


@dataclass(frozen=True, slots=True)
class DeadLetterSettings:
    """Where dead letters go."""

    default_queue: str = DEFAULT_QUEUE
    """Queue for Jobs without a kube-dlq.io/queue annotation; also RetryPolicy.queue."""
    depth_refresh_s: float = 15.0
    """How often the queue depth and oldest-age gauges are read from Redis: the Prometheus
    scrape interval is typically 15-30 s."""
    read_only: bool = False
    """Refuse the CLI verbs that change a queue (`dlq purge`, `dlq redrive`): for shared
    installs where the config people read with may not write."""


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """Signing (and optional encryption) of what kube-dlq stores in Redis (docs/security.md)."""

    signing_keys_dir: str = ""
    """Directory of HMAC keys, one file per key id holding hex (a mounted Secret). Every
    ticket and dead letter is signed, and checked before a Job is created from it: whoever
    can write to Redis cannot make kube-dlq run a Job. Empty: kube-dlq refuses to start
    unless allow_unsigned is true."""
    signing_key_id: str = ""
    """The key (file name in signing_keys_dir) that signs new entries; every key in the
    directory verifies. Rotate: add a key, switch this, drop the old key once its entries are
    gone (stream_max_age_s)."""
    allow_unsigned: bool = False
    """Accept unsigned entries (those of a version before signing, or written by anyone), and
    without signing keys write unsigned ones. Off: secure by default; on only for a trusted,
    private Redis, or briefly while an upgrade drains old retry tickets."""
    encryption_keys_dir: str = ""
    """Directory of AES-256 keys (64 hex digits each), one file per key id: stored entries are
    encrypted (AES-GCM) so Redis holds no manifest text or inline env value. Empty: off."""
    encryption_key_id: str = ""
    """The key in encryption_keys_dir that encrypts new entries; every key there decrypts."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The HTTP server for /metrics, /healthz and /readyz."""

    bind_address: str = "0.0.0.0"
    """Address to listen on; all interfaces, so kubelet probes and Prometheus reach the pod."""
    port: int = 8080
    """Port to listen on (0: any free port); unprivileged, the Deployment's container port."""


@dataclass(frozen=True, slots=True)
class LeaderElectionSettings:
    """Lease-based leader election (coordination.k8s.io/v1), for running several replicas."""

    enabled: bool = False
    """Off by default: one replica is the default deployment. Turn on for more than one."""
    lease_name: str = "kube-dlq"
    """Name of the Lease object."""
    lease_namespace: str = ""
    """Namespace of the Lease; empty means the namespace kube-dlq runs in."""
    lease_duration_s: float = 15.0
    """How long a leader's claim lasts without renewal (client-go's default)."""
    renew_deadline_s: float = 10.0
    """The leader steps down if it could not renew for this long (client-go's default)."""
    retry_period_s: float = 2.0
    """How often candidates try to acquire or renew (client-go's default)."""
    standby_prune_s: float = 15.0
    """How often a standby drops queued failures the leader has written meanwhile."""


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: LogLevel = "info"
    """Lowest level logged; one line per failure decision at info."""
    format: LogFormat = "auto"
    """"json" for log collectors, "console" for people; "auto" picks console on a TTY."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole settings tree: the validated config file plus environment overrides."""

    cluster_name: str
    """Names this cluster in every dead letter and Redis key. Required: two clusters sharing a
    Redis must not share keys."""
    redis: RedisSettings = field(default_factory=RedisSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    scope: ScopeSettings = field(default_factory=ScopeSettings)
    classify: ClassifySettings = field(default_factory=ClassifySettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """The default retry policy; Job annotations refine it per Job (watcher.core.policy)."""
    retry_loop: RetryLoopSettings = field(default_factory=RetryLoopSettings)
    dead_letter: DeadLetterSettings = field(default_factory=DeadLetterSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    """On SIGTERM, time given to in-flight writes before the rest is cancelled; below the
    default terminationGracePeriodSeconds of 30 s, so kube-dlq exits before SIGKILL."""
    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)
    log: LogSettings = field(default_factory=LogSettings)
