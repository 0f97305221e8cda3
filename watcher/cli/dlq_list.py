"""`kube-dlq dlq list|export|stats`: select entries with filters, page, watch, archive.

Output formats: ``table`` (people), ``json`` (one array, stable keys: `dlq.summary`),
``jsonl`` (one summary a line) and ``yaml``. A page that was cut at ``--limit`` ends with a
hint on stderr naming ``--after <id>`` for the next one, so stdout stays one document.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Sequence
from typing import Any, Final, TextIO

import yaml

from watcher.adapters.redis.queries import CorruptRecord, DeadLetterQueries, Stat
from watcher.cli.dlq import _COLUMNS, _one_line, _unreadable, full, summary
from watcher.core.annotations import format_duration
from watcher.core.dlq_filter import Cursor, DeadLetterFilter

__all__ = ["OUTPUTS", "export_entries", "list_entries", "show_stats", "watch_entries"]

OUTPUTS: Final = ("table", "json", "jsonl", "yaml")

PROGRESS_EVERY: Final = 1000
"""`dlq export` reports on stderr every this many entries."""


async def list_entries(
    queries: DeadLetterQueries,
    flt: DeadLetterFilter,
    *,
    limit: int,
    after: Cursor | None,
    output: str,
    out: TextIO,
    err: TextIO,
) -> int:
    page = await queries.select(flt, limit=limit, after=after)
    rows = [summary(i, letter) for i, letter in page.entries]
    render(rows, output, out)
    _warn_corrupt(page.corrupt, err)
    if flt.queue is None and after is None:
        # Tickets set aside instead of fired are in no queue; name them too, so an upgrade
        # from an unsigned version (or a forgery) is seen where the dead letters are.
        for bad in await queries.quarantined_tickets(count=limit):
            err.write(_one_line(f"warning: {bad.entry_id} was quarantined, not fired: {bad.error}"))
    if page.next_after is not None:
        err.write(f"more entries may follow: add --after {page.next_after} for the next page\n")
    return 0


def render(rows: list[dict[str, Any]], output: str, out: TextIO) -> None:
    if output == "json":
        json.dump(rows, out, indent=2)
        out.write("\n")
    elif output == "jsonl":
        for row in rows:
            out.write(json.dumps(row) + "\n")
    elif output == "yaml":
        yaml.safe_dump(rows, out, sort_keys=False, allow_unicode=True)
    else:
        table(rows, out)


def table(rows: Sequence[dict[str, Any]], out: TextIO, *, header: bool = True) -> None:
    if not rows and header:
        out.write("no dead letters\n")
        return
    if header:
        out.write("  ".join(f"{title:<{width}}" for title, _, width in _COLUMNS).rstrip() + "\n")
    for row in rows:
        cells = []
        for _, key, width in _COLUMNS:
            text = " ".join(str(row[key]).split())
            cells.append(f"{text if len(text) <= width else text[: width - 1] + '…':<{width}}")
        out.write("  ".join(cells).rstrip() + "\n")


async def watch_entries(
    queries: DeadLetterQueries, flt: DeadLetterFilter, *, output: str, out: TextIO, err: TextIO
) -> int:
    """Print entries as they land until Ctrl-C or SIGTERM, then exit 0.

    The signal sets a flag the read loop checks between blocking reads (each under a few
    seconds) instead of cancelling a read in flight: a clean stop, no half-read reply.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stopping.set)
    since = await queries.now_ms()
    # On stderr, so a pipe of documents stays clean; also tells a script the watch is live.
    err.write("kube-dlq: watching for new entries (Ctrl-C to stop)\n")
    err.flush()
    if output == "table":
        out.write("  ".join(f"{title:<{width}}" for title, _, width in _COLUMNS).rstrip() + "\n")
    out.flush()
    async for found in queries.follow(flt, since_ms=since, stop=stopping.is_set):
        if isinstance(found.decoded, CorruptRecord):
            _warn_corrupt([found.decoded], err)
            continue
        row = summary(*found.decoded)
        if output == "table":
            table([row], out, header=False)
        else:  # a stream of documents: one JSON object a line, whatever -o asked
            out.write(json.dumps(row) + "\n")
        out.flush()
    return 0


async def export_entries(
    queries: DeadLetterQueries,
    flt: DeadLetterFilter,
    *,
    reveal: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """Every matching entry, everything stored (`dlq.full`), one JSON object a line."""
    now = await queries.now_ms()
    count = bad = 0
    async for found in queries.iterate(flt, now_ms=now):
        if isinstance(found.decoded, CorruptRecord):
            bad += 1
            _warn_corrupt([found.decoded], err)
            continue
        entry_id, letter = found.decoded
        out.write(json.dumps(full(entry_id, letter, reveal=reveal), default=str) + "\n")
        count += 1
        if count % PROGRESS_EVERY == 0:
            err.write(f"exported {count} entries...\n")
            err.flush()
        await asyncio.sleep(0)  # let Ctrl-C and timeouts in between batches
    skipped = f", {bad} unreadable skipped" if bad else ""
    err.write(f"exported {count} entries{skipped}\n")
    return 0


def _warn_corrupt(records: Sequence[CorruptRecord], err: TextIO) -> None:
    for bad in records:
        err.write(_one_line(_unreadable("warning: entry", bad)))


async def show_stats(
    queries: DeadLetterQueries, *, queue: str | None, output: str, out: TextIO
) -> int:
    now = await queries.now_ms()
    stats = await queries.stats(queue=queue, now_ms=now)
    if output == "json":
        doc: dict[str, list[dict[str, Any]]] = {"queue": [], "class": [], "namespace": []}
        for s in stats:
            doc[s.by].append(_stat_doc(s))
        json.dump(doc, out, indent=2)
        out.write("\n")
        return 0
    if not any(s.by == "queue" for s in stats):
        out.write("no dead-letter queues\n")
        return 0
    for by, title in (("queue", "QUEUE"), ("class", "CLASS"), ("namespace", "NAMESPACE")):
        rows = [s for s in stats if s.by == by]
        if not rows:
            continue
        out.write(f"{title:<24}  {'DEPTH':>8}  {'OLDEST':>8}  {'LAST HOUR':>9}\n")
        for s in rows:
            oldest = "-" if s.oldest_age_s is None else format_duration(s.oldest_age_s)
            out.write(f"{s.name:<24}  {s.depth:>8}  {oldest:>8}  {s.inflow_1h:>9}\n")
        out.write("\n")
    return 0


def _stat_doc(s: Stat) -> dict[str, Any]:
    return {
        "name": s.name,
        "depth": s.depth,
        "oldest_age_s": None if s.oldest_age_s is None else round(s.oldest_age_s, 3),
        "inflow_last_hour": s.inflow_1h,
    }
