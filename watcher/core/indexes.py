"""The failed completion indexes of an Indexed Job (docs/redrive.md, ``--failed-indexes``). Pure.

Read from the Job's ``status.failedIndexes`` (``"1,3-5"``, set with ``backoffLimitPerIndex``)
or, without it, from the ``batch.kubernetes.io/job-completion-index`` annotation of its failed
pods. Both are anyone's to write, so parsing is total and bounded: garbage, an index outside
``spec.completions`` or more than `MAX_INDEXES` of them gives ``()``, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = [
    "COMPLETION_INDEX_ANNOTATION",
    "MAX_INDEXES",
    "failed_indexes_of",
    "format_indexes",
    "indexes_from_pods",
    "is_indexed",
    "parse_indexes",
]

COMPLETION_INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
MAX_INDEXES: Final = 100_000
"""At most this many indexes are kept (an entry stays small; the API caps completions at
100,000 for backoffLimitPerIndex too)."""
_MAX_TEXT: Final = 1_000_000
_ITEM_RE: Final = re.compile(r"([0-9]{1,9})(?:-([0-9]{1,9}))?")


def _limit(completions: int | None) -> int:
    return MAX_INDEXES if completions is None else min(completions, MAX_INDEXES)


def parse_indexes(text: object, *, completions: int | None = None) -> tuple[int, ...]:
    """``"1,3-5"`` -> ``(1, 3, 4, 5)``, sorted and without duplicates; ``()`` for anything that
    is not such a list, names an index >= `completions`, or holds too many."""
    if not isinstance(text, str) or not text.strip() or len(text) > _MAX_TEXT:
        return ()
    limit = _limit(completions)
    found: set[int] = set()
    for item in text.split(","):
        match = _ITEM_RE.fullmatch(item.strip())
        if match is None:
            return ()
        low = int(match[1])
        high = int(match[2]) if match[2] is not None else low
        if high < low or (completions is not None and high >= completions):
            return ()
        if high - low + 1 > limit:
            return ()
        found.update(range(low, high + 1))
        if len(found) > limit:
            return ()
    return tuple(sorted(found))


def indexes_from_pods(values: Iterable[object], *, completions: int | None) -> tuple[int, ...]:
    """The completion-index annotation values of failed pods -> their sorted indexes; values
    that are not an index in range are ignored (a pod without one says nothing)."""
    limit = _limit(completions)
    found: set[int] = set()
    for value in values:
        if not isinstance(value, str) or not value.isascii() or not value.isdigit():
            continue
        if len(value) > 9:
            continue
        index = int(value)
        if completions is not None and index >= completions:
            continue
        found.add(index)
        if len(found) > limit:
            return ()
    return tuple(sorted(found))


def is_indexed(job: Mapping[str, object]) -> bool:
    """Whether a Job manifest runs in Indexed completion mode."""
    spec = job.get("spec")
    return isinstance(spec, Mapping) and spec.get("completionMode") == "Indexed"


def _completions(job: Mapping[str, object]) -> int | None:
    spec = job.get("spec")
    value = spec.get("completions") if isinstance(spec, Mapping) else None
    return value if type(value) is int and value > 0 else None


def failed_indexes_of(
    job: Mapping[str, object], failed_pod_indexes: Iterable[object] = ()
) -> tuple[int, ...]:
    """The failed indexes to record for a failed Job: ``status.failedIndexes`` when present,
    else those of its failed pods; ``()`` for a Job that is not Indexed."""
    if not is_indexed(job):
        return ()
    completions = _completions(job)
    status = job.get("status")
    text = status.get("failedIndexes") if isinstance(status, Mapping) else None
    if isinstance(text, str) and text.strip():
        return parse_indexes(text, completions=completions)
    return indexes_from_pods(failed_pod_indexes, completions=completions)


def format_indexes(indexes: Iterable[int]) -> str:
    """``(1, 3, 4)`` -> ``"1,3,4"``: the value of KUBE_DLQ_ORIGINAL_INDEXES (no ranges, so a
    shell workload reads its entry with ``cut -d, -f$((i+1))``)."""
    return ",".join(str(i) for i in indexes)
