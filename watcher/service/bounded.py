"""Fire a claimed batch a few items at a time: the retry loop's concurrency, kept apart.

At most `limit` tasks exist at once; an item's task is created only when a slot is free, so a
batch of any size never makes more. `watcher.service.retrying` has what this means for the
at-most-once argument (a cancelled task is a crash mid-create, which it covers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

__all__ = ["fire_bounded"]

T = TypeVar("T")


async def fire_bounded(
    items: Sequence[T],
    fire: Callable[[T], Awaitable[None]],
    *,
    limit: int,
    stop: asyncio.Event | None,
    give_back: Callable[[Sequence[T]], Awaitable[None]],
) -> None:
    """Run ``fire(item)`` for each of `items`, at most `limit` at once, in order of start.

    Once `stop` is set, the items not started are handed to `give_back` and those in flight
    finish. When one raises, nothing more is started, the others in flight are cancelled and
    the error is raised (`fire` is expected to let only fatal errors out). If this coroutine
    is cancelled, so are the tasks in flight: none outlives it.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    running: set[asyncio.Task[None]] = set()
    failure: BaseException | None = None
    try:
        for index, item in enumerate(items):
            failure = await _reap(running, wait=len(running) >= limit)
            if failure is not None:
                break
            if stop is not None and stop.is_set():
                await give_back(items[index:])
                break
            running.add(asyncio.ensure_future(fire(item)))
        while running and failure is None:
            failure = await _reap(running, wait=True)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    if failure is not None:
        raise failure


async def _reap(running: set[asyncio.Task[None]], *, wait: bool) -> BaseException | None:
    """Drop finished tasks from `running` (after waiting for one if `wait`); the first error
    one of them raised, if any."""
    if wait and running:
        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    done = {task for task in running if task.done()}
    running.difference_update(done)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            return task.exception()
    return None
