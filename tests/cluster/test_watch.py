"""watcher.adapters.kube.watch against a real kube-apiserver: list+watch, bookmarks, closes,
410 Gone, an apiserver crash, a silent connection, and RBAC denial.

The list/watch, bookmark and RBAC tests use the session control plane. The server-close,
410, crash and silent-connection tests share one more control plane of this module's own,
whose apiserver ends every watch after 3-6 s (--min-request-timeout=3) and which those tests
kill, restart or freeze (tests/support/components.py); one cluster per test would add ~8 s
each for nothing the scenarios need, and each test works in a namespace of its own.

Resource versions are compared as integers: that holds for this etcd-backed apiserver (they
are etcd revisions), not as an API guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from kubernetes_asyncio import client, config
from structlog.typing import FilteringBoundLogger

from devtools.devcluster.build import ensure_binaries
from devtools.devcluster.cluster import LocalCluster
from devtools.devcluster.state import ClusterState
from tests.support.components import frozen_component, start_component, stop_component
from tests.support.kube import RawObject, eventually, job_manifest, raw
from tests.support.watching import (
    LogLines,
    Recorder,
    check,
    connections_in_use,
    lingering_tls_closes,
    sample,
)
from watcher.adapters.kube.request import KubeClient
from watcher.adapters.kube.watch import (
    JOBS,
    Item,
    Resource,
    Synced,
    Watcher,
    WatchEvent,
)
from watcher.core.settings import KubernetesSettings
from watcher.kit.metrics import Metrics

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

SECRETS = Resource("secrets", "/api/v1/secrets", "/api/v1/namespaces/{namespace}/secrets")
MERGE_PATCH = "application/merge-patch+json"


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def unruly(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane of this module's own whose apiserver ends every watch after 3-6 s."""
    own = LocalCluster(
        tmp_path_factory.mktemp("unruly"),
        ensure_binaries(),
        progress=lambda _: None,
        extra_apiserver_args=("--min-request-timeout=3",),
    )
    with own:
        yield own


@pytest.fixture
async def unruly_api(unruly: LocalCluster) -> AsyncIterator[client.ApiClient]:
    assert unruly.state is not None
    api = await config.new_client_from_config(config_file=unruly.state.kubeconfig)
    async with api:
        yield api


@pytest.fixture
async def unruly_ns(unruly_api: client.ApiClient) -> str:
    name = f"w-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(unruly_api)
    await raw(core.create_namespace({"metadata": {"name": name}}, _preload_content=False))
    return name


def watcher(
    api: client.ApiClient,
    namespace: str | None,
    *,
    resource: Resource = JOBS,
    metrics: Metrics | None = None,
    logger: FilteringBoundLogger | None = None,
    settings: KubernetesSettings | None = None,
) -> Watcher:
    return Watcher(
        KubeClient(api, settings or KubernetesSettings()),
        resource,
        namespace=namespace,
        metrics=metrics or Metrics(),
        logger=logger or LogLines().logger,
    )


def suspended_job(name: str, **labels: str) -> RawObject:
    manifest = job_manifest(name, labels=labels)
    manifest["spec"]["suspend"] = True  # no pods: the Job controller stays quiet
    return manifest


async def create_job(api: client.ApiClient, ns: str, name: str, **labels: str) -> RawObject:
    batch = client.BatchV1Api(api)
    manifest = suspended_job(name, **labels)
    return await raw(batch.create_namespaced_job(ns, manifest, _preload_content=False))


async def patch_job(api: client.ApiClient, ns: str, name: str, **labels: str) -> RawObject:
    batch = client.BatchV1Api(api)
    body = {"metadata": {"labels": labels}}
    return await raw(
        batch.patch_namespaced_job(
            name, ns, body, _content_type=MERGE_PATCH, _preload_content=False
        )
    )


async def delete_job(api: client.ApiClient, ns: str, name: str) -> None:
    batch = client.BatchV1Api(api)
    await raw(
        batch.delete_namespaced_job(
            name, ns, propagation_policy="Background", _preload_content=False
        )
    )


def rv(obj: RawObject) -> int:
    return int(obj["metadata"]["resourceVersion"])


def uid(obj: RawObject) -> str:
    uid_: str = obj["metadata"]["uid"]
    return uid_


async def pull(stream: AsyncIterator[Item], within: float = 30) -> Item:
    return await asyncio.wait_for(anext(stream), within)


async def pull_until_synced(stream: AsyncIterator[Item], within: float = 30) -> list[Item]:
    items = [await pull(stream, within)]
    while not isinstance(items[-1], Synced):
        items.append(await pull(stream, within))
    return items


# -- 1. list, then watch -------------------------------------------------------------------


async def test_list_then_watch_sees_each_change_once_in_order(
    admin_api: client.ApiClient, namespace: str
) -> None:
    # Given a Job that exists before the watch starts
    before = await create_job(admin_api, namespace, "before")
    metrics = Metrics()
    w = watcher(admin_api, namespace, metrics=metrics)

    async with Recorder(w) as rec:
        # Then the list yields it as ADDED, complete with kind and apiVersion, then Synced
        await eventually(check(lambda: rec.synced), within=15, what="first Synced")
        assert rec.synced[0].uids == {uid(before)}
        listed = rec.items[0]
        assert isinstance(listed, WatchEvent) and listed.type == "ADDED"
        assert (listed.obj["kind"], listed.obj["apiVersion"]) == ("Job", "batch/v1")

        # When a Job is created, patched and deleted
        created = await create_job(admin_api, namespace, "changes")
        patched = await patch_job(admin_api, namespace, "changes", step="patched")
        await delete_job(admin_api, namespace, "changes")

        # Then the watch yields ADDED, our MODIFIED and DELETED, each once, in order
        def deleted() -> bool:
            return any(e.type == "DELETED" for e in rec.of("changes"))

        await eventually(check(deleted), within=15, what="DELETED")

    seen = rec.of("changes")
    assert seen[0].type == "ADDED" and rv(seen[0].obj) == rv(created)
    assert [e.type for e in seen].count("ADDED") == 1
    assert [e.type for e in seen].count("DELETED") == 1 and seen[-1].type == "DELETED"
    assert [rv(e.obj) for e in seen if e.type == "MODIFIED"].count(rv(patched)) == 1
    watched = [rv(e.obj) for e in rec.events[1:]]
    assert watched == sorted(set(watched)), "watch events repeated or out of order"
    assert len(rec.synced) == 1
    assert sample(metrics, "watch_events_total", resource="jobs", type="DELETED") == 1
    assert sample(metrics, "watch_events_total", resource="jobs", type="LISTED") == 1
    assert sample(metrics, "watch_last_event_timestamp_seconds", resource="jobs") > 0
    # The stream is over: its response is closed, the gauge no longer claims a running watch
    assert connections_in_use(admin_api) == 0
    assert sample(metrics, "watch_synced", resource="jobs") == 0


# -- 2. bookmarks --------------------------------------------------------------------------


async def test_bookmark_advances_resource_version_without_yielding(
    admin_api: client.ApiClient, namespace: str
) -> None:
    # Given a watch that matches no Job, with a 3 s server timeout: the apiserver's watch
    # cache sends a bookmark 2 s before that deadline once Jobs changed after the watch's rv
    log, metrics = LogLines(), Metrics()
    w = watcher(
        admin_api,
        namespace,
        metrics=metrics,
        logger=log.logger,
        resource=dataclasses.replace(JOBS, label_selector="kube-dlq.test/never=present"),
        settings=KubernetesSettings(watch_timeout_s=3),
    )
    async with Recorder(w) as rec:
        await eventually(check(lambda: rec.synced), within=15, what="first Synced")
        listed_rv = int(rec.synced[0].resource_version)

        # When a Job this watch does not match changes
        other = await create_job(admin_api, namespace, "unmatched")

        # Then a BOOKMARK moves the watch's resourceVersion past it, and yields nothing
        def advanced() -> bool:
            return int(w.resource_version or 0) >= rv(other)

        await eventually(check(advanced), within=15, what="bookmark rv")
        assert sample(metrics, "watch_events_total", resource="jobs", type="BOOKMARK") >= 1
        assert rec.events == [], "a bookmark or a filtered object was yielded"
        bookmark_rv = w.resource_version
        starts_before = len(log.named("watch_started"))

        # And the next stream (the server ended the last one) resumes from the bookmark's rv,
        # or from a later bookmark's (the Job controller keeps updating the unmatched Job)
        def resumed_from_bookmark() -> bool:
            later = log.named("watch_started")[starts_before:]
            return any(int(line["resource_version"]) >= int(bookmark_rv or 0) for line in later)

        await eventually(
            check(resumed_from_bookmark),
            within=15,
            what="a watch started from the bookmark's resourceVersion (or later)",
        )
    assert int(bookmark_rv or 0) > listed_rv
    assert sample(metrics, "watch_restarts_total", resource="jobs", reason="closed") >= 1
    assert len(rec.synced) == 1, "a bookmark must never cause a relist"


# -- 3. the server ends watches ------------------------------------------------------------


async def test_server_closed_watches_resume_without_loss_or_repeat(
    unruly_api: client.ApiClient, unruly_ns: str
) -> None:
    # Given a watch on an apiserver that ends every watch after 3-6 s (no timeoutSeconds
    # sent, so --min-request-timeout applies)
    metrics = Metrics()
    w = watcher(
        unruly_api, unruly_ns, metrics=metrics, settings=KubernetesSettings(watch_timeout_s=None)
    )
    expected: dict[int, tuple[str, str]] = {}  # rv -> (type, name) of every write we made
    deleted: list[str] = []

    async with Recorder(w) as rec:
        await eventually(check(lambda: rec.synced), within=15, what="first Synced")

        # When Jobs are created, patched and deleted across at least 3 server-side closes
        i = 0
        while sample(metrics, "watch_restarts_total", resource="jobs", reason="closed") < 3:
            assert i < 200, "the apiserver did not close the watch 3 times"
            created = await create_job(unruly_api, unruly_ns, f"j{i}")
            expected[rv(created)] = ("ADDED", f"j{i}")
            if i >= 1:
                patched = await patch_job(unruly_api, unruly_ns, f"j{i - 1}", n=str(i))
                expected[rv(patched)] = ("MODIFIED", f"j{i - 1}")
            if i >= 2:
                await delete_job(unruly_api, unruly_ns, f"j{i - 2}")
                deleted.append(f"j{i - 2}")
            i += 1
            await asyncio.sleep(0.3)  # pacing the writes, not a wait for an outcome
        last = await create_job(unruly_api, unruly_ns, "last")
        expected[rv(last)] = ("ADDED", "last")

        await eventually(check(lambda: rec.of("last")), within=20, what="the last write")

    # Then every write was seen exactly once, in order, and nothing was relisted
    seen = [(rv(e.obj), e.type, e.obj["metadata"]["name"]) for e in rec.events]
    rvs = [r for r, _, _ in seen]
    assert rvs == sorted(set(rvs)), "watch events repeated or out of order"
    by_rv = {r: (t, n) for r, t, n in seen}
    missing = {r: write for r, write in expected.items() if by_rv.get(r) != write}
    assert not missing, f"writes not seen as such: {missing}"
    assert sorted(n for _, t, n in seen if t == "DELETED") == sorted(deleted)
    assert len(rec.synced) == 1
    assert sample(metrics, "watch_restarts_total", resource="jobs", reason="expired") == 0


# -- 4. 410 Gone -> relist -----------------------------------------------------------------


async def test_expired_resource_version_relists_and_synced_drops_deleted(
    unruly: LocalCluster, unruly_api: client.ApiClient, unruly_ns: str
) -> None:
    api, ns = unruly_api, unruly_ns
    jobs = {name: await create_job(api, ns, name) for name in ("a", "b", "c")}
    metrics, log = Metrics(), LogLines()
    settings = KubernetesSettings(watch_timeout_s=None, list_page_size=2)  # lists take 2 pages
    w = watcher(api, ns, metrics=metrics, logger=log.logger, settings=settings)
    async with contextlib.aclosing(w.stream()) as stream:
        first = await pull_until_synced(stream)
        assert {e.obj["metadata"]["name"] for e in first if isinstance(e, WatchEvent)} == set(jobs)
        jobs["e"] = await create_job(api, ns, "e")
        # (the Job controller's status updates of a, b, c may come first)
        added = await pull(stream)
        while not (isinstance(added, WatchEvent) and added.obj["metadata"]["name"] == "e"):
            added = await pull(stream)
        assert added.type == "ADDED" and rv(added.obj) == rv(jobs["e"])

        # Given the consumer pauses with its watch at e's resourceVersion, while the apiserver
        # restarts after one more write, so its new watch cache begins after that rv ...
        bump = {"metadata": {"name": "bump"}}
        core = client.CoreV1Api(api)
        await raw(core.create_namespaced_config_map(ns, bump, _preload_content=False))
        argv = await asyncio.to_thread(stop_component, unruly, "kube-apiserver")
        await asyncio.to_thread(start_component, unruly, "kube-apiserver", argv)
        # ... and Jobs change while nobody watches
        await delete_job(api, ns, "b")
        jobs["c"] = await patch_job(api, ns, "c", changed="yes")
        jobs["d"] = await create_job(api, ns, "d")

        # When the consumer resumes
        second = await pull_until_synced(stream)

    assert connections_in_use(api) == 0, "closing the stream must close its response"
    # Then the stale rv met a 410 and the watch relisted: every Job as ADDED, then Synced
    assert sample(metrics, "watch_restarts_total", resource="jobs", reason="expired") >= 1
    synced = second[-1]
    assert isinstance(synced, Synced)
    assert synced.uids == {uid(jobs[n]) for n in ("a", "c", "d", "e")}
    assert uid(jobs["b"]) not in synced.uids, "the Job deleted in the gap must be dropped"
    changes = [e for e in second if isinstance(e, WatchEvent)]
    relisted = {e.obj["metadata"]["name"]: e for e in changes if e.type == "ADDED"}
    assert set(relisted) == {"a", "c", "d", "e"}
    assert rv(relisted["c"].obj) >= rv(jobs["c"]), "the relist must show the change in the gap"
    # Before the relist, at most changes already on the wire before the restart (the Job
    # controller marking e suspended); never b's deletion
    assert not [e for e in changes if e.type == "DELETED"]
    # Both lists were paginated (limit/continue) and still complete
    assert [line["pages"] for line in log.named("watch_listed")] == [2, 2]


# -- 5. the apiserver crashes --------------------------------------------------------------


async def test_apiserver_crash_and_restart_recovers_by_itself(
    unruly: LocalCluster, unruly_api: client.ApiClient, unruly_ns: str
) -> None:
    metrics, log = Metrics(), LogLines()
    settings = KubernetesSettings(watch_timeout_s=None, watch_backoff_cap_s=4)
    w = watcher(unruly_api, unruly_ns, metrics=metrics, logger=log.logger, settings=settings)
    await create_job(unruly_api, unruly_ns, "before")
    async with Recorder(w) as rec:
        await eventually(check(lambda: rec.synced), within=15, what="first Synced")

        # When the apiserver is killed
        argv = await asyncio.to_thread(stop_component, unruly, "kube-apiserver")
        try:
            # Then the watch retries with a growing backoff; it is not synced, nor crashed
            def failing() -> bool:
                return len(log.named("watch_restarted", reason="error")) >= 3

            await eventually(check(failing), within=15, what="3 failed reconnects")
            assert sample(metrics, "watch_synced", resource="jobs") == 0
            assert not rec.task.done()
            lines = log.named("watch_restarted", reason="error")[:3]
            assert [line["failures"] for line in lines] == [1, 2, 3]
            low = [settings.watch_backoff_base_s * 2 ** (n - 1) / 2 for n in (1, 2, 3)]
            assert all(line["delay_s"] >= lo for line, lo in zip(lines, low, strict=True))
        finally:
            # And when it is back
            await asyncio.to_thread(start_component, unruly, "kube-apiserver", argv)

        # Then the watch recovers on its own and sees new changes
        after = await create_job(unruly_api, unruly_ns, "after")
        await eventually(check(lambda: rec.of("after")), within=30, what="recovery")
        assert rv(rec.of("after")[0].obj) >= rv(after)
        assert sample(metrics, "watch_synced", resource="jobs") == 1
        assert sample(metrics, "watch_restarts_total", resource="jobs", reason="error") >= 3
    assert not log.named("watch_failed_unexpectedly")
    assert connections_in_use(unruly_api) == 0


# -- 5b. a silent connection --------------------------------------------------------------


async def test_silent_connection_times_out_and_reconnects(
    unruly: LocalCluster, unruly_api: client.ApiClient, unruly_ns: str
) -> None:
    # Given a watch with a 2 s read timeout
    metrics = Metrics()
    settings = KubernetesSettings(
        watch_timeout_s=None,
        watch_inactivity_timeout_s=2,
        connect_timeout_s=1,
        watch_backoff_cap_s=2,
    )
    w = watcher(unruly_api, unruly_ns, metrics=metrics, settings=settings)
    async with Recorder(w) as rec:
        await eventually(check(lambda: rec.synced), within=15, what="first Synced")

        # When the apiserver goes silent with the connection open (SIGSTOP: no FIN, no RST)
        with frozen_component(unruly, "kube-apiserver"):
            before = sample(metrics, "watch_restarts_total", resource="jobs", reason="timeout")

            # Then the stream and the reconnects time out instead of hanging
            def timing_out() -> bool:
                now = sample(metrics, "watch_restarts_total", resource="jobs", reason="timeout")
                return now >= before + 2

            await eventually(check(timing_out), within=20, what="2 timeouts while frozen")
            assert not rec.task.done()
            # And the dead connections are gone now, not after a 30 s polite TLS close
            assert lingering_tls_closes() == 0

        # And once it answers again, the watch carries on by itself
        after = await create_job(unruly_api, unruly_ns, "after-freeze")
        await eventually(check(lambda: rec.of("after-freeze")), within=20, what="recovery")
        assert rv(rec.of("after-freeze")[0].obj) >= rv(after)


# -- 6. RBAC denial ------------------------------------------------------------------------


async def test_forbidden_resource_is_reported_not_fatal_and_cancellable(
    daemon_api: client.ApiClient,
) -> None:
    # Given the daemon's identity, which may not list Secrets
    log, metrics = LogLines(), Metrics()
    w = watcher(daemon_api, None, resource=SECRETS, metrics=metrics, logger=log.logger)

    async with Recorder(w) as rec:
        # Then each 403 is counted and logged as an error, and retried with a growing backoff
        # (soon at first: an apiserver that just restarted answers 403 for a few seconds)
        await eventually(
            check(lambda: len(log.named("watch_restarted", reason="forbidden")) >= 3),
            within=15,
            what="three forbidden restarts",
        )
        lines = log.named("watch_restarted", reason="forbidden")
        assert all(line["level"] == "error" for line in lines)
        assert lines[0]["delay_s"] < 2.0
        assert [line["failures"] for line in lines[:3]] == [1, 2, 3]
        assert "403" in lines[0]["detail"]
        assert sample(metrics, "watch_restarts_total", resource="secrets", reason="forbidden") >= 3
        assert not rec.task.done(), "a 403 must not end the watch"

        # When the consumer's task is cancelled during a backoff
        rec.task.cancel()
        done, _ = await asyncio.wait([rec.task], timeout=2)

    # Then it ends at once, cancelled, with nothing left open
    assert done and rec.task.cancelled()
    assert rec.items == []
    assert connections_in_use(daemon_api) == 0


async def test_bad_token_is_unauthorized_and_retried_up_to_the_max_backoff(
    cluster: ClusterState,
) -> None:
    conf = client.Configuration(host=cluster.api_url)
    conf.ssl_ca_cert = cluster.ca_file
    conf.api_key = {"BearerToken": "Bearer not-a-token"}
    log = LogLines()
    async with client.ApiClient(conf) as api:
        w = watcher(
            api, None, logger=log.logger, settings=KubernetesSettings(watch_backoff_cap_s=7)
        )
        async with Recorder(w):
            await eventually(
                check(lambda: len(log.named("watch_restarted", reason="unauthorized")) >= 5),
                within=30,
                what="five unauthorized restarts",
            )
    lines = log.named("watch_restarted", reason="unauthorized")
    assert all(line["level"] == "error" for line in lines)
    delays = [line["delay_s"] for line in lines]
    assert delays[0] < 2.0 and max(delays) <= 7 and delays[4] > delays[0]
