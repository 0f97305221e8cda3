"""`kube-dlq dlq purge`: delete dead letters by id or by filter, after a confirmation.

Safe by default: nothing is deleted without a yes at the prompt or ``--yes``, and without a
terminal to ask on, ``--yes`` is required (a script that forgot it must not purge).
``--dry-run`` prints what would go. Each entry leaves its stream and its indexes in one
atomic step (`watcher.adapters.redis.purge`); every run writes one audit log line
(``dlq_purge``: who, what selection, how many). ``dead_letter.read_only: true`` refuses the
verb before Redis is touched.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from watcher.adapters.redis.purge import DeadLetterPurger
from watcher.adapters.redis.queries import CorruptRecord, DeadLetterQueries
from watcher.core.dlq_filter import DeadLetterFilter
from watcher.kit.logs import get_logger

__all__ = ["PurgeRequest", "purge_entries"]

_PREFIX = "kube-dlq dlq purge:"


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    ids: Sequence[str]
    flt: DeadLetterFilter
    everything: bool
    dry_run: bool
    yes: bool


async def purge_entries(
    queries: DeadLetterQueries,
    purger: DeadLetterPurger,
    request: PurgeRequest,
    *,
    interactive: bool,
    confirm: Callable[[str], bool],
    out: TextIO,
    err: TextIO,
) -> int:
    log = get_logger().bind(user=_user(), selection=_selection(request), dry_run=request.dry_run)
    targets, unreadable, absent = await _targets(queries, request, err)
    if absent:
        return 1
    by_queue: dict[str, list[str]] = {}
    for entry_id in targets:
        queue, _, sid = entry_id.rpartition("/")
        by_queue.setdefault(queue, []).append(sid)
    counts = ", ".join(f"{q}: {len(ids)}" for q, ids in sorted(by_queue.items()))
    what = f"{len(targets)} entries" + (f" ({counts})" if counts else "")
    if unreadable:
        err.write(f"{_PREFIX} {unreadable} unreadable entries do not match a filter; purge by id\n")
    if request.dry_run:
        for entry_id in targets:
            out.write(entry_id + "\n")
        out.write(f"dry run: would purge {what}\n")
        log.info("dlq_purge", outcome="dry_run", matched=len(targets), purged=0)
        return 0
    if not targets:
        out.write("nothing to purge\n")
        log.info("dlq_purge", outcome="nothing", matched=0, purged=0)
        return 0
    if not request.yes:
        if not interactive:
            err.write(f"{_PREFIX} would purge {what}; no terminal to confirm on: pass --yes\n")
            return 2
        if not confirm(f"purge {what}? this cannot be undone [y/N] "):
            out.write("aborted: nothing purged\n")
            log.info("dlq_purge", outcome="aborted", matched=len(targets), purged=0)
            return 1
    deleted = missing = 0
    for queue, sids in sorted(by_queue.items()):
        done = await purger.purge(queue, sids)
        deleted += done.deleted
        missing += done.missing
    gone = f" ({missing} already gone)" if missing else ""
    out.write(f"purged {deleted} entries{gone}\n")
    log.info("dlq_purge", outcome="purged", matched=len(targets), purged=deleted, missing=missing)
    return 0


async def _targets(
    queries: DeadLetterQueries, request: PurgeRequest, err: TextIO
) -> tuple[list[str], int, bool]:
    """(entry ids to purge, unreadable entries a filter met, whether a named id was absent)."""
    if request.ids:
        found: list[str] = []
        for entry_id in request.ids:
            try:
                hit = await queries.find_dead_letter(entry_id)
            except ValueError as exc:
                err.write(f"{_PREFIX} {exc}\n")
                return [], 0, True
            if hit is None:
                err.write(f"{_PREFIX} no dead letter {entry_id}: nothing purged\n")
                return [], 0, True
            # A corrupt or forged entry is purged by id too: removing it is the fix.
            found.append(hit.entry_id if isinstance(hit, CorruptRecord) else hit[0])
        return found, 0, False
    now = await queries.now_ms()
    targets: list[str] = []
    unreadable = 0
    async for item in queries.iterate(request.flt, now_ms=now):
        if isinstance(item.decoded, CorruptRecord):
            if request.everything:
                targets.append(item.decoded.entry_id)
            else:
                unreadable += 1
        else:
            targets.append(item.decoded[0])
    return targets, unreadable, False


def _selection(request: PurgeRequest) -> str:
    if request.ids:
        shown = " ".join(request.ids[:5]) + (" ..." if len(request.ids) > 5 else "")
        return f"ids ({len(request.ids)}): {shown}"
    return "--all" if request.everything else request.flt.describe()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (a bare container)
        return "unknown"
