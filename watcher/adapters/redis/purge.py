"""`dlq purge`: delete dead letters, each from its stream and its indexes in one step.

The CLI is not a leader, so the script runs unfenced (term None): it neither checks nor
raises the leader fence (watcher.adapters.redis.fencing), like `kube-dlq sweep`. Outcome
markers stay: a purged Job seen again (a relist) is not dead-lettered a second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from watcher.adapters.redis import scripts
from watcher.adapters.redis.client import RedisClient
from watcher.adapters.redis.fencing import Fence, unfenced
from watcher.adapters.redis.guard import Guard, check_client
from watcher.adapters.redis.keys import Keys
from watcher.core.settings import RedisSettings

__all__ = ["PURGE_BATCH", "DeadLetterPurger", "PurgeCount"]

PURGE_BATCH: Final = 500
"""Ids per script call: each call is atomic and short, so the daemon's writes interleave."""


@dataclass(frozen=True, slots=True)
class PurgeCount:
    deleted: int
    missing: int
    """Ids already gone (purged or trimmed meanwhile)."""


class DeadLetterPurger:
    """Deletes entries of one installation's dead-letter queues."""

    def __init__(self, redis: RedisClient, settings: RedisSettings, *, cluster_name: str) -> None:
        check_client(redis, "DeadLetterPurger")
        self._keys = Keys(prefix=settings.key_prefix, cluster=cluster_name)
        guard = Guard(settings.operation_timeout_s)
        self._fence = Fence(redis, self._keys, guard, unfenced)
        self._script = redis.register_script(scripts.PURGE)

    async def purge(self, queue: str, stream_ids: Sequence[str]) -> PurgeCount:
        """Delete `stream_ids` from `queue`, `PURGE_BATCH` per atomic call."""
        deleted = missing = 0
        for i in range(0, len(stream_ids), PURGE_BATCH):
            chunk = list(stream_ids[i : i + PURGE_BATCH])
            done, gone = await self._fence.call(
                "purge",
                self._script,
                keys=[self._keys.dlq(queue), self._keys.dlq_indexes(queue)],
                args=chunk,
            )
            deleted += int(done)
            missing += int(gone)
        return PurgeCount(deleted, missing)
