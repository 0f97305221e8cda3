"""Calls made at about the same time, sent to Redis in one round trip: the store's one batching.

The writer handles several due failures at once and ends each in one outcome write script; the
retry loop fires up to ``fire_concurrency`` tickets at once, and each makes the same few calls
(``begin_create``, ``settle_created``, ``finalizer_released``). Sent one by one, each costs a
round trip and, more than that on a busy 2-core machine, redis-py's per-command work in Python
(connection checkout, a write and a read syscall, a future). A `Coalescer` queues the calls
made while one of its round trips is under way, or in the same turn of the event loop, and
sends them together in the next one, at most `limit` per round trip. The store's fenced
scripts, of any kind mixed, share one (`Fence.call_batched`, whose sender is
`Fence.call_many`); the finalizer records share one ZREM.

Nothing about each call changes: the sender gets every call with its own arguments and answers
each with its own reply or error (for scripts, a pipeline of script calls, each atomic on its
own with its own fence check), and each caller gets exactly the answer it would have got alone.
A caller cancelled before its call was sent is dropped from the queue (the call never
happens); one cancelled after is the same as a direct call cancelled mid-flight (it may have
happened): the at-most-once argument covers both (watcher.service.retrying). Once no caller of
the round trip under way, nor of the queue, is waiting any more (a shutdown's grace ran out),
the round trip is cancelled too, as a call of one's own would be, rather than left to hang on
Redis. A failure of the round trip itself reaches every caller of it, as it would have reached
each of them calling at that moment.

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
        self._sending: list[tuple[A, asyncio.Future[R]]] = []
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
        try:
            return await future  # a cancelled caller cancels its future: `_drain` skips it
        except asyncio.CancelledError:
            waiting = (f for _, f in (*self._sending, *self._queue) if not f.done())
            if self._task is not None and next(waiting, None) is None:
                self._task.cancel()  # nobody left to answer: do not wait on Redis for them
            raise

    @property
    def busy(self) -> bool:
        """Whether calls are queued or a round trip is under way."""
        return self._task is not None

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch: list[tuple[A, asyncio.Future[R]]] = []
                while self._queue and len(batch) < self._limit:
                    entry = self._queue.pop(0)
                    if not entry[1].done():
                        batch.append(entry)
                if batch:
                    self._sending = batch
                    await self._round_trip(batch)
                    self._sending = []
        except asyncio.CancelledError:
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()
            raise
        finally:
            self._task = None
            self._sending = []

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
