"""List+watch of one resource kind as raw JSON: never misses a change, never hangs.

The I/O edge of the pipeline (``watch -> correlate -> ...``). A ``Watcher`` streams
``WatchEvent`` (ADDED / MODIFIED / DELETED with the object as the apiserver sent it) and a
``Synced`` marker after every complete list. Three layers, after kopf's
``infinite_watch`` / ``continuous_watch`` / ``watch_objs``:

``Watcher.stream()``  never returns: (re)lists when it has no resourceVersion, watches from
                      the one it has, and after a failure sleeps a capped, jittered
                      exponential backoff (none after a healthy stream that ended closed,
                      timed out or expired: see ``_NORMAL_ENDS``).
``_relist()``         one paginated list (``limit`` / ``continue``): every item as ADDED,
                      then ``Synced`` with the uids present and the list's resourceVersion.
``_watch_once()``     one HTTP watch request from the last resourceVersion with
                      ``allowWatchBookmarks=true`` and a client read timeout, read line by line.

How each way a stream can end is handled (the ``reason`` label of ``watch_restarts``):

    closed        the server ended the stream (its timeout)  reconnect from the last rv
    timeout       nothing arrived within read_timeout_s, or  reconnect from the last rv
                  no connection within connect_timeout_s
    error         connection refused/reset, 5xx, 429, a      reconnect from the last rv
                  malformed line, an ERROR event
    expired       410 Gone / "too old resource version"      relist, then Synced
    unauthorized  401                                        reconnect, maximum backoff
    forbidden     403                                        reconnect, maximum backoff

Consumers must be idempotent: a relist yields every listed object as ADDED again. A DELETED
that happened while disconnected is never delivered as such; the ``Synced`` that follows the
relist lists the uids present, so a consumer drops what is not among them.

Bodies are parsed as JSON only (``lines.loads``: what ``json.loads`` gives, faster), chunk
by chunk (``lines.LineSplitter``); no kubernetes_asyncio model is built (memory and CPU on
the hot path). Given a ``line_type`` (``watcher.core.wire``), watch lines that fit it are
decoded into it, reading only the fields kube-dlq uses; the others, and lists, as dicts. The
``ApiClient`` is used for its configuration only: host, TLS, bearer token (including the
in-cluster token refresh) and its aiohttp session.

The resources watched (``Resource``, ``JOBS``, ``JOB_PODS``, ...) are in ``resources.py``.

Cancellation: cancelling the consumer's task ends the ``async for`` with ``CancelledError``
and every response is closed on the way out. A consumer that stops iterating early should
close the stream (``async with contextlib.aclosing(watcher.stream()) as events``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncGenerator, Callable
from typing import Final, Literal, TypeAlias

import aiohttp
from prometheus_client import Counter
from structlog.typing import FilteringBoundLogger

from watcher.adapters.kube.lines import LineSplitter, LineTooLong, typed_lines, watch_line
from watcher.adapters.kube.request import (
    KubeClient,
    Target,
    dispose,
    error_for,
    item_kind,
    read_object,
    transport_error,
)
from watcher.adapters.kube.resources import (
    EVENTS,
    JOB_PODS,
    JOB_PODS_SELECTOR,
    JOBS,
    NODES,
    PODS,
    Resource,
)
from watcher.core.backoff import compute_delay
from watcher.core.errors import (
    KubeAPIError,
    KubeForbidden,
    KubeGone,
    KubeUnauthorized,
    KubeUnavailable,
)
from watcher.core.rawjson import RawObject
from watcher.core.wire import WireLine, WireObject
from watcher.kit.metrics import Metrics

__all__ = [
    "EVENTS",
    "JOBS",
    "JOB_PODS",
    "JOB_PODS_SELECTOR",
    "NODES",
    "PODS",
    "EventType",
    "Item",
    "Resource",
    "Synced",
    "WatchEvent",
    "Watcher",
]

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
RestartReason = Literal["closed", "timeout", "error", "expired", "unauthorized", "forbidden"]

_CHANGE_TYPES: Final[dict[str, EventType]] = {
    "ADDED": "ADDED",
    "MODIFIED": "MODIFIED",
    "DELETED": "DELETED",
}
_DENIED: Final[frozenset[str]] = frozenset({"unauthorized", "forbidden"})
_NORMAL_ENDS: Final[frozenset[str]] = frozenset({"closed", "timeout", "expired"})
"""Ends that are no failure after a healthy stream. A read timeout is one: the watch cache
sends bookmarks only once the resource changed after the watch's resourceVersion, so a
quiet resource (few Nodes) can be silent for minutes on a perfectly good connection."""


HEALTHY_AFTER_S: Final = 1.0
"""A stream that delivered an event or bookmark, or stayed open this long, was healthy: the
failure count resets and a normal end (closed, read timeout, 410) reconnects without delay. A
server that accepts and at once closes every watch therefore meets a growing backoff, not a
busy loop."""
MAX_LINE_BYTES: Final = 16 * 1024 * 1024
"""Longest watch line accepted; etcd caps objects at 1.5 MiB, so this is only a guard."""


@dataclasses.dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change of one object. ``obj`` is the raw JSON object, with kind and apiVersion,
    or, from a watcher with a ``line_type``, the typed object of its watch line."""

    type: EventType
    obj: RawObject | WireObject


@dataclasses.dataclass(frozen=True, slots=True)
class Synced:
    """A complete (re)list ended: every object present was just yielded as ADDED.

    ``uids`` are the uids of all objects present at ``resource_version``; a consumer forgets
    any object of this resource (and scope) whose uid is not among them.
    """

    resource: Resource
    uids: frozenset[str]
    resource_version: str


Item: TypeAlias = WatchEvent | Synced


class _Restart(Exception):
    """Internal: the current list or stream ended; the loop decides how to go on."""

    def __init__(
        self, reason: RestartReason, detail: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(detail)
        self.reason: RestartReason = reason
        self.detail = detail
        self.retry_after_s = retry_after_s


class Watcher:
    """Streams changes of one resource kind, in one namespace or all of them.

    ``async for item in watcher`` (or ``watcher.stream()``) yields ``WatchEvent`` and
    ``Synced`` forever; it ends only by cancellation or by closing the generator. One stream
    per ``Watcher`` at a time.
    """

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        metrics: Metrics,
        logger: FilteringBoundLogger,
        namespace: str | None = None,
        line_type: type[WireLine] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Timeouts, page size and backoff come from the client's ``kubernetes`` settings.
        ``line_type``: the typed watch line to decode into first (see the module docstring)."""
        settings = client.settings
        self._client = client
        self.resource = resource
        self.namespace = namespace
        self._path = resource.list_path(namespace)
        self._target = Target(resource.name, namespace or "")
        self._selectors = resource.selectors()
        self._settings = settings
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._clock = clock
        self._log = logger.bind(resource=resource.name, namespace=namespace)
        self._rv: str | None = None
        self._typed = typed_lines(line_type)
        self._healthy = False
        self._streaming = False
        self._list_timeout = aiohttp.ClientTimeout(
            total=settings.list_timeout_s, sock_connect=settings.connect_timeout_s
        )
        self._watch_timeout = aiohttp.ClientTimeout(
            sock_connect=settings.connect_timeout_s, sock_read=settings.watch_inactivity_timeout_s
        )
        # Per-event metric children looked up once: labels() costs more than the increment.
        self._event_counters: dict[str, Counter] = {}
        self._counted: dict[str, int] = {}
        """Events decoded by type, not yet added to watch_events (see _count_events)."""
        self._stamp_due = True
        self._last_event = metrics.watch_last_event.labels(resource=resource.name)

    @property
    def resource_version(self) -> str | None:
        """The resourceVersion the next watch starts from (None: a list comes first)."""
        return self._rv

    def __aiter__(self) -> AsyncGenerator[Item, None]:
        return self.stream()

    # -- layer 1: forever ------------------------------------------------------------------

    async def stream(self) -> AsyncGenerator[Item, None]:
        if self._streaming:
            raise RuntimeError(f"{self.resource.name} watcher is already streaming")
        self._streaming = True
        failures = 0
        try:
            while True:
                self._healthy = False
                try:
                    if self._rv is None:
                        async with contextlib.aclosing(self._relist()) as listed:
                            async for item in listed:
                                yield item
                    async with contextlib.aclosing(self._watch_once()) as events:
                        async for event in events:
                            yield event
                    restart = _Restart("closed", "the server ended the watch")
                except _Restart as exc:
                    restart = exc
                except Exception as exc:
                    # Guard: a bug or an unforeseen library error must not end the watch
                    # for good; it is logged with its traceback and retried with backoff.
                    self._log.exception("watch_failed_unexpectedly")
                    restart = _Restart("error", f"{type(exc).__name__}: {exc}")
                if self._healthy:
                    failures = 0
                if not (self._healthy and restart.reason in _NORMAL_ENDS):
                    failures += 1  # failures in a row; a healthy stream's normal end is none
                delay = self._delay(restart, failures)
                self._restarted(restart, delay, failures)
                await asyncio.sleep(delay)
        finally:
            self._metrics.watch_synced.labels(resource=self.resource.name).set(0)
            self._streaming = False

    def _delay(self, restart: _Restart, failures: int) -> float:
        # A 401/403 backs off like any failure, not at once to the cap: right after an
        # apiserver restart its authorizer answers 403 for a few seconds, and a watch parked for
        # watch_backoff_cap_s then delivers pod evidence too late (failures classified unknown,
        # found by the apiserver-restart soak). A real RBAC gap still reaches the cap in a few
        # tries, each one logged as an error with a hint.
        s = self._settings
        if failures == 0:
            return 0.0
        delay = compute_delay(
            failures,
            base_s=s.watch_backoff_base_s,
            factor=2.0,
            cap_s=s.watch_backoff_cap_s,
            jitter="equal",
            rng=self._rng,
        )
        if restart.retry_after_s is not None:
            delay = max(delay, min(restart.retry_after_s, s.watch_backoff_cap_s))
        return delay

    def _restarted(self, restart: _Restart, delay: float, failures: int) -> None:
        name = self.resource.name
        self._metrics.watch_restarts.labels(resource=name, reason=restart.reason).inc()
        if restart.reason == "expired":
            self._rv = None
        if restart.reason != "closed":
            self._metrics.watch_synced.labels(resource=name).set(0)
        fields = {
            "reason": restart.reason,
            "detail": restart.detail,
            "delay_s": round(delay, 3),
            "failures": failures,
            "resource_version": self._rv,
        }
        if restart.reason in _DENIED:
            self._log.error("watch_restarted", **fields, hint="check the daemon's RBAC")
        elif restart.reason == "closed" and failures == 0:
            self._log.debug("watch_restarted", **fields)
        elif failures == 0:
            self._log.info("watch_restarted", **fields)
        else:
            self._log.warning("watch_restarted", **fields)

    # -- layer 2: one list -----------------------------------------------------------------

    async def _relist(self) -> AsyncGenerator[Item, None]:
        name = self.resource.name
        started = self._clock()
        uids: set[str] = set()
        token: str | None = None
        pages = 0
        while True:
            query = [*self._selectors, ("limit", str(self._settings.list_page_size))]
            if token:
                query.append(("continue", token))
            body = await self._get_json(query)
            pages += 1
            items = body.get("items") or []
            kind, api_version = item_kind(body)
            self._metrics.watch_events.labels(resource=name, type="LISTED").inc(len(items))
            for item in items:
                if not isinstance(item, dict):
                    continue
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", api_version)
                uid = _meta(item).get("uid")
                if isinstance(uid, str) and uid:
                    uids.add(uid)
                yield WatchEvent("ADDED", item)
            meta = _as_dict(body.get("metadata"))
            token = meta.get("continue") or None
            if not token:
                break
        rv = meta.get("resourceVersion")
        if not isinstance(rv, str) or not rv:
            raise _Restart("error", "the list response has no resourceVersion")
        self._rv = rv
        self._metrics.watch_synced.labels(resource=name).set(1)
        self._metrics.watch_last_event.labels(resource=name).set_to_current_time()
        self._log.info(
            "watch_listed",
            objects=len(uids),
            pages=pages,
            resource_version=rv,
            duration_s=round(self._clock() - started, 3),
        )
        yield Synced(self.resource, frozenset(uids), rv)

    async def _get_json(self, query: list[tuple[str, str]]) -> RawObject:
        resp = await self._request(query, self._list_timeout)
        try:
            return await read_object(resp, "list", self._target)
        except KubeUnavailable as exc:
            if exc.status is not None:  # an answer arrived, but not a JSON object
                self._metrics.malformed.labels(source=f"list_{self.resource.name}").inc()
            raise _restart_for(exc) from exc

    # -- layer 3: one watch request --------------------------------------------------------

    async def _watch_once(self) -> AsyncGenerator[WatchEvent, None]:
        assert self._rv is not None
        query = [
            *self._selectors,
            ("watch", "true"),
            ("resourceVersion", self._rv),
            ("allowWatchBookmarks", "true"),
        ]
        if self._settings.watch_timeout_s is not None:
            # Spread in [t, 2t) like client-go's reflector, so watchers do not reconnect in step.
            timeout = self._settings.watch_timeout_s * (1.0 + self._rng.random())
            query.append(("timeoutSeconds", str(int(timeout))))
        resp = await self._request(query, self._watch_timeout)
        started = self._clock()
        self._metrics.watch_synced.labels(resource=self.resource.name).set(1)
        self._log.debug("watch_started", resource_version=self._rv)
        ended = False
        lines = LineSplitter(MAX_LINE_BYTES)
        try:
            while not ended:
                chunk = await self._read_chunk(resp)
                ended = not chunk
                try:
                    batch = lines.feed(chunk) if chunk else [lines.end()]
                except LineTooLong as exc:
                    raise _restart_for(transport_error("watch", exc, self._target)) from exc
                self._stamp_due = True
                for line in batch:
                    if not line or line.isspace():
                        continue
                    event = self._decode(line)
                    self._healthy = True
                    if event is not None:
                        yield event
                self._count_events()
        finally:
            self._count_events()
            dispose(resp, complete=ended)
            if self._clock() - started >= HEALTHY_AFTER_S:
                self._healthy = True

    async def _read_chunk(self, resp: aiohttp.ClientResponse) -> bytes:
        """What the stream has next (every line a chunk holds is decoded without an await);
        b"" once it ended."""
        try:
            return await resp.content.readany()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise _restart_for(transport_error("watch", exc, self._target)) from exc

    def _decode(self, line: bytes) -> WatchEvent | None:
        """One watch line -> a change to yield, None (bookmark, unknown type), or _Restart."""
        try:
            etype, obj, rv = watch_line(line, self._typed)
        except (ValueError, KeyError, TypeError) as exc:
            # Skipping a line could lose a change; reconnecting from the last good
            # resourceVersion cannot.
            self._metrics.malformed.labels(source=f"watch_{self.resource.name}").inc()
            raise _Restart("error", f"malformed watch line: {exc}") from exc
        counted = self._counted
        counted[etype] = counted.get(etype, 0) + 1
        if etype == "ERROR" and type(obj) is dict:  # (an ERROR is never typed)
            raise _restart_for(error_for(None, obj, "watch error event", self._target))
        change = _CHANGE_TYPES.get(etype)
        if change is None and etype != "BOOKMARK":
            # A type this code does not know (a newer apiserver): not a change we can apply,
            # and its resourceVersion is not trusted to resume from.
            self._log.warning("watch_event_type_unknown", type=etype)
            return None
        if self._stamp_due:  # once per chunk: its events all arrived at this time
            self._last_event.set_to_current_time()
            self._stamp_due = False
        if isinstance(rv, str) and rv:
            self._rv = rv
        return None if change is None else WatchEvent(change, obj)

    def _count_events(self) -> None:
        """Add the events decoded since the last call to watch_events (one increment per
        type and chunk, not per line: the counter's lock costs more than the addition)."""
        if not self._counted:
            return
        for etype, n in self._counted.items():
            counter = self._event_counters.get(etype)
            if counter is None:
                counter = self._metrics.watch_events.labels(resource=self.resource.name, type=etype)
                if etype in _CHANGE_TYPES or etype in ("BOOKMARK", "ERROR"):
                    self._event_counters[etype] = counter  # bounded: unknown types not kept
            counter.inc(n)
        self._counted.clear()

    # -- HTTP ------------------------------------------------------------------------------

    async def _request(
        self, query: list[tuple[str, str]], client_timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        what = "watch" if ("watch", "true") in query else "list"
        try:
            return await self._client.send(
                "GET",
                self._path,
                what=what,
                target=self._target,
                query=query,
                client_timeout=client_timeout,
            )
        except KubeAPIError as exc:
            raise _restart_for(exc) from exc


def _restart_for(error: KubeAPIError) -> _Restart:
    """How the watch goes on after `error` (the ``reason`` label of watch_restarts)."""
    reason: RestartReason
    if isinstance(error, KubeGone):
        reason = "expired"
    elif isinstance(error, KubeUnauthorized):
        reason = "unauthorized"
    elif isinstance(error, KubeForbidden):
        reason = "forbidden"
    elif isinstance(error, KubeUnavailable) and error.timed_out:
        reason = "timeout"
    else:
        reason = "error"
    return _Restart(reason, str(error), retry_after_s=error.retry_after_s)


# -- helpers (pure) -------------------------------------------------------------------------


def _as_dict(value: object) -> RawObject:
    return value if isinstance(value, dict) else {}


def _meta(obj: RawObject) -> RawObject:
    return _as_dict(obj.get("metadata"))
