"""The `dlq consume` loop over an in-memory group and handler: what runs, what is settled how."""

from __future__ import annotations

import asyncio
import json
import random

import structlog

from tests.support.consume_fakes import FakeGroup, FakeRunner
from watcher.core.consume import Delivery, RunResult
from watcher.core.errors import SinkError
from watcher.core.model import DeadLetter, FailureClass, JobRef
from watcher.kit.consume_metrics import ConsumeMetrics
from watcher.service.consume import ConsumeLoop, ConsumeSettings

LETTER = DeadLetter(
    queue="batch",
    job=JobRef("ns", "job-1", "uid-1"),
    failure_class=FailureClass.APP_ERROR,
    reason="exit 1",
    attempts=1,
    failed_at=0.0,
    cluster="prod",
)


def entry(n: int = 1, **more: object) -> Delivery:
    letter = more.pop("letter", LETTER)
    return Delivery(f"batch/{n}-0", "batch", letter, **more)  # type: ignore[arg-type]


class Harness:
    def __init__(self, group: FakeGroup, runner: FakeRunner, **settings: object) -> None:
        self.stop = asyncio.Event()
        group.stop_when_empty = self.stop
        self.group, self.runner = group, runner
        self.sleeps: list[float] = []
        self.warnings: list[str] = []
        self.loop = ConsumeLoop(
            store=group,
            runner=runner,
            settings=ConsumeSettings(group="g", **settings),  # type: ignore[arg-type]
            render=lambda entry_id, letter: json.dumps([entry_id, letter.job.uid]).encode(),
            warn=self.warnings.append,
            logger=structlog.get_logger(),
            stop=self.stop,
            sleep=self._sleep,
            rng=random.Random(7),
        )

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> bool:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)
        return stop.is_set()

    async def run(self) -> None:
        await asyncio.wait_for(self.loop.run(), timeout=5)


async def test_exit_0_acks_and_the_handler_gets_the_entry_and_its_identity() -> None:
    h = Harness(FakeGroup(new=[entry()]), FakeRunner())
    await h.run()
    assert h.group.acked == ["batch/1-0"] and h.group.parked == []
    [(_, stdin, env)] = h.runner.runs
    assert json.loads(stdin) == ["batch/1-0", "uid-1"]
    assert {k: env[k] for k in env if k.startswith("KUBE_DLQ_")} == {
        "KUBE_DLQ_ENTRY_ID": "batch/1-0",
        "KUBE_DLQ_QUEUE": "batch",
        "KUBE_DLQ_CLASS": "app_error",
        "KUBE_DLQ_NAMESPACE": "ns",
        "KUBE_DLQ_JOB": "job-1",
        "KUBE_DLQ_GROUP": "g",
        "KUBE_DLQ_ATTEMPT": "1",
    }


async def test_fails_twice_then_succeeds_runs_three_times_with_growing_backoff() -> None:
    fail = RunResult(2)
    runner = FakeRunner(results={"batch/1-0": [fail, fail]})
    h = Harness(FakeGroup(new=[entry()]), runner, max_attempts=5, backoff_base_s=1.0)
    await h.run()
    assert len(runner.runs) == 3 and h.group.acked == ["batch/1-0"]
    assert [env["KUBE_DLQ_ATTEMPT"] for _, _, env in runner.runs] == ["1", "2", "3"]
    # equal jitter: each pause is within [raw/2, raw], raw = 1s then 2s
    first, second = h.sleeps
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0


async def test_always_failing_is_parked_after_max_attempts_and_not_acked_separately() -> None:
    runner = FakeRunner(results={"batch/1-0": [RunResult(1)] * 9})
    h = Harness(FakeGroup(new=[entry()]), runner, max_attempts=3)
    await h.run()
    assert len(runner.runs) == 3
    assert h.group.parked == [("batch/1-0", 3, "handler exit 1")] and h.group.acked == []


async def test_a_timeout_counts_as_a_failure_and_says_so_when_parked() -> None:
    runner = FakeRunner(results={"batch/1-0": [RunResult(None, timed_out=True)]})
    h = Harness(FakeGroup(new=[entry()]), runner, max_attempts=1)
    await h.run()
    assert h.group.parked == [("batch/1-0", 1, "handler timed out")]


async def test_a_forged_entry_is_never_run_it_is_one_warning_and_parked() -> None:
    forged = Delivery("batch/1-0", "batch", None, "dead letter: bad signature", forged=True)
    h = Harness(FakeGroup(new=[forged, entry(2)]), FakeRunner())
    await h.run()
    assert [r[0] for r in h.runner.runs] == ["batch/2-0"]  # and the consumer went on
    assert h.warnings == [
        "warning: entry batch/1-0 is not signed by kube-dlq, parked, not run: dead letter: "
        "bad signature"
    ]
    assert h.group.parked == [("batch/1-0", 0, "refused: dead letter: bad signature")]


async def test_an_entry_gone_from_the_stream_is_acked_not_run_not_parked() -> None:
    gone = Delivery("batch/1-0", "batch", None, "deleted from the stream", gone=True)
    h = Harness(FakeGroup(new=[gone]), FakeRunner())
    await h.run()
    assert h.runner.runs == [] and h.group.acked == ["batch/1-0"] and h.group.parked == []


async def test_runs_counted_by_a_dead_consumer_carry_over_to_the_one_that_reclaims() -> None:
    # The entry's earlier consumer died during its last allowed run.
    group = FakeGroup(reclaimable=[entry()], attempts={"batch/1-0": 3})
    h = Harness(group, FakeRunner(), max_attempts=3)
    await h.run()
    assert h.runner.runs == []
    assert group.parked == [("batch/1-0", 3, "attempts used up by consumers that died")]


async def test_reclaimed_entries_come_before_new_ones() -> None:
    group = FakeGroup(new=[entry(2)], reclaimable=[entry(1)])
    h = Harness(group, FakeRunner())
    await h.run()
    assert group.acked == ["batch/1-0", "batch/2-0"]


async def test_shutdown_that_cuts_a_run_short_leaves_the_entry_pending_uncounted() -> None:
    runner = FakeRunner(results={"batch/1-0": [RunResult(None, stopped=True)]})
    runner.on_run, runner.hold = asyncio.Event(), asyncio.Event()
    group = FakeGroup(new=[entry(), entry(2)])
    h = Harness(group, runner)
    task = asyncio.create_task(h.run())
    await runner.on_run.wait()
    h.stop.set()
    runner.hold.set()
    await task
    assert group.acked == [] and group.parked == [] and group.attempts == {"batch/1-0": 0}
    assert [r[0] for r in runner.runs] == ["batch/1-0"]  # the next entry was not started


async def test_shutdown_during_backoff_leaves_the_entry_pending() -> None:
    runner = FakeRunner(results={"batch/1-0": [RunResult(1)]})
    group = FakeGroup(new=[entry()])
    h = Harness(group, runner, max_attempts=3)

    async def stop_now(stop: asyncio.Event, seconds: float) -> bool:
        stop.set()
        return True

    h.loop.sleep = stop_now
    await h.run()
    assert len(runner.runs) == 1 and group.acked == [] and group.parked == []
    assert group.attempts == {"batch/1-0": 1}


async def test_a_redis_error_is_waited_out_and_the_groups_prepared_again() -> None:
    group = FakeGroup(new=[entry()], errors={"reclaim": [SinkError("redis reclaim failed")]})
    h = Harness(group, FakeRunner())
    await h.run()
    assert group.prepared == 2  # before the error, and after it
    assert group.acked == ["batch/1-0"] and h.sleeps == [5.0]


async def test_an_ack_that_fails_is_retried_without_running_the_handler_again() -> None:
    group = FakeGroup(new=[entry()])
    runner = FakeRunner()
    h = Harness(group, runner)
    group.errors["ack"] = [SinkError("redis settle failed")]
    await h.run()
    assert len(runner.runs) == 1 and group.acked == ["batch/1-0"]


async def test_an_entry_another_consumer_took_over_is_not_run() -> None:
    group = FakeGroup(new=[entry()], taken_over={"batch/1-0"})
    h = Harness(group, FakeRunner())
    await h.run()
    assert h.runner.runs == [] and group.acked == [] and group.parked == []


async def test_a_long_run_keeps_its_entry() -> None:
    runner = FakeRunner()
    runner.hold = asyncio.Event()
    group = FakeGroup(new=[entry()])
    h = Harness(group, runner, claim_idle_s=0.15)  # a keep every 0.05 s
    task = asyncio.create_task(h.run())
    await asyncio.sleep(0.2)
    runner.hold.set()
    await task
    assert group.kept.count("batch/1-0") >= 2 and group.acked == ["batch/1-0"]


async def test_metrics_count_each_outcome_and_each_run_result() -> None:
    forged = Delivery("batch/1-0", "batch", None, "bad signature", forged=True)
    gone = Delivery("batch/2-0", "batch", None, "deleted", gone=True)
    runner = FakeRunner(
        results={"batch/3-0": [RunResult(1)], "batch/4-0": [RunResult(None, timed_out=True)]}
    )
    group = FakeGroup(new=[forged, gone, entry(3), entry(4)], errors={"next": [SinkError("x")]})
    h = Harness(group, runner, max_attempts=1)
    h.loop.metrics = metrics = ConsumeMetrics("g")
    await h.run()

    def sample(name: str, **labels: str) -> float:
        value = metrics.registry.get_sample_value(name, {"group": "g", **labels})
        return -1 if value is None else value

    entries = "kube_dlq_consume_entries_total"
    assert [sample(entries, outcome=o) for o in ("acked", "parked", "refused", "gone")] == [
        0,
        2,
        1,
        1,
    ]
    runs = "kube_dlq_consume_handler_runs_total"
    assert [sample(runs, result=r) for r in ("ok", "failed", "timed_out", "stopped")] == [
        0,
        1,
        1,
        0,
    ]
    assert sample("kube_dlq_consume_redis_errors_total") == 1
    assert sample("kube_dlq_consume_handler_seconds_count") == 2


async def test_a_nul_in_a_stored_name_does_not_reach_the_environment() -> None:
    letter = DeadLetter(
        queue="batch",
        job=JobRef("ns", "job\x00-1", "uid-1"),
        failure_class=FailureClass.APP_ERROR,
        reason="exit 1",
        attempts=1,
        failed_at=0.0,
        cluster="prod",
    )
    h = Harness(FakeGroup(new=[entry(letter=letter)]), FakeRunner())
    await h.run()
    assert h.runner.runs[0][2]["KUBE_DLQ_JOB"] == "job-1"


async def test_a_bug_met_on_one_entry_is_logged_and_the_consumer_goes_on() -> None:
    def render(entry_id: str, letter: DeadLetter) -> bytes:
        if entry_id == "batch/1-0":
            raise RuntimeError("boom")
        return b"{}"

    group = FakeGroup(new=[entry(1), entry(2)])
    h = Harness(group, FakeRunner())
    h.loop.render = render
    await h.run()
    assert group.acked == ["batch/2-0"]
    # And the failed try was counted: taken over again and again, it is parked in the end
    assert group.attempts == {"batch/1-0": 1}
