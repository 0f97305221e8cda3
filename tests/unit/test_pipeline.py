"""The pipeline, from watch events to one written outcome per failed Job, against in-memory fakes.

Time is a FakeClock shared by the pipeline and its handler. The writer runs with its stop
event already set (`Rig.drain`): it writes what is due at the clock's time and returns, so a
test moves the clock instead of waiting. Where the writer must back off in its own loop, its
sleep (`sleep=`) is `FakeClock.sleep_or_stop`, which advances the clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import structlog

from tests.support.fakes import FakeClock, FakeJobs, FakePods, FakeStore
from tests.support.objects import (
    JOB_NAME,
    JOB_UID,
    NAMESPACE,
    T0_UNIX,
    Raw,
    at,
    raw_event,
    raw_job,
    raw_node,
    raw_pod,
    running,
    terminated,
    waiting,
)
from watcher.core.annotations import ANNOTATION_ENABLED
from watcher.core.errors import FencedWrite, KubeForbidden, KubeServerError, SinkError
from watcher.core.model import Action, DeadLetter, FailureClass, JobRef, WriteResult
from watcher.core.settings import LimitsSettings, ScopeSettings, Settings
from watcher.kit.metrics import Metrics
from watcher.service.handler import FailureHandler
from watcher.service.pipeline import Pipeline

DEFAULTS = Settings(cluster_name="unit")
SETTLE_S = DEFAULTS.pipeline.settle_s
EVIDENCE_WAIT_S = DEFAULTS.pipeline.evidence_wait_s
STUCK_AFTER_S = DEFAULTS.classify.stuck_pending_after_s
START = T0_UNIX + 120.0
"""Where the fake clock starts: two minutes after the test Jobs and their pods were created."""

REDIS_DOWN = SinkError("redis dead_letter failed: ConnectionError")


@dataclass
class Rig:
    """A Pipeline wired as `watcher.app.components.build` wires it, on fakes."""

    pipeline: Pipeline
    store: FakeStore
    jobs: FakeJobs
    clock: FakeClock
    metrics: Metrics
    pods: FakePods

    async def drain(self) -> None:
        """Let the writer write what is due at the clock's time, then return."""
        stop = asyncio.Event()
        stop.set()
        await self.pipeline.run_writer(stop)

    async def run_for(self, seconds: float, *, step: float = 0.5) -> None:
        """Drain now, then move the clock on `step` at a time, draining at every tick."""
        await self.drain()
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.advance(step)
            await self.drain()

    def uids_written(self) -> list[str]:
        return [letter.job.uid for letter in self.store.dead_letters] + [
            ticket.job.uid for ticket in self.store.tickets
        ]

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def build(*, store: FakeStore | None = None, ready: bool = True, **sections: Any) -> Rig:
    """The pipeline for the default Settings with `sections` replaced (scope=..., limits=...)."""
    settings = dataclasses.replace(DEFAULTS, **sections)
    clock = FakeClock(START)
    store = store if store is not None else FakeStore()
    jobs = FakeJobs()
    pods = FakePods()
    metrics = Metrics()
    logger = structlog.get_logger()
    handler = FailureHandler(
        store=store, jobs=jobs, policy=settings.retry, classify=settings.classify,
        cluster_name=settings.cluster_name, metrics=metrics, logger=logger, clock=clock,
        rng=random.Random(0),
    )  # fmt: skip
    pipeline = Pipeline(
        handler=handler, jobs=jobs, pods=pods, scope=settings.scope, classify=settings.classify,
        settings=settings.pipeline, limits=settings.limits, metrics=metrics, logger=logger,
        clock=clock, sleep=clock.sleep_or_stop,
    )  # fmt: skip
    if ready:
        pipeline.ready.set()  # every watch has listed
    return Rig(pipeline, store, jobs, clock, metrics, pods)


def failed_pod(name: str = JOB_NAME, uid: str = JOB_UID, *, exit_code: int = 2) -> Raw:
    """The failed pod of the Job `name`/`uid`: its container exited with `exit_code`."""
    return raw_pod(f"{name}-abcde", job_uid=uid, containers=[terminated(exit_code=exit_code)])


def fail(rig: Rig, name: str = JOB_NAME, uid: str = JOB_UID) -> None:
    """The watches deliver a failed pod (exit code 2) and then its Job, Failed."""
    rig.pipeline.on_pod("ADDED", failed_pod(name, uid))
    rig.pipeline.on_job("ADDED", raw_job(name=name, uid=uid))


async def until(condition: Callable[[], bool], *, within_s: float = 0.5) -> None:
    """Yield to the event loop until `condition()` holds (the writer task runs meanwhile)."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - the pipeline has no event for these states
            await asyncio.sleep(0)


# --- a failed Job, written once ----------------------------------------------------------------


async def test_failed_job_is_dead_lettered_once_with_its_failed_pods_evidence() -> None:
    # Given a Job in scope that failed, and its pod whose container exited with code 2
    rig = build()
    fail(rig)

    # When the settle time has passed and the writer has run (twice, as after a restart)
    rig.clock.advance(SETTLE_S)
    await rig.drain()
    await rig.drain()

    # Then exactly one dead letter is written, classified from the failed pod
    [letter] = rig.store.dead_letters
    assert letter.job == JobRef(NAMESPACE, JOB_NAME, JOB_UID)
    assert letter.failure_class is FailureClass.APP_ERROR
    assert letter.reason == "container main exited with code 2"
    assert [pod["name"] for pod in letter.report["pods"]] == [f"{JOB_NAME}-abcde"]
    assert letter.manifest["metadata"]["name"] == JOB_NAME
    assert rig.store.writes == 1
    assert (rig.pipeline.written, rig.pipeline.pending) == (1, 0)


async def test_failed_job_with_its_failed_pod_in_is_written_at_once() -> None:
    # Given a failed Job whose failed pod the pod watch has already delivered
    rig = build()
    fail(rig)

    # When the writer runs, no time having passed
    await rig.drain()

    # Then it is written at once: no settle time by default, nothing read from the API
    assert SETTLE_S == 0
    assert rig.uids_written() == [JOB_UID]
    assert rig.pods.reads == []


async def test_failed_job_is_not_written_before_a_configured_settle_s() -> None:
    # Given settle_s set to 2 s, a failed Job and its failed pod, just seen
    rig = build(pipeline=dataclasses.replace(DEFAULTS.pipeline, settle_s=2.0))
    fail(rig)

    # When the writer runs a moment before the settle time is over
    rig.clock.advance(1.9)
    await rig.drain()

    # Then nothing is written yet: it stays queued until the settle time is over
    assert rig.store.writes == 0
    assert rig.pipeline.pending == 1
    rig.clock.advance(0.1)
    await rig.drain()
    assert rig.uids_written() == [JOB_UID]


async def test_writer_writes_nothing_until_every_watch_has_listed() -> None:
    # Given a failed Job due for writing, while not every watch has done its first list
    rig = build(ready=False)
    fail(rig)
    rig.clock.advance(SETTLE_S)
    stop = asyncio.Event()
    writer = asyncio.create_task(rig.pipeline.run_writer(stop))
    for _ in range(20):
        await asyncio.sleep(0)
    assert rig.store.writes == 0

    # When the last watch has listed
    rig.pipeline.ready.set()

    # Then the failure is written
    await until(lambda: rig.pipeline.pending == 0)
    stop.set()
    await writer
    assert rig.uids_written() == [JOB_UID]


async def test_writer_stopped_before_every_watch_has_listed_writes_nothing() -> None:
    # Given a failed Job due for writing, while not every watch has done its first list
    rig = build(ready=False)
    fail(rig)
    rig.clock.advance(SETTLE_S)

    # When the daemon shuts down before the last watch has listed
    await rig.drain()

    # Then nothing is classified on partial evidence: the next start finds the Job again
    assert rig.store.writes == 0
    assert rig.pipeline.pending == 1


# --- replays -----------------------------------------------------------------------------------


REPLAYS = {
    "MODIFIED, remembered as handled": ("MODIFIED", 50_000),
    "ADDED (a relist), remembered as handled": ("ADDED", 50_000),
    "MODIFIED, forgotten since (handled_memory=1)": ("MODIFIED", 1),
    "ADDED (a relist), forgotten since (handled_memory=1)": ("ADDED", 1),
}


@pytest.mark.parametrize(("event_type", "memory"), REPLAYS.values(), ids=list(REPLAYS))
async def test_replayed_job_is_not_written_again(event_type: str, memory: int) -> None:
    # Given a failed Job whose dead letter is written, and another one written after it
    rig = build(limits=LimitsSettings(handled_memory=memory))
    fail(rig)
    rig.clock.advance(SETTLE_S)
    await rig.drain()
    fail(rig, "other", "uid-other")
    rig.clock.advance(SETTLE_S)
    await rig.drain()

    # When the first Job is delivered again, with its pod
    rig.pipeline.on_job(event_type, raw_job())
    rig.pipeline.on_pod(event_type, failed_pod())
    await rig.run_for(SETTLE_S + EVIDENCE_WAIT_S + 1)

    # Then it has still exactly one dead letter, and nothing is left queued
    assert sorted(rig.uids_written()) == sorted([JOB_UID, "uid-other"])
    assert rig.pipeline.pending == 0
    assert rig.pipeline.written == 2


async def test_replay_of_a_job_remembered_as_handled_costs_no_redis_write() -> None:
    # Given a failed Job whose dead letter is written
    rig = build()
    fail(rig)
    rig.clock.advance(SETTLE_S)
    await rig.drain()

    # When the Job is delivered again (a status update, a relist)
    rig.pipeline.on_job("MODIFIED", raw_job())
    rig.pipeline.on_job("ADDED", raw_job())
    await rig.run_for(SETTLE_S + EVIDENCE_WAIT_S + 1)

    # Then it is not queued, and Redis is not asked again
    assert rig.pipeline.pending == 0
    assert rig.store.writes == 1
    assert rig.pipeline.already_handled == 0


async def test_job_another_writer_handled_is_counted_already_handled_not_written() -> None:
    # Given a Redis where another replica (or an earlier run) already wrote this Job's outcome
    store = FakeStore()
    store.outcomes[JOB_UID] = WriteResult(True, Action.DEAD_LETTER, "default/1-0")
    rig = build(store=store)

    # When the Job, failed, reaches this pipeline
    fail(rig)
    rig.clock.advance(SETTLE_S)
    await rig.drain()

    # Then nothing new is written, and the Job counts as already handled
    assert rig.store.dead_letters == []
    assert (rig.pipeline.written, rig.pipeline.already_handled, rig.pipeline.pending) == (0, 1, 0)
    assert rig.sample("kube_dlq_duplicates_suppressed_total") == 1


# --- scope -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scoped:
    scope: ScopeSettings
    selected: frozenset[str] | None = None
    """Namespaces the namespace label selector matched (None: no selector)."""
    label: str | None = None
    """The Job's kube-dlq.io/enabled label, if any."""
    annotation: str | None = None
    """The Job's kube-dlq.io/enabled annotation, if any."""

    def job(self) -> Raw:
        raw = raw_job()
        if self.label is not None:
            raw["metadata"]["labels"][ANNOTATION_ENABLED] = self.label
        if self.annotation is not None:
            raw["metadata"]["annotations"][ANNOTATION_ENABLED] = self.annotation
        return raw


ALL = ScopeSettings()
OPT_IN = ScopeSettings(jobs="opt-in")
SELECTOR = ScopeSettings(namespace_label_selector="team=data")

OUT_OF_SCOPE = {
    "namespace not in scope.namespaces": Scoped(ScopeSettings(namespaces=("payments",))),
    "labelled kube-dlq.io/enabled=false": Scoped(ALL, label="false"),
    "annotated kube-dlq.io/enabled=False": Scoped(ALL, annotation="False"),
    "opt-in mode, no flag": Scoped(OPT_IN),
    "opt-in mode, labelled false": Scoped(OPT_IN, label="false"),
    "namespace not matched by the selector": Scoped(SELECTOR, selected=frozenset({"payments"})),
    "the selector matches no namespace": Scoped(SELECTOR, selected=frozenset()),
    "the selector's namespaces not listed yet": Scoped(SELECTOR, selected=None),
}  # fmt: skip

IN_SCOPE = {
    "every namespace, no flag": Scoped(ALL),
    "namespace listed in scope.namespaces": Scoped(ScopeSettings(namespaces=("x", NAMESPACE))),
    "labelled kube-dlq.io/enabled=true": Scoped(ALL, label="true"),
    "opt-in mode, labelled true": Scoped(OPT_IN, label="true"),
    "opt-in mode, annotated TRUE": Scoped(OPT_IN, annotation="TRUE"),
    "namespace matched by the selector": Scoped(SELECTOR, selected=frozenset({NAMESPACE})),
}


@pytest.mark.parametrize("case", OUT_OF_SCOPE.values(), ids=list(OUT_OF_SCOPE))
async def test_failed_job_out_of_scope_is_never_written(case: Scoped) -> None:
    # Given a pipeline with this scope
    rig = build(scope=case.scope)
    rig.pipeline.selected_namespaces = case.selected

    # When a Job outside it fails, with its failed pod, and time passes
    rig.pipeline.on_pod("ADDED", failed_pod())
    rig.pipeline.on_job("ADDED", case.job())
    rig.pipeline.on_job("MODIFIED", case.job())
    await rig.run_for(SETTLE_S + EVIDENCE_WAIT_S + 1)

    # Then it is never queued nor written
    assert rig.pipeline.pending == 0
    assert rig.store.writes == 0


@pytest.mark.parametrize("case", IN_SCOPE.values(), ids=list(IN_SCOPE))
async def test_failed_job_in_scope_is_written(case: Scoped) -> None:
    # Given a pipeline with this scope
    rig = build(scope=case.scope)
    rig.pipeline.selected_namespaces = case.selected

    # When a Job inside it fails, with its failed pod
    rig.pipeline.on_pod("ADDED", failed_pod())
    rig.pipeline.on_job("ADDED", case.job())
    await rig.run_for(SETTLE_S)

    # Then its outcome is written
    assert rig.uids_written() == [JOB_UID]


# --- Redis down and back-pressure --------------------------------------------------------------


async def test_write_failing_while_redis_is_down_is_retried_until_it_lands() -> None:
    # Given a failed Job due for writing, and Redis failing the next two writes
    rig = build()
    fail(rig)
    rig.clock.advance(SETTLE_S)
    rig.store.fail_next(REDIS_DOWN, REDIS_DOWN)

    # When the writer runs until the write lands
    stop = asyncio.Event()
    writer = asyncio.create_task(rig.pipeline.run_writer(stop))
    await until(lambda: rig.pipeline.pending == 0)
    stop.set()
    await writer

    # Then one dead letter is written on the third try, and nothing is left behind
    assert rig.uids_written() == [JOB_UID]
    assert rig.store.writes == 3
    assert rig.pipeline.pending == 0
    assert rig.sample("kube_dlq_pending_writes") == 0
    assert rig.sample("kube_dlq_redis_errors_total", operation="write") == 2
    # And the writer backed off between tries, longer after the second failure in a row
    # (compute_delay: 0.5 s doubling, equal jitter)
    first, second = rig.clock.sleeps
    assert 0.25 <= first <= 0.5
    assert 0.5 <= second <= 1.0


async def test_write_failing_at_shutdown_stays_queued_for_the_next_try() -> None:
    # Given a failed Job due for writing, and Redis failing the next write
    rig = build()
    fail(rig)
    rig.clock.advance(SETTLE_S)
    rig.store.fail_next(REDIS_DOWN)

    # When the writer drains at shutdown
    await rig.drain()

    # Then the failure is not lost: still queued, and written once Redis is back
    assert rig.store.dead_letters == []
    assert rig.pipeline.pending == 1
    await rig.run_for(1.0)
    assert rig.uids_written() == [JOB_UID]
    assert rig.pipeline.pending == 0


async def test_write_refused_as_fenced_stops_the_writer_and_keeps_the_failure() -> None:
    # Given a failed Job due for writing, and Redis refusing the write's stale term
    rig = build()
    fail(rig)
    rig.clock.advance(SETTLE_S)
    rig.store.fail_next(FencedWrite("dead_letter", term=3, fence=4))

    # When the writer runs (not at shutdown: this replica's term)
    stop = asyncio.Event()
    with pytest.raises(FencedWrite):
        await asyncio.wait_for(rig.pipeline.run_writer(stop), 1.0)

    # Then it stopped at once (one try, no backoff), wrote nothing, did not take the refusal
    # for a crash of the Job, and still holds the failure for whoever writes next
    assert rig.store.writes == 1 and rig.clock.sleeps == []
    assert rig.uids_written() == []
    assert rig.sample("kube_dlq_handling_errors_total", stage="writer") == 0
    assert rig.pipeline.pending == 1
    await rig.drain()
    assert rig.uids_written() == [JOB_UID]
    assert rig.store.dead_letters[0].failure_class is not FailureClass.UNKNOWN


async def test_wait_for_space_blocks_at_max_pending_writes_until_they_are_written() -> None:
    # Given a pipeline that holds at most two unwritten failures, with one queued
    rig = build(limits=LimitsSettings(max_pending_writes=2))
    fail(rig, "first", "uid-first")
    await asyncio.wait_for(rig.pipeline.wait_for_space(), 0.1)  # room for one more

    # When a second failure is queued
    fail(rig, "second", "uid-second")
    waiting_watch = asyncio.create_task(rig.pipeline.wait_for_space())
    for _ in range(10):
        await asyncio.sleep(0)

    # Then the watches wait, until the failures are written
    assert not waiting_watch.done()
    rig.clock.advance(SETTLE_S)
    await rig.drain()
    await asyncio.wait_for(waiting_watch, 0.1)
    assert sorted(rig.uids_written()) == ["uid-first", "uid-second"]


async def test_wait_for_space_keeps_blocking_while_redis_is_down() -> None:
    # Given a pipeline that holds at most one unwritten failure, and one queued
    rig = build(limits=LimitsSettings(max_pending_writes=1))
    fail(rig)
    rig.clock.advance(SETTLE_S)

    # When its write fails (Redis down)
    rig.store.fail_next(REDIS_DOWN)
    await rig.drain()

    # Then the watches stay paused: the failure is kept, not dropped to make room
    waiting_watch = asyncio.create_task(rig.pipeline.wait_for_space())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not waiting_watch.done()
    assert rig.pipeline.pending == 1
    await rig.run_for(1.0)
    await asyncio.wait_for(waiting_watch, 0.1)


# --- evidence wait -----------------------------------------------------------------------------

STALE_PENDING = raw_pod(f"{JOB_NAME}-abcde", phase="Pending", node=None, containers=[waiting()])
"""The Job's pod as a lagging pod watch left it: Pending, before it ran and failed."""

EVIDENCE = {
    # pod from the watch (s after the Job), pods the API has, written at (s), class, read
    "the watch delivers the failed pod 1 s late": (1.0, [], 1.0, "app_error", None),
    "the API has it": (None, [failed_pod()], EVIDENCE_WAIT_S, "app_error", "found"),
    "neither has a failed pod": (None, [], EVIDENCE_WAIT_S, "unknown", "missing"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("pod_at", "in_api", "written", "fclass", "read"), EVIDENCE.values(), ids=list(EVIDENCE)
)
async def test_failed_job_waits_for_its_failed_pod_then_reads_it_from_the_api(
    pod_at: float | None, in_api: list[Raw], written: float, fclass: str, read: str | None
) -> None:
    # Given a Job that failed before the pod watch delivered its failed pod
    rig = build()
    rig.pods.pods[JOB_UID] = in_api
    rig.pipeline.on_job("ADDED", raw_job())

    # When time passes, the writer running every half second, and the pod arrives (or not)
    written_at = None
    for tick in range(1, 4 * int(EVIDENCE_WAIT_S) + 6):
        rig.clock.advance(0.5)
        if pod_at is not None and tick * 0.5 == pod_at:
            rig.pipeline.on_pod("ADDED", failed_pod())
        await rig.drain()
        if rig.store.dead_letters:
            written_at = tick * 0.5
            break

    # Then it is classified when its pod arrives, or after evidence_wait_s with what a read of
    # its pods from the API found (once)
    assert written_at == written
    assert [letter.failure_class.value for letter in rig.store.dead_letters] == [fclass]
    assert rig.pods.reads == ([] if read is None else [(NAMESPACE, JOB_UID)])
    for result in ("found", "missing", "error"):
        expected = 1.0 if result == read else 0.0
        assert rig.sample("kube_dlq_failed_job_pod_reads_total", result=result) == expected


async def test_failed_pod_arriving_wakes_the_waiting_job_at_once() -> None:
    # Given a failed Job waiting for its failed pod, the writer running on its own
    rig = build()
    rig.pipeline.on_job("ADDED", raw_job())
    stop = asyncio.Event()
    writer = asyncio.create_task(rig.pipeline.run_writer(stop))
    await until(lambda: JOB_UID in rig.pipeline._awaiting_pods)

    # When the pod watch delivers the failed pod, no time passing
    rig.pipeline.on_pod("ADDED", failed_pod())

    # Then the Job is written at once, without waiting out evidence_wait_s
    await until(lambda: rig.pipeline.pending == 0)
    stop.set()
    await writer
    assert [d.failure_class for d in rig.store.dead_letters] == [FailureClass.APP_ERROR]


async def test_lagging_pod_watch_with_a_stale_pending_pod_does_not_decide_the_failure() -> None:
    # Given a Job Failed, while the pod watch (reconnecting) still has its pod Pending and the
    # API has that pod Failed with exit code 2
    rig = build()
    rig.pipeline.on_pod("ADDED", STALE_PENDING)
    rig.pods.pods[JOB_UID] = [failed_pod()]
    rig.pipeline.on_job("ADDED", raw_job())

    # When the evidence wait is over
    await rig.drain()
    assert rig.store.writes == 0
    rig.clock.advance(EVIDENCE_WAIT_S)
    await rig.drain()

    # Then the Job is classified from the API's pod, not the stale one
    [letter] = rig.store.dead_letters
    assert letter.failure_class is FailureClass.APP_ERROR
    assert letter.reason == "container main exited with code 2"


async def test_job_with_more_failures_than_pods_seen_waits_for_the_rest() -> None:
    # Given a Job that failed twice (backoffLimit 1), only its first failed pod seen yet
    rig = build()
    first = raw_pod(f"{JOB_NAME}-first", containers=[terminated(exit_code=2)])
    second = raw_pod(f"{JOB_NAME}-second", created=at(60), containers=[terminated(exit_code=3)])
    rig.pipeline.on_pod("ADDED", first)
    rig.pipeline.on_job("ADDED", raw_job(failed=2))
    await rig.drain()
    assert rig.store.writes == 0

    # When the second arrives
    rig.pipeline.on_pod("ADDED", second)
    await rig.drain()

    # Then the Job is written, the last failure speaking
    [letter] = rig.store.dead_letters
    assert letter.reason == "container main exited with code 3"


async def test_pod_read_that_fails_transiently_is_tried_again() -> None:
    # Given a failed Job whose pods the watch never delivers, and an apiserver that answers
    # the first read of them with a 503
    rig = build()
    rig.pods.pods[JOB_UID] = [failed_pod()]
    rig.pods.failures.append(KubeServerError("listing a failed Job's pods failed", status=503))
    rig.pipeline.on_job("ADDED", raw_job())

    # When the evidence wait is over and the writer has backed off once
    rig.clock.advance(EVIDENCE_WAIT_S)
    await rig.drain()
    assert rig.store.writes == 0
    await rig.run_for(5)

    # Then the second read finds the pod, and the Job is classified from it
    assert len(rig.pods.reads) == 2
    assert [d.failure_class for d in rig.store.dead_letters] == [FailureClass.APP_ERROR]


async def test_pod_read_refused_for_a_while_is_tried_again() -> None:
    # Given a failed Job whose pods the watch never delivers, and an apiserver that just
    # restarted: its authorizer refuses the first reads of them (403) for a few seconds
    rig = build()
    rig.pods.pods[JOB_UID] = [failed_pod()]
    refused = KubeForbidden("listing a failed Job's pods failed", status=403)
    rig.pods.failures.extend([refused, refused])
    rig.pipeline.on_job("ADDED", raw_job())

    # When time passes
    await rig.run_for(EVIDENCE_WAIT_S + 10)

    # Then the third read finds the pod, and the Job is classified from it
    assert len(rig.pods.reads) == 3
    assert [d.failure_class for d in rig.store.dead_letters] == [FailureClass.APP_ERROR]
    assert rig.sample("kube_dlq_failed_job_pod_reads_total", result="found") == 1


async def test_pod_read_refused_for_good_classifies_with_what_the_watch_delivered() -> None:
    # Given a failed Job whose pods the watch never delivers, and reads of them always refused
    rig = build()
    rig.pods.failures.extend([KubeForbidden("listing pods failed", status=403)] * 100)
    rig.pipeline.on_job("ADDED", raw_job())

    # When a minute and more has passed
    await rig.run_for(70)

    # Then it is classified with what there is, once, and the refusal counted
    assert [d.failure_class for d in rig.store.dead_letters] == [FailureClass.UNKNOWN]
    assert rig.sample("kube_dlq_failed_job_pod_reads_total", result="error") == 1
    assert 25 <= len(rig.pods.reads) <= 35  # every 2 s, not in a busy loop


# --- stuck Jobs --------------------------------------------------------------------------------


def stuck_job(uid: str = JOB_UID, image: str = "registry.invalid/report:1.0") -> Raw:
    """A Job still active (not Failed), its pod template using `image`."""
    raw = raw_job(uid=uid, failed_reason=None, failed=0)
    raw["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return raw


def images_of(manifest: Mapping[str, Any]) -> list[str]:
    """The container images of a Job manifest's pod template."""
    template = manifest.get("spec", {}).get("template", {})
    return [c.get("image", "") for c in template.get("spec", {}).get("containers", [])]


def stuck_rig() -> Rig:
    """A pipeline tracking a Job whose only pod has waited in ImagePullBackOff since T0."""
    rig = build()
    rig.pipeline.on_job("ADDED", stuck_job())
    rig.pipeline.on_pod("ADDED", raw_pod(phase="Pending", containers=[waiting()]))
    return rig


STUCK_CHECKS = {
    "pending 1 s short of stuck_pending_after_s": (STUCK_AFTER_S - 1, 0),
    "pending stuck_pending_after_s": (STUCK_AFTER_S, 1),
    "pending an hour": (3600.0, 1),
}


@pytest.mark.parametrize(("pending_s", "found"), STUCK_CHECKS.values(), ids=list(STUCK_CHECKS))
async def test_check_stuck_finds_a_job_pending_past_stuck_pending_after_s(
    pending_s: float, found: int
) -> None:
    # Given a Job whose pod cannot pull its image
    rig = stuck_rig()

    # When the stuck check runs after its pod was pending this long
    rig.clock.now = T0_UNIX + pending_s

    # Then the Job is found stuck (and queued) only past the dwell time
    assert rig.pipeline.check_stuck() == found
    assert rig.pipeline.pending == found


async def test_stuck_job_is_written_with_the_manifest_read_from_the_api() -> None:
    # Given a stuck Job, as the API holds it now
    rig = stuck_rig()
    in_api = stuck_job()
    in_api["metadata"]["annotations"]["example.com/read"] = "from-the-api"
    rig.jobs.put(in_api)

    # When the stuck check finds it and the writer runs
    rig.clock.now = T0_UNIX + STUCK_AFTER_S
    assert rig.pipeline.check_stuck() == 1
    await rig.drain()

    # Then one dead letter is written, classified from its pod, with the API's manifest
    [letter] = rig.store.dead_letters
    assert letter.failure_class is FailureClass.IMAGE_PULL
    assert letter.report["stuck_for_s"] == STUCK_AFTER_S
    assert letter.manifest["metadata"]["annotations"]["example.com/read"] == "from-the-api"


async def test_stuck_job_is_deleted_by_uid_once_written() -> None:
    # Given a stuck Job, in the API
    rig = stuck_rig()
    rig.jobs.put(stuck_job())

    # When the stuck check finds it and the writer runs
    rig.clock.now = T0_UNIX + STUCK_AFTER_S
    rig.pipeline.check_stuck()
    await rig.drain()

    # Then the Job is deleted, with its uid as precondition, and is not found stuck again
    assert rig.uids_written() == [JOB_UID]
    assert rig.jobs.deleted == [(NAMESPACE, JOB_NAME, JOB_UID)]
    assert rig.jobs.jobs == {}
    rig.clock.advance(60)
    assert rig.pipeline.check_stuck() == 0


async def test_stuck_job_gone_from_the_api_is_not_written() -> None:
    # Given a stuck Job that was deleted from the API before its DELETED event arrived
    rig = stuck_rig()

    # When the stuck check finds it and the writer runs
    rig.clock.now = T0_UNIX + STUCK_AFTER_S
    rig.pipeline.check_stuck()
    await rig.drain()

    # Then nothing is written or deleted, and nothing is left queued
    assert rig.store.writes == 0
    assert rig.jobs.deleted == []
    assert rig.pipeline.pending == 0


async def test_stuck_job_recreated_under_its_name_with_another_uid_is_not_deleted() -> None:
    # Given a stuck Job whose owner deleted it and created a new one of the same name
    rig = stuck_rig()
    recreated = stuck_job(uid="uid-recreated", image="registry.example/report:fixed")
    rig.jobs.put(recreated)

    # When the stuck check finds the old one and the writer runs
    rig.clock.now = T0_UNIX + STUCK_AFTER_S
    rig.pipeline.check_stuck()
    await rig.drain()

    # Then the new Job is left alone
    assert rig.jobs.deleted == []
    assert rig.jobs.jobs[(NAMESPACE, JOB_NAME)]["metadata"]["uid"] == "uid-recreated"


async def test_recreated_stuck_job_is_not_dead_lettered_with_the_new_jobs_manifest() -> None:
    # Given a stuck Job whose owner deleted it and created a fixed one of the same name
    rig = stuck_rig()
    rig.jobs.put(stuck_job(uid="uid-recreated", image="registry.example/report:fixed"))

    # When the stuck check finds the old one and the writer runs
    rig.clock.now = T0_UNIX + STUCK_AFTER_S
    rig.pipeline.check_stuck()
    await rig.drain()

    # Then no dead letter of the old Job carries the new Job's manifest (a redrive of it
    # would run the new Job a second time)
    images = [image for letter in rig.store.dead_letters for image in images_of(letter.manifest)]
    assert "registry.example/report:fixed" not in images


async def test_stuck_job_whose_delete_failed_once_counts_as_written_once() -> None:
    # Given a stuck Job in the API, whose first delete fails (apiserver overloaded)
    rig = stuck_rig()
    rig.jobs.put(stuck_job())
    rig.jobs.fail_next(KubeServerError("deleting Job failed", status=503), method="delete")

    # When the stuck check finds it and the writer runs until it is done
    rig.clock.now = T0_UNIX + STUCK_AFTER_S
    rig.pipeline.check_stuck()
    stop = asyncio.Event()
    writer = asyncio.create_task(rig.pipeline.run_writer(stop))
    await until(lambda: rig.pipeline.pending == 0)
    stop.set()
    await writer

    # Then it is deleted on the second try, and counted once: written, not also a duplicate
    assert rig.uids_written() == [JOB_UID]
    assert rig.jobs.deleted == [(NAMESPACE, JOB_NAME, JOB_UID)]
    assert (rig.pipeline.written, rig.pipeline.already_handled) == (1, 0)
    assert rig.sample("kube_dlq_duplicates_suppressed_total") == 0


# --- relists and standbys ----------------------------------------------------------------------

RELISTS = {
    "still there at the relist": (frozenset({JOB_UID}), 1),
    "deleted while not watching": (frozenset(), 0),
}


@pytest.mark.parametrize(("present", "found"), RELISTS.values(), ids=list(RELISTS))
async def test_relist_drops_state_of_jobs_deleted_while_not_watching(
    present: frozenset[str], found: int
) -> None:
    # Given a tracked Job whose pod cannot pull its image
    rig = stuck_rig()

    # When the Jobs are listed again (after a watch gap)
    rig.pipeline.on_jobs_synced(present)

    # Then a Job missing from the list is forgotten: never found stuck, no longer tracked
    rig.clock.now = T0_UNIX + STUCK_AFTER_S
    assert rig.sample("kube_dlq_tracked_jobs") == found
    assert rig.pipeline.check_stuck() == found


async def test_relist_keeps_queued_failures_not_yet_written() -> None:
    # Given a failed Job queued for writing, with its failed pod
    rig = build()
    fail(rig)

    # When the Jobs are listed again and it is gone (ttlSecondsAfterFinished deleted it)
    rig.pipeline.on_jobs_synced(frozenset())

    # Then it is still written, with the evidence and the manifest it had
    assert rig.pipeline.pending == 1
    rig.clock.advance(SETTLE_S)
    await rig.drain()
    [letter] = rig.store.dead_letters
    assert letter.failure_class is FailureClass.APP_ERROR
    assert letter.manifest["metadata"]["name"] == JOB_NAME


async def test_prune_handled_drops_queued_failures_another_replica_wrote() -> None:
    # Given a standby that queued two failed Jobs without writing them
    rig = build()
    fail(rig, "written", "uid-written")
    fail(rig, "not-yet", "uid-not-yet")
    assert rig.pipeline.pending == 2

    # When the leader has written the outcome of one of them
    rig.store.outcomes["uid-written"] = WriteResult(True, Action.DEAD_LETTER, "default/1-0")
    dropped = await rig.pipeline.prune_handled(rig.store.handled)

    # Then exactly that one is dropped, and only the other is written on a takeover
    assert dropped == 1
    assert rig.pipeline.pending == 1
    rig.clock.advance(SETTLE_S)
    await rig.drain()
    assert rig.uids_written() == ["uid-not-yet"]
    assert rig.store.writes == 1


# --- malformed input ---------------------------------------------------------------------------


def _job_with_list_metadata() -> Raw:
    raw = raw_job()
    raw["metadata"] = [raw["metadata"]]
    return raw


def _job_without_uid() -> Raw:
    raw = raw_job()
    del raw["metadata"]["uid"]
    return raw


def _pod_without_name() -> Raw:
    raw = failed_pod()
    del raw["metadata"]["name"]
    return raw


def _event_with_list_metadata() -> Raw:
    raw = raw_event("Pod", f"{JOB_NAME}-abcde", "BackOff")
    raw["metadata"] = []
    return raw


def _node_without_name() -> Raw:
    raw = raw_node()
    del raw["metadata"]["name"]
    return raw


MALFORMED = {
    # source label, the watch consumer, the object
    "a Job whose metadata is a list": ("job", "on_job", _job_with_list_metadata()),
    "a Job without a uid": ("job", "on_job", _job_without_uid()),
    "a Job's pod without a name": ("pod", "on_pod", _pod_without_name()),
    "an Event whose metadata is a list": ("event", "on_event", _event_with_list_metadata()),
    "a Node without a name": ("node", "on_node", _node_without_name()),
}


@pytest.mark.parametrize(("source", "consumer", "raw"), MALFORMED.values(), ids=list(MALFORMED))
async def test_malformed_object_is_counted_and_skipped(
    source: str, consumer: str, raw: Raw
) -> None:
    # Given a pipeline
    rig = build()

    # When a watch delivers an object without a usable identity
    for event_type in ("ADDED", "MODIFIED"):
        getattr(rig.pipeline, consumer)(event_type, raw)

    # Then it is counted by source, each time, and nothing is queued
    assert rig.sample("kube_dlq_malformed_input_total", source=source) == 2
    assert rig.pipeline.pending == 0


# --- shutdown: everything queued is written ----------------------------------------------------


async def shut_down(rig: Rig) -> None:
    """Run the writer as the daemon does at SIGTERM: both its stop and the shutdown are set."""
    stop = asyncio.Event()
    stop.set()
    await rig.pipeline.run_writer(stop, shutdown=stop)


async def test_failure_still_settling_at_shutdown_is_written_before_exit() -> None:
    # Given a Job that failed a moment ago (ttlSecondsAfterFinished: 0 may delete it any time)
    rig = build()
    fail(rig)
    rig.clock.advance(SETTLE_S / 4)

    # When the daemon shuts down before its settle time is over
    await shut_down(rig)

    # Then it is written now, with the evidence at hand, and nothing is left queued
    [letter] = rig.store.dead_letters
    assert letter.failure_class is FailureClass.APP_ERROR
    assert rig.pipeline.pending == 0


async def test_failure_waiting_for_its_pod_at_shutdown_is_written_with_what_there_is() -> None:
    # Given a failed Job whose failed pod has not reached the pod watch yet
    rig = build()
    rig.pipeline.on_job("ADDED", raw_job())
    rig.clock.advance(SETTLE_S)
    await rig.drain()
    assert rig.store.writes == 0  # waiting for evidence

    # When the daemon shuts down meanwhile
    await shut_down(rig)

    # Then it is written without waiting any longer
    assert rig.uids_written() == [JOB_UID]
    assert rig.store.dead_letters[0].failure_class is FailureClass.UNKNOWN


async def test_write_failing_at_shutdown_is_retried_until_it_lands() -> None:
    # Given a queued failure, and Redis failing the next write
    rig = build()
    fail(rig)
    rig.store.fail_next(REDIS_DOWN)

    # When the daemon shuts down (its grace period bounds the writer from outside)
    async with asyncio.timeout(5):
        await shut_down(rig)

    # Then the write is tried again before exit, and lands once
    assert rig.uids_written() == [JOB_UID]
    assert rig.store.writes == 2


async def test_term_end_without_shutdown_leaves_unsettled_failures_queued() -> None:
    # Given a failure still waiting for its failed pod on a replica whose leadership term ends
    # (not a shutdown)
    rig = build()
    rig.pipeline.on_job("ADDED", raw_job())

    # When its writer stops for the end of the term
    await rig.drain()

    # Then nothing is written early: the next leader writes it when the evidence is in
    assert rig.store.writes == 0
    assert rig.pipeline.pending == 1


# --- bulkheads: one bad failure never stops the others -----------------------------------------


class CrashingOnce(FakeStore):
    """A store on which handling the Job `uid` raises a bug (not a Redis error); its fallback
    dead letter (class unknown) fails with Redis down the first `fallback_down` times."""

    def __init__(self, uid: str, *, fallback_down: int = 0) -> None:
        super().__init__()
        self.poison = uid
        self.fallback_down = fallback_down

    async def dead_letter(self, letter: DeadLetter) -> WriteResult:
        if letter.job.uid == self.poison:
            if letter.failure_class is not FailureClass.UNKNOWN:
                raise OverflowError("int too large to convert to float")
            if self.fallback_down:
                self.fallback_down -= 1
                raise REDIS_DOWN
        return await super().dead_letter(letter)


async def test_failure_whose_handling_crashes_is_dead_lettered_as_unknown_and_others_go_on() -> (
    None
):
    # Given two failed Jobs, the first of which makes handling raise unexpectedly
    rig = build(store=CrashingOnce("uid-poison"))
    fail(rig, name="poison", uid="uid-poison")
    fail(rig, name="fine", uid="uid-fine")
    rig.clock.advance(SETTLE_S)

    # When the writer runs
    await rig.drain()

    # Then both Jobs get one outcome each: the crashed one as unknown, the error as its reason
    by_uid = {letter.job.uid: letter for letter in rig.store.dead_letters}
    assert set(by_uid) == {"uid-poison", "uid-fine"}
    assert by_uid["uid-poison"].failure_class is FailureClass.UNKNOWN
    assert "OverflowError: int too large" in by_uid["uid-poison"].reason
    assert by_uid["uid-poison"].manifest["metadata"]["name"] == "poison"
    assert by_uid["uid-fine"].failure_class is FailureClass.APP_ERROR
    assert rig.sample("kube_dlq_handling_errors_total", stage="writer") == 1
    assert rig.pipeline.pending == 0


async def test_crashed_failure_whose_dead_letter_cannot_be_written_yet_is_kept() -> None:
    # Given a failure whose handling crashes, and Redis down for the fallback write
    rig = build(store=CrashingOnce(JOB_UID, fallback_down=1))
    fail(rig)
    rig.clock.advance(SETTLE_S)

    # When the writer runs until Redis is back
    await rig.run_for(2.0)

    # Then the failure is written once, as unknown, and nothing is lost
    assert [letter.failure_class for letter in rig.store.dead_letters] == [FailureClass.UNKNOWN]
    assert rig.pipeline.pending == 0


# --- the memory bound drops only what can be rebuilt -------------------------------------------


async def test_memory_bound_never_drops_a_failure_that_is_not_written() -> None:
    # Given room to track two Jobs, and a failure queued while Redis is down
    rig = build(limits=LimitsSettings(max_tracked_jobs=2))
    fail(rig)
    rig.clock.advance(SETTLE_S)
    rig.store.fail_next(REDIS_DOWN)
    await rig.drain()
    assert rig.pipeline.pending == 1

    # When many more Jobs are tracked than the bound allows
    for index in range(10):
        rig.pipeline.on_job("ADDED", stuck_job(uid=f"uid-busy-{index}"))
    assert len(rig.pipeline.correlator) <= 3

    # Then the unwritten failure keeps its evidence, and is written once Redis is back
    await rig.run_for(1.0)
    [letter] = rig.store.dead_letters
    assert letter.job.uid == JOB_UID
    assert letter.failure_class is FailureClass.APP_ERROR
    assert rig.pipeline.correlator.evicted_jobs >= 8


# --- the stuck path re-checks before it acts ---------------------------------------------------


async def test_stuck_job_that_started_before_the_write_is_neither_written_nor_deleted() -> None:
    # Given a Job found stuck, in the API
    rig = stuck_rig()
    rig.jobs.put(stuck_job())
    rig.clock.now = T0_UNIX + STUCK_AFTER_S
    assert rig.pipeline.check_stuck() == 1

    # When its pod starts running before the writer gets to it
    rig.pipeline.on_pod("MODIFIED", raw_pod(phase="Running", containers=[running()]))
    await rig.drain()

    # Then no outcome is written and the Job is left alone, and it is not remembered as handled
    assert rig.store.writes == 0
    assert rig.jobs.deleted == []
    assert rig.pipeline.pending == 0
    rig.pipeline.on_pod("MODIFIED", raw_pod(phase="Pending", containers=[waiting()]))
    rig.clock.advance(STUCK_AFTER_S)
    assert rig.pipeline.check_stuck() == 1


async def test_stuck_job_that_completed_in_the_api_meanwhile_is_not_written() -> None:
    # Given a Job found stuck, whose copy in the API says it completed since
    rig = stuck_rig()
    done = stuck_job()
    done["status"] = {
        "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True", "reason": "Completed"}],
    }
    rig.jobs.put(done)
    rig.clock.now = T0_UNIX + STUCK_AFTER_S
    assert rig.pipeline.check_stuck() == 1

    # When the writer gets to it
    await rig.drain()

    # Then it is neither dead-lettered nor deleted
    assert rig.store.writes == 0
    assert rig.jobs.deleted == []


async def test_failure_arriving_when_the_memory_bound_is_reached_is_kept() -> None:
    # Given as many Jobs tracked as the bound allows
    rig = build(limits=LimitsSettings(max_tracked_jobs=2))
    for index in range(2):
        rig.pipeline.on_job("ADDED", stuck_job(uid=f"uid-busy-{index}"))

    # When a Job fails on top of them
    fail(rig)
    rig.clock.advance(SETTLE_S)
    await rig.drain()

    # Then it is the older evidence that makes room, and the failure is written
    assert rig.uids_written() == [JOB_UID]
    assert rig.store.dead_letters[0].failure_class is FailureClass.APP_ERROR
