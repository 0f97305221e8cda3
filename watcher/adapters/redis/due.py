"""When the next retry ticket falls due, on Redis's clock: how long the retry loop may sleep.

A mixin of `watcher.adapters.redis.store.RedisStore` (the store is at its size limit). One
read-only script, so the due set, the lease set and TIME are read at one instant on the node
that holds the keys (Redis Cluster included), and no local clock is consulted.
"""

from __future__ import annotations

from typing import Final

from redis.commands.core import AsyncScript

from watcher.adapters.redis.client import RedisClient
from watcher.adapters.redis.guard import Guard, text
from watcher.adapters.redis.keys import Keys

__all__ = ["DueTimes"]

_NEXT_DUE: Final = """
-- KEYS[1] due zset  KEYS[2] inflight zset
-- -> {now ms, earliest due ms or '', earliest lease end ms or ''}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local lease = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {now, due[2] or '', lease[2] or ''}
"""


class DueTimes:
    """Mixin: needs ``_redis``, ``_keys`` and ``_guard`` from the store."""

    _redis: RedisClient
    _keys: Keys
    _guard: Guard
    _next_due_script: AsyncScript | None = None

    async def next_due_in(self) -> float | None:
        """Seconds until a ticket can next be claimed: the earliest due time, or the earliest
        lease to run out (its ticket is claimed again then), whichever comes first; 0 when one
        is claimable now, None when no ticket is stored."""
        if self._next_due_script is None:
            self._next_due_script = self._redis.register_script(_NEXT_DUE)
        k = self._keys
        async with self._guard("next_due_in"):
            reply = await self._next_due_script(keys=[k.retry_due, k.retry_inflight])
        now_ms = float(reply[0])
        times = [float(text(v)) for v in reply[1:] if text(v)]
        if not times:
            return None
        return max(0.0, (min(times) - now_ms) / 1000)
