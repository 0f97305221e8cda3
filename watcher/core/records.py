"""The one encoder and the one decoder of an `AttemptRecord`, for both places it is stored.

An attempt record (one earlier failed attempt of a logical Job) is kept in two wire shapes that
hold the same six values under different keys::

    HISTORY_SHAPE  the kube-dlq.io/history annotation of a re-created Job (watcher.core.manifest)
                   {"attempt", "class", "reason", "failed_at", "job", "uid"}
    ENTRY_SHAPE    the history of a dead letter or retry ticket in Redis (adapters.redis.codec)
                   {"attempt", "job_name", "job_uid", "failure_class", "reason", "failed_at"}

Each place keeps writing the shape it wrote before, byte for byte: both are in clusters already,
and each has readers that know only their own (a replica or a ``kube-dlq`` CLI of an earlier
release; the Redis envelope version 1 may only grow fields, not rename them). `decode_attempt`
reads either shape wherever it is found, telling them apart by the failure-class key, so that
once every reader runs this code one writer can switch shapes without breaking anything.

Both shapes may carry one optional key more, ``memory`` (the OOM policy's memory change for the
next attempt, see ``AttemptRecord.memory``): written only when set, so a record without one is
byte for byte what earlier releases wrote, and readers that do not know the key ignore it.

What a place cuts before writing (the annotation's shorter reasons and millisecond times) is that
place's business; `encode_attempt` writes the record as given.

Decoding untrusted JSON values is total: `decode_attempt` returns an AttemptRecord or raises
`RecordError`, whose message names the field, whatever the value (another type, a bool where a
number belongs, NaN, an infinity, an integer too large for a float).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from watcher.core.model import AttemptRecord, FailureClass
from watcher.core.rawjson import RawObject

__all__ = [
    "ENTRY_SHAPE",
    "HISTORY_SHAPE",
    "MEMORY_KEY",
    "RecordError",
    "RecordShape",
    "decode_attempt",
    "encode_attempt",
]

MEMORY_KEY: Final = "memory"
"""The optional key of ``AttemptRecord.memory``, the same in both shapes."""

_FIELDS: Final = ("attempt", "job_name", "job_uid", "failure_class", "reason", "failed_at")


class RecordError(ValueError):
    """An attempt record that cannot be decoded; the message names the field and why."""


@dataclass(frozen=True, slots=True)
class RecordShape:
    """The JSON key of each AttemptRecord field in one wire shape, in the order it is written."""

    keys: tuple[tuple[str, str], ...]
    """(AttemptRecord field, JSON key) pairs, one per field."""

    def __post_init__(self) -> None:
        if sorted(field for field, _ in self.keys) != sorted(_FIELDS):
            raise ValueError(f"a record shape names each of {', '.join(_FIELDS)} once")

    def key(self, field: str) -> str:
        return next(key for name, key in self.keys if name == field)


HISTORY_SHAPE: Final = RecordShape(
    (
        ("attempt", "attempt"),
        ("failure_class", "class"),
        ("reason", "reason"),
        ("failed_at", "failed_at"),
        ("job_name", "job"),
        ("job_uid", "uid"),
    )
)
"""Short keys: the annotation lists every earlier attempt and must stay small."""

ENTRY_SHAPE: Final = RecordShape(tuple((field, field) for field in _FIELDS))
"""The AttemptRecord field names, as the rest of a stored entry spells its fields."""

_SHAPES: Final = (HISTORY_SHAPE, ENTRY_SHAPE)


def encode_attempt(record: AttemptRecord, shape: RecordShape) -> RawObject:
    """``record`` as a JSON object in ``shape``; values as they are (the class as its value)."""
    values: RawObject = {
        "attempt": record.attempt,
        "job_name": record.job_name,
        "job_uid": record.job_uid,
        "failure_class": record.failure_class.value,
        "reason": record.reason,
        "failed_at": record.failed_at,
    }
    encoded = {key: values[field] for field, key in shape.keys}
    if record.memory:
        encoded[MEMORY_KEY] = record.memory
    return encoded


def decode_attempt(item: object, *, shape: RecordShape, where: str) -> AttemptRecord:
    """The AttemptRecord in a decoded JSON value, or `RecordError` naming ``where`` and the key.

    ``shape`` is the caller's own: a record is read in the known shape whose failure-class key
    it has, in ``shape`` when it has that key or neither (so errors name the caller's keys).
    Checks: ``attempt`` an integer >= 1, ``failed_at`` a finite number (ints are widened),
    the class a known FailureClass value, the other three strings; unknown keys are ignored.
    """
    if not isinstance(item, dict):
        raise RecordError(f"{where} is not an object")
    if shape.key("failure_class") not in item:
        shape = next((s for s in _SHAPES if s.key("failure_class") in item), shape)

    def text(field: str) -> str:
        value = item.get(shape.key(field))
        if not isinstance(value, str):
            raise RecordError(f"{where}: {shape.key(field)!r} is not a string")
        return value

    attempt = item.get(shape.key("attempt"))
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise RecordError(f"{where}: {shape.key('attempt')!r} is not an integer >= 1")
    memory = item.get(MEMORY_KEY, "")
    if not isinstance(memory, str):
        raise RecordError(f"{where}: {MEMORY_KEY!r} is not a string")
    failed_at = _finite(item.get(shape.key("failed_at")))
    if failed_at is None:
        raise RecordError(f"{where}: {shape.key('failed_at')!r} is not a number")
    class_name = text("failure_class")
    try:
        failure_class = FailureClass(class_name)
    except ValueError:
        raise RecordError(f"{where}: unknown failure class {class_name!r}") from None
    return AttemptRecord(
        attempt=attempt,
        job_name=text("job_name"),
        job_uid=text("job_uid"),
        failure_class=failure_class,
        reason=text("reason"),
        failed_at=failed_at,
        memory=memory,
    )


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or None: not a number, a bool, NaN, infinite, or too large."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        seconds = float(value)  # an int of 309 digits or more overflows
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None
