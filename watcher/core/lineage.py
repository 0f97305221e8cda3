"""Lineage of a retried Job: from kube-dlq's own records, never from annotations.

Pure. When the retry loop creates the Job for attempt ``n`` of a ticket, it first stores a
create record under the ticket (``RetryStore.begin_create``): namespace, name, a random token,
and the `Lineage` (attempt ``n`` and the attempts before it); the record gets the created Job's
uid when the ticket is settled. The Job carries ``kube-dlq.io/retry-of`` (the ticket id) and
``kube-dlq.io/create-token`` only as a pointer to that record. When a Job fails, `lineage_of`
says whether the record found through that pointer is this Job's:

    record                                          the Job is
    none (no pointer, no record, expired)           an original (attempt 1)
    same namespace and name, and the uid recorded   attempt n of that lineage
      is this Job's, or no uid yet and the token
      matches (settling had not happened yet)
    anything else                                   an original, reported

A Job's author can write any annotation, including another Job's pointer, but cannot make
another Job's record name their Job (the uid is the apiserver's; the token is unknown before
kube-dlq's Job exists, and that Job holds the name). The annotations that humans read
(``original-name``, ``attempt``, ...) are never trusted; when they claim a lineage the record
does not confirm, the caller reports it (``lineage_annotation_ignored``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from watcher.core.annotations import (
    ANNOTATION_ATTEMPT,
    ANNOTATION_CREATE_TOKEN,
    ANNOTATION_FIRST_FAILED_AT,
    ANNOTATION_HISTORY,
    ANNOTATION_ORIGINAL_NAME,
    ANNOTATION_ORIGINAL_UID,
    ANNOTATION_RETRY_OF,
)
from watcher.core.model import AttemptRecord, JobRef
from watcher.core.records import ENTRY_SHAPE, RecordError, decode_attempt, encode_attempt

__all__ = [
    "LINEAGE_ANNOTATIONS",
    "TOKEN_RE",
    "CreateRecord",
    "Lineage",
    "decode_lineage",
    "encode_lineage",
    "lineage_of",
    "record_pointer",
]

TOKEN_RE: Final = re.compile(r"[0-9a-f]{32}")
"""A create token: 128 random bits as hex (``uuid4().hex``)."""
_TICKET_ID_RE: Final = re.compile(r"[A-Za-z0-9-]{1,128}")
_MAX_ATTEMPT: Final = 100_000

LINEAGE_ANNOTATIONS: Final = (
    ANNOTATION_ORIGINAL_NAME,
    ANNOTATION_ORIGINAL_UID,
    ANNOTATION_ATTEMPT,
    ANNOTATION_FIRST_FAILED_AT,
    ANNOTATION_HISTORY,
    ANNOTATION_RETRY_OF,
    ANNOTATION_CREATE_TOKEN,
)
"""Annotations kube-dlq writes on a retry Job; any of them on a Job without a record is
reported."""


@dataclass(frozen=True, slots=True)
class Lineage:
    """What a retry Job is: attempt ``attempt`` (2 = first retry) after ``history``."""

    attempt: int
    history: tuple[AttemptRecord, ...]
    """The attempts that failed before, oldest first; the first is the original Job."""

    @property
    def first_failed_at(self) -> float | None:
        """When the original (the earliest attempt recorded) failed; None if unknown."""
        first = min(self.history, key=_attempt, default=None)
        if first is not None and math.isfinite(first.failed_at):
            return first.failed_at
        times = [r.failed_at for r in self.history if math.isfinite(r.failed_at)]
        return min(times) if times else None


@dataclass(frozen=True, slots=True)
class CreateRecord:
    """A ticket's create record as stored (``RetryStore.create_record``)."""

    namespace: str
    name: str
    token: str
    uid: str
    """The created Job's uid once the ticket is settled; empty before."""
    lineage: Lineage | None
    """None when the stored lineage did not decode or its seal failed (``error`` says why)."""
    error: str = ""
    forged: bool = False
    """The lineage's seal failed: not signed by kube-dlq, altered, or moved."""


def encode_lineage(lineage: Lineage) -> str:
    """Compact JSON: ``{"attempt": n, "history": [...]}`` (history in the Redis entry shape)."""
    history = [encode_attempt(r, ENTRY_SHAPE) for r in sorted(lineage.history, key=_attempt)]
    return json.dumps(
        {"attempt": lineage.attempt, "history": history},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode_lineage(text: str) -> Lineage:
    """The inverse of `encode_lineage`; ValueError (never anything else) for anything else."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"lineage is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("lineage is not a JSON object")
    attempt, history = data.get("attempt"), data.get("history")
    if not isinstance(attempt, int) or isinstance(attempt, bool):
        raise ValueError("lineage attempt is not an integer")
    if not 2 <= attempt <= _MAX_ATTEMPT:
        raise ValueError(f"lineage attempt {attempt} is out of range")
    if not isinstance(history, list):
        raise ValueError("lineage history is not a list")
    try:
        records = tuple(
            decode_attempt(item, shape=ENTRY_SHAPE, where=f"lineage history entry {i}")
            for i, item in enumerate(history)
        )
    except (RecordError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    return Lineage(attempt, records)


def record_pointer(annotations: Mapping[str, str]) -> tuple[str, str] | None:
    """(ticket id, token) from a Job's ``retry-of`` and ``create-token`` annotations, when both
    are well-formed (they become a Redis key: nothing else is looked up)."""
    ticket_id = annotations.get(ANNOTATION_RETRY_OF, "")
    token = annotations.get(ANNOTATION_CREATE_TOKEN, "")
    if not isinstance(ticket_id, str) or not isinstance(token, str):
        return None
    if _TICKET_ID_RE.fullmatch(ticket_id) and TOKEN_RE.fullmatch(token):
        return ticket_id, token
    return None


def lineage_of(job: JobRef, token: str, record: CreateRecord | None) -> Lineage | None:
    """The Job's lineage if `record` (found through its pointer) is this Job's, else None."""
    if record is None or record.lineage is None:
        return None
    if (record.namespace, record.name) != (job.namespace, job.name):
        return None
    if record.uid:
        return record.lineage if record.uid == job.uid else None
    return record.lineage if token and record.token == token else None


def _attempt(record: AttemptRecord) -> int:
    return record.attempt
