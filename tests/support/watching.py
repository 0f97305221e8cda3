"""Helpers for tests of the watch adapter: a recording consumer, captured logs, metric reads."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from asyncio import selector_events, sslproto
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import structlog
from structlog.typing import FilteringBoundLogger

from watcher.adapters.kube.watch import Item, Synced, Watcher, WatchEvent
from watcher.kit.metrics import PREFIX, Metrics

T = TypeVar("T")


def check(condition: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    """Turn a plain condition into the async probe that `eventually` polls."""

    async def probe() -> T:
        return condition()

    return probe


class LogLines:
    """A structlog logger whose lines are kept (at every level) instead of printed."""

    def __init__(self) -> None:
        self.lines: list[MutableMapping[str, Any]] = []

        def keep(_: Any, method: str, event: MutableMapping[str, Any]) -> Any:
            self.lines.append({**event, "level": method})
            raise structlog.DropEvent

        self.logger: FilteringBoundLogger = structlog.wrap_logger(
            structlog.PrintLogger(),
            processors=[keep],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )

    def named(self, event: str, **fields: Any) -> list[MutableMapping[str, Any]]:
        return [
            line
            for line in self.lines
            if line["event"] == event and all(line.get(k) == v for k, v in fields.items())
        ]


def connections_in_use(api: Any) -> int:
    """Connections of a kubernetes_asyncio ApiClient's aiohttp pool that are checked out.

    A response that was never released or closed keeps its connection checked out; after a
    stream has ended this must be 0. (aiohttp only warns about such leaks at garbage
    collection, too late to fail the test that caused them.) Reads a private attribute.
    """
    connector = api.rest_client.pool_manager.connector
    return len(connector._acquired)


def lingering_tls_closes() -> int:
    """Open sockets whose TLS layer is still waiting for the peer's close_notify.

    A TLS connection closed politely stays open until the peer answers (asyncio gives it
    30 s); with a dead peer that outlasts the test's event loop and leaks the socket. Looks
    at asyncio internals (its selector transports and SSL protocol states).
    """
    waiting = (sslproto.SSLProtocolState.FLUSHING, sslproto.SSLProtocolState.SHUTDOWN)
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, selector_events._SelectorSocketTransport)
        and obj._sock is not None
        and isinstance(obj._protocol, sslproto.SSLProtocol)
        and obj._protocol._state in waiting
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """The current value of one kube_dlq metric sample (0 when it was never set)."""
    value = metrics.registry.get_sample_value(f"{PREFIX}_{name}", labels)
    return 0.0 if value is None else value


class Recorder:
    """Consumes a Watcher in a task of its own and records every item, like the daemon would.

    Use as `async with Recorder(watcher) as rec:`; leaving the block cancels the task and
    waits for it, so no stream or task outlives the test.
    """

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.items: list[Item] = []
        self._task: asyncio.Task[None] | None = None

    async def _consume(self) -> None:
        async for item in self.watcher:
            self.items.append(item)

    @property
    def task(self) -> asyncio.Task[None]:
        assert self._task is not None
        return self._task

    @property
    def events(self) -> list[WatchEvent]:
        return [i for i in self.items if isinstance(i, WatchEvent)]

    @property
    def synced(self) -> list[Synced]:
        return [i for i in self.items if isinstance(i, Synced)]

    def of(self, name: str) -> list[WatchEvent]:
        return [e for e in self.events if e.obj["metadata"]["name"] == name]

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.create_task(
            self._consume(), name=f"watch-{self.watcher.resource.name}"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
