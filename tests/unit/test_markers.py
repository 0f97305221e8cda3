"""Forgetting outcome markers: the scope rule, MarkerSweeper, and the daemon's wiring of it.

Against FakeStore (which drops forgotten markers at once; the real store lets them expire:
tests/integration/test_markers.py). The daemon is built from a config document as
`run_daemon` builds it, over clients that never connect; its Jobs stream is replaced by a
scripted one and its sweeper's store by a FakeStore, so what is checked is the order of calls:
the mark is read before a list begins, used after it, and read again for the next list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import structlog
from kubernetes_asyncio import client
from structlog.testing import capture_logs

from tests.support.fakes import FakeStore, ForgetCall
from watcher.adapters.kube import watch
from watcher.adapters.kube.request import KubeClient
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.store import RedisStore
from watcher.app.config import parse_config
from watcher.app.daemon import Daemon
from watcher.core.errors import SinkError
from watcher.core.model import DeadLetter, FailureClass, ForgetResult, JobRef
from watcher.core.settings import ScopeSettings
from watcher.kit.metrics import Metrics
from watcher.service.markers import MarkerSweeper, marker_scope


def letter(uid: str, namespace: str = "ns") -> DeadLetter:
    return DeadLetter(
        queue="default",
        job=JobRef(namespace, f"job-{uid}", uid),
        failure_class=FailureClass.APP_ERROR,
        reason="exit code 2",
        attempts=1,
        failed_at=0.0,
        cluster="unit",
    )


# --- the scope rule ----------------------------------------------------------------------------

SCOPES = {
    "every namespace": (ScopeSettings(), None, None),
    "a namespace list": (ScopeSettings(namespaces=("a", "b")), None, frozenset({"a", "b"})),
    "a selector, matched": (
        ScopeSettings(namespace_label_selector="team=data"),
        frozenset({"c"}),
        frozenset({"c"}),
    ),
    "a selector, nothing known yet": (
        ScopeSettings(namespace_label_selector="team=data"),
        None,
        frozenset(),
    ),
}


@pytest.mark.parametrize(("scope", "selected", "expected"), SCOPES.values(), ids=list(SCOPES))
def test_markers_are_forgotten_only_in_the_namespaces_this_process_handles(
    scope: ScopeSettings, selected: frozenset[str] | None, expected: frozenset[str] | None
) -> None:
    assert marker_scope(scope, selected) == expected


# --- MarkerSweeper -----------------------------------------------------------------------------


def sweeper(store: FakeStore, metrics: Metrics | None = None) -> MarkerSweeper:
    return MarkerSweeper(store, metrics=metrics or Metrics(), logger=structlog.get_logger())


async def test_only_markers_written_before_the_list_began_are_forgotten() -> None:
    # Given two dead letters written before a list begins, and one written during it
    store, metrics = FakeStore(), Metrics()
    markers = sweeper(store, metrics)
    await store.dead_letter(letter("gone"))
    await store.dead_letter(letter("listed"))
    await markers.before_list()
    await store.dead_letter(letter("new"))

    # When the list shows "listed" only
    result = await markers.after_list(frozenset({"listed"}), None)

    # Then "gone" is forgotten; "new" (written after the list's start) and "listed" are kept
    assert result == ForgetResult(forgotten=1)
    assert store.forgets == [ForgetCall(frozenset({"listed"}), 2, None)]
    assert set(store.outcomes) == {"listed", "new"}
    assert metrics.registry.get_sample_value("kube_dlq_outcome_markers_forgotten_total") == 1


async def test_a_list_without_a_mark_before_it_forgets_nothing() -> None:
    # Given a sweeper whose mark could not be read (Redis down) before the list
    store = FakeStore()
    await store.dead_letter(letter("gone"))
    store.marker_failures.append(SinkError("redis outcome_watermark failed"))
    markers = sweeper(store)
    with capture_logs() as logs:
        await markers.before_list()

        # When the list ends, and when another one ends without a new mark
        first = await markers.after_list(frozenset(), None)
        again = await markers.after_list(frozenset(), None)

    # Then nothing was judged (no forget call at all), and the failure is logged
    assert (first, again) == (None, None)
    assert store.calls == ["outcome_watermark"]
    assert "gone" in store.outcomes
    assert [line["event"] for line in logs] == ["outcome_markers_not_swept"]


async def test_a_failed_forget_is_logged_and_counted_not_raised() -> None:
    # Given a mark read, and Redis failing at the forget
    store, metrics = FakeStore(), Metrics()
    markers = sweeper(store, metrics)
    await markers.before_list()
    store.marker_failures.append(SinkError("redis forget_absent timed out"))

    # When the list ends
    with capture_logs() as logs:
        result = await markers.after_list(frozenset(), None)

    # Then the pass is given up quietly: logged, counted as a Redis error
    assert result is None
    assert [line["event"] for line in logs] == ["outcome_markers_not_swept"]
    labels = {"operation": "forget_markers"}
    assert metrics.registry.get_sample_value("kube_dlq_redis_errors_total", labels) == 1


# --- the daemon's wiring -----------------------------------------------------------------------


@pytest.fixture
async def build() -> AsyncIterator[Callable[[dict[str, Any]], Daemon]]:
    """A Daemon from a config document, over clients that never connect."""
    opened: list[Any] = []

    def make(doc: dict[str, Any]) -> Daemon:
        settings = parse_config({"cluster_name": "unit", **doc})
        api = client.ApiClient(client.Configuration(host="https://127.0.0.1:1"))
        redis = redis_client(settings.redis)
        opened.extend([api, redis])
        store = RedisStore(redis, settings.redis, cluster_name=settings.cluster_name)
        return Daemon(settings, kube=KubeClient(api, settings.kubernetes), store=store)

    yield make
    for thing in opened:
        await (thing.close() if isinstance(thing, client.ApiClient) else thing.aclose())


Lists = list[frozenset[str]]


def scripted(daemon: Daemon, store: FakeStore) -> None:
    """Make the daemon's marker sweeper use `store`."""
    daemon.markers = MarkerSweeper(store, metrics=daemon.metrics, logger=daemon.logger)


async def stream(
    resource: watch.Resource, store: FakeStore, lists: Lists
) -> AsyncIterator[watch.Item]:
    """A watch yielding one Synced per entry of `lists` (the Jobs present), noting in
    `store.calls` when each list begins."""
    for uids in lists:
        store.calls.append(f"list {resource.name}")
        yield watch.Synced(resource, uids, "1")


async def consume_jobs(daemon: Daemon, store: FakeStore, lists: Lists) -> None:
    p = daemon.pipeline
    await daemon._consume(stream(watch.JOBS, store, lists), watch.JOBS, p.on_job, p.on_jobs_synced)


async def test_daemon_forgets_after_each_jobs_list_with_the_mark_read_before_it(
    build: Callable[[dict[str, Any]], Daemon],
) -> None:
    # Given a daemon without leader election (it writes) and a marker of a Job since deleted
    daemon = build({})
    store = FakeStore()
    await store.dead_letter(letter("gone"))
    scripted(daemon, store)

    # When its Jobs watch lists twice (start, then a relist after 410 Gone)
    await consume_jobs(daemon, store, [frozenset({"a"}), frozenset({"a", "b"})])

    # Then each list is preceded by a mark and followed by a forget with what it showed
    assert store.calls == [
        "outcome_watermark",
        "list jobs",
        "forget_absent",
        "outcome_watermark",
        "list jobs",
        "forget_absent",
        "outcome_watermark",
    ]
    assert store.forgets == [
        ForgetCall(frozenset({"a"}), 1, None),
        ForgetCall(frozenset({"a", "b"}), 1, None),
    ]
    assert "gone" not in store.outcomes


async def test_daemon_forgets_in_its_configured_namespaces_only(
    build: Callable[[dict[str, Any]], Daemon],
) -> None:
    # Given a daemon scoped to two namespaces, and markers of deleted Jobs in and out of them
    daemon = build({"scope": {"namespaces": ["a", "b"]}})
    store = FakeStore()
    await store.dead_letter(letter("in-scope", namespace="a"))
    await store.dead_letter(letter("wider-writer", namespace="z"))
    scripted(daemon, store)

    # When its Jobs watch lists
    await consume_jobs(daemon, store, [frozenset()])

    # Then only the marker in its scope is forgotten
    [call] = store.forgets
    assert call.namespaces == frozenset({"a", "b"})
    assert set(store.outcomes) == {"wider-writer"}


async def test_a_standby_notes_marks_but_never_forgets(
    build: Callable[[dict[str, Any]], Daemon],
) -> None:
    # Given a daemon with leader election on that does not lead
    daemon = build({"leader_election": {"enabled": True}})
    assert daemon.elector is not None and not daemon.elector.is_leader.is_set()
    store = FakeStore()
    await store.dead_letter(letter("gone"))
    scripted(daemon, store)

    # When its Jobs watch lists
    await consume_jobs(daemon, store, [frozenset()])

    # Then it reads marks for its lists (ready to forget once it leads) but forgets nothing
    assert store.calls == ["outcome_watermark", "list jobs", "outcome_watermark"]
    assert "gone" in store.outcomes

    # And once it leads, its next list forgets
    daemon.elector.is_leader.set()
    scripted(daemon, store)
    await consume_jobs(daemon, store, [frozenset()])
    assert "gone" not in store.outcomes


async def test_other_watches_leave_markers_alone(
    build: Callable[[dict[str, Any]], Daemon],
) -> None:
    # Given a daemon whose pod watch lists
    daemon = build({})
    store = FakeStore()
    scripted(daemon, store)

    # When the pods are consumed
    pods = stream(watch.JOB_PODS, store, [frozenset({"pod-uid"})])
    await daemon._consume(pods, watch.JOB_PODS, daemon.pipeline.on_pod, None)

    # Then the store's markers were not touched
    assert store.calls == ["list pods"]
