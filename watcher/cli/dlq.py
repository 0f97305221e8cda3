"""`kube-dlq dlq list|show`: what landed on the dead-letter queues, for people and scripts.

Entries that do not decode never stop a listing: each is one warning line on stderr, so
stdout stays exactly the table or the JSON (``-o json`` output is parseable whatever is
stored). ``show`` of such an entry prints one error line and exits 2.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any, TextIO

from watcher.adapters.redis.queries import CorruptRecord, DeadLetterQueries
from watcher.core.manifest import mask_inline_env
from watcher.core.model import DeadLetter


def summary(entry_id: str, letter: DeadLetter) -> dict[str, Any]:
    """The stable JSON shape of one entry in `dlq list -o json`."""
    return {
        "id": entry_id,
        "queue": letter.queue,
        "namespace": letter.job.namespace,
        "job": letter.job.name,
        "job_uid": letter.job.uid,
        "owner": f"{letter.owner.kind}/{letter.owner.name}" if letter.owner else None,
        "failure_class": letter.failure_class.value,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "failed_at": _iso(letter.failed_at),
        "cluster": letter.cluster,
    }


def full(entry_id: str, letter: DeadLetter, *, reveal: bool = False) -> dict[str, Any]:
    """Everything stored for an entry (`dlq show`); inline env values hidden unless `reveal`."""
    doc = asdict(letter)
    if not reveal:
        doc["manifest"], hidden = mask_inline_env(letter.manifest)
        if hidden:
            doc["hidden_env_values"] = hidden
    doc["failure_class"] = letter.failure_class.value
    for record in doc["history"]:
        record["failure_class"] = str(record["failure_class"])
    doc["failed_at"] = _iso(letter.failed_at)
    return {"id": entry_id, **doc}


async def list_entries(
    queries: DeadLetterQueries,
    *,
    queue: str | None,
    count: int,
    output: str,
    out: TextIO,
    err: TextIO,
) -> int:
    entries = await queries.list_dead_letters(queue, count=count)
    if output == "json":
        json.dump([summary(i, letter) for i, letter in entries], out, indent=2)
        out.write("\n")
    else:
        _table([summary(i, letter) for i, letter in entries], out)
    for bad in entries.corrupt:
        err.write(_one_line(_unreadable("warning: entry", bad)))
    if queue is None:
        # Tickets set aside instead of fired are in no queue; name them too, so an upgrade
        # from an unsigned version (or a forgery) is seen where the dead letters are.
        for bad in await queries.quarantined_tickets(count=count):
            err.write(_one_line(f"warning: {bad.entry_id} was quarantined, not fired: {bad.error}"))
    return 0


async def show_entry(
    queries: DeadLetterQueries, entry_id: str, *, out: TextIO, err: TextIO, reveal: bool = False
) -> int:
    try:
        found = await queries.find_dead_letter(entry_id)
    except ValueError as exc:
        err.write(_one_line(f"kube-dlq dlq show: {exc}"))
        return 2
    if isinstance(found, CorruptRecord):
        err.write(_one_line(_unreadable("kube-dlq dlq show:", found)))
        return 2
    if found is None:
        err.write(f"kube-dlq dlq show: no dead letter {entry_id}\n")
        return 1
    json.dump(full(*found, reveal=reveal), out, indent=2, default=str)
    out.write("\n")
    return 0


def _unreadable(lead: str, bad: CorruptRecord) -> str:
    # A forged entry is named as such: it may be an attack, not a bug (docs/security.md).
    what = "is not signed by kube-dlq, not shown" if bad.forged else "could not be read"
    return f"{lead} {bad.entry_id} {what}: {bad.error}"


_COLUMNS = (
    ("ID", "id", 30),
    ("NAMESPACE", "namespace", 16),
    ("JOB", "job", 28),
    ("CLASS", "failure_class", 18),
    ("TRIES", "attempts", 5),
    ("FAILED AT", "failed_at", 20),
    ("REASON", "reason", 60),
)


def _table(rows: list[dict[str, Any]], out: TextIO) -> None:
    if not rows:
        out.write("no dead letters\n")
        return
    out.write("  ".join(f"{title:<{width}}" for title, _, width in _COLUMNS).rstrip() + "\n")
    for row in rows:
        cells = []
        for _, key, width in _COLUMNS:
            text = str(row[key])
            cells.append(f"{text if len(text) <= width else text[: width - 1] + '…':<{width}}")
        out.write("  ".join(cells).rstrip() + "\n")


def _iso(ts: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):  # finite, but beyond what time_t holds
        return f"{ts:g}"


_LINE_CHARS = 500


def _one_line(text: str) -> str:
    """`text` as one line of at most _LINE_CHARS: a stored error can quote stored bytes."""
    line = " ".join(text.split())
    return (line if len(line) <= _LINE_CHARS else line[: _LINE_CHARS - 1] + "…") + "\n"
