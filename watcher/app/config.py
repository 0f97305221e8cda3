"""The daemon config: one frozen dataclass per concern, loaded from YAML.

``load_config(path)`` reads a file, ``parse_config(mapping)`` validates an already-parsed
document, and ``apply_env(config, environ)`` layers the supported environment variables on
top (the caller decides whether to, so parsing stays a pure function of its input).

Every YAML key is the name of a dataclass field. Unknown keys, duplicate keys, wrong types and
out-of-range values raise ``ConfigError`` naming the full field path, e.g.
``scope.namespaces[2]: ...`` or
``retry.classes.oom_killed.max_attemps: unknown key (did you mean max_attempts?)``.
Durations (fields ending in ``_s``) are seconds, given as a number or as a duration string
such as ``90s``, ``15m``, ``1h30m``, ``14d``. ``config/kube-dlq.yaml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, get_args
from urllib.parse import urlsplit

import yaml

from watcher.adapters.redis.keys import DEFAULT_PREFIX, DLQ_MAX_AGE_S, DLQ_MAX_LEN
from watcher.core.backoff import JITTER_MODES, Jitter
from watcher.core.classify import DEFAULT_IO_TIMEOUT_PATTERNS, ClassifyRules
from watcher.core.errors import ConfigError
from watcher.core.model import FailureClass
from watcher.core.policy import (
    DEFAULT_QUEUE,
    MAX_DURATION_S,
    MAX_FACTOR,
    MAX_RETRIES_LIMIT,
    ClassPolicy,
    RetryPolicy,
    default_class_policy,
    did_you_mean,
    format_duration,
    parse_duration,
    validate_queue,
)

__all__ = [
    "DEFAULT_SHUTDOWN_GRACE_S",
    "ENV_KUBECONFIG",
    "ENV_LOG_LEVEL",
    "ENV_REDIS_URL",
    "ClassifyConfig",
    "Config",
    "DeadLetterConfig",
    "JobScopeMode",
    "KubernetesConfig",
    "LeaderElectionConfig",
    "LogConfig",
    "LogFormat",
    "LogLevel",
    "RedisConfig",
    "ScopeConfig",
    "ServerConfig",
    "apply_env",
    "load_config",
    "parse_config",
]

ENV_REDIS_URL: Final = "KUBE_DLQ_REDIS_URL"
ENV_KUBECONFIG: Final = "KUBECONFIG"
ENV_LOG_LEVEL: Final = "KUBE_DLQ_LOG_LEVEL"

JobScopeMode = Literal["all", "opt-in"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]
_SCOPE_MODES: Final[tuple[JobScopeMode, ...]] = get_args(JobScopeMode)
_LOG_LEVELS: Final[tuple[LogLevel, ...]] = get_args(LogLevel)
_LOG_FORMATS: Final[tuple[LogFormat, ...]] = get_args(LogFormat)

DEFAULT_SHUTDOWN_GRACE_S: Final = 20.0
"""On SIGTERM, time given to in-flight writes before the rest is cancelled; below the default
terminationGracePeriodSeconds of 30 s, so kube-dlq exits before SIGKILL."""

_DNS_LABEL_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_CLUSTER_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_KEY_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,62}")
_REDIS_SCHEMES: Final = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Where dead letters and retry tickets are stored."""

    url: str = "redis://localhost:6379/0"
    """redis://, rediss:// (TLS) or unix:// URL, password included if any; prefer setting it
    through KUBE_DLQ_REDIS_URL from a Secret. The default suits a sidecar or local test."""
    key_prefix: str = DEFAULT_PREFIX
    """First part of every key, so several installations can share one Redis."""
    stream_maxlen: int = DLQ_MAX_LEN
    """Approximate cap on entries per dead-letter queue stream (MAXLEN ~): entries carry
    manifests and pod reports of a few KiB, so 10 000 keep a queue in the tens of MiB."""
    stream_max_age_s: float = DLQ_MAX_AGE_S
    """Dead letters older than this are trimmed: 30 days is time to notice, fix and redrive."""
    retry_claim_lease_s: float = 60.0
    """A claimed retry ticket goes back to the queue if not acknowledged within this: longer than
    one Job re-creation including API retries, short enough that a crashed replica's tickets
    are picked up within a minute."""


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    """How to reach the Kubernetes API."""

    kubeconfig: str | None = None
    """Path to a kubeconfig file; None uses $KUBECONFIG if set, else the in-cluster service
    account (the normal case for the Deployment)."""
    context: str | None = None
    """Context to use from the kubeconfig; None uses its current-context."""
    request_timeout_s: float = 30.0
    """Client-side timeout of one non-watch API request: generous for a loaded apiserver, short
    enough that a hung connection does not stall the retry loop."""
    watch_timeout_s: float = 300.0
    """Server-side timeoutSeconds of one watch request; the watch is re-opened after it. Five
    minutes keeps connections fresh across apiserver restarts and load balancers."""
    watch_inactivity_timeout_s: float = 70.0
    """Re-open a watch that delivered nothing for this long: bookmarks arrive every 60 s, so
    silence beyond 70 s means a dead connection."""


@dataclass(frozen=True, slots=True)
class ScopeConfig:
    """Which Jobs kube-dlq handles."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty (or "all" in YAML) watches every namespace."""
    namespace_label_selector: str = ""
    """With all namespaces: only those whose labels match this selector, e.g. "team=data".
    Cannot be combined with an explicit namespaces list."""
    jobs: JobScopeMode = "all"
    """"all": every Job in scope except those labelled or annotated kube-dlq.io/enabled=false.
    "opt-in": only Jobs labelled or annotated kube-dlq.io/enabled=true. Default "all" because
    the point is to catch the failures nobody planned for."""


@dataclass(frozen=True, slots=True)
class ClassifyConfig:
    """Knobs of the failure classifier."""

    io_timeout_patterns: tuple[str, ...] = DEFAULT_IO_TIMEOUT_PATTERNS
    """Case-insensitive regexes (plain text matches as a substring): found in a termination
    message or a Warning Event, they mark a failure as io_timeout (an infrastructure class,
    retried) rather than app_error. The defaults are network and volume timeouts that a new pod,
    often on another node, usually does not hit again."""
    stuck_pending_after_s: float = 900.0
    """A pod Pending (unschedulable, image pull, config error) this long makes its Job count as
    failed. 15 min lets cluster autoscaling (2-10 min) and large image pulls finish first."""


@dataclass(frozen=True, slots=True)
class DeadLetterConfig:
    """Where dead letters go."""

    default_queue: str = DEFAULT_QUEUE
    """Queue for Jobs without a kube-dlq.io/queue annotation; also RetryPolicy.queue."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The HTTP server for /metrics, /healthz and /readyz."""

    bind_address: str = "0.0.0.0"
    """Address to listen on; all interfaces, so kubelet probes and Prometheus reach the pod."""
    port: int = 8080
    """Port to listen on; unprivileged, matches the Deployment's container port."""


@dataclass(frozen=True, slots=True)
class LeaderElectionConfig:
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


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: LogLevel = "info"
    """Lowest level logged; one line per failure decision at info."""
    format: LogFormat = "auto"
    """"json" for log collectors, "console" for people; "auto" picks console on a TTY."""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole daemon config."""

    cluster_name: str
    """Names this cluster in every dead letter and Redis key. Required: two clusters sharing a
    Redis must not share keys."""
    redis: RedisConfig = field(default_factory=RedisConfig)
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    scope: ScopeConfig = field(default_factory=ScopeConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """The default retry policy; Job annotations refine it per Job (watcher.core.policy)."""
    dead_letter: DeadLetterConfig = field(default_factory=DeadLetterConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    """On SIGTERM, time given to in-flight writes before the rest is cancelled; below the
    default terminationGracePeriodSeconds of 30 s, so kube-dlq exits before SIGKILL."""
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    log: LogConfig = field(default_factory=LogConfig)


# --- reading -------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file. Environment variables are not applied here."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read config file {name}: {exc}", file=name) from exc
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML in {name}: {exc}", file=name) from exc
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise ConfigError("", f"{name}: the top level must be a mapping", file=name)
    try:
        return parse_config(document)
    except ConfigError as exc:
        exc.file = name
        raise


def parse_config(mapping: Mapping[str, Any]) -> Config:
    """Validate a parsed config document; raises ConfigError naming the first bad field."""
    top = _Section(mapping, "", _field_names(Config))
    dead_letter = _parse_dead_letter(top.get("dead_letter"))
    return Config(
        cluster_name=top.string("cluster_name", None, pattern=_CLUSTER_NAME_RE, hint=_CLUSTER_HINT),
        redis=_parse_redis(top.get("redis")),
        kubernetes=_parse_kubernetes(top.get("kubernetes")),
        scope=_parse_scope(top.get("scope")),
        classify=_parse_classify(top.get("classify")),
        retry=_parse_retry(top.get("retry"), queue=dead_letter.default_queue),
        dead_letter=dead_letter,
        server=_parse_server(top.get("server")),
        shutdown_grace_s=top.duration("shutdown_grace_s", DEFAULT_SHUTDOWN_GRACE_S, max_s=3600),
        leader_election=_parse_leader_election(top.get("leader_election")),
        log=_parse_log(top.get("log")),
    )


def apply_env(config: Config, environ: Mapping[str, str]) -> Config:
    """``config`` with the environment overrides applied; empty variables count as unset.

    KUBE_DLQ_REDIS_URL  replaces redis.url (keeps the password out of the config file)
    KUBECONFIG          used as kubernetes.kubeconfig when the file does not set one
    KUBE_DLQ_LOG_LEVEL  replaces log.level
    """
    redis_url = environ.get(ENV_REDIS_URL, "")
    if redis_url:
        _check_redis_url(redis_url, ENV_REDIS_URL)
        config = dataclasses.replace(config, redis=dataclasses.replace(config.redis, url=redis_url))
    kubeconfig = environ.get(ENV_KUBECONFIG, "")
    if kubeconfig and config.kubernetes.kubeconfig is None:
        config = dataclasses.replace(
            config, kubernetes=dataclasses.replace(config.kubernetes, kubeconfig=kubeconfig)
        )
    level = environ.get(ENV_LOG_LEVEL, "")
    if level:
        config = dataclasses.replace(
            config, log=dataclasses.replace(config.log, level=_log_level(level, ENV_LOG_LEVEL))
        )
    return config


# --- sections ------------------------------------------------------------------------------------

_CLUSTER_HINT: Final = "1 to 63 of A-Z, a-z, 0-9, '.', '_' and '-'"
_DNS_LABEL_HINT: Final = "a DNS label: 1 to 63 of a-z, 0-9 and '-'"


def _parse_redis(raw: object) -> RedisConfig:
    s = _Section(raw, "redis", _field_names(RedisConfig))
    d = RedisConfig()
    url = s.string("url", d.url)
    _check_redis_url(url, s.path("url"))
    return RedisConfig(
        url=url,
        key_prefix=s.string(
            "key_prefix",
            d.key_prefix,
            pattern=_KEY_PREFIX_RE,
            hint="1 to 63 of A-Z, a-z, 0-9, '.', '_', ':' and '-', no braces",
        ),
        stream_maxlen=s.integer("stream_maxlen", d.stream_maxlen, min_value=1),
        stream_max_age_s=s.duration("stream_max_age_s", d.stream_max_age_s, positive=True),
        retry_claim_lease_s=s.duration(
            "retry_claim_lease_s", d.retry_claim_lease_s, positive=True, max_s=3600
        ),
    )


def _parse_kubernetes(raw: object) -> KubernetesConfig:
    s = _Section(raw, "kubernetes", _field_names(KubernetesConfig))
    d = KubernetesConfig()
    return KubernetesConfig(
        kubeconfig=s.optional_string("kubeconfig"),
        context=s.optional_string("context"),
        request_timeout_s=s.duration(
            "request_timeout_s", d.request_timeout_s, positive=True, max_s=600
        ),
        watch_timeout_s=s.duration("watch_timeout_s", d.watch_timeout_s, positive=True, max_s=3600),
        watch_inactivity_timeout_s=s.duration(
            "watch_inactivity_timeout_s", d.watch_inactivity_timeout_s, positive=True, max_s=3600
        ),
    )


def _parse_scope(raw: object) -> ScopeConfig:
    s = _Section(raw, "scope", _field_names(ScopeConfig))
    d = ScopeConfig()
    namespaces = _parse_namespaces(s.get("namespaces"), s.path("namespaces"))
    selector = s.string("namespace_label_selector", d.namespace_label_selector).strip()
    if selector and namespaces:
        raise ConfigError(
            s.path("namespace_label_selector"),
            "cannot be combined with an explicit namespaces list (use one or the other)",
        )
    return ScopeConfig(
        namespaces=namespaces,
        namespace_label_selector=selector,
        jobs=s.choice("jobs", d.jobs, _SCOPE_MODES),
    )


def _parse_namespaces(raw: object, path: str) -> tuple[str, ...]:
    if raw is _MISSING or raw is None or raw == "all":
        return ()
    if not isinstance(raw, list):
        raise ConfigError(path, f'must be a list of namespaces or "all", got {_describe(raw)}')
    names: list[str] = []
    for index, item in enumerate(raw):
        item_path = f"{path}[{index}]"
        name = _string(item, item_path, pattern=_DNS_LABEL_RE, hint=_DNS_LABEL_HINT)
        if name in names:
            raise ConfigError(item_path, f"{name!r} is listed twice")
        names.append(name)
    return tuple(names)


def _io_timeout_patterns(s: _Section, default: tuple[str, ...]) -> tuple[str, ...]:
    patterns = s.string_list("io_timeout_patterns", default)
    try:
        ClassifyRules(io_timeout_patterns=patterns)
    except ValueError as exc:
        raise ConfigError("classify.io_timeout_patterns", str(exc)) from exc
    return patterns


def _parse_classify(raw: object) -> ClassifyConfig:
    s = _Section(raw, "classify", _field_names(ClassifyConfig))
    d = ClassifyConfig()
    return ClassifyConfig(
        io_timeout_patterns=_io_timeout_patterns(s, d.io_timeout_patterns),
        stuck_pending_after_s=s.duration(
            "stuck_pending_after_s", d.stuck_pending_after_s, positive=True
        ),
    )


def _parse_retry(raw: object, *, queue: str) -> RetryPolicy:
    # RetryPolicy.queue is not a key here: it comes from dead_letter.default_queue.
    s = _Section(raw, "retry", _field_names(RetryPolicy) - {"queue"})
    d = RetryPolicy()
    classes = d.classes
    raw_classes = s.get("classes")
    if raw_classes is not _MISSING and raw_classes is not None:
        classes = _parse_classes(raw_classes, s.path("classes"))
    return RetryPolicy(
        classes=classes,
        infra_budget=s.integer("infra_budget", d.infra_budget, max_value=MAX_RETRIES_LIMIT),
        app_budget=s.integer("app_budget", d.app_budget, max_value=MAX_RETRIES_LIMIT),
        total_budget_s=s.duration("total_budget_s", d.total_budget_s, positive=True),
        queue=queue,
        avoid_failed_node=s.boolean("avoid_failed_node", d.avoid_failed_node),
        respect_pod_failure_policy=s.boolean(
            "respect_pod_failure_policy", d.respect_pod_failure_policy
        ),
    )


def _parse_classes(raw: object, path: str) -> tuple[tuple[FailureClass, ClassPolicy], ...]:
    names = [fc.value for fc in FailureClass]
    s = _Section(raw, path, names, what="failure class")
    return tuple(
        (fc, _parse_class_policy(s.get(fc.value), s.path(fc.value), fc)) for fc in FailureClass
    )


def _parse_class_policy(raw: object, path: str, failure_class: FailureClass) -> ClassPolicy:
    d = default_class_policy(failure_class)
    if raw is _MISSING or raw is None:
        return d
    s = _Section(raw, path, _field_names(ClassPolicy))
    base_s = s.duration("base_s", d.base_s, max_s=MAX_DURATION_S)
    cap_s = s.duration("cap_s", d.cap_s, max_s=MAX_DURATION_S)
    if cap_s < base_s:
        raise ConfigError(s.path("cap_s"), f"must be >= base_s ({base_s:g}s), got {cap_s:g}s")
    return ClassPolicy(
        retry=s.boolean("retry", d.retry),
        max_attempts=s.integer("max_attempts", d.max_attempts, max_value=MAX_RETRIES_LIMIT),
        base_s=base_s,
        factor=s.number("factor", d.factor, min_value=1.0, max_value=MAX_FACTOR),
        cap_s=cap_s,
        jitter=_jitter(s.choice("jitter", d.jitter, JITTER_MODES)),
    )


def _parse_dead_letter(raw: object) -> DeadLetterConfig:
    s = _Section(raw, "dead_letter", _field_names(DeadLetterConfig))
    queue = s.string("default_queue", DeadLetterConfig().default_queue)
    return DeadLetterConfig(default_queue=_checked(validate_queue, queue, s.path("default_queue")))


def _parse_server(raw: object) -> ServerConfig:
    s = _Section(raw, "server", _field_names(ServerConfig))
    d = ServerConfig()
    address = s.string("bind_address", d.bind_address)
    if not address.strip():
        raise ConfigError(s.path("bind_address"), "must not be empty")
    return ServerConfig(
        bind_address=address,
        port=s.integer("port", d.port, min_value=1, max_value=65535),
    )


def _parse_leader_election(raw: object) -> LeaderElectionConfig:
    s = _Section(raw, "leader_election", _field_names(LeaderElectionConfig))
    d = LeaderElectionConfig()
    config = LeaderElectionConfig(
        enabled=s.boolean("enabled", d.enabled),
        lease_name=s.string(
            "lease_name", d.lease_name, pattern=_DNS_SUBDOMAIN_RE, hint="a DNS subdomain name"
        ),
        lease_namespace=s.string("lease_namespace", d.lease_namespace),
        lease_duration_s=s.duration("lease_duration_s", d.lease_duration_s, positive=True),
        renew_deadline_s=s.duration("renew_deadline_s", d.renew_deadline_s, positive=True),
        retry_period_s=s.duration("retry_period_s", d.retry_period_s, positive=True),
    )
    if config.lease_namespace and not _DNS_LABEL_RE.fullmatch(config.lease_namespace):
        raise ConfigError(s.path("lease_namespace"), f"must be {_DNS_LABEL_HINT} or empty")
    # The same ordering client-go's leaderelection.NewLeaderElector insists on.
    if config.renew_deadline_s >= config.lease_duration_s:
        raise ConfigError(
            s.path("renew_deadline_s"),
            f"must be shorter than lease_duration_s ({config.lease_duration_s:g}s)",
        )
    if config.retry_period_s >= config.renew_deadline_s:
        raise ConfigError(
            s.path("retry_period_s"),
            f"must be shorter than renew_deadline_s ({config.renew_deadline_s:g}s)",
        )
    return config


def _parse_log(raw: object) -> LogConfig:
    s = _Section(raw, "log", _field_names(LogConfig))
    d = LogConfig()
    level = s.get("level")
    return LogConfig(
        level=d.level if level is _MISSING else _log_level(level, s.path("level")),
        format=s.choice("format", d.format, _LOG_FORMATS),
    )


# --- value checks --------------------------------------------------------------------------------

_MISSING: Final[Any] = object()
_T = TypeVar("_T")
_S = TypeVar("_S", bound=str)


class _Section:
    """One mapping of the document: rejects unknown keys up front, then hands out values."""

    def __init__(self, raw: object, path: str, known: Iterable[str], *, what: str = "key") -> None:
        if raw is None or raw is _MISSING:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(path, f"must be a mapping, got {_describe(raw)}")
        self._path = path
        self._raw: Mapping[Any, object] = raw
        known_list = sorted(known)
        for key in raw:
            if not isinstance(key, str):
                raise ConfigError(self.path(str(key)), f"{what}s must be strings")
            if key not in known_list:
                raise ConfigError(
                    self.path(key), f"unknown {what}{did_you_mean(key, known_list, show_all=True)}"
                )

    def path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def get(self, key: str) -> object:
        return self._raw.get(key, _MISSING)

    def string(
        self,
        key: str,
        default: str | None,
        *,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
    ) -> str:
        value = self.get(key)
        if value is _MISSING:
            if default is None:
                raise ConfigError(self.path(key), "required")
            return default
        return _string(value, self.path(key), pattern=pattern, hint=hint)

    def optional_string(self, key: str) -> str | None:
        value = self.get(key)
        if value is _MISSING or value is None:
            return None
        text = _string(value, self.path(key))
        if not text.strip():
            raise ConfigError(self.path(key), "must not be empty (leave it out or use null)")
        return text

    def string_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, list):
            raise ConfigError(self.path(key), f"must be a list of strings, got {_describe(value)}")
        items = tuple(_string(v, f"{self.path(key)}[{i}]") for i, v in enumerate(value))
        for index, item in enumerate(items):
            if not item.strip():
                raise ConfigError(f"{self.path(key)}[{index}]", "must not be empty")
        return items

    def choice(self, key: str, default: _S, choices: tuple[_S, ...]) -> _S:
        value = self.get(key)
        if value is _MISSING:
            return default
        for choice in choices:
            if value == choice:
                return choice
        raise ConfigError(
            self.path(key), f"must be one of {', '.join(choices)}, got {_describe(value)}"
        )

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.path(key), f"must be true or false, got {_describe(value)}")
        return value

    def integer(
        self, key: str, default: int, *, min_value: int = 0, max_value: int | None = None
    ) -> int:
        value = self.get(key)
        if value is _MISSING:
            return default
        in_range = max_value is None or (isinstance(value, int) and value <= max_value)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < min_value
            or not in_range
        ):
            bounds = (
                f">= {min_value}" if max_value is None else f"between {min_value} and {max_value}"
            )
            raise ConfigError(
                self.path(key), f"must be an integer {bounds}, got {_describe(value)}"
            )
        return value

    def number(self, key: str, default: float, *, min_value: float, max_value: float) -> float:
        value = self.get(key)
        if value is _MISSING:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not min_value <= value <= max_value
        ):
            raise ConfigError(
                self.path(key),
                f"must be a number between {min_value:g} and {max_value:g}, got {_describe(value)}",
            )
        return float(value)

    def duration(
        self,
        key: str,
        default: float,
        *,
        positive: bool = False,
        max_s: float = MAX_DURATION_S,
    ) -> float:
        value = self.get(key)
        if value is _MISSING:
            return default
        return _duration(value, self.path(key), positive=positive, max_s=max_s)


def _string(
    value: object, path: str, *, pattern: re.Pattern[str] | None = None, hint: str = ""
) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, got {_describe(value)}")
    if pattern is not None and not pattern.fullmatch(value):
        raise ConfigError(path, f"must be {hint}, got {value!r}")
    return value


def _duration(value: object, path: str, *, positive: bool, max_s: float) -> float:
    if isinstance(value, str):
        seconds = _checked(parse_duration, value, path)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigError(
            path, f"must be seconds or a duration like 90s, 5m, 1h, got {_describe(value)}"
        )
    if not 0 <= seconds <= max_s or (positive and seconds == 0):
        low = "longer than 0s" if positive else "at least 0s"
        limit = format_duration(max_s)
        raise ConfigError(path, f"must be {low} and at most {limit}, got {_describe(value)}")
    return seconds


def _log_level(value: object, path: str) -> LogLevel:
    if isinstance(value, str):
        cleaned = value.strip().lower()
        for level in _LOG_LEVELS:
            if cleaned == level:
                return level
    choices = ", ".join(_LOG_LEVELS)
    raise ConfigError(path, f"must be one of {choices}, got {_describe(value)}")


def _jitter(value: str) -> Jitter:
    for mode in JITTER_MODES:
        if value == mode:
            return mode
    raise AssertionError(value)  # pragma: no cover - choice() only returns JITTER_MODES


def _check_redis_url(url: str, path: str) -> None:
    # Never echo the URL: it may carry a password.
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(path, "is not a valid URL") from None
    if parts.scheme not in _REDIS_SCHEMES:
        raise ConfigError(path, "must be a redis://, rediss:// or unix:// URL")
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError(path, "a unix:// URL needs a socket path")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(path, "needs a host, e.g. redis://redis:6379/0")


def _checked(parse: Callable[[str], _T], value: str, path: str) -> _T:
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None


def _field_names(cls: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (the later would win silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # "<<: *anchor" may be overridden by explicit keys, as YAML intends
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=True))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
