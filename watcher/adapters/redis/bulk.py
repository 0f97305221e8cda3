"""Many retry tickets stored in one round trip: bulk loads (the scheduler benchmark, tools).

A mixin of `watcher.adapters.redis.store.RedisStore` (the store is at its size limit). Each
ticket goes through the same schedule script with the same KEYS and ARGV as
`RedisStore.schedule_retry` (``_schedule_call``), fenced the same way; only the round trips
are shared (`Fence.call_many`: a pipeline, each script call atomic on its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.commands.core import AsyncScript

from watcher.adapters.redis.fencing import Fence, ScriptCall
from watcher.core.model import RetryTicket, WriteResult

__all__ = ["BulkSchedule"]


class BulkSchedule:
    """Mixin: needs ``_fence``, ``_schedule_retry_script``, ``_schedule_call`` and
    ``_write_result`` from the store."""

    _fence: Fence
    _schedule_retry_script: AsyncScript

    def _schedule_call(self, ticket: RetryTicket, delay_s: float) -> tuple[list[Any], list[Any]]:
        raise NotImplementedError  # RedisStore's

    def _write_result(self, job_uid: str, reply: Any) -> WriteResult:
        raise NotImplementedError  # RedisStore's

    async def schedule_retries(
        self, tickets: Sequence[tuple[RetryTicket, float]]
    ) -> list[WriteResult]:
        """`schedule_retry` of each ``(ticket, delay_s)``, all in one round trip; in order, what
        each did. Every call runs; then the first error any of them got is raised (a
        `FencedWrite`, or a `SinkError`), the others' writes standing, as if they had been
        made one after the other."""
        if not tickets:
            return []
        script = self._schedule_retry_script
        calls = [
            ScriptCall("schedule_retry", script, *self._schedule_call(ticket, delay_s))
            for ticket, delay_s in tickets
        ]
        replies = await self._fence.call_many(calls)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return [
            self._write_result(ticket.job.uid, reply)
            for (ticket, _), reply in zip(tickets, replies, strict=True)
        ]
