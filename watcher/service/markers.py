"""Forget the exactly-once markers of Jobs a complete list shows gone from the API.

A marker has no TTL while its Job may be in the API, so a Job that stays Failed for any
length of time gets one outcome. What keeps markers from growing without bound is this: around
every complete list of Jobs (the daemon's after each relist, the sweep's one list), the
writer tells the store which Job uids the list returned, and the store lets expire the markers
of the others. Three rules make that safe (docs/exactly-once.md has the argument):

- **Only markers written before the list began.** `MarkerSweeper.before_list` reads the
  store's marker sequence number before the list starts; a marker written later may be of a
  Job created after the list's snapshot, which the list cannot show.
- **Only in this process's scope.** A list shows every Job of the cluster, but a process
  forgets only markers of namespaces it handles (`marker_scope`), so a narrower installation
  never forgets what a wider one wrote.
- **Never with a retry pending.** The store keeps a marker whose retry ticket is not acked.

A forgotten marker is not deleted: it expires after ``redis.outcome_ttl_s``, so a writer that
still holds the failure of a Job deleted meanwhile (a queued write, Redis unreachable for it)
finds the marker when it comes back, within that time. After it, writing the uid again would
write, which is fine: no list shows the Job any more, and uids are never reused.
"""

from __future__ import annotations

from collections.abc import Set

from structlog.typing import FilteringBoundLogger

from watcher.core.errors import SinkError
from watcher.core.model import ForgetResult
from watcher.core.settings import ScopeSettings
from watcher.kit.metrics import Metrics
from watcher.service.ports import MarkerStore

__all__ = ["MarkerSweeper", "marker_scope"]


def marker_scope(
    scope: ScopeSettings, selected_namespaces: frozenset[str] | None
) -> frozenset[str] | None:
    """The namespaces whose markers a process with `scope` may forget; None: every one.

    `selected_namespaces` are those the namespace label selector matches now (None when they
    are not known); with a selector and none known, nothing is forgotten.
    """
    if scope.namespaces:
        return frozenset(scope.namespaces)
    if scope.namespace_label_selector:
        return selected_namespaces or frozenset()
    return None


class MarkerSweeper:
    """`before_list` before a complete list of Jobs, `after_list` with what it returned."""

    def __init__(
        self, store: MarkerStore, *, metrics: Metrics, logger: FilteringBoundLogger
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._log = logger
        self._mark: int | None = None
        """The store's marker sequence number read before the coming (or current) list; None
        when it could not be read, and after `after_list` used it."""

    async def before_list(self) -> None:
        """Note the markers written so far: those the next complete list can judge.

        Call it before the list's first request. If Redis does not answer, that list forgets
        nothing (the next one will).
        """
        try:
            self._mark = await self._store.outcome_watermark()
        except SinkError as exc:
            self._mark = None
            self._metrics.redis_errors.labels(operation="forget_markers").inc()
            self._log.warning("outcome_markers_not_swept", error=str(exc))

    async def after_list(
        self, present_uids: Set[str], namespaces: frozenset[str] | None
    ) -> ForgetResult | None:
        """Forget the markers of Jobs gone: written before the list, of a uid not in
        `present_uids` (every Job uid the complete list returned), in `namespaces` (None:
        any; see `marker_scope`). None when nothing could be judged or Redis failed."""
        mark, self._mark = self._mark, None
        if mark is None:
            return None
        try:
            result = await self._store.forget_absent(
                present_uids, written_up_to=mark, namespaces=namespaces
            )
        except SinkError as exc:
            self._metrics.redis_errors.labels(operation="forget_markers").inc()
            self._log.warning("outcome_markers_not_swept", error=str(exc))
            return None
        self._metrics.markers_forgotten.inc(result.forgotten)
        if result.forgotten or result.pending_retry:
            self._log.info(
                "outcome_markers_forgotten",
                forgotten=result.forgotten,
                kept_for_pending_retry=result.pending_retry,
                out_of_scope=result.out_of_scope,
            )
        return result
