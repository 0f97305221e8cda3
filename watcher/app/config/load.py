"""Read the config file into the settings tree (`watcher.core.settings.Settings`).

``load_config(path)`` reads a file, ``parse_config(mapping)`` validates an already-parsed
document, and ``apply_env(settings, environ)`` layers the supported environment variables on
top (the caller decides whether to, so parsing stays a pure function of its input).

Every YAML key is the name of a settings field, and each default is the field's default: the
loader has none of its own. Unknown keys, duplicate keys, wrong types and out-of-range values
raise ``ConfigError`` naming the full field path, e.g. ``scope.namespaces[2]: ...`` or
``retry.classes.oom_killed.max_attemps: unknown key (did you mean max_attempts?)``.
Durations (fields ending in ``_s``) are seconds, given as a number or as a duration string
such as ``90s``, ``15m``, ``1h30m``, ``14d``. ``config/kube-dlq.yaml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from watcher.app.config.fields import (
    MISSING,
    Section,
    StrictLoader,
    check_redis_url,
    checked,
    describe,
    field_names,
    jitter_mode,
    log_level,
    string_value,
)
from watcher.app.config.security import parse_security
from watcher.app.config.started_oom import parse_oom_memory_section, parse_require_never_started
from watcher.core.annotations import MAX_DURATION_S, MAX_FACTOR, MAX_RETRIES_LIMIT, validate_queue
from watcher.core.backoff import JITTER_MODES
from watcher.core.classify import ClassifyRules
from watcher.core.errors import ConfigError
from watcher.core.model import FailureClass
from watcher.core.policy import ClassPolicy, RetryPolicy, default_class_policy
from watcher.core.settings import (
    DAY_S,
    DEFAULT_SHUTDOWN_GRACE_S,
    LOG_FORMATS,
    SCOPE_MODES,
    ClassifySettings,
    DeadLetterSettings,
    KubernetesSettings,
    LeaderElectionSettings,
    LimitsSettings,
    LogSettings,
    PipelineSettings,
    RedisSettings,
    RetryLoopSettings,
    ScopeSettings,
    ServerSettings,
    Settings,
)

__all__ = [
    "ENV_KUBECONFIG",
    "ENV_LOG_LEVEL",
    "ENV_REDIS_URL",
    "apply_env",
    "load_config",
    "parse_config",
]

ENV_REDIS_URL: Final = "KUBE_DLQ_REDIS_URL"
ENV_KUBECONFIG: Final = "KUBECONFIG"
ENV_LOG_LEVEL: Final = "KUBE_DLQ_LOG_LEVEL"

_DNS_LABEL_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_CLUSTER_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_KEY_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,62}")


# --- reading -------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> Settings:
    """Read and validate a YAML config file. Environment variables are not applied here."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read config file {name}: {exc}", file=name) from exc
    try:
        document = yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML in {name}: {exc}", file=name) from exc
    except (ValueError, TypeError) as exc:
        # PyYAML's constructors let some value errors through unwrapped: an impossible
        # timestamp (2001-13-40), "!!int 0x", an int of more digits than Python converts.
        raise ConfigError("", f"invalid YAML in {name}: {exc}", file=name) from exc
    except RecursionError:
        # The composer recurses once per nesting level; no config is nested that deep.
        raise ConfigError("", f"invalid YAML in {name}: nested too deeply", file=name) from None
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise ConfigError("", f"{name}: the top level must be a mapping", file=name)
    try:
        return parse_config(document)
    except ConfigError as exc:
        exc.file = name
        raise


def parse_config(mapping: Mapping[str, Any]) -> Settings:
    """Validate a parsed config document; raises ConfigError naming the first bad field."""
    top = Section(mapping, "", field_names(Settings))
    dead_letter = _parse_dead_letter(top.get("dead_letter"))
    return Settings(
        cluster_name=top.string("cluster_name", None, pattern=_CLUSTER_NAME_RE, hint=_CLUSTER_HINT),
        redis=_parse_redis(top.get("redis")),
        kubernetes=_parse_kubernetes(top.get("kubernetes")),
        scope=_parse_scope(top.get("scope")),
        classify=_parse_classify(top.get("classify")),
        pipeline=_parse_pipeline(top.get("pipeline")),
        limits=_parse_limits(top.get("limits")),
        retry=_parse_retry(top.get("retry"), queue=dead_letter.default_queue),
        retry_loop=_parse_retry_loop(top.get("retry_loop")),
        dead_letter=dead_letter,
        security=parse_security(top.get("security")),
        server=_parse_server(top.get("server")),
        shutdown_grace_s=top.duration("shutdown_grace_s", DEFAULT_SHUTDOWN_GRACE_S, max_s=3600),
        leader_election=_parse_leader_election(top.get("leader_election")),
        log=_parse_log(top.get("log")),
    )


def apply_env(config: Settings, environ: Mapping[str, str]) -> Settings:
    """``config`` with the environment overrides applied; empty variables count as unset.

    KUBE_DLQ_REDIS_URL  replaces redis.url (keeps the password out of the config file)
    KUBECONFIG          used as kubernetes.kubeconfig when the file does not set one
    KUBE_DLQ_LOG_LEVEL  replaces log.level
    """
    redis_url = environ.get(ENV_REDIS_URL, "")
    if redis_url:
        check_redis_url(redis_url, ENV_REDIS_URL)
        config = dataclasses.replace(config, redis=dataclasses.replace(config.redis, url=redis_url))
    kubeconfig = environ.get(ENV_KUBECONFIG, "")
    if kubeconfig and config.kubernetes.kubeconfig is None:
        config = dataclasses.replace(
            config, kubernetes=dataclasses.replace(config.kubernetes, kubeconfig=kubeconfig)
        )
    level = environ.get(ENV_LOG_LEVEL, "")
    if level:
        config = dataclasses.replace(
            config, log=dataclasses.replace(config.log, level=log_level(level, ENV_LOG_LEVEL))
        )
    return config


# --- sections ------------------------------------------------------------------------------------

_CLUSTER_HINT: Final = "1 to 63 of A-Z, a-z, 0-9, '.', '_' and '-'"
_DNS_LABEL_HINT: Final = "a DNS label: 1 to 63 of a-z, 0-9 and '-'"


def _parse_redis(raw: object) -> RedisSettings:
    s = Section(raw, "redis", field_names(RedisSettings))
    d = RedisSettings()
    url = s.string("url", d.url)
    check_redis_url(url, s.path("url"))
    return RedisSettings(
        url=url,
        key_prefix=s.string(
            "key_prefix",
            d.key_prefix,
            pattern=_KEY_PREFIX_RE,
            hint="1 to 63 of A-Z, a-z, 0-9, '.', '_', ':' and '-', no braces",
        ),
        stream_maxlen=s.integer("stream_maxlen", d.stream_maxlen, min_value=1),
        stream_max_age_s=s.duration("stream_max_age_s", d.stream_max_age_s, positive=True),
        outcome_ttl_s=s.duration(
            "outcome_ttl_s", d.outcome_ttl_s, positive=True, max_s=365 * DAY_S
        ),
        retry_claim_lease_s=s.duration(
            "retry_claim_lease_s", d.retry_claim_lease_s, positive=True, max_s=3600
        ),
        socket_timeout_s=s.duration(
            "socket_timeout_s", d.socket_timeout_s, positive=True, max_s=600
        ),
        operation_timeout_s=s.duration(
            "operation_timeout_s", d.operation_timeout_s, positive=True, max_s=600
        ),
    )


def _parse_kubernetes(raw: object) -> KubernetesSettings:
    s = Section(raw, "kubernetes", field_names(KubernetesSettings))
    d = KubernetesSettings()
    return KubernetesSettings(
        kubeconfig=s.optional_string("kubeconfig"),
        context=s.optional_string("context"),
        request_timeout_s=s.duration(
            "request_timeout_s", d.request_timeout_s, positive=True, max_s=600
        ),
        watch_timeout_s=s.optional_duration("watch_timeout_s", d.watch_timeout_s, max_s=3600),
        watch_inactivity_timeout_s=s.duration(
            "watch_inactivity_timeout_s", d.watch_inactivity_timeout_s, positive=True, max_s=3600
        ),
        connect_timeout_s=s.duration(
            "connect_timeout_s", d.connect_timeout_s, positive=True, max_s=600
        ),
        list_timeout_s=s.duration("list_timeout_s", d.list_timeout_s, positive=True, max_s=3600),
        list_page_size=s.integer("list_page_size", d.list_page_size, min_value=1, max_value=10_000),
        watch_backoff_base_s=s.duration(
            "watch_backoff_base_s", d.watch_backoff_base_s, positive=True, max_s=3600
        ),
        watch_backoff_cap_s=_at_least(
            s,
            "watch_backoff_cap_s",
            s.duration("watch_backoff_cap_s", d.watch_backoff_cap_s, positive=True, max_s=3600),
            "watch_backoff_base_s",
        ),
    )


def _parse_scope(raw: object) -> ScopeSettings:
    s = Section(raw, "scope", field_names(ScopeSettings))
    d = ScopeSettings()
    namespaces = _parse_namespaces(s.get("namespaces"), s.path("namespaces"))
    selector = s.string("namespace_label_selector", d.namespace_label_selector).strip()
    if selector and namespaces:
        raise ConfigError(
            s.path("namespace_label_selector"),
            "cannot be combined with an explicit namespaces list (use one or the other)",
        )
    return ScopeSettings(
        namespaces=namespaces,
        namespace_label_selector=selector,
        namespace_refresh_s=s.duration(
            "namespace_refresh_s", d.namespace_refresh_s, positive=True, max_s=3600
        ),
        jobs=s.choice("jobs", d.jobs, SCOPE_MODES),
    )


def _parse_namespaces(raw: object, path: str) -> tuple[str, ...]:
    if raw is MISSING or raw is None or raw == "all":
        return ()
    if not isinstance(raw, list):
        raise ConfigError(path, f'must be a list of namespaces or "all", got {describe(raw)}')
    names: list[str] = []
    for index, item in enumerate(raw):
        item_path = f"{path}[{index}]"
        name = string_value(item, item_path, pattern=_DNS_LABEL_RE, hint=_DNS_LABEL_HINT)
        if name in names:
            raise ConfigError(item_path, f"{name!r} is listed twice")
        names.append(name)
    return tuple(names)


def _io_timeout_patterns(s: Section, default: tuple[str, ...]) -> tuple[str, ...]:
    patterns = s.string_list("io_timeout_patterns", default)
    try:
        ClassifyRules(io_timeout_patterns=patterns)
    except ValueError as exc:
        raise ConfigError("classify.io_timeout_patterns", str(exc)) from exc
    return patterns


def _parse_classify(raw: object) -> ClassifySettings:
    s = Section(raw, "classify", field_names(ClassifySettings))
    d = ClassifySettings()
    return ClassifySettings(
        io_timeout_patterns=_io_timeout_patterns(s, d.io_timeout_patterns),
        stuck_pending_after_s=s.duration(
            "stuck_pending_after_s", d.stuck_pending_after_s, positive=True
        ),
        stuck_check_interval_s=s.duration(
            "stuck_check_interval_s", d.stuck_check_interval_s, positive=True, max_s=3600
        ),
    )


def _parse_pipeline(raw: object) -> PipelineSettings:
    s = Section(raw, "pipeline", field_names(PipelineSettings))
    d = PipelineSettings()
    return PipelineSettings(
        settle_s=s.duration("settle_s", d.settle_s, max_s=600),
        evidence_wait_s=s.duration("evidence_wait_s", d.evidence_wait_s, max_s=3600),
        write_concurrency=s.integer(
            "write_concurrency", d.write_concurrency, min_value=1, max_value=1_000
        ),
    )


def _parse_limits(raw: object) -> LimitsSettings:
    s = Section(raw, "limits", field_names(LimitsSettings))
    d = LimitsSettings()
    return LimitsSettings(
        **{
            name: s.integer(name, getattr(d, name), min_value=1, max_value=10_000_000)
            for name in field_names(LimitsSettings)
        }
    )


def _parse_retry_loop(raw: object) -> RetryLoopSettings:
    s = Section(raw, "retry_loop", field_names(RetryLoopSettings))
    d = RetryLoopSettings()
    defer_base_s = s.duration("defer_base_s", d.defer_base_s, max_s=MAX_DURATION_S)
    return RetryLoopSettings(
        poll_interval_s=s.duration("poll_interval_s", d.poll_interval_s, positive=True, max_s=3600),
        batch_size=s.integer("batch_size", d.batch_size, min_value=1, max_value=10_000),
        fire_concurrency=s.integer(
            "fire_concurrency", d.fire_concurrency, min_value=1, max_value=1_000
        ),
        defer_base_s=defer_base_s,
        defer_cap_s=_at_least(
            s,
            "defer_cap_s",
            s.duration("defer_cap_s", d.defer_cap_s, positive=True, max_s=MAX_DURATION_S),
            "defer_base_s",
        ),
        error_backoffs_s=s.duration_list("error_backoffs_s", d.error_backoffs_s, max_s=3600),
    )


def _at_least(s: Section, key: str, value: float, smaller_key: str) -> float:
    """`value` of `key`, checked to be no less than the section's `smaller_key` value."""
    smaller = s.get(smaller_key)
    if smaller is MISSING:
        return value
    bound = s.duration(smaller_key, 0.0, max_s=MAX_DURATION_S)
    if value < bound:
        raise ConfigError(s.path(key), f"must be >= {smaller_key} ({bound:g}s), got {value:g}s")
    return value


def _parse_retry(raw: object, *, queue: str) -> RetryPolicy:
    # RetryPolicy.queue is not a key here: it comes from dead_letter.default_queue.
    s = Section(raw, "retry", field_names(RetryPolicy) - {"queue"})
    d = RetryPolicy()
    classes = d.classes
    raw_classes = s.get("classes")
    if raw_classes is not MISSING and raw_classes is not None:
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
        require_never_started=parse_require_never_started(s, "require_never_started"),
        oom_memory=parse_oom_memory_section(s.get("oom_memory"), s.path("oom_memory")),
    )


def _parse_classes(raw: object, path: str) -> tuple[tuple[FailureClass, ClassPolicy], ...]:
    names = [fc.value for fc in FailureClass]
    s = Section(raw, path, names, what="failure class")
    return tuple(
        (fc, _parse_class_policy(s.get(fc.value), s.path(fc.value), fc)) for fc in FailureClass
    )


def _parse_class_policy(raw: object, path: str, failure_class: FailureClass) -> ClassPolicy:
    d = default_class_policy(failure_class)
    if raw is MISSING or raw is None:
        return d
    s = Section(raw, path, field_names(ClassPolicy))
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
        jitter=jitter_mode(s.choice("jitter", d.jitter, JITTER_MODES)),
    )


def _parse_dead_letter(raw: object) -> DeadLetterSettings:
    s = Section(raw, "dead_letter", field_names(DeadLetterSettings))
    d = DeadLetterSettings()
    queue = s.string("default_queue", d.default_queue)
    return DeadLetterSettings(
        default_queue=checked(validate_queue, queue, s.path("default_queue")),
        depth_refresh_s=s.duration("depth_refresh_s", d.depth_refresh_s, positive=True, max_s=3600),
        read_only=s.boolean("read_only", d.read_only),
    )


def _parse_server(raw: object) -> ServerSettings:
    s = Section(raw, "server", field_names(ServerSettings))
    d = ServerSettings()
    address = s.string("bind_address", d.bind_address)
    if not address.strip():
        raise ConfigError(s.path("bind_address"), "must not be empty")
    return ServerSettings(
        bind_address=address,
        port=s.integer("port", d.port, min_value=0, max_value=65535),
    )


def _parse_leader_election(raw: object) -> LeaderElectionSettings:
    s = Section(raw, "leader_election", field_names(LeaderElectionSettings))
    d = LeaderElectionSettings()
    config = LeaderElectionSettings(
        enabled=s.boolean("enabled", d.enabled),
        lease_name=s.string(
            "lease_name", d.lease_name, pattern=_DNS_SUBDOMAIN_RE, hint="a DNS subdomain name"
        ),
        lease_namespace=s.string("lease_namespace", d.lease_namespace),
        lease_duration_s=s.duration("lease_duration_s", d.lease_duration_s, positive=True),
        renew_deadline_s=s.duration("renew_deadline_s", d.renew_deadline_s, positive=True),
        retry_period_s=s.duration("retry_period_s", d.retry_period_s, positive=True),
        standby_prune_s=s.duration("standby_prune_s", d.standby_prune_s, positive=True, max_s=3600),
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


def _parse_log(raw: object) -> LogSettings:
    s = Section(raw, "log", field_names(LogSettings))
    d = LogSettings()
    level = s.get("level")
    return LogSettings(
        level=d.level if level is MISSING else log_level(level, s.path("level")),
        format=s.choice("format", d.format, LOG_FORMATS),
    )
