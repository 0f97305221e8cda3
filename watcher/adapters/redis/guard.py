"""Where redis-py stops: its errors and the operation timeout become `SinkError`, here only.

`RedisStore` and `DeadLetterQueries` wrap every Redis round-trip in a `Guard`, so callers above
the adapter handle one exception type (`watcher.core.errors.SinkError`, with the redis-py error
chained as ``__cause__``) and no call waits longer than ``redis.operation_timeout_s``, the
client's own retries included. The small conversions both classes need (bytes/text, seconds to
the milliseconds Redis stores, stream ids) live here too, so they are written once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from watcher.core.errors import SinkError

__all__ = ["Guard", "as_bytes", "check_client", "ms", "stream_id_key", "text"]


@dataclass(frozen=True, slots=True)
class Guard:
    """``async with guard("op"):`` turns Redis failures and the time bound into `SinkError`."""

    timeout_s: float
    """Upper bound on the guarded block: on top of the socket timeouts, because a client that
    retries can otherwise spend several socket timeouts on one call."""

    @asynccontextmanager
    async def __call__(self, op: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.timeout_s):
                yield
        # RedisClusterException is not a RedisError: the cluster client raises it when no seed
        # node answers (an outage, to be retried like any other) or a slot is uncovered.
        except (RedisError, RedisClusterException) as exc:
            raise SinkError(f"redis {op} failed: {type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise SinkError(f"redis {op} timed out after {self.timeout_s}s") from exc


def check_client(redis: Redis | RedisCluster, owner: str) -> None:
    """Refuse a client that decodes replies: stored entries are bytes, and an entry that is not
    valid UTF-8 must surface as a corrupt record, not as a decode error inside redis-py."""
    kwargs = (
        redis.get_connection_kwargs()
        if isinstance(redis, RedisCluster)
        else redis.connection_pool.connection_kwargs
    )
    if kwargs.get("decode_responses"):
        raise ValueError(f"{owner} needs a client with decode_responses=False")


def ms(seconds: float) -> int:
    """Seconds to the integer milliseconds Redis scores, TTLs and stream ids use."""
    return round(seconds * 1000)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` (or ``"<ms>"``) as a sortable ``(ms, seq)``; the ms are server time."""
    millis, _, seq = stream_id.partition("-")
    return int(millis), int(seq or 0)
