"""The retry loop's pending-retries gauge, read from Redis at most about once a second.

While tickets are due the loop cycles back to back (tens of cycles a second at 1,000 fires/s),
and reading the count each time (a MULTI of two ZCARDs) cost about 4 us per fire, for a gauge
scraped every 15-30 s. So it is read once a second has passed since the last read, or when the
loop is about to sleep past that second: the gauge is right soon after the last fire.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

from watcher.core.errors import SinkError
from watcher.kit.metrics import Metrics
from watcher.service.ports import RetryStore

__all__ = ["REFRESH_S", "PendingGauge"]

REFRESH_S: Final = 1.0
"""Least time between two reads while cycles follow each other."""


class PendingGauge:
    """``retries_pending``, refreshed from the store; see the module docstring."""

    def __init__(self, store: RetryStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._read_at = -math.inf
        """When the count was last read (the event loop's clock)."""

    async def refresh(self, *, next_cycle_in: float = math.inf) -> None:
        """Read the count, unless it was read less than REFRESH_S ago and the next cycle
        (`next_cycle_in` seconds from now; by default none is planned) comes before that.

        Raises `SinkError` (after counting it) when Redis fails.
        """
        now = asyncio.get_running_loop().time()
        if now + next_cycle_in < self._read_at + REFRESH_S:
            return
        try:
            pending = await self._store.pending_retries()
        except SinkError:
            self._metrics.redis_errors.labels(operation="pending_retries").inc()
            raise
        self._metrics.retries_pending.set(pending)
        self._read_at = now
