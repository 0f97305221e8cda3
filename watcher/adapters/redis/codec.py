"""JSON (de)serialisation of the values kube-dlq stores in Redis.

Pure functions, no I/O. Every stored value is a versioned envelope::

    {"v": 1, "kind": "dead_letter" | "retry_ticket", "data": {...}}

encoded as compact UTF-8 JSON by msgspec (a Job manifest encodes about 7x faster than with
``json.dumps``; the bytes are JSON that ``json.loads`` reads back as the same values). A
float that is not finite, which JSON cannot hold and the apiserver never sends (Go's encoder
refuses them; only a watch line read by the ``json.loads`` fallback can carry one), is written
as ``null``, as JavaScript's ``JSON.stringify`` does: the entry is stored, not refused.
``decode(encode(x)) == x`` for every `DeadLetter` and
`RetryTicket` whose ``manifest`` and ``report`` hold JSON values only (str keys; lists, not
tuples). Version 1 evolves additively: readers ignore fields they do not know, and a field that
has a default in `watcher.core.model` may be missing. Anything else that does not fit raises
`CorruptEntry`, which callers report and skip.

Decoding is total: whatever bytes Redis hands back, the decoders return an entry or raise
`CorruptEntry`, never another error. That includes input built to hurt: nesting deeper than
MAX_DEPTH (the parser would raise RecursionError, and code that walks a decoded manifest
recursively, such as ``copy.deepcopy`` or ``dataclasses.asdict``, would too), numbers that
overflow a float (``1e400``, ``10**400``), integers beyond 64 bits, and strings with a lone
surrogate (``"\\ud800"`` is valid JSON, but no such text can be encoded again: not stored, not
printed, not sent to the apiserver).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any, Final

import msgspec

from watcher.core.indexes import MAX_INDEXES
from watcher.core.model import (
    AttemptRecord,
    DeadLetter,
    FailureClass,
    JobRef,
    OwnerRef,
    RetryTicket,
    Started,
)
from watcher.core.records import ENTRY_SHAPE, RecordError, decode_attempt, encode_attempt

__all__ = [
    "VERSION",
    "CorruptEntry",
    "decode_dead_letter",
    "decode_retry_ticket",
    "encode_dead_letter",
    "encode_retry_ticket",
]

VERSION: Final = 1
KIND_DEAD_LETTER: Final = "dead_letter"
KIND_RETRY_TICKET: Final = "retry_ticket"

MAX_DEPTH: Final = 64
"""Deepest nesting of objects and lists a stored entry may have. A Job manifest is about a
dozen levels deep (spec.template.spec.affinity...values); the limit leaves room for that many
times over and keeps every recursive walk of a decoded entry (deepcopy, asdict, json.dumps) far
below Python's recursion limit, wherever on the stack it runs."""

MAX_INT: Final = 2**63 - 1
"""Largest magnitude of a stored integer: what other readers of the same keys (jq, Redis Lua,
a Go or Java tool) can hold. Nothing kube-dlq writes comes near it."""


class CorruptEntry(ValueError):
    """A stored entry that cannot be decoded; the message says which field and why."""


# --- encoding ---------------------------------------------------------------------------------


_ENCODE: Final = msgspec.json.Encoder().encode
_DECODE: Final = msgspec.json.Decoder().decode
"""What it decodes, it decodes as ``json.loads`` does; what it refuses, ``json.loads`` reads
and the entry is checked field by field (see `_vouched`)."""


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """Encode a dead letter. Raises `TypeError`/`ValueError` for non-JSON manifest values
    (an object that is no JSON value, a lone surrogate)."""
    return _envelope(
        KIND_DEAD_LETTER,
        {
            "queue": letter.queue,
            "job": _job(letter.job),
            "failure_class": letter.failure_class.value,
            "reason": letter.reason,
            "attempts": letter.attempts,
            "failed_at": letter.failed_at,
            "cluster": letter.cluster,
            "evidence": list(letter.evidence),
            "owner": None if letter.owner is None else _owner(letter.owner),
            "manifest": letter.manifest,
            "history": [_attempt(a) for a in letter.history],
            "report": letter.report,
            "started": letter.started.value,
            "redrive_count": letter.redrive_count,
            "redrive_of": letter.redrive_of,
            "failed_indexes": list(letter.failed_indexes),
        },
    )


def encode_retry_ticket(ticket: RetryTicket) -> bytes:
    """Encode a retry ticket. Raises `TypeError`/`ValueError` as `encode_dead_letter`."""
    return _envelope(
        KIND_RETRY_TICKET,
        {
            "job": _job(ticket.job),
            "attempt": ticket.attempt,
            "due_at": ticket.due_at,
            "failure_class": ticket.failure_class.value,
            "reason": ticket.reason,
            "manifest": ticket.manifest,
            "history": [_attempt(a) for a in ticket.history],
            "avoid_node": ticket.avoid_node,
            "queue": ticket.queue,
            "started": ticket.started.value,
        },
    )


def _envelope(kind: str, data: dict[str, Any]) -> bytes:
    # Compact, keys in this order, non-ASCII as UTF-8, NaN and infinities as null: other
    # readers (jq, the CLI) reject NaN/Infinity.
    return _ENCODE({"v": VERSION, "kind": kind, "data": data})


def _job(job: JobRef) -> dict[str, Any]:
    return {"namespace": job.namespace, "name": job.name, "uid": job.uid}


def _owner(owner: OwnerRef) -> dict[str, Any]:
    return {"kind": owner.kind, "name": owner.name, "uid": owner.uid}


def _attempt(a: AttemptRecord) -> dict[str, Any]:
    return encode_attempt(a, ENTRY_SHAPE)


# --- decoding ---------------------------------------------------------------------------------


def decode_dead_letter(raw: bytes | str) -> DeadLetter:
    """Decode what `encode_dead_letter` wrote, or raise `CorruptEntry`."""
    d = _Fields(*_open(raw, KIND_DEAD_LETTER, "dead letter"), "dead letter")
    owner = d.get("owner", None)
    return DeadLetter(
        queue=d.text("queue"),
        job=_decode_job(d.child("job")),
        failure_class=d.failure_class("failure_class"),
        reason=d.text("reason"),
        attempts=d.integer("attempts"),
        failed_at=d.number("failed_at"),
        cluster=d.text("cluster"),
        evidence=d.texts("evidence"),
        owner=None if owner is None else _decode_owner(d.child("owner")),
        manifest=d.obj("manifest"),
        history=tuple(_decode_attempt(f) for f in d.children("history")),
        report=d.obj("report"),
        started=d.started("started"),
        # Both absent in entries written before redrive existed.
        redrive_count=d.integer("redrive_count") if d.get("redrive_count", None) is not None else 0,
        redrive_of=d.text("redrive_of", ""),
        failed_indexes=_indexes(d.get("failed_indexes", None)),
    )


def _indexes(value: Any) -> tuple[int, ...]:
    """Stored failed indexes; absent (older entries) or not a list of indexes: ()."""
    if not isinstance(value, list) or len(value) > MAX_INDEXES:
        return ()
    if not all(type(i) is int and 0 <= i < 10**9 for i in value):
        return ()
    return tuple(sorted(set(value)))


def decode_retry_ticket(raw: bytes | str) -> RetryTicket:
    """Decode what `encode_retry_ticket` wrote, or raise `CorruptEntry`."""
    d = _Fields(*_open(raw, KIND_RETRY_TICKET, "retry ticket"), "retry ticket")
    return RetryTicket(
        job=_decode_job(d.child("job")),
        attempt=d.integer("attempt"),
        due_at=d.number("due_at"),
        failure_class=d.failure_class("failure_class"),
        reason=d.text("reason"),
        manifest=d.obj("manifest"),
        history=tuple(_decode_attempt(f) for f in d.children("history")),
        avoid_node=d.text("avoid_node", ""),
        queue=d.text("queue", "default"),
        started=d.started("started"),
    )


def _open(raw: bytes | str, kind: str, what: str) -> tuple[Mapping[str, Any], bool]:
    """Parse the envelope; its ``data`` object, and whether every number in the entry is known
    to be finite (else each object field is checked when read)."""
    try:
        try:
            body = _DECODE(raw)
            strict = True
        except msgspec.DecodeError:  # NaN, 1e400, a lone surrogate, a BOM, UTF-16, no JSON
            body = json.loads(raw, parse_constant=_reject_constant)
            strict = False
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise CorruptEntry(f"{what}: not valid UTF-8 JSON: {exc}") from exc
    except TypeError as exc:
        raise CorruptEntry(f"{what}: expected bytes or str, got {type(raw).__name__}") from exc
    except RecursionError:
        # The C parser recurses once per level; past the interpreter's limit it gives up.
        raise CorruptEntry(f"{what}: nested deeper than {MAX_DEPTH} levels") from None
    finite = _vouched(raw, body, strict)
    if not finite:  # the quick check cannot vouch for it: the full walk says why, if it is bad
        problem = _unusable(body)
        if problem:
            raise CorruptEntry(f"{what}: {problem}")
    if not isinstance(body, dict):
        raise CorruptEntry(f"{what}: expected a JSON object envelope, got {_json_type(body)}")
    version = body.get("v")
    if version != VERSION or isinstance(version, bool):
        raise CorruptEntry(
            f"{what}: unsupported envelope version {version!r} (this reader knows {VERSION})"
        )
    if body.get("kind") != kind:
        raise CorruptEntry(f"{what}: envelope kind is {body.get('kind')!r}, not {kind!r}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise CorruptEntry(
            f"{what}: envelope field 'data': expected object, got {_json_type(data)}"
        )
    return data, finite


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _vouched(raw: bytes | str, body: object, strict: bool) -> bool:
    """True when `body` (parsed from `raw`) is certainly usable with every number finite; False
    when this cannot tell cheaply, and `_unusable` and `_non_finite` must walk it.

    The fast path of every decode. Nesting: no container sits deeper than the number of
    brackets in the text (those inside strings only raise the count); above MAX_DEPTH of them,
    a walk over the containers alone. Strings and numbers: `strict`, msgspec parsed it, and it
    refuses NaN, infinities, numbers past a double's range and lone surrogates. Else the C
    encoder with ``allow_nan=False`` refuses an infinite float, and the UTF-8 encoding of its
    output a lone surrogate, anywhere in the value, keys included. Either refusal sends the
    entry down the full walk, which names the problem (or finds none, e.g. an infinity the
    fields ignore).
    """
    if isinstance(raw, bytes | bytearray):
        brackets = raw.count(b"[") + raw.count(b"{")
    elif isinstance(raw, str):
        brackets = raw.count("[") + raw.count("{")
    else:
        return False
    if brackets >= MAX_DEPTH and not _shallow(body):
        return False
    if strict:
        return True
    try:
        json.dumps(body, ensure_ascii=False, allow_nan=False, check_circular=False).encode()
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return False
    return True


def _shallow(value: object) -> bool:
    """Whether no object or list in `value` is at depth MAX_DEPTH or below (the top at 0):
    `_unusable`'s nesting rule, walking containers only. Iterative, like `_nodes`."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth >= MAX_DEPTH:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def _unusable(value: object) -> str:
    """What makes a parsed value unusable, or "": nesting deeper than MAX_DEPTH, or a string
    (key or value) that is not valid Unicode."""
    for node, depth in _nodes(value):
        if isinstance(node, str) and not _encodable(node):
            return "a string holds a lone surrogate (not valid Unicode)"
        if isinstance(node, dict | list) and depth >= MAX_DEPTH:  # the top is level 1
            return f"nested deeper than {MAX_DEPTH} levels"
    return ""


def _nodes(value: object) -> Iterator[tuple[object, int]]:
    """Every value inside `value` (dict keys too) with its depth, the top at 0. Iterative, so
    it cannot run out of stack whatever the nesting; it stops descending below MAX_DEPTH."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        if depth >= MAX_DEPTH:
            continue
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in (*node.keys(), *node.values()))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


def _non_finite(value: object) -> bool:
    """Whether a float in `value` is infinite: ``1e400`` is valid JSON that parses as inf, and
    neither Redis nor the apiserver take inf back."""
    return any(isinstance(n, float) and not math.isfinite(n) for n, _ in _nodes(value))


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _decode_job(d: _Fields) -> JobRef:
    return JobRef(namespace=d.text("namespace"), name=d.text("name"), uid=d.text("uid"))


def _decode_owner(d: _Fields) -> OwnerRef:
    return OwnerRef(kind=d.text("kind"), name=d.text("name"), uid=d.text("uid"))


def _decode_attempt(d: _Fields) -> AttemptRecord:
    # One decoder for both wire shapes of a record (watcher.core.records); it reads the raw
    # object, and its errors become CorruptEntry with this entry's field path.
    path = d._prefix.removesuffix(".")
    try:
        return decode_attempt(d._data, shape=ENTRY_SHAPE, where=f"field '{path}'")
    except RecordError as exc:
        raise CorruptEntry(f"{d._what}: {exc}") from None


_MISSING: Final[Any] = object()


class _Fields:
    """Typed access to one JSON object; errors name the dotted path of the field."""

    __slots__ = ("_data", "_finite", "_prefix", "_what")

    def __init__(self, data: Mapping[str, Any], finite: bool, what: str, prefix: str = "") -> None:
        self._data = data
        self._finite = finite
        """Every number in the whole entry is known to be finite (`_vouched`, in `_open`)."""
        self._what = what
        self._prefix = prefix

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self._data:
            return self._data[key]
        if default is _MISSING:
            raise CorruptEntry(f"{self._what}: missing field '{self._prefix}{key}'")
        return default

    def _fail(self, key: str, expected: str, value: Any) -> CorruptEntry:
        return CorruptEntry(
            f"{self._what}: field '{self._prefix}{key}': expected {expected}, "
            f"got {_json_type(value)}"
        )

    def text(self, key: str, default: Any = _MISSING) -> str:
        value = self.get(key, default)
        if not isinstance(value, str):
            raise self._fail(key, "string", value)
        return value

    def integer(self, key: str) -> int:
        value = self.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) > MAX_INT:
            raise self._fail(key, "integer of at most 64 bits", value)
        return value

    def number(self, key: str) -> float:
        """A finite float. Ints are widened; one too large for a float (10**400) and the
        parser's infinity for 1e400 are rejected, as the time fields they stand for would be
        unusable (a NaN or infinite due time never comes, an overflow crashes the reader)."""
        value = self.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._fail(key, "number", value)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self._fail(key, "finite number", value)
        return number

    def obj(self, key: str) -> dict[str, Any]:
        value = self.get(key, {})
        if not isinstance(value, dict):
            raise self._fail(key, "object", value)
        if not self._finite and _non_finite(value):
            raise CorruptEntry(
                f"{self._what}: field '{self._prefix}{key}': a number is out of range for a float"
            )
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "list of strings", value)
        return tuple(value)

    def child(self, key: str) -> _Fields:
        value = self.get(key)
        if not isinstance(value, dict):
            raise self._fail(key, "object", value)
        return _Fields(value, self._finite, self._what, f"{self._prefix}{key}.")

    def children(self, key: str) -> list[_Fields]:
        value = self.get(key, [])
        if not isinstance(value, list):
            raise self._fail(key, "list", value)
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self._fail(f"{key}[{i}]", "object", item)
            out.append(_Fields(item, self._finite, self._what, f"{self._prefix}{key}[{i}]."))
        return out

    def started(self, key: str) -> Started:
        """Added after version 1 shipped: a missing field (an older writer) reads as unknown."""
        value = self.text(key, Started.UNKNOWN.value)
        try:
            return Started(value)
        except ValueError:
            raise CorruptEntry(
                f"{self._what}: field '{self._prefix}{key}': expected yes, no or unknown, "
                f"got {value!r}"
            ) from None

    def failure_class(self, key: str) -> FailureClass:
        value = self.text(key)
        try:
            return FailureClass(value)
        except ValueError:
            raise CorruptEntry(
                f"{self._what}: field '{self._prefix}{key}': unknown failure class {value!r}"
            ) from None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
