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
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec

__all__ = ["LineSplitter", "LineTooLong", "loads"]

_DECODER: Final = msgspec.json.Decoder()


def loads(data: bytes) -> Any:
    """``json.loads(data)``, decoded by msgspec when it can (see the module docstring)."""
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError:  # also its ValidationError (a number too large for a float)
        return json.loads(data)


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
