"""Small asyncio helpers shared by the daemon's loops: wait for the first of several things,
sleep unless told to stop, and run a chore periodically."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from structlog.typing import FilteringBoundLogger

__all__ = ["every", "first_done", "sleep_or_stop"]


async def first_done(*waits: Awaitable[Any], at_most_s: float | None = None) -> None:
    """Wait until the first of `waits` is done, or `at_most_s` passes.

    Tasks passed in are left running (the caller owns them); anything else (for example an
    `Event.wait()` coroutine) is wrapped and cancelled on the way out, so nothing leaks.
    """
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, timeout=at_most_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future, wait in zip(futures, waits, strict=True):
            if future is not wait:
                future.cancel()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`, less if `stop` is set meanwhile; True if `stop` is set.

    Always yields to the event loop, even for zero seconds, so a loop built on it never
    starves the others.
    """
    if seconds <= 0:
        await asyncio.sleep(0)
    else:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()
    return stop.is_set()


async def every(
    interval_s: float,
    chore: Callable[[], Awaitable[object]],
    *,
    stop: asyncio.Event,
    logger: FilteringBoundLogger,
    name: str,
) -> None:
    """Run `chore` every `interval_s`, net of its run time, until `stop` is set.

    A chore that raises is logged (with its traceback) and run again at the next tick: one
    failure must not end a daemon's periodic work. A chore that overruns its interval is
    logged and started again at once. Cancellation propagates.
    """
    while not stop.is_set():
        started = time.monotonic()
        try:
            await chore()
        except Exception:  # a chore failing once must not stop the daemon
            logger.exception("chore_failed", chore=name)
        elapsed = time.monotonic() - started
        if elapsed > interval_s:
            logger.warning(
                "chore_overran", chore=name, elapsed_s=round(elapsed, 3), interval_s=interval_s
            )
        await sleep_or_stop(stop, interval_s - elapsed)
