"""What `kube-dlq dlq list|export|purge` select: a filter over dead letters, and a cursor.

Pure: the CLI parses flags into a `DeadLetterFilter`, the Redis reader
(`watcher.adapters.redis.queries`) answers the class, namespace, queue and time parts from
its indexes and stream ids, and `DeadLetterFilter.matches` checks the rest (job substring,
owner) on each decoded entry, and everything again, since an index is only a hint about
what is stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from watcher.core.annotations import failure_class_named, parse_duration, validate_queue
from watcher.core.model import DeadLetter, FailureClass

__all__ = ["Cursor", "DeadLetterFilter", "parse_cursor", "parse_owner"]

_STREAM_ID: Final = re.compile(r"(\d+)-(\d+)")


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Every part is optional; an entry matches when it matches all the parts given."""

    queue: str | None = None
    failure_class: FailureClass | None = None
    namespace: str | None = None
    job: str | None = None
    """A substring of the Job's name."""
    owner: tuple[str, str] | None = None
    """(kind, name) of the Job's owner, e.g. ("CronJob", "nightly"); kind case-insensitive."""
    older_than_s: float | None = None
    newer_than_s: float | None = None

    @classmethod
    def parse(
        cls,
        *,
        queue: str | None = None,
        failure_class: str | None = None,
        namespace: str | None = None,
        job: str | None = None,
        owner: str | None = None,
        older_than: str | None = None,
        newer_than: str | None = None,
    ) -> DeadLetterFilter:
        """From the CLI's flags; `ValueError` with a one-line message for a bad one."""
        return cls(
            queue=validate_queue(queue) if queue is not None else None,
            failure_class=failure_class_named(failure_class) if failure_class else None,
            namespace=namespace or None,
            job=job or None,
            owner=parse_owner(owner) if owner else None,
            older_than_s=parse_duration(older_than) if older_than else None,
            newer_than_s=parse_duration(newer_than) if newer_than else None,
        )

    @property
    def empty(self) -> bool:
        """No part given: every entry matches."""
        return self == DeadLetterFilter()

    def time_range_ms(self, now_ms: int) -> tuple[int | None, int | None]:
        """(lowest, highest) stream-id time in ms an entry may have; None: unbounded."""
        low = None if self.newer_than_s is None else now_ms - int(self.newer_than_s * 1000)
        high = None if self.older_than_s is None else now_ms - int(self.older_than_s * 1000)
        return low, high

    def matches(self, letter: DeadLetter, entry_ms: int, now_ms: int) -> bool:
        """Whether `letter`, stored at `entry_ms` (its stream id's time), is selected."""
        low, high = self.time_range_ms(now_ms)
        if (low is not None and entry_ms < low) or (high is not None and entry_ms > high):
            return False
        if self.queue is not None and letter.queue != self.queue:
            return False
        if self.failure_class is not None and letter.failure_class != self.failure_class:
            return False
        if self.namespace is not None and letter.job.namespace != self.namespace:
            return False
        if self.job is not None and self.job not in letter.job.name:
            return False
        if self.owner is not None:
            owner = letter.owner
            kind, name = self.owner
            if owner is None or owner.kind.lower() != kind.lower() or owner.name != name:
                return False
        return True

    def describe(self) -> str:
        """The filter as the flags that give it, for audit lines and messages."""
        parts = [
            f"--{flag} {value}"
            for flag, value in (
                ("queue", self.queue),
                ("class", self.failure_class.value if self.failure_class else None),
                ("namespace", self.namespace),
                ("job", self.job),
                ("owner", "/".join(self.owner) if self.owner else None),
                ("older-than", f"{self.older_than_s:g}s" if self.older_than_s else None),
                ("newer-than", f"{self.newer_than_s:g}s" if self.newer_than_s else None),
            )
            if value is not None
        ]
        return " ".join(parts) or "(all)"


def parse_owner(text: str) -> tuple[str, str]:
    """``Kind/name`` (e.g. ``CronJob/nightly``) as (kind, name)."""
    kind, sep, name = text.partition("/")
    if not sep or not kind or not name or "/" in name:
        raise ValueError(f"not an owner: {text!r} (use Kind/name, e.g. CronJob/nightly)")
    return kind, name


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position in the listing order: (stream id time, seq, queue). Listing resumes after."""

    ms: int
    seq: int
    queue: str

    def __str__(self) -> str:
        return f"{self.queue}/{self.ms}-{self.seq}"


def parse_cursor(text: str) -> Cursor:
    """An entry id ``<queue>/<ms>-<seq>`` as printed by `dlq list`."""
    queue, _, sid = text.rpartition("/")
    found = _STREAM_ID.fullmatch(sid)
    if not queue or found is None:
        raise ValueError(f"not an entry id for --after: {text!r} (use <queue>/<ms>-<seq>)")
    return Cursor(int(found[1]), int(found[2]), validate_queue(queue))
