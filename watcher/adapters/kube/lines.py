"""Watch and list bodies: bytes off the wire -> lines -> JSON, the cheap way first.

Two pieces of the watch's hot path, kept apart from its connection logic (``watch.py``):

``loads``         JSON text -> Python values, exactly what ``json.loads`` returns. msgspec's
                  decoder does it in about a third of the time; what it refuses but
                  ``json.loads`` accepts (``NaN``, ``Infinity``, numbers past a double's range,
                  lone surrogate escapes, a byte-order mark, UTF-16 or UTF-32 text) is decoded
                  again by ``json.loads``, so a body never means something else, and what both
                  refuse raises ``ValueError`` as before.
``LineSplitter``  a chunked watch stream -> its lines, one chunk at a time: every line that a
                  chunk completes, in order, without an ``await`` per line.
``watch_line``    one watch line -> its type and object: the typed value of a
                  ``watcher.core.wire`` line type when the line fits it and is a change or a
                  bookmark (and its consumer does not want the whole object), else the
                  generic JSON object (an ERROR's Status, a failed Job, are read whole).
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec

from watcher.core.wire import WireLine, WireObject

__all__ = [
    "LineSplitter",
    "LineTooLong",
    "TypedLines",
    "loads",
    "typed_lines",
    "watch_line",
]

_DECODER: Final = msgspec.json.Decoder()
_TYPED_KINDS: Final = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})


class TypedLines:
    """The decoder of one typed watch line (`watcher.core.wire`), and its hint."""

    __slots__ = ("decode", "whole_hint")

    def __init__(self, line_type: type[WireLine]) -> None:
        self.decode = msgspec.json.Decoder(line_type).decode
        self.whole_hint = line_type.WHOLE_HINT


def typed_lines(line_type: type[WireLine] | None) -> TypedLines | None:
    """The decoder of watch lines of `line_type` (None: lines are decoded generically)."""
    return TypedLines(line_type) if line_type is not None else None


def loads(data: bytes) -> Any:
    """``json.loads(data)``, decoded by msgspec when it can (see the module docstring)."""
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError:  # also its ValidationError (a number too large for a float)
        return json.loads(data)


def watch_line(
    line: bytes, typed: TypedLines | None
) -> tuple[str, dict[str, Any] | WireObject, object]:
    """(type, object, the object's metadata.resourceVersion) of a watch line; `typed`, if
    given, is tried first. Raises ``ValueError`` for a line that is no JSON, ``TypeError``
    for one whose type is not text or whose object is not an object, ``KeyError`` for one
    without them."""
    hint = typed.whole_hint if typed is not None else None
    if typed is not None and (hint is None or hint not in line):
        try:
            parsed = typed.decode(line)
        except msgspec.DecodeError:  # also ValidationError: the generic decode says what it is
            parsed = None
        if parsed is not None and parsed.object is not None and parsed.type in _TYPED_KINDS:
            value = parsed.object
            if not value.wants_whole():
                meta = value.metadata
                return parsed.type, value, meta.resourceVersion if meta is not None else None
    raw = loads(line)
    if not isinstance(raw, dict):
        raise TypeError("a watch line must be a JSON object")
    etype, obj = raw["type"], raw["object"]
    if not isinstance(etype, str) or not isinstance(obj, dict):
        raise TypeError("type must be a string and object a JSON object")
    meta = obj.get("metadata")
    return etype, obj, meta.get("resourceVersion") if isinstance(meta, dict) else None


class LineTooLong(ValueError):
    """A watch line grew past the longest accepted without ending."""


class LineSplitter:
    """Cuts a byte stream into lines ending in ``\\n``, fed one chunk at a time.

    ``feed`` returns the lines the chunk completes (without their ``\\n``) and keeps the
    unfinished rest; ``end`` returns that rest once the stream is over (a last line with no
    newline, as ``readline`` would). The rest is kept as a list of pieces and joined once, so
    a long line arriving in many small chunks costs its length, not its length squared.
    """

    __slots__ = ("_max_bytes", "_pieces", "_size")

    def __init__(self, max_line_bytes: int) -> None:
        self._max_bytes = max_line_bytes
        self._pieces: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines `chunk` completes. Raises `LineTooLong` once an unfinished line is past
        the longest accepted (the lines completed before it come out first)."""
        self._check(self._size)
        if b"\n" not in chunk:
            self._keep(chunk)
            self._check(self._size)
            return []
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if self._pieces:
            self._pieces.append(lines[0])
            lines[0] = b"".join(self._pieces)
            self._pieces.clear()
            self._size = 0
            self._check(len(lines[0]))
        if len(chunk) > self._max_bytes:  # else no line within it can be too long
            for line in lines:
                self._check(len(line))
        self._keep(rest)
        return lines

    def end(self) -> bytes:
        """What is left after the last newline (empty if the stream ended with one)."""
        self._check(self._size)
        rest = b"".join(self._pieces)
        self._pieces.clear()
        self._size = 0
        return rest

    def _keep(self, piece: bytes) -> None:
        if piece:
            self._size += len(piece)
            self._pieces.append(piece)

    def _check(self, size: int) -> None:
        if size > self._max_bytes:
            raise LineTooLong(f"a watch line is longer than {self._max_bytes} bytes")
