"""RetryLoop fires a claimed batch concurrently, bounded, and sleeps only until the next due.

Over the in-memory fakes (tests/support/retry_fakes.py keeps the scripts' rules). What an
operator would notice: no more creates in flight than ``fire_concurrency``; a stop gives back
exactly the tickets not started; a Redis failure ends the cycle and still no ticket gets two
Jobs; a ticket due sooner than the poll interval fires on time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog

from tests.support.fakes import FakeJobs
from tests.support.retry_fakes import FakeRetryStore
from tests.unit.test_retrying import ticket
from watcher.core.errors import SinkError
from watcher.core.model import ClaimedBatch
from watcher.core.rawjson import RawObject
from watcher.core.settings import RetryLoopSettings
from watcher.kit.metrics import Metrics
from watcher.service.retrying import RetryLoop


class CountingJobs(FakeJobs):
    """Each create takes a moment (a real POST does) and counts the creates in flight; with
    `gate`, creates wait for it, so a test decides when they may finish."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        super().__init__()
        self.in_flight = 0
        self.most_in_flight = 0
        self.started = 0
        self.started_names: set[str] = set()
        self.started_one = asyncio.Event()
        self.gate = gate

    async def create(self, namespace: str, body: Mapping[str, Any]) -> RawObject:
        self.started += 1
        self.started_names.add(body["metadata"]["name"])
        self.started_one.set()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.005)
            if self.gate is not None:
                await self.gate.wait()
            return await super().create(namespace, body)
        finally:
            self.in_flight -= 1


def retry_loop(
    store: FakeRetryStore,
    jobs: FakeJobs,
    *,
    concurrency: int,
    batch: int = 50,
    poll_s: float = 5.0,
    metrics: Metrics | None = None,
) -> RetryLoop:
    return RetryLoop(
        store=store,
        jobs=jobs,
        settings=RetryLoopSettings(
            batch_size=batch, fire_concurrency=concurrency, poll_interval_s=poll_s
        ),
        cluster_name="unit",
        metrics=metrics or Metrics(),
        logger=structlog.get_logger(),
    )


def jobs_per_ticket(jobs: FakeJobs) -> dict[str, int]:
    """Failed-Job name -> Jobs created for its retry (the names are unique per ticket)."""
    counts: dict[str, int] = {}
    for body in jobs.created:
        counts[body["metadata"]["name"]] = counts.get(body["metadata"]["name"], 0) + 1
    return counts


async def test_creates_in_flight_never_exceed_fire_concurrency() -> None:
    # Given 40 due tickets, batch 40, fire_concurrency 4
    store, jobs = FakeRetryStore(), CountingJobs()
    for i in range(40):
        store.add(ticket(f"job-{i}"))

    # When one cycle fires them
    assert await retry_loop(store, jobs, concurrency=4, batch=40).fire_due() == 40

    # Then they ran 4 at a time, never more, and each ticket has exactly one Job, settled
    assert jobs.most_in_flight == 4
    assert len(jobs.created) == 40
    assert set(jobs_per_ticket(jobs).values()) == {1}
    assert await store.pending_retries() == 0


async def test_concurrency_one_fires_one_after_the_other() -> None:
    store, jobs = FakeRetryStore(), CountingJobs()
    for i in range(5):
        store.add(ticket(f"job-{i}"))

    await retry_loop(store, jobs, concurrency=1).fire_due()

    assert jobs.most_in_flight == 1
    assert len(jobs.created) == 5


async def test_stop_mid_batch_gives_back_exactly_the_tickets_not_started() -> None:
    # Given 10 due tickets fired 3 at a time, with creates held until the test lets them go
    gate, stop = asyncio.Event(), asyncio.Event()
    store, jobs = FakeRetryStore(), CountingJobs(gate)
    names = [f"job-{i}" for i in range(10)]
    for name in names:
        store.add(ticket(name))
    run = asyncio.create_task(retry_loop(store, jobs, concurrency=3).run(stop))

    # When a stop comes while the first 3 creates are in flight, and then they complete
    while jobs.started < 3:
        jobs.started_one.clear()
        await asyncio.wait_for(jobs.started_one.wait(), 5)
    stop.set()
    gate.set()
    await asyncio.wait_for(run, 5)

    # Then the 3 started were created and settled; the other 7 are due again at once (not
    # left to their lease), none of them fired
    assert jobs.started == 3
    created = {body["metadata"]["name"] for body in jobs.created}
    assert created == jobs.started_names
    given_back = {f"{store.tickets[tid].job.name}-r2" for tid in store.due}
    assert len(given_back) == 7
    assert given_back | created == {f"{name}-r2" for name in names}
    assert all(at <= store.now for at in store.due.values())
    assert store.inflight == {}


async def test_a_redis_failure_ends_the_cycle_and_no_ticket_fires_twice() -> None:
    # Given 12 due tickets fired 4 at a time, and the first settle failing (Redis down)
    store, jobs, metrics = FakeRetryStore(lease_s=30), CountingJobs(), Metrics()
    for i in range(12):
        store.add(ticket(f"job-{i}"))
    store.fail_next("settle_created", SinkError("redis settle_created failed: down"))
    retry = retry_loop(store, jobs, concurrency=4, metrics=metrics)

    # When the cycle runs, it raises: no ticket after the failure was started
    try:
        await retry.fire_due()
    except SinkError:
        pass
    else:
        raise AssertionError("the SinkError must end the cycle")
    assert jobs.started <= 4
    errors = metrics.registry.get_sample_value(
        "kube_dlq_redis_errors_total", {"operation": "settle_created"}
    )
    assert errors == 1

    # And once the leases ran out, a later cycle finishes every ticket: one Job each
    store.now += 31
    while await store.pending_retries():
        await retry.fire_due()
    assert sorted(jobs_per_ticket(jobs)) == sorted(f"job-{i}-r2" for i in range(12))
    assert set(jobs_per_ticket(jobs).values()) == {1}


class TickingStore(FakeRetryStore):
    """The store's clock follows the event loop's, as Redis's follows real time."""

    start: float = 0.0
    """The event loop's time when the store's clock read 1,000 s."""

    def sync(self) -> None:
        loop = asyncio.get_running_loop()
        self.now = 1_000.0 + loop.time() - self.start

    async def claim_due_retries(self, *, limit: int) -> ClaimedBatch:
        self.sync()
        return await super().claim_due_retries(limit=limit)

    async def next_due_in(self) -> float | None:
        self.sync()
        return await super().next_due_in()


async def test_a_ticket_due_before_the_next_poll_fires_on_time() -> None:
    # Given a 5 s poll interval and a ticket due 0.3 s from now, nothing due before it
    loop = asyncio.get_running_loop()
    store, jobs, stop = TickingStore(), CountingJobs(), asyncio.Event()
    store.start = loop.time()
    store.add(ticket(), delay_s=0.3)
    run = asyncio.create_task(retry_loop(store, jobs, concurrency=4).run(stop))

    # When the loop runs
    await asyncio.wait_for(jobs.started_one.wait(), 5)
    fired_after = loop.time() - store.start
    stop.set()
    await asyncio.wait_for(run, 5)

    # Then it fired about when due, not at the next 5 s poll
    assert len(jobs.created) == 1
    assert 0.3 <= fired_after < 1.5


async def test_a_ticket_due_now_but_not_claimable_does_not_make_the_loop_spin() -> None:
    # Given a ticket the store says is due now, which no claim returns (another replica
    # holds it between the two calls, say)
    class DueButTaken(FakeRetryStore):
        claims_made = 0

        async def claim_due_retries(self, *, limit: int) -> ClaimedBatch:
            self.claims_made += 1
            return ClaimedBatch([])

        async def next_due_in(self) -> float | None:
            return 0.0

    store, stop = DueButTaken(), asyncio.Event()
    run = asyncio.create_task(retry_loop(store, FakeJobs(), concurrency=4).run(stop))

    # When the loop runs for half a second
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(run, 5)

    # Then it claimed about every 50 ms, not thousands of times
    assert 3 <= store.claims_made <= 15
