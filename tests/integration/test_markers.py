"""Outcome markers against a real redis-server: kept while the Job may be in the API, forgotten
once a complete list of Jobs shows it gone (docs/exactly-once.md).

Before, every marker expired ``redis.outcome_ttl_s`` (30 days) after it was written, and a Job
still Failed in the API was then dead-lettered (or retried) a second time. Now a marker has no
TTL; ``forget_absent`` sets one (the same setting) only on markers of Jobs a list did not show,
in the caller's scope, without a pending retry. The last test runs `kube-dlq sweep` (its
`sweep` function) over a scripted Kubernetes API and this Redis, twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis

from devtools.devcluster.redis_server import RedisServer
from tests.integration.conftest import CLUSTER, PREFIX, make_redis, make_store
from tests.support import objects
from watcher.adapters.kube import watch
from watcher.adapters.redis import store as store_module
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.store import RedisStore
from watcher.app.config import parse_config
from watcher.app.sweep import sweep
from watcher.core.model import (
    Action,
    DeadLetter,
    FailureClass,
    ForgetResult,
    JobRef,
    RetryTicket,
)
from watcher.kit.metrics import Metrics

pytestmark = pytest.mark.redis

T0 = 1_700_000_000.0


def letter(uid: str, namespace: str = "ns") -> DeadLetter:
    return DeadLetter(
        queue="batch",
        job=JobRef(namespace=namespace, name=f"job-{uid}", uid=uid),
        failure_class=FailureClass.APP_ERROR,
        reason="exit code 2",
        attempts=1,
        failed_at=T0,
        cluster="it",
    )


def ticket(uid: str, namespace: str = "ns") -> RetryTicket:
    return RetryTicket(
        job=JobRef(namespace=namespace, name=f"job-{uid}", uid=uid),
        attempt=2,
        due_at=T0,
        failure_class=FailureClass.NODE_LOST,
        reason="node lost",
        manifest={"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"job-{uid}"}},
    )


async def indexed(redis: Redis, keys: Keys) -> list[str]:
    return [m.decode() for m in await redis.zrange(keys.outcome_index, 0, -1)]


async def stream_len(redis: Redis, keys: Keys) -> int:
    return int(await redis.xlen(keys.dlq("batch")))


# --- kept while the Job may be in the API -----------------------------------------------------


async def test_a_replay_long_after_what_was_the_marker_ttl_writes_nothing(
    redis: Redis, keys: Keys
) -> None:
    # Given a store with a 50 ms marker TTL (the old code set it on every marker it wrote)
    store = make_store(redis, outcome_ttl_s=0.05)

    # When a dead letter and a retry are written, and replayed well after 50 ms
    assert (await store.dead_letter(letter("dl"))).written
    assert (await store.schedule_retry(ticket("rt"))).written
    await asyncio.sleep(0.2)
    replays = [await store.dead_letter(letter("dl")), await store.schedule_retry(ticket("rt"))]

    # Then neither marker had a TTL, the replays wrote nothing and name the first outcomes
    assert [await redis.ttl(keys.outcome(uid)) for uid in ("dl", "rt")] == [-1, -1]
    assert [(r.written, r.action) for r in replays] == [
        (False, Action.DEAD_LETTER),
        (False, Action.RETRY),
    ]
    assert await stream_len(redis, keys) == 1
    assert await redis.hlen(keys.retry_tickets) == 1


@pytest.mark.parametrize("kind", ["dead_letter", "retry"])
async def test_a_marker_written_with_a_ttl_by_the_old_code_is_kept_for_good_when_seen(
    redis: Redis, keys: Keys, kind: str
) -> None:
    # Given a marker as the old scripts wrote it: expiring (here in an hour), not indexed
    store = make_store(redis)
    old = b"dead_letter:batch/1-0" if kind == "dead_letter" else b"retry:legacy"
    await redis.set(keys.outcome("legacy"), old, px=3_600_000)

    # When its Job is seen again (a relist, the sweep)
    if kind == "dead_letter":
        result = await store.dead_letter(letter("legacy"))
    else:
        result = await store.schedule_retry(ticket("legacy"))

    # Then nothing is written, the marker is kept as it was but without a TTL, and indexed
    assert result.already_handled
    assert await redis.get(keys.outcome("legacy")) == old
    assert await redis.ttl(keys.outcome("legacy")) == -1
    assert await indexed(redis, keys) == ["ns/legacy"]
    assert await stream_len(redis, keys) == 0
    assert await redis.hlen(keys.retry_tickets) == 0


# --- forgotten once a complete list shows the Job gone ----------------------------------------


async def test_forget_absent_forgets_exactly_the_absent_markers_in_scope_without_a_retry(
    redis: Redis, keys: Keys
) -> None:
    # Given markers of Jobs in namespaces "a" and "z", one with a retry still pending, one whose
    # retry was fired (ticket acked), written before a list's mark; and one written after it
    store = make_store(redis, outcome_ttl_s=3600)
    await store.dead_letter(letter("listed", "a"))
    await store.dead_letter(letter("gone", "a"))
    await store.dead_letter(letter("gone-elsewhere", "z"))
    await store.schedule_retry(ticket("retry-pending", "a"))
    await store.schedule_retry(ticket("retry-fired", "a"))
    assert (await store.settle_created("retry-fired", claim=0, job=None)).status.value == "begun"
    mark = await store.outcome_watermark()
    await store.dead_letter(letter("written-during-the-list", "a"))

    # When a complete list that showed only "listed" is judged in scope ["a"]
    result = await store.forget_absent({"listed"}, written_up_to=mark, namespaces={"a"})

    # Then exactly the two absent in-scope markers without a pending retry are forgotten:
    # out of the index, expiring in outcome_ttl_s; every other marker is indexed, with no TTL
    assert result == ForgetResult(forgotten=2, pending_retry=1, out_of_scope=1)
    for uid in ("gone", "retry-fired"):
        assert 3_590 < await redis.ttl(keys.outcome(uid)) <= 3_600
    kept = ["listed", "gone-elsewhere", "retry-pending", "written-during-the-list"]
    for uid in kept:
        assert await redis.ttl(keys.outcome(uid)) == -1
    assert sorted(await indexed(redis, keys)) == sorted(
        ["a/listed", "z/gone-elsewhere", "a/retry-pending", "a/written-during-the-list"]
    )

    # And a second pass over the same list forgets nothing more (idempotent)
    again = await store.forget_absent({"listed"}, written_up_to=mark, namespaces={"a"})
    assert again == ForgetResult(forgotten=0, pending_retry=1, out_of_scope=1)

    # And a pass of any scope (None: every namespace) forgets the other namespace's too
    wide = await store.forget_absent({"listed"}, written_up_to=mark, namespaces=None)
    assert wide == ForgetResult(forgotten=1, pending_retry=1)


async def test_a_forgotten_marker_still_blocks_a_late_write_until_it_expires(
    redis: Redis, keys: Keys
) -> None:
    # Given a dead letter whose Job a list showed gone, with forgotten markers expiring in 300 ms
    store = make_store(redis, outcome_ttl_s=0.3)
    await store.dead_letter(letter("late"))
    mark = await store.outcome_watermark()
    assert (await store.forget_absent(set(), written_up_to=mark, namespaces=None)).forgotten == 1

    # When a writer that still held the failure (a queued write) writes it before the expiry
    held = await store.dead_letter(letter("late"))

    # Then nothing is written; the marker is kept for good again, and indexed, so the next
    # list judges it again
    assert held.already_handled
    assert await redis.ttl(keys.outcome("late")) == -1
    assert await indexed(redis, keys) == ["ns/late"]
    mark = await store.outcome_watermark()
    assert (await store.forget_absent(set(), written_up_to=mark, namespaces=None)).forgotten == 1

    # And once the marker has expired, writing that uid again writes: fine, because no list
    # shows the Job any more (it is gone from the API, and uids are never reused), so nothing
    # but a writer that held it this long can still ask
    await asyncio.sleep(0.5)
    assert await redis.exists(keys.outcome("late")) == 0
    assert (await store.dead_letter(letter("late"))).written
    assert await stream_len(redis, keys) == 2


async def test_forgetting_goes_in_batches_and_concurrent_passes_forget_each_marker_once(
    redis: Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 100 markers, every third of whose Jobs is still listed, read 7 per batch
    monkeypatch.setattr(store_module, "FORGET_BATCH", 7)
    store = make_store(redis)
    for i in range(100):
        await store.dead_letter(letter(f"m{i}"))
    present = {f"m{i}" for i in range(0, 100, 3)}
    mark = await store.outcome_watermark()

    # When two processes judge the same list at once
    results = await asyncio.gather(
        store.forget_absent(present, written_up_to=mark, namespaces=None),
        make_store(redis).forget_absent(present, written_up_to=mark, namespaces=None),
    )

    # Then every absent marker is forgotten, once between them, and the listed ones kept
    assert sum(r.forgotten for r in results) == 100 - len(present)
    assert sorted(await indexed(redis, keys)) == sorted(f"ns/{uid}" for uid in present)


async def test_an_old_mark_never_forgets_markers_written_after_it(redis: Redis, keys: Keys) -> None:
    # Given a marker forgotten and written again (its Job came back in a queued write) after a
    # mark was read
    store = make_store(redis, outcome_ttl_s=0.05)
    await store.dead_letter(letter("again"))
    mark = await store.outcome_watermark()
    await store.forget_absent(set(), written_up_to=mark, namespaces=None)
    await asyncio.sleep(0.2)
    assert (await store.dead_letter(letter("again"))).written

    # When a pass judges with that older mark
    result = await store.forget_absent(set(), written_up_to=mark, namespaces=None)

    # Then the new marker is not forgotten
    assert result == ForgetResult()
    assert await redis.ttl(keys.outcome("again")) == -1


async def test_index_members_the_scripts_would_not_write_are_not_fatal(
    redis: Redis, keys: Keys
) -> None:
    # Given a marker of a Job without a namespace (a malformed object), and index members
    # that no script writes (one without a uid, one without a slash)
    store = make_store(redis)
    await store.dead_letter(letter("no-namespace", namespace=""))
    await redis.zadd(keys.outcome_index, {"ns/": 0, "no-slash": 0})
    mark = await store.outcome_watermark()

    # When a pass in scope ["ns"] and one of any scope run
    narrow = await store.forget_absent(set(), written_up_to=mark, namespaces={"ns"})
    wide = await store.forget_absent(set(), written_up_to=mark, namespaces=None)

    # Then neither raises; the namespace-less marker is out of a named scope and forgotten by
    # a pass of any scope; the member without a uid is left alone
    assert narrow == ForgetResult(out_of_scope=2)
    assert wide == ForgetResult(forgotten=2)
    assert await redis.ttl(keys.outcome("no-namespace")) > 0
    assert await indexed(redis, keys) == ["ns/"]


# --- the sweep --------------------------------------------------------------------------------


class ScriptedKube:
    """The one KubeClient call `sweep` makes: list_all, answered from `lists` by path."""

    def __init__(self) -> None:
        self.lists: dict[str, list[dict[str, Any]]] = {}

    async def list_all(
        self, path: str, *, what: str, query: Sequence[tuple[str, str]] = ()
    ) -> list[dict[str, Any]]:
        return [dict(item) for item in self.lists.get(path, [])]


async def run_sweep(
    kube: ScriptedKube,
    store: RedisStore,
    progress: Callable[[str], None] = lambda _: None,
    **doc: Any,
) -> Any:
    settings = parse_config({"cluster_name": CLUSTER, "redis": {"key_prefix": PREFIX}, **doc})
    return await sweep(
        settings,
        kube=kube,  # type: ignore[arg-type]
        store=store,
        metrics=Metrics(),
        logger=structlog.get_logger(),
        progress=progress,
    )


def failed_job(name: str, uid: str) -> dict[str, Any]:
    job = objects.raw_job(name=name, uid=uid, failed_reason="BackoffLimitExceeded")
    job["metadata"]["annotations"] = {}
    return job


def failed_pod(job_uid: str) -> dict[str, Any]:
    pod = objects.raw_pod(containers=[objects.terminated(exit_code=2)])
    pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] = job_uid
    pod["metadata"]["uid"] = f"pod-{job_uid}"
    return pod


@pytest.mark.parametrize(
    ("scope", "forgotten"),
    [({}, 1), ({"namespaces": [objects.NAMESPACE]}, 1), ({"namespaces": ["other"]}, 0)],
    ids=["every namespace", "its namespace", "another namespace"],
)
async def test_sweep_forgets_markers_of_jobs_gone_since_its_last_run_in_its_scope(
    redis: Redis, keys: Keys, scope: dict[str, Any], forgotten: int
) -> None:
    # Given a sweep that dead-lettered two failed Jobs (any scope writes: this is about forgetting)
    store = make_store(redis)
    kube = ScriptedKube()
    jobs = [failed_job("stays", "uid-stays"), failed_job("goes", "uid-goes")]
    kube.lists[watch.JOBS.path] = jobs
    kube.lists[watch.JOB_PODS.path] = [failed_pod("uid-stays"), failed_pod("uid-goes")]
    first = await run_sweep(kube, store)
    assert (first.written, first.markers_forgotten) == (2, 0)

    # When one of the Jobs is deleted and the sweep runs again, with `scope`
    kube.lists[watch.JOBS.path] = jobs[:1]
    second = await run_sweep(kube, store, scope=scope)

    # Then the deleted Job's marker is forgotten if its namespace is in scope; the other Job,
    # still Failed in the API, is not written again and keeps its marker for good
    assert (second.written, second.markers_forgotten) == (0, forgotten)
    assert (await redis.ttl(keys.outcome("uid-goes")) > 0) == bool(forgotten)
    assert await redis.ttl(keys.outcome("uid-stays")) == -1
    assert await stream_len_any(redis, keys) == 2


async def stream_len_any(redis: Redis, keys: Keys) -> int:
    queues = [q.decode() for q in await redis.smembers(keys.queues)]
    return sum([int(await redis.xlen(keys.dlq(q))) for q in queues])


async def test_sweep_with_a_namespace_selector_writes_only_in_the_matched_namespaces(
    redis: Redis, keys: Keys
) -> None:
    # Given a failed Job in a namespace the selector matches and one in a namespace it does not
    store = make_store(redis)
    kube = ScriptedKube()
    inside = failed_job("inside", "uid-inside")
    outside = failed_job("outside", "uid-outside")
    outside["metadata"]["namespace"] = "not-selected"
    kube.lists[watch.JOBS.path] = [inside, outside]
    kube.lists[watch.JOB_PODS.path] = [failed_pod("uid-inside"), failed_pod("uid-outside")]
    kube.lists["/api/v1/namespaces"] = [{"metadata": {"name": objects.NAMESPACE}}]

    # When the sweep runs with scope.namespace_label_selector
    result = await run_sweep(kube, store, scope={"namespace_label_selector": "team=data"})

    # Then only the Job in the matched namespace gets an outcome
    assert result.written == 1
    assert await redis.exists(keys.outcome("uid-inside")) == 1
    assert await redis.exists(keys.outcome("uid-outside")) == 0


@pytest.mark.parametrize("persistent", [False, True], ids=["no persistence", "appendonly yes"])
async def test_sweep_warns_when_what_it_writes_is_not_durable(
    private_server: Callable[..., RedisServer], persistent: bool
) -> None:
    # Given a Redis with or without persistence
    redis = make_redis(private_server(persistent=persistent).port)
    lines: list[str] = []
    try:
        # When the sweep runs against it
        await run_sweep(ScriptedKube(), make_store(redis), progress=lines.append)
    finally:
        await redis.aclose()

    # Then it prints a warning naming what is missing exactly when outcomes are not durable
    warnings = [line for line in lines if line.startswith("warning: redis is not durable")]
    assert len(warnings) == (0 if persistent else 1)
    assert persistent or "appendonly no" in warnings[0]
