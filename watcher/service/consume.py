"""`kube-dlq dlq consume`: hand each dead letter to a command, once per consumer group.

The loop takes one entry at a time from a `ConsumerStore` (a Redis consumer group in
production, `watcher.adapters.redis.consumer`), runs the handler through a `HandlerRunner`
with the entry as JSON on stdin, and settles the entry: exit 0 acks it; a failure is retried
with backoff, and after ``max_attempts`` runs the entry is parked (and acked) in the group's
parked list. An entry that is forged or does not decode is never run: it is reported and
parked. Entries a dead consumer left pending come back through ``reclaim`` and are handled
like new ones, their attempt count carried over (it is counted in Redis *before* each run,
so a handler that kills its consumer every time is still parked after ``max_attempts``).

Delivery is at least once for the handler: a consumer killed between the handler's exit and
the ack runs the entry again elsewhere, so handlers are given the entry id for idempotency.

One entry at a time keeps memory bounded and leaves nothing hoarded in this consumer's
pending list that another consumer could have taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from watcher.core.backoff import compute_delay
from watcher.core.consume import Delivery, RunResult
from watcher.core.errors import SinkError
from watcher.core.model import DeadLetter
from watcher.kit.aio import sleep_or_stop
from watcher.kit.consume_metrics import ConsumeMetrics

__all__ = [
    "ConsumeLoop",
    "ConsumeSettings",
    "ConsumerStore",
    "Delivery",
    "HandlerRunner",
    "RunResult",
    "handler_env",
]


class ConsumerStore(Protocol):
    """A consumer group on the dead-letter streams. Raise only SinkError."""

    async def prepare(self) -> None:
        """Create the group where it is missing (at the start of each stream)."""
        ...

    async def reclaim(self) -> Delivery | None:
        """One entry idle long enough in a dead consumer's pending list, now this one's."""
        ...

    async def next(self, *, block_s: float) -> list[Delivery]:
        """This consumer's own pending entries first (after a restart), then new ones;
        waits up to `block_s` for one. At most one per queue."""
        ...

    async def begin_attempt(self, delivery: Delivery) -> int | None:
        """Count a run about to start: the count of runs so far, this one included; None if
        the entry is no longer this consumer's (another one took it over)."""
        ...

    async def uncount(self, delivery: Delivery) -> None:
        """Take back a counted run that shutdown cut short (it was not the handler's fault)."""
        ...

    async def keep(self, delivery: Delivery) -> bool:
        """Tell the group the entry is still being worked on (no reclaim); False if another
        consumer has taken it meanwhile."""
        ...

    async def ack(self, delivery: Delivery) -> None: ...

    async def park(self, delivery: Delivery, *, attempts: int, reason: str) -> None:
        """Put the entry on the group's parked list and ack it, atomically."""
        ...


class HandlerRunner(Protocol):
    """Runs the handler command once."""

    async def run(
        self, stdin: bytes, env: Mapping[str, str], *, timeout_s: float | None, stop: asyncio.Event
    ) -> RunResult:
        """Run to completion, or up to `timeout_s`; once `stop` is set, allow the grace, then
        terminate it."""
        ...


@dataclass(frozen=True, slots=True)
class ConsumeSettings:
    group: str
    max_attempts: int = 3
    handler_timeout_s: float | None = None
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    claim_idle_s: float = 60.0
    """An entry pending this long in another consumer's list is taken over."""
    block_s: float = 1.0
    """How long one read waits for new entries: also the shutdown latency when idle."""
    redis_retry_s: float = 5.0
    """Pause after a Redis error before trying again (the loop does not stop for one)."""


def handler_env(
    delivery: Delivery, letter: DeadLetter, *, group: str, attempt: int
) -> dict[str, str]:
    """The variables the handler gets, on top of the consumer's own environment (NUL removed:
    the codec allows it in a name, exec refuses it in the environment)."""
    values = {
        "KUBE_DLQ_ENTRY_ID": delivery.entry_id,
        "KUBE_DLQ_QUEUE": delivery.queue,
        "KUBE_DLQ_CLASS": letter.failure_class.value,
        "KUBE_DLQ_NAMESPACE": letter.job.namespace,
        "KUBE_DLQ_JOB": letter.job.name,
        "KUBE_DLQ_GROUP": group,
        "KUBE_DLQ_ATTEMPT": str(attempt),
    }
    return {name: value.replace("\x00", "") for name, value in values.items()}


Render = Callable[[str, DeadLetter], bytes]
Warn = Callable[[str], None]
Sleep = Callable[[asyncio.Event, float], Awaitable[bool]]


@dataclass
class Counts:
    acked: int = 0
    parked: int = 0
    failed_runs: int = 0
    refused: int = 0
    gone: int = 0


@dataclass
class ConsumeLoop:
    store: ConsumerStore
    runner: HandlerRunner
    settings: ConsumeSettings
    render: Render
    """The entry as the handler's stdin (the JSON of `dlq show -o json`)."""
    warn: Warn
    """One line for the operator (stderr), for entries that are refused."""
    logger: FilteringBoundLogger
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sleep: Sleep = sleep_or_stop
    rng: random.Random = field(default_factory=random.Random)
    counts: Counts = field(default_factory=Counts)
    metrics: ConsumeMetrics | None = None

    async def run(self) -> None:
        """Consume until `stop` is set; Redis errors are logged and waited out."""
        prepared = False
        while not self.stop.is_set():
            try:
                if not prepared:
                    await self.store.prepare()
                    prepared = True
                await self._round()
            except SinkError as exc:
                self.logger.warning("consume_redis_error", error=str(exc))
                self._count_redis_error()
                prepared = False  # again: the groups may be gone (a Redis restart without AOF)
                await self.sleep(self.stop, self.settings.redis_retry_s)
        self.logger.info("consume_stopped", **vars(self.counts))

    async def _round(self) -> None:
        # Entries of dead consumers first: they are the oldest.
        while not self.stop.is_set() and (taken := await self.store.reclaim()) is not None:
            await self._guarded(taken)
        if self.stop.is_set():
            return
        for delivery in await self.store.next(block_s=self.settings.block_s):
            if self.stop.is_set():
                return  # read, not started: left pending for whoever runs next
            await self._guarded(delivery)

    async def _guarded(self, delivery: Delivery) -> None:
        """`handle`, where a bug met on one entry does not end the consumer: the entry stays
        pending, is taken over later, and its counted runs park it in the end."""
        try:
            await self.handle(delivery)
        except SinkError:
            raise
        except Exception:
            self.logger.exception("consume_entry_failed", entry_id=delivery.entry_id)

    async def handle(self, delivery: Delivery) -> None:
        log = self.logger.bind(entry_id=delivery.entry_id, group=self.settings.group)
        if delivery.gone:
            self.counts.gone += 1
            self._entry("gone")
            log.warning("consume_entry_gone", reason=delivery.problem)
            await self.store.ack(delivery)
            return
        if delivery.letter is None:
            self.counts.refused += 1
            self._entry("refused")
            what = "is not signed by kube-dlq" if delivery.forged else "could not be read"
            self.warn(
                f"warning: entry {delivery.entry_id} {what}, parked, not run: {delivery.problem}"
            )
            log.warning("consume_entry_refused", forged=delivery.forged, reason=delivery.problem)
            await self.store.park(delivery, attempts=0, reason=f"refused: {delivery.problem}")
            return
        await self._work(delivery, delivery.letter, log)

    async def _work(
        self, delivery: Delivery, letter: DeadLetter, log: FilteringBoundLogger
    ) -> None:
        while True:
            attempt = await self.store.begin_attempt(delivery)
            if attempt is None:
                log.warning("consume_entry_taken_over")
                return
            if attempt > self.settings.max_attempts:
                # Counted runs that never reported back (the consumer died during them).
                await self._park(
                    delivery, log, attempt - 1, "attempts used up by consumers that died"
                )
                return
            # Rendered after counting: should it fail on this entry, the count still parks it.
            stdin = self.render(delivery.entry_id, letter)
            env = handler_env(delivery, letter, group=self.settings.group, attempt=attempt)
            started = time.monotonic()
            result = await self._run_kept(delivery, stdin, env, log)
            took = round(time.monotonic() - started, 3)
            self._run(result, took)
            if result.ok:
                await self._settled(lambda: self.store.ack(delivery))
                self.counts.acked += 1
                self._entry("acked")
                log.info("consume_handled", attempt=attempt, took_s=took)
                return
            if result.stopped:
                await self.store.uncount(delivery)
                log.info("consume_left_pending", attempt=attempt, reason=result.describe())
                return
            self.counts.failed_runs += 1
            log.warning(
                "consume_handler_failed", attempt=attempt, result=result.describe(), took_s=took
            )
            if attempt >= self.settings.max_attempts:
                await self._park(delivery, log, attempt, f"handler {result.describe()}")
                return
            delay = compute_delay(
                attempt,
                base_s=self.settings.backoff_base_s,
                factor=2.0,
                cap_s=self.settings.backoff_cap_s,
                jitter="equal",
                rng=self.rng,
            )
            if await self._wait_kept(delivery, delay):
                log.info("consume_left_pending", attempt=attempt, reason="stopped during backoff")
                return

    async def _park(
        self, delivery: Delivery, log: FilteringBoundLogger, attempts: int, reason: str
    ) -> None:
        await self._settled(lambda: self.store.park(delivery, attempts=attempts, reason=reason))
        self.counts.parked += 1
        self._entry("parked")
        log.warning("consume_parked", attempts=attempts, reason=reason)

    async def _settled(self, write: Callable[[], Awaitable[None]]) -> None:
        """Ack or park, retried through a Redis outage: the handler has run, and giving up
        here would run it again. Shutdown stops the retries (the entry stays pending)."""
        while True:
            try:
                await write()
                return
            except SinkError as exc:
                self.logger.warning("consume_settle_failed", error=str(exc))
                self._count_redis_error()
                if await self.sleep(self.stop, self.settings.redis_retry_s):
                    raise

    def _entry(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.entry(outcome)

    def _run(self, result: RunResult, seconds: float) -> None:
        if self.metrics is None:
            return
        if result.ok:
            name = "ok"
        elif result.timed_out:
            name = "timed_out"
        elif result.stopped:
            name = "stopped"
        else:
            name = "failed"
        self.metrics.run(name, seconds)

    def _count_redis_error(self) -> None:
        if self.metrics is not None:
            self.metrics.redis_error()

    async def _run_kept(
        self, delivery: Delivery, stdin: bytes, env: Mapping[str, str], log: FilteringBoundLogger
    ) -> RunResult:
        keeper = asyncio.create_task(self._keep_alive(delivery, log))
        try:
            return await self.runner.run(
                stdin, env, timeout_s=self.settings.handler_timeout_s, stop=self.stop
            )
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _wait_kept(self, delivery: Delivery, seconds: float) -> bool:
        """Sleep the backoff, the entry kept meanwhile; True if stopped."""
        keeper = asyncio.create_task(self._keep_alive(delivery, self.logger))
        try:
            return await self.sleep(self.stop, seconds)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep_alive(self, delivery: Delivery, log: FilteringBoundLogger) -> None:
        # A third of the claim idle time: two missed beats still leave the entry ours.
        interval = max(0.05, self.settings.claim_idle_s / 3)
        never = asyncio.Event()  # keeping goes on through shutdown's grace too
        while True:
            await sleep_or_stop(never, interval)
            try:
                if not await self.store.keep(delivery):
                    log.warning("consume_entry_taken_over")
                    return
            except SinkError as exc:
                log.warning("consume_keep_failed", error=str(exc))
