"""Every key documented in config/kube-dlq.yaml takes effect: set to a value other than its
default, it reaches the component that uses it.

For each documented key, a config document that sets it is parsed the way `kube-dlq run`
parses its file, the daemon is built from the result the way `run_daemon` builds it (real
adapters over clients that never connect), and a probe reads the value where the consuming
component keeps it. A documented key without a probe fails the test, so a new key cannot be
added without proving that it is used.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from kubernetes_asyncio import client

from watcher.adapters.kube import watch
from watcher.adapters.kube.connect import transport
from watcher.adapters.kube.request import KubeClient
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.seal import ForgedEntry
from watcher.adapters.redis.store import RedisStore
from watcher.app.config import parse_config
from watcher.app.daemon import Daemon
from watcher.app.sealing import build_seal
from watcher.cli.main import main
from watcher.core.memory import OomMemoryPolicy
from watcher.core.model import FailureClass
from watcher.core.policy import default_class_policy
from watcher.core.settings import Settings
from watcher.kit.logs import configure

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "kube-dlq.yaml"

Probe = Callable[[Daemon], object]


def chore(name: str) -> Probe:
    return lambda d: {n: interval for n, interval, _ in d.chores}.get(name)


def watcher_of(d: Daemon) -> watch.Watcher:
    return d._watcher(watch.JOBS)


def redis_kwargs(d: Daemon) -> dict[str, Any]:
    kwargs: dict[str, Any] = d.store._redis.connection_pool.connection_kwargs
    return kwargs


# path -> (value set in the document, probe, what the probe must then read)
CASES: dict[str, tuple[object, Probe, object]] = {
    "cluster_name": (
        "reach-2",
        lambda d: (d.store.keys.cluster, d.handler.cluster_name),
        ("reach-2", "reach-2"),
    ),
    "redis.url": (
        "redis://redis.example:6380/3",
        lambda d: (redis_kwargs(d)["host"], redis_kwargs(d)["port"], redis_kwargs(d)["db"]),
        ("redis.example", 6380, 3),
    ),
    "redis.key_prefix": ("kd2", lambda d: d.store.keys.prefix, "kd2"),
    "redis.stream_maxlen": (77, lambda d: d.store._stream_maxlen, 77),
    "redis.stream_max_age_s": ("1h", lambda d: d.store._stream_max_age_ms, 3_600_000),
    "redis.outcome_ttl_s": ("2h", lambda d: d.store._outcome_ttl_ms, 7_200_000),
    "redis.retry_claim_lease_s": (45, lambda d: d.store._lease_s, 45),
    "redis.socket_timeout_s": (
        3,
        lambda d: (redis_kwargs(d)["socket_timeout"], redis_kwargs(d)["socket_connect_timeout"]),
        (3, 3),
    ),
    "redis.operation_timeout_s": (4, lambda d: d.store._guard.timeout_s, 4),
    # kubernetes.kubeconfig and kubernetes.context: test_kubeconfig_and_context_choose_the_cluster
    "kubernetes.request_timeout_s": (12, lambda d: d.kube._timeout.total, 12),
    "kubernetes.watch_timeout_s": (
        120,
        lambda d: watcher_of(d)._settings.watch_timeout_s,
        120,
    ),
    "kubernetes.watch_inactivity_timeout_s": (
        80,
        lambda d: watcher_of(d)._watch_timeout.sock_read,
        80,
    ),
    "kubernetes.connect_timeout_s": (
        7,
        lambda d: (
            d.kube._timeout.sock_connect,
            watcher_of(d)._watch_timeout.sock_connect,
            watcher_of(d)._list_timeout.sock_connect,
        ),
        (7, 7, 7),
    ),
    "kubernetes.list_timeout_s": (40, lambda d: watcher_of(d)._list_timeout.total, 40),
    "kubernetes.list_page_size": (250, lambda d: watcher_of(d)._settings.list_page_size, 250),
    "kubernetes.watch_backoff_base_s": (
        0.25,
        lambda d: watcher_of(d)._settings.watch_backoff_base_s,
        0.25,
    ),
    "kubernetes.watch_backoff_cap_s": (
        20,
        lambda d: watcher_of(d)._settings.watch_backoff_cap_s,
        20,
    ),
    "scope.namespaces": (["a", "b"], lambda d: d.pipeline.scope.namespaces, ("a", "b")),
    "scope.namespace_label_selector": (
        "team=data",
        lambda d: (
            d.settings.scope.namespace_label_selector,
            "namespaces" in dict((n, i) for n, i, _ in d.chores),
        ),
        ("team=data", True),
    ),
    "scope.namespace_refresh_s": (45, chore("namespaces"), 45),
    "scope.jobs": ("opt-in", lambda d: d.pipeline.scope.jobs, "opt-in"),
    "classify.io_timeout_patterns": (
        ["disk on fire"],
        lambda d: (
            d.handler.rules.io_timeout_in("the disk on fire, again"),
            d.handler.rules.io_timeout_in("dial tcp: i/o timeout"),
        ),
        (True, False),
    ),
    "classify.stuck_pending_after_s": (300, lambda d: d.pipeline.stuck_pending_after_s, 300),
    "classify.stuck_check_interval_s": (3, chore("stuck-check"), 3),
    "pipeline.settle_s": (1, lambda d: d.pipeline.settings.settle_s, 1),
    "pipeline.evidence_wait_s": (5, lambda d: d.pipeline.settings.evidence_wait_s, 5),
    "pipeline.write_concurrency": (7, lambda d: d.pipeline.write_concurrency, 7),
    "limits.max_tracked_jobs": (11, lambda d: d.pipeline.correlator.limits.max_tracked_jobs, 11),
    "limits.max_pods_per_job": (12, lambda d: d.pipeline.correlator.limits.max_pods_per_job, 12),
    "limits.max_events_per_object": (
        13,
        lambda d: d.pipeline.correlator.limits.max_events_per_object,
        13,
    ),
    "limits.max_orphan_events": (
        14,
        lambda d: d.pipeline.correlator.limits.max_orphan_events,
        14,
    ),
    "limits.max_orphan_pods": (15, lambda d: d.pipeline.correlator.limits.max_orphan_pods, 15),
    "limits.max_pending_writes": (16, lambda d: d.pipeline.limits.max_pending_writes, 16),
    "limits.handled_memory": (17, lambda d: d.pipeline.limits.handled_memory, 17),
    "retry.infra_budget": (4, lambda d: d.handler.base_policy.infra_budget, 4),
    "retry.app_budget": (1, lambda d: d.handler.base_policy.app_budget, 1),
    "retry.total_budget_s": ("1h", lambda d: d.handler.base_policy.total_budget_s, 3600),
    "retry.avoid_failed_node": (False, lambda d: d.handler.base_policy.avoid_failed_node, False),
    "retry.respect_pod_failure_policy": (
        False,
        lambda d: d.handler.base_policy.respect_pod_failure_policy,
        False,
    ),
    "retry.require_never_started": (
        ["app_error", "io-timeout"],
        lambda d: d.handler.base_policy.require_never_started,
        frozenset({FailureClass.APP_ERROR, FailureClass.IO_TIMEOUT}),
    ),
    "retry.oom_memory": (
        {"factor": 1.25, "cap": "4Gi", "attempts": 3},
        lambda d: d.handler.base_policy.oom_memory,
        OomMemoryPolicy(factor=Fraction(5, 4), cap_bytes=4 * 2**30, attempts=3),
    ),
    "retry_loop.poll_interval_s": (2, lambda d: d.retry_loop._settings.poll_interval_s, 2),
    "retry_loop.batch_size": (9, lambda d: d.retry_loop._settings.batch_size, 9),
    "retry_loop.fire_concurrency": (3, lambda d: d.retry_loop._settings.fire_concurrency, 3),
    "retry_loop.defer_base_s": (5, lambda d: d.retry_loop._settings.defer_base_s, 5),
    "retry_loop.defer_cap_s": (120, lambda d: d.retry_loop._settings.defer_cap_s, 120),
    "retry_loop.error_backoffs_s": (
        ["0.5s", "4s"],
        lambda d: d.retry_loop._settings.error_backoffs_s,
        (0.5, 4.0),
    ),
    "dead_letter.default_queue": ("batch-q", lambda d: d.handler.base_policy.queue, "batch-q"),
    "dead_letter.depth_refresh_s": (20, chore("gauges"), 20),
    "server.bind_address": ("127.0.0.2", lambda d: d.health.host, "127.0.0.2"),
    "server.port": (9090, lambda d: d.health.port, 9090),
    "shutdown_grace_s": (11, lambda d: d.shutdown_grace_s, 11),
    "leader_election.enabled": (True, lambda d: d.elector is not None, True),
    "leader_election.lease_name": ("other-lease", lambda d: _elector(d).name, "other-lease"),
    "leader_election.lease_namespace": ("ops", lambda d: _elector(d).namespace, "ops"),
    "leader_election.lease_duration_s": (20, lambda d: _elector(d).lease_duration_s, 20),
    "leader_election.renew_deadline_s": (12, lambda d: _elector(d).renew_deadline_s, 12),
    "leader_election.retry_period_s": (3, lambda d: _elector(d).retry_period_s, 3),
    "leader_election.standby_prune_s": (9, chore("standby-prune"), 9),
    # log.level and log.format: test_log_settings_reach_the_logger
}

NEEDS: dict[str, dict[str, Any]] = {
    "scope.namespace_refresh_s": {"scope": {"namespace_label_selector": "team=data"}},
    **{
        f"leader_election.{key}": {"leader_election": {"enabled": True}}
        for key in (
            "lease_name",
            "lease_namespace",
            "lease_duration_s",
            "renew_deadline_s",
            "retry_period_s",
            "standby_prune_s",
        )
    },
}
"""Other keys a case needs set for its key to matter (a selector to refresh, an election)."""

ELSEWHERE = {
    "kubernetes.kubeconfig",
    "kubernetes.context",
    "log.level",
    "log.format",
    "dead_letter.read_only",
    *(
        f"security.{key}"
        for key in (
            "signing_keys_dir",
            "signing_key_id",
            "allow_unsigned",
            "encryption_keys_dir",
            "encryption_key_id",
        )
    ),
}
"""Keys proven by the dedicated tests below."""


def _elector(d: Daemon) -> Any:
    assert d.elector is not None
    return d.elector


def _class_cases() -> Iterator[tuple[str, tuple[object, Probe, object]]]:
    """retry.classes.<class>.<field>: every field of every class, each to a non-default."""
    for fc in FailureClass:
        d = default_class_policy(fc)

        def policy_of(daemon: Daemon, fc: FailureClass = fc) -> Any:
            return daemon.handler.base_policy.for_class(fc)

        values: dict[str, tuple[object, object]] = {
            "retry": (not d.retry, not d.retry),
            "max_attempts": (d.max_attempts + 1, d.max_attempts + 1),
            "base_s": (7, 7.0),
            "factor": (3, 3.0),
            "cap_s": (1000, 1000.0),
            "jitter": ("equal", "equal"),
        }
        for name, (value, expected) in values.items():

            def probe(daemon: Daemon, name: str = name, policy: Any = policy_of) -> object:
                return getattr(policy(daemon), name)

            yield f"retry.classes.{fc.value}.{name}", (value, probe, expected)


ALL_CASES = {**CASES, **dict(_class_cases())}


def _documented() -> set[str]:
    """The path of every value (not mapping) in the example config."""

    def walk(node: object, prefix: str) -> Iterator[str]:
        for key, value in node.items() if isinstance(node, dict) else ():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    return set(walk(yaml.safe_load(EXAMPLE.read_text()), ""))


def _document(path: str, value: object) -> dict[str, Any]:
    doc: dict[str, Any] = {"cluster_name": "reach"}
    for key, section in NEEDS.get(path, {}).items():
        doc[key] = dict(section)
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return doc


@pytest.fixture
async def build() -> AsyncIterator[Callable[[Settings], Daemon]]:
    """Build a Daemon from settings as run_daemon does, over clients that never connect."""
    opened: list[Any] = []

    def make(settings: Settings) -> Daemon:
        api = client.ApiClient(client.Configuration(host="https://127.0.0.1:1"))
        redis = redis_client(settings.redis)
        opened.extend([api, redis])
        store = RedisStore(redis, settings.redis, cluster_name=settings.cluster_name)
        return Daemon(settings, kube=KubeClient(api, settings.kubernetes), store=store)

    yield make
    for thing in opened:
        await (thing.close() if isinstance(thing, client.ApiClient) else thing.aclose())


def test_every_documented_key_has_a_probe() -> None:
    documented = _documented()
    assert len(documented) > 100
    assert documented - set(ALL_CASES) - ELSEWHERE == set(), "documented keys with no probe"
    assert set(ALL_CASES) - documented == set(), "probes of keys the example does not document"


@pytest.mark.parametrize("path", sorted(ALL_CASES))
async def test_documented_key_reaches_its_component(
    path: str, build: Callable[[Settings], Daemon]
) -> None:
    value, probe, expected = ALL_CASES[path]
    # Given the value the component holds by default
    default = probe(build(parse_config({"cluster_name": "reach", **NEEDS.get(path, {})})))
    assert default != expected, f"{path}: the test value must differ from the default"
    # When the key is set in the config document, then the component holds the new value
    assert probe(build(parse_config(_document(path, value)))) == expected


async def test_kubeconfig_and_context_choose_the_cluster(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "first",
                "clusters": [
                    {"name": "one", "cluster": {"server": "https://one.example:6443"}},
                    {"name": "two", "cluster": {"server": "https://two.example:6443"}},
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "first", "context": {"cluster": "one", "user": "u"}},
                    {"name": "second", "context": {"cluster": "two", "user": "u"}},
                ],
            }
        )
    )
    kube = {"kubeconfig": str(kubeconfig)}
    for doc, host in (
        ({"kubernetes": kube}, "https://one.example:6443"),
        ({"kubernetes": {**kube, "context": "second"}}, "https://two.example:6443"),
    ):
        settings = parse_config({"cluster_name": "reach", **doc})
        api = await transport(settings.kubernetes)
        try:
            assert api.host == host
        finally:
            await api.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
def test_log_settings_reach_the_logger(capsys: pytest.CaptureFixture[str]) -> None:
    configure(parse_config({"cluster_name": "r", "log": {"level": "debug", "format": "json"}}).log)
    structlog.get_logger().debug("probe_line", key="v")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert yaml.safe_load(line)["event"] == "probe_line"  # JSON, and debug is let through
    configure(parse_config({"cluster_name": "r", "log": {"level": "error"}}).log)
    structlog.get_logger().warning("dropped_line")
    assert "dropped_line" not in capsys.readouterr().err


def test_security_settings_reach_the_seal(tmp_path: Path) -> None:
    # Given key directories as a mounted Secret lays them out, two keys in each
    for purpose in ("signing", "encryption"):
        (tmp_path / purpose).mkdir()
        for kid in ("old", "new"):
            (tmp_path / purpose / kid).write_text(secrets.token_hex(32))
    security = {
        "signing_keys_dir": str(tmp_path / "signing"),
        "signing_key_id": "new",
        "allow_unsigned": True,
        "encryption_keys_dir": str(tmp_path / "encryption"),
        "encryption_key_id": "new",
    }
    # When the seal is built from the parsed config as run_daemon builds it
    seal = build_seal(parse_config({"cluster_name": "r", "security": security}).security)
    # Then new entries are signed and encrypted with the keys named, and unsigned ones pass
    sealed = json.loads(seal.seal("retry_ticket", "place", b'{"v":1}'))
    assert (sealed["kid"], sealed["enc"]) == ("new", "aes-256-gcm:new")
    assert seal.open("retry_ticket", "place", b'{"v":1,"kind":"x"}') == b'{"v":1,"kind":"x"}'
    # and by default (allow_unsigned: false) an unsigned entry is refused
    strict = build_seal(
        parse_config(
            {"cluster_name": "r", "security": {**security, "allow_unsigned": False}}
        ).security
    )
    with pytest.raises(ForgedEntry):
        strict.open("retry_ticket", "place", b'{"v":1,"kind":"x"}')


def test_dead_letter_read_only_reaches_dlq_purge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a config with dead_letter.read_only: true (and a Redis nobody answers at)
    for name in ("KUBE_DLQ_REDIS_URL", "KUBE_DLQ_CONFIG", "KUBE_DLQ_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "kube-dlq.yaml"
    config.write_text(
        "cluster_name: r\nredis:\n  url: redis://127.0.0.1:1/0\n"
        "security:\n  allow_unsigned: true\ndead_letter:\n  read_only: true\n"
    )
    # When purging everything, without asking
    code = main(["dlq", "purge", "--config", str(config), "--all", "--yes"])
    # Then it is refused in one line, before Redis is touched (no connection error)
    err = capsys.readouterr().err
    assert code == 2
    assert (
        err
        == "kube-dlq dlq purge: refused: this config sets dead_letter.read_only (nothing purged)\n"
    )
