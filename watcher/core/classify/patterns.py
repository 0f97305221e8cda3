"""Tunable parts of classification: the I/O-timeout patterns and how they are matched.

`ClassifyRules` is what the config's ``classify`` section builds. Its patterns are compiled when
it is built, so a bad pattern fails at configuration time and never inside `classify`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_IO_TIMEOUT_PATTERNS",
    "DEFAULT_RULES",
    "MAX_MATCHED_CHARS",
    "ClassifyRules",
    "matched_part",
]

MATCHED_HEAD_CHARS = 2048
MATCHED_TAIL_CHARS = 2048
MAX_MATCHED_CHARS = MATCHED_HEAD_CHARS + MATCHED_TAIL_CHARS
r"""Longest part of a termination or Event message that a pattern is run on: its first and
last 2 KiB. Patterns are regexes, some of them the operator's, and a backtracking one is
quadratic or worse in the text: the former default ``Volume\.\w+ failed.*timed out`` took
0.85 s on a 64 KiB message built to hurt and 200 s on 1 MiB (30 ms on 4 KiB), all of it
blocking the event loop; the default is linear now, an operator's pattern may not be. The
kubelet caps a termination message at 4 KiB and the apiserver caps an events.k8s.io note at
1 KiB, so a real message is matched whole; a longer one keeps its head (what failed) and its
tail (where logs put the error), and the cost of a match has a fixed bound."""

_CUT = "\n…\n"
"""Between the head and the tail: no pattern that cannot match a line break matches across
the cut, so the clip never makes up a match that the whole message would not give."""


def matched_part(text: str) -> str:
    """`text` as the patterns see it: whole up to MAX_MATCHED_CHARS, else head + tail."""
    if len(text) <= MAX_MATCHED_CHARS:
        return text
    return text[:MATCHED_HEAD_CHARS] + _CUT + text[-MATCHED_TAIL_CHARS:]


DEFAULT_IO_TIMEOUT_PATTERNS: tuple[str, ...] = (
    r"i/o timeout",
    r"context deadline exceeded",
    r"ETIMEDOUT",
    r"connection timed out",
    r"operation timed out",
    r"timed out waiting for the condition",
    r"TLS handshake timeout",
    r"Client\.Timeout exceeded",
    r"ReadTimeout",  # Python requests/urllib3 ReadTimeout(Error)
    r"ConnectTimeout",
    r"SocketTimeoutException",
    r"Unable to attach or mount volumes",
    # MountVolume.SetUp, AttachVolume.Attach, ... failed, then "timed out". Written as
    # "Volume.x failed, then anything that is not another Volume.x failed, then timed out"
    # (the same matches): the plain `.*` rescans the rest of the text from every
    # "Volume.x failed", quadratic in a message that repeats it; this is linear.
    r"Volume\.\w+ failed(?:(?!Volume\.\w+ failed).)*timed out",
)
# A pattern without regex syntax (escaped punctuation allowed) is matched as a plain substring:
# `in` on casefolded text is some 20 times faster than the regex engine on a 2 KiB message.
_LITERAL_PATTERN = re.compile(r"(?:[^\\.^$*+?{}\[\]|()]|\\[^\w])+")
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class _Matcher:
    """Case-insensitive 'any pattern matches' over literals first, then one regex."""

    literals: tuple[str, ...]
    regex: re.Pattern[str] | None

    def search(self, text: str) -> bool:
        if not text:
            return False
        text = matched_part(text)
        folded = text.casefold()
        if any(literal in folded for literal in self.literals):
            return True
        return self.regex is not None and self.regex.search(text) is not None


@functools.lru_cache(maxsize=16)
def _compile_patterns(patterns: tuple[str, ...]) -> _Matcher:
    literals: list[str] = []
    regexes: list[str] = []
    for pattern in patterns:
        if not pattern:
            raise ValueError("empty io_timeout pattern would match every message")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid io_timeout pattern {pattern!r}: {exc}") from exc
        if _LITERAL_PATTERN.fullmatch(pattern):
            literals.append(_ESCAPE.sub(r"\1", pattern).casefold())
        else:
            regexes.append(f"(?:{pattern})")
    regex = re.compile("|".join(regexes), re.IGNORECASE) if regexes else None
    return _Matcher(tuple(literals), regex)


@dataclass(frozen=True, slots=True)
class ClassifyRules:
    """Tunable parts of classification. Patterns are compiled once, when this is built, so a
    bad pattern fails at configuration time (ValueError) and never inside `classify`."""

    io_timeout_patterns: tuple[str, ...] = DEFAULT_IO_TIMEOUT_PATTERNS
    """Case-insensitive regexes; a match in a termination or Warning Event message means the
    failure was a transient network or storage timeout."""
    _io_timeout: _Matcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_io_timeout", _compile_patterns(self.io_timeout_patterns))

    def io_timeout_in(self, text: str) -> bool:
        return self._io_timeout.search(text)


DEFAULT_RULES = ClassifyRules()
