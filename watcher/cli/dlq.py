"""`kube-dlq dlq show`, and the shapes every `dlq` verb prints an entry in.

Entries that do not decode never stop a listing: each is one warning line on stderr, so
stdout stays exactly the table or the JSON (``-o json`` output is parseable whatever is
stored). ``show`` of such an entry prints one error line and exits 2. Listing, watching and
exporting are `watcher.cli.dlq_list`; purging is `watcher.cli.dlq_purge`.
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


async def show_entry(
    queries: DeadLetterQueries,
    entry_id: str,
    *,
    out: TextIO,
    err: TextIO,
    reveal: bool = False,
    output: str = "text",
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
    if output == "json":
        json.dump(full(*found, reveal=reveal), out, indent=2, default=str)
        out.write("\n")
    else:
        out.write(readable(*found))
    return 0


def readable(entry_id: str, letter: DeadLetter) -> str:
    """`dlq show` for a person: what failed, why, the evidence, the history, what next.

    Stored strings are printed one line each (`_one_line`): an entry must not be able to
    draw its own lines in an operator's terminal. The manifest is not printed (``-o json``).
    """
    job = letter.job
    owner = f"{letter.owner.kind}/{letter.owner.name}" if letter.owner else "(none)"
    _, hidden = mask_inline_env(letter.manifest)
    lines = [
        f"{entry_id}",
        f"  class:       {letter.failure_class.value}",
        f"  reason:      {letter.reason}",
        f"  job:         {job.namespace}/{job.name} (uid {job.uid})",
        f"  owner:       {owner}",
        f"  attempts:    {letter.attempts}",
        f"  failed at:   {_iso(letter.failed_at)} (cluster {letter.cluster}, queue {letter.queue})",
    ]
    text = "".join(_one_line(line, indent=True) for line in lines)
    text += "  evidence:\n" + (
        "".join(_one_line(f"    - {item}", indent=True) for item in letter.evidence)
        or "    (none recorded)\n"
    )
    text += "  history:\n" + (
        "".join(
            _one_line(
                f"    {r.attempt}. {r.job_name} {r.failure_class!s} at {_iso(r.failed_at)}: "
                f"{r.reason}",
                indent=True,
            )
            for r in letter.history
        )
        or "    (first attempt)\n"
    )
    if letter.redrive_count:
        text += _one_line(
            f"  redriven:    {letter.redrive_count}x, failed again (was {letter.redrive_of})",
            indent=True,
        )
    text += _one_line(f"  redrive:     kube-dlq dlq redrive {entry_id} [--dry-run]", indent=True)
    if hidden:
        text += f"  manifest:    {hidden} inline env value(s) hidden; --reveal -o json shows them\n"
    return text


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


def _iso(ts: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):  # finite, but beyond what time_t holds
        return f"{ts:g}"


_LINE_CHARS = 500


def _one_line(text: str, *, indent: bool = False) -> str:
    """`text` as one line of at most _LINE_CHARS: a stored error can quote stored bytes.

    Line breaks, tabs and other control characters each become a space (a stored string must
    not draw its own lines in a terminal); without `indent`, whitespace runs become one space.
    """
    clean = "".join(c if c.isprintable() else " " for c in text)
    line = clean.rstrip() if indent else " ".join(clean.split())
    return (line if len(line) <= _LINE_CHARS else line[: _LINE_CHARS - 1] + "…") + "\n"
