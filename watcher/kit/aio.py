"""Small asyncio helpers shared by the daemon's loops."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


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
