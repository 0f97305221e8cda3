"""In-memory fakes for `watcher.service.consume`: a consumer group and a handler."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from watcher.core.consume import Delivery, RunResult
from watcher.core.errors import SinkError


@dataclass
class FakeGroup:
    """A consumer group: `ConsumerStore` over lists, with the calls recorded."""

    new: list[Delivery] = field(default_factory=list)
    """Entries not read yet, handed out one per `next`."""
    reclaimable: list[Delivery] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    acked: list[str] = field(default_factory=list)
    parked: list[tuple[str, int, str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    taken_over: set[str] = field(default_factory=set)
    errors: dict[str, list[SinkError]] = field(default_factory=dict)
    """Per method name, raised one per call by its next calls."""
    prepared: int = 0
    stop_when_empty: asyncio.Event | None = None

    def _maybe_fail(self, method: str) -> None:
        if self.errors.get(method):
            raise self.errors[method].pop(0)

    async def prepare(self) -> None:
        self._maybe_fail("prepare")
        self.prepared += 1

    async def reclaim(self) -> Delivery | None:
        self._maybe_fail("reclaim")
        return self.reclaimable.pop(0) if self.reclaimable else None

    async def next(self, *, block_s: float) -> list[Delivery]:
        self._maybe_fail("next")
        if self.new:
            return [self.new.pop(0)]
        if self.stop_when_empty is not None:
            self.stop_when_empty.set()
        await asyncio.sleep(0)
        return []

    async def begin_attempt(self, delivery: Delivery) -> int | None:
        self._maybe_fail("begin_attempt")
        if delivery.entry_id in self.taken_over:
            return None
        self.attempts[delivery.entry_id] = self.attempts.get(delivery.entry_id, 0) + 1
        return self.attempts[delivery.entry_id]

    async def uncount(self, delivery: Delivery) -> None:
        self.attempts[delivery.entry_id] -= 1

    async def keep(self, delivery: Delivery) -> bool:
        self.kept.append(delivery.entry_id)
        return delivery.entry_id not in self.taken_over

    async def ack(self, delivery: Delivery) -> None:
        self._maybe_fail("ack")
        self.acked.append(delivery.entry_id)
        self.attempts.pop(delivery.entry_id, None)

    async def park(self, delivery: Delivery, *, attempts: int, reason: str) -> None:
        self._maybe_fail("park")
        self.parked.append((delivery.entry_id, attempts, reason))
        self.attempts.pop(delivery.entry_id, None)


@dataclass
class FakeRunner:
    """A handler whose results are scripted per entry; runs are recorded with their input."""

    results: dict[str, list[RunResult]] = field(default_factory=dict)
    """Per entry id, the result of each run in turn; exit 0 once they run out."""
    runs: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    on_run: asyncio.Event | None = None
    """Set when a run starts (to stop the loop mid-run)."""
    hold: asyncio.Event | None = None
    """If given, a run waits for it (or for `stop`) before it ends."""

    async def run(
        self, stdin: bytes, env: Mapping[str, str], *, timeout_s: float | None, stop: asyncio.Event
    ) -> RunResult:
        entry = env["KUBE_DLQ_ENTRY_ID"]
        self.runs.append((entry, stdin, dict(env)))
        if self.on_run is not None:
            self.on_run.set()
        if self.hold is not None:
            await self.hold.wait()
        queue = self.results.get(entry, [])
        return queue.pop(0) if queue else RunResult(0)
