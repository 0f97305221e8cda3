"""The writer handles several due failures at once, so their writes can share a round trip.

Each Job is still handled by one call at a time; what one handling raises (Redis down, a
refused term, a bug) is sorted out for that Job alone, as when they were written one by one;
while writes fail, the writer probes with one failure at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.support.fakes import FakeStore
from tests.unit.test_pipeline import DEFAULTS, REDIS_DOWN, SETTLE_S, Rig, build, fail
from watcher.core.errors import FencedWrite
from watcher.core.model import DeadLetter, WriteResult
from watcher.core.settings import PipelineSettings
from watcher.service.pipeline import Pipeline


@dataclasses.dataclass
class OverlapStore(FakeStore):
    """A FakeStore whose writes take a turn of the event loop, counting how many overlap."""

    in_flight: int = 0
    peak: int = 0

    async def dead_letter(self, letter: DeadLetter) -> WriteResult:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0)  # a round trip: the other handlings run meanwhile
            return await super().dead_letter(letter)
        finally:
            self.in_flight -= 1


def failing(count: int, store: FakeStore, *, write_concurrency: int = 0) -> tuple[Rig, list[str]]:
    """A pipeline on `store` with `count` failed Jobs due now."""
    rig = build(store=store)
    if write_concurrency:
        rig.pipeline.write_concurrency = write_concurrency
    uids = [f"uid-{i}" for i in range(count)]
    for i, uid in enumerate(uids):
        fail(rig, f"job-{i}", uid)
    rig.clock.advance(SETTLE_S)
    return rig, uids


async def drain(pipeline: Pipeline) -> None:
    stop = asyncio.Event()
    stop.set()
    await pipeline.run_writer(stop)


async def test_due_failures_are_written_at_the_same_time() -> None:
    # Given five failed Jobs due at once
    store = OverlapStore()
    rig, uids = failing(5, store)

    # When the writer drains them
    await drain(rig.pipeline)

    # Then their writes were all in flight together, each Job written once
    assert store.peak == 5
    assert sorted(letter.job.uid for letter in store.dead_letters) == uids
    assert store.writes == 5 and rig.pipeline.pending == 0


async def test_at_most_write_concurrency_failures_are_handled_at_once() -> None:
    store = OverlapStore()
    rig, uids = failing(7, store, write_concurrency=3)
    await drain(rig.pipeline)
    assert store.peak == 3
    assert sorted(letter.job.uid for letter in store.dead_letters) == uids
    assert PipelineSettings().write_concurrency > 1  # the daemon's default does batch


async def test_a_failed_write_in_a_batch_is_retried_alone_and_the_others_land() -> None:
    # Given three failures due at once, and Redis failing the first write
    store = OverlapStore()
    rig, uids = failing(3, store)
    store.fail_next(REDIS_DOWN)

    # When the writer drains (stopped: what failed stays queued, for after its backoff)
    await drain(rig.pipeline)

    # Then the other two are written and the failed one kept
    assert len(store.dead_letters) == 2 and rig.pipeline.pending == 1
    assert rig.clock.sleeps == []
    written = {letter.job.uid for letter in store.dead_letters}
    [left] = set(uids) - written

    # And the one left is written once its backoff has passed, once
    rig.clock.advance(1.0)
    await drain(rig.pipeline)
    assert sorted(letter.job.uid for letter in store.dead_letters) == sorted(uids)
    assert store.dead_letters[-1].job.uid == left


async def test_while_writes_fail_the_writer_probes_with_one_failure_at_a_time() -> None:
    # Given three failures due at once, and Redis failing the next four writes
    store = OverlapStore()
    rig, uids = failing(3, store)
    store.fail_next(REDIS_DOWN, REDIS_DOWN, REDIS_DOWN, REDIS_DOWN)

    # When the writer runs until all are written
    stop = asyncio.Event()
    writer = asyncio.create_task(rig.pipeline.run_writer(stop))
    async with asyncio.timeout(2):
        while rig.pipeline.pending:  # noqa: ASYNC110 - no event for this state
            await asyncio.sleep(0)
    stop.set()
    await writer

    # Then the first batch tried all three (three failures), then one try per backoff (the
    # fourth failure, then the first success), then the rest together again
    assert store.writes == 3 + 1 + 1 + 2
    assert sorted(letter.job.uid for letter in store.dead_letters) == uids
    sleeps = rig.clock.sleeps
    assert len(sleeps) == 2


async def test_a_refused_term_in_a_batch_keeps_that_failure_and_stops_the_writer() -> None:
    store = OverlapStore()
    rig, _ = failing(3, store)
    store.fail_next(FencedWrite("dead_letter", term=3, fence=4))
    with pytest.raises(FencedWrite):
        await asyncio.wait_for(rig.pipeline.run_writer(asyncio.Event()), 1.0)
    # the other two had been written in the same batch; the refused one is still queued
    assert len(store.dead_letters) == 2 and rig.pipeline.pending == 1
    assert rig.clock.sleeps == []


async def test_a_failure_queued_twice_is_handled_once_per_batch() -> None:
    # Given a failed Job due, queued a second time at shutdown (everything is made due)
    store = OverlapStore()
    rig = build(store=store)
    fail(rig)
    rig.clock.advance(SETTLE_S)

    # When the writer drains at shutdown
    stop, shutdown = asyncio.Event(), asyncio.Event()
    stop.set()
    shutdown.set()
    await rig.pipeline.run_writer(stop, shutdown=shutdown)

    # Then its outcome was written by one handling, not two at once
    assert store.writes == 1 and store.peak == 1


def test_write_concurrency_below_one_is_refused() -> None:
    rig = build()
    with pytest.raises(ValueError, match="write_concurrency"):
        Pipeline(
            handler=rig.pipeline.handler,
            jobs=rig.jobs,
            scope=DEFAULTS.scope,
            classify=DEFAULTS.classify,
            settings=dataclasses.replace(DEFAULTS.pipeline, write_concurrency=0),
            limits=DEFAULTS.limits,
            metrics=rig.metrics,
            logger=rig.pipeline.log,
        )
