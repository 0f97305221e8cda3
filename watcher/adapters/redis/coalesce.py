"""Calls made at about the same time, sent to Redis in one round trip: the retry loop's batching.

The retry loop fires up to ``fire_concurrency`` tickets at once, and each ticket makes the same
few calls (``begin_create``, ``settle_created``, ``finalizer_released``). Sent one by one, each
costs a round trip and, more than that on a busy 2-core machine, redis-py's per-command work
in Python (connection checkout, a write and a read syscall, a future). A `Coalescer` queues the
calls made while one round trip of its kind is under way, or in the same turn of the event
loop, and sends them together in the next one, at most `limit` per round trip.

Nothing about each call changes: the sender gets every call with its own arguments and answers
each with its own reply or error (a pipeline of the same scripts, not one merged script), and
each caller gets exactly the answer it would have got alone. A caller cancelled before its
call was sent is dropped from the queue (the call never happens); one cancelled after is the
same as a direct call cancelled mid-flight (it may have happened): the at-most-once argument
covers both (watcher.service.retrying). A failure of the round trip itself reaches every
caller of it, as it would have reached each of them calling at that moment.

At most one round trip of a coalescer is in flight, so a caller waits at most for the one
under way and then its own; each is bounded by the guard's operation timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

A = TypeVar("A")
R = TypeVar("R")

Sender = Callable[[Sequence[A]], Awaitable[Sequence[R | BaseException]]]
"""Sends the calls; per call, in order, its reply or the error that call raised."""


class Coalescer(Generic[A, R]):
    """Queues calls and sends those waiting together; see the module docstring."""

    def __init__(self, send: Sender[A, R], *, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._send = send
        self._limit = limit
        self._queue: list[tuple[A, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.round_trips = 0
        """How many round trips were sent (for tests and benchmarks)."""

    async def call(self, arg: A) -> R:
        """`arg` sent with the others waiting; its reply, or the error raised for it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if self._task is not None and self._task.get_loop() is not loop:
            # Left behind by an event loop that was closed mid-drain (a test's, or an
            # asyncio.run that ended): its calls can never be answered, and would block ours.
            self._queue = [entry for entry in self._queue if entry[1].get_loop() is loop]
            self._task = None
        self._queue.append((arg, future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future  # a cancelled caller cancels its future: `_drain` skips it

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch: list[tuple[A, asyncio.Future[R]]] = []
                while self._queue and len(batch) < self._limit:
                    entry = self._queue.pop(0)
                    if not entry[1].done():
                        batch.append(entry)
                if batch:
                    await self._round_trip(batch)
        except asyncio.CancelledError:
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()
            raise
        finally:
            self._task = None

    async def _round_trip(self, batch: list[tuple[A, asyncio.Future[R]]]) -> None:
        self.round_trips += 1
        try:
            replies = await self._send([arg for arg, _ in batch])
            if len(replies) != len(batch):
                raise RuntimeError(f"sent {len(batch)} calls, got {len(replies)} replies")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # its caller was cancelled meanwhile: the reply is dropped
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)
