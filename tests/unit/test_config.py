"""Config loading: the shipped examples, error messages that name the path, env overrides."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher.app.config import apply_env, load_config, parse_config
from watcher.core.errors import ConfigError
from watcher.core.model import FailureClass
from watcher.core.policy import ClassPolicy, RetryPolicy
from watcher.core.settings import KubernetesSettings, Settings

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
EXAMPLE = CONFIG_DIR / "kube-dlq.yaml"
MINIMAL = CONFIG_DIR / "minimal.yaml"


def doc(**sections: Any) -> dict[str, Any]:
    """A valid document plus the given top-level keys."""
    return {"cluster_name": "test", **sections}


# --- the shipped files ---------------------------------------------------------------------------


def test_example_loads_and_states_the_defaults() -> None:
    # The example documents every key with its default value: if a default changes in code
    # and not in the example (or the other way round), this fails.
    example = load_config(EXAMPLE)
    assert example == Settings(cluster_name=example.cluster_name)


def test_minimal_loads() -> None:
    assert load_config(MINIMAL) == Settings(cluster_name="dev")


def _documented_keys(cls: type[Any], prefix: str = "") -> set[str]:
    """Every key path a config document can hold, derived from the dataclasses."""
    keys: set[str] = set()
    for f in dataclasses.fields(cls):
        if cls is RetryPolicy and f.name == "queue":
            continue  # comes from dead_letter.default_queue
        path = f"{prefix}{f.name}"
        keys.add(path)
        if cls is RetryPolicy and f.name == "classes":
            for fc in FailureClass:
                keys.add(f"{path}.{fc.value}")
                keys |= _documented_keys(ClassPolicy, f"{path}.{fc.value}.")
        elif isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
            keys |= _documented_keys(f.default_factory, f"{path}.")
    return keys


def _keys_in(node: object, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            keys.add(f"{prefix}{key}")
            keys |= _keys_in(value, f"{prefix}{key}.")
    return keys


def test_example_documents_every_key() -> None:
    in_file = _keys_in(yaml.safe_load(EXAMPLE.read_text()))
    expected = _documented_keys(Settings)
    assert expected - in_file == set(), "keys missing from config/kube-dlq.yaml"
    assert in_file - expected == set()
    assert len(expected) > 100  # the walk above really descended into every section


# --- errors name the path ------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param({}, "cluster_name: required", id="cluster-name-missing"),
    pytest.param(
        {"cluster_name": "a{b}"},
        "cluster_name: must be 1 to 63 of A-Z, a-z, 0-9, '.', '_' and '-', got 'a{b}'",
        id="cluster-name-braces",
    ),
    pytest.param(doc(sever={}), "sever: unknown key (did you mean server?)", id="top-level-typo"),
    pytest.param(
        doc(retry={"classes": {"oom_killed": {"max_attemps": 3}}}),
        "retry.classes.oom_killed.max_attemps: unknown key (did you mean max_attempts?)",
        id="class-field-typo",
    ),
    pytest.param(
        doc(retry={"classes": {"oom_killed": {"max_attempts": "x"}}}),
        "retry.classes.oom_killed.max_attempts: must be an integer between 0 and 100, got 'x'",
        id="class-field-not-integer",
    ),
    pytest.param(
        doc(retry={"classes": {"oom_killed": {"max_attempts": True}}}),
        "retry.classes.oom_killed.max_attempts: must be an integer between 0 and 100, got true",
        id="bool-is-not-integer",
    ),
    pytest.param(
        doc(retry={"classes": {"oom": {"retry": True}}}),
        "retry.classes.oom: unknown failure class (did you mean oom_killed?)",
        id="class-name-prefix",
    ),
    pytest.param(
        doc(retry={"classes": {"node_lsot": {}}}),
        "retry.classes.node_lsot: unknown failure class (did you mean node_lost?)",
        id="class-name-typo",
    ),
    pytest.param(
        doc(retry={"classes": {"node_lost": {"base_s": "1m", "cap_s": "30s"}}}),
        "retry.classes.node_lost.cap_s: must be >= base_s (60s), got 30s",
        id="cap-below-base",
    ),
    pytest.param(
        doc(retry={"classes": {"node_lost": {"factor": 0.5}}}),
        "retry.classes.node_lost.factor: must be a number between 1 and 10, got 0.5",
        id="factor-below-1",
    ),
    pytest.param(
        doc(retry={"classes": {"node_lost": {"jitter": "random"}}}),
        "retry.classes.node_lost.jitter: must be one of full, equal, none, got 'random'",
        id="jitter-unknown",
    ),
    pytest.param(
        doc(retry={"classes": {"node_lost": {"jitter": None}}}),
        "retry.classes.node_lost.jitter: must be one of full, equal, none, got null",
        id="jitter-null",
    ),
    pytest.param(
        doc(retry={"classes": {"node_lost": "retry"}}),
        "retry.classes.node_lost: must be a mapping, got 'retry'",
        id="class-not-mapping",
    ),
    pytest.param(
        doc(retry={"total_budget_s": "1y"}),
        "retry.total_budget_s: not a duration: '1y' (use a number with a unit s, m, h or d: "
        "90s, 5m, 1h30m)",
        id="duration-bad-unit",
    ),
    pytest.param(
        doc(retry={"total_budget_s": 0}),
        "retry.total_budget_s: must be longer than 0s and at most 30d, got 0",
        id="duration-zero",
    ),
    pytest.param(
        doc(retry={"avoid_failed_node": "yes"}),
        "retry.avoid_failed_node: must be true or false, got 'yes'",
        id="bool-as-string",
    ),
    pytest.param(
        doc(retry={"queue": "q"}),
        "retry.queue: unknown key (known: app_budget, avoid_failed_node, classes, infra_budget, "
        "oom_memory, require_never_started, respect_pod_failure_policy, total_budget_s)",
        id="queue-lives-in-dead-letter",
    ),
    pytest.param(
        doc(scope={"namespaces": ["batch", "etl", "Bad_NS"]}),
        "scope.namespaces[2]: must be a DNS label: 1 to 63 of a-z, 0-9 and '-', got 'Bad_NS'",
        id="namespace-invalid",
    ),
    pytest.param(
        doc(scope={"namespaces": ["batch", 7]}),
        "scope.namespaces[1]: must be a string, got 7",
        id="namespace-not-string",
    ),
    pytest.param(
        doc(scope={"namespaces": ["batch", "etl", "batch"]}),
        "scope.namespaces[2]: 'batch' is listed twice",
        id="namespace-twice",
    ),
    pytest.param(
        doc(scope={"namespaces": "batch"}),
        "scope.namespaces: must be a list of namespaces or \"all\", got 'batch'",
        id="namespaces-not-list",
    ),
    pytest.param(
        doc(scope={"namespaces": ["batch"], "namespace_label_selector": "team=data"}),
        "scope.namespace_label_selector: cannot be combined with an explicit namespaces list "
        "(use one or the other)",
        id="selector-and-list",
    ),
    pytest.param(
        doc(scope={"jobs": "optin"}),
        "scope.jobs: must be one of all, opt-in, got 'optin'",
        id="jobs-mode",
    ),
    pytest.param(
        doc(redis="localhost"), "redis: must be a mapping, got 'localhost'", id="section-scalar"
    ),
    pytest.param(
        doc(redis={"url": "http://user:s3cret@redis:6379"}),
        "redis.url: must be a redis://, rediss://, unix://, redis+cluster:// or "
        "redis+sentinel:// URL",
        id="redis-url-scheme-no-password-echo",
    ),
    pytest.param(
        doc(redis={"url": "redis://"}),
        "redis.url: needs a host, e.g. redis://redis:6379/0",
        id="redis-url-no-host",
    ),
    pytest.param(
        doc(redis={"stream_maxlen": 0}),
        "redis.stream_maxlen: must be an integer >= 1, got 0",
        id="maxlen-zero",
    ),
    pytest.param(
        doc(redis={"key_prefix": "kube dlq"}),
        "redis.key_prefix: must be 1 to 63 of A-Z, a-z, 0-9, '.', '_', ':' and '-', no braces, "
        "got 'kube dlq'",
        id="key-prefix-space",
    ),
    pytest.param(
        doc(classify={"io_timeout_patterns": ["i/o timeout", 5]}),
        "classify.io_timeout_patterns[1]: must be a string, got 5",
        id="pattern-not-string",
    ),
    pytest.param(
        doc(classify={"io_timeout_patterns": ["i/o timeout", " "]}),
        "classify.io_timeout_patterns[1]: must not be empty",
        id="pattern-empty",
    ),
    pytest.param(
        doc(dead_letter={"default_queue": "Bad Queue"}),
        "dead_letter.default_queue: invalid queue name 'Bad Queue': use 1 to 63 of a-z, 0-9, "
        "'.', '_' and '-'",
        id="queue-name",
    ),
    pytest.param(
        doc(server={"port": 70000}),
        "server.port: must be an integer between 0 and 65535, got 70000",
        id="port-range",
    ),
    pytest.param(
        doc(leader_election={"lease_duration_s": "10s"}),
        "leader_election.renew_deadline_s: must be shorter than lease_duration_s (10s)",
        id="lease-ordering",
    ),
    pytest.param(
        doc(leader_election={"retry_period_s": 10}),
        "leader_election.retry_period_s: must be shorter than renew_deadline_s (10s)",
        id="retry-period-ordering",
    ),
    pytest.param(
        doc(leader_election={"lease_namespace": "Kube_DLQ"}),
        "leader_election.lease_namespace: must be a DNS label: 1 to 63 of a-z, 0-9 and '-' "
        "or empty",
        id="lease-namespace",
    ),
    pytest.param(
        doc(kubernetes={"kubeconfig": ""}),
        "kubernetes.kubeconfig: must not be empty (leave it out or use null)",
        id="kubeconfig-empty",
    ),
    pytest.param(
        doc(log={"level": "verbose"}),
        "log.level: must be one of debug, info, warning, error, got 'verbose'",
        id="log-level",
    ),
    pytest.param(
        doc(shutdown_grace_s=-1),
        "shutdown_grace_s: must be at least 0s and at most 1h, got -1",
        id="negative-duration",
    ),
    pytest.param(
        doc(**{"1": 2}),
        "1: unknown key (known: classify, cluster_name, dead_letter, kubernetes, "
        "leader_election, limits, log, pipeline, redis, retry, retry_loop, scope, security, "
        "server, shutdown_grace_s)",
        id="unknown-key-lists-known",
    ),
]


@pytest.mark.parametrize(("document", "message"), ERROR_CASES)
def test_invalid_config_error_names_the_path(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert str(caught.value) == message
    assert message.startswith(caught.value.path + ": ")
    assert "s3cret" not in str(caught.value)


# --- valid values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "attribute", "expected"),
    [
        pytest.param(
            doc(retry={"classes": {"oom_killed": {"retry": True}}}),
            lambda c: c.retry.for_class(FailureClass.OOM_KILLED),
            ClassPolicy(retry=True, max_attempts=2),
            id="partial-class-override-keeps-the-rest",
        ),
        pytest.param(
            doc(retry={"classes": {"oom_killed": {"retry": True}}}),
            lambda c: c.retry.for_class(FailureClass.NODE_LOST),
            ClassPolicy(retry=True, max_attempts=5),
            id="other-classes-untouched",
        ),
        pytest.param(
            doc(retry={"classes": {"node_lost": {"base_s": "1m30s", "cap_s": 3600}}}),
            lambda c: (
                c.retry.for_class(FailureClass.NODE_LOST).base_s,
                c.retry.for_class(FailureClass.NODE_LOST).cap_s,
            ),
            (90.0, 3600.0),
            id="durations-as-string-or-seconds",
        ),
        pytest.param(
            doc(retry={"classes": None}),
            lambda c: c.retry,
            RetryPolicy(),
            id="empty-classes-section",
        ),
        pytest.param(
            doc(dead_letter={"default_queue": "batch-failures"}),
            lambda c: (c.dead_letter.default_queue, c.retry.queue),
            ("batch-failures", "batch-failures"),
            id="default-queue-feeds-policy",
        ),
        pytest.param(
            doc(scope={"namespaces": ["batch", "etl"]}),
            lambda c: c.scope.namespaces,
            ("batch", "etl"),
            id="namespaces-list",
        ),
        pytest.param(
            doc(scope={"namespaces": []}),
            lambda c: c.scope.namespaces,
            (),
            id="namespaces-empty-is-all",
        ),
        pytest.param(
            doc(scope={"jobs": "opt-in", "namespace_label_selector": "team=data"}),
            lambda c: (c.scope.jobs, c.scope.namespace_label_selector),
            ("opt-in", "team=data"),
            id="opt-in-with-selector",
        ),
        pytest.param(doc(log={"level": "DEBUG"}), lambda c: c.log.level, "debug", id="level-case"),
        pytest.param(doc(redis=None), lambda c: c.redis, Settings("x").redis, id="empty-section"),
        pytest.param(
            doc(redis={"url": "unix:///run/redis.sock"}),
            lambda c: c.redis.url,
            "unix:///run/redis.sock",
            id="unix-socket",
        ),
        pytest.param(
            doc(classify={"io_timeout_patterns": []}),
            lambda c: c.classify.io_timeout_patterns,
            (),
            id="patterns-off",
        ),
    ],
)
def test_valid_values(document: dict[str, Any], attribute: Any, expected: object) -> None:
    assert attribute(parse_config(document)) == expected


def test_parse_does_not_modify_its_input() -> None:
    document = doc(retry={"classes": {"node_lost": {"max_attempts": 2}}}, scope={"namespaces": []})
    before = copy.deepcopy(document)
    parse_config(document)
    assert document == before


# --- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "cluster_name: a\nlog: {level: info}\nlog: {}\n", "duplicate key 'log'", id="dup"
        ),
        pytest.param(
            "cluster_name: a\nretry:\n  classes:\n    node_lost: {retry: true, retry: false}\n",
            "duplicate key 'retry'",
            id="dup-nested",
        ),
        pytest.param("cluster_name: [a\n", "invalid YAML in", id="syntax"),
        pytest.param("- a\n- b\n", "the top level must be a mapping", id="list"),
        pytest.param("", "cluster_name: required", id="empty-file"),
        pytest.param("cluster_name: a\nlog:\n  levle: info\n", "log.levle: unknown key", id="typo"),
    ],
)
def test_load_config_reports_file_problems(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "kube-dlq.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert caught.value.file == str(path)


# Crashes the fuzz tests (tests/fuzz/test_fuzz_config.py) found: PyYAML and the loader let
# ValueError, TypeError, RecursionError and OverflowError out instead of a ConfigError.
@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("cluster_name: a\npipeline: 2001-13-40\n", "month must be in", id="month"),
        pytest.param("cluster_name: a\nx: 2001-02-30 10:00:00\n", "day is out of", id="day"),
        pytest.param("cluster_name: a\nx: !!int 0x\n", "invalid literal", id="empty-hex"),
        pytest.param("cluster_name: a\nx: " + "9" * 5000 + "\n", "digits", id="int-digits"),
        pytest.param("cluster_name: a\n? [a, b]\n: 1\n", "found a list as a key", id="list-key"),
        pytest.param("? {a: 1}\n: 1\n", "found a dict as a key", id="dict-key"),
        pytest.param("x: " + "[" * 1100 + "]" * 1100 + "\n", "nested too deeply", id="deep"),
        pytest.param(
            "cluster_name: a\nshutdown_grace_s: 1" + "0" * 400 + "\n",
            "shutdown_grace_s: must be at least 0s and at most 1h",
            id="huge-int-duration",
        ),
    ],
)
def test_hostile_yaml_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "kube-dlq.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_duration_beyond_a_float_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"retry\.classes\.node_lost\.base_s: must be at least"):
        parse_config(doc(retry={"classes": {"node_lost": {"base_s": 10**400}}}))


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "kube-dlq.yaml"
    path.write_text(
        "cluster_name: a\n"
        "retry:\n"
        "  classes:\n"
        "    node_lost: &fast {base_s: 5s, cap_s: 1m}\n"
        "    preempted: {<<: *fast, cap_s: 2m}\n"
    )
    preempted = load_config(path).retry.for_class(FailureClass.PREEMPTED)
    assert (preempted.base_s, preempted.cap_s) == (5.0, 120.0)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


# --- environment ---------------------------------------------------------------------------------

BASE = Settings(cluster_name="test")
FROM_FILE = dataclasses.replace(BASE, kubernetes=KubernetesSettings(kubeconfig="/etc/kube/config"))


@pytest.mark.parametrize(
    ("config", "environ", "attribute", "expected"),
    [
        pytest.param(
            BASE,
            {"KUBE_DLQ_REDIS_URL": "rediss://:pw@redis.prod:6380/2"},
            lambda c: c.redis.url,
            "rediss://:pw@redis.prod:6380/2",
            id="redis-url",
        ),
        pytest.param(
            BASE,
            {"KUBECONFIG": "/home/me/.kube/dev"},
            lambda c: c.kubernetes.kubeconfig,
            "/home/me/.kube/dev",
            id="kubeconfig-when-unset",
        ),
        pytest.param(
            FROM_FILE,
            {"KUBECONFIG": "/home/me/.kube/dev"},
            lambda c: c.kubernetes.kubeconfig,
            "/etc/kube/config",
            id="kubeconfig-file-wins",
        ),
        pytest.param(
            BASE, {"KUBE_DLQ_LOG_LEVEL": "Warning"}, lambda c: c.log.level, "warning", id="level"
        ),
        pytest.param(
            BASE,
            {"KUBE_DLQ_REDIS_URL": "", "KUBECONFIG": "", "KUBE_DLQ_LOG_LEVEL": ""},
            lambda c: c,
            BASE,
            id="empty-means-unset",
        ),
        pytest.param(BASE, {"HOME": "/root"}, lambda c: c, BASE, id="unrelated-ignored"),
    ],
)
def test_apply_env(
    config: Settings, environ: dict[str, str], attribute: Any, expected: object
) -> None:
    assert attribute(apply_env(config, environ)) == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        pytest.param(
            {"KUBE_DLQ_LOG_LEVEL": "loud"},
            "KUBE_DLQ_LOG_LEVEL: must be one of debug, info, warning, error, got 'loud'",
            id="level",
        ),
        pytest.param(
            {"KUBE_DLQ_REDIS_URL": "localhost:6379"},
            "KUBE_DLQ_REDIS_URL: must be a redis://, rediss://, unix://, redis+cluster:// or "
            "redis+sentinel:// URL",
            id="redis-url",
        ),
    ],
)
def test_apply_env_rejects_bad_values(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        apply_env(BASE, environ)
    assert str(caught.value) == message
