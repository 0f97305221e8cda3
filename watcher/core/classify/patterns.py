"""Tunable parts of classification: the I/O-timeout patterns and how they are matched.

`ClassifyRules` is what the config's ``classify`` section builds. Its patterns are compiled when
it is built, so a bad pattern fails at configuration time and never inside `classify`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

__all__ = ["DEFAULT_IO_TIMEOUT_PATTERNS", "DEFAULT_RULES", "ClassifyRules"]

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
    r"Volume\.\w+ failed.*timed out",  # MountVolume.SetUp, AttachVolume.Attach, ...
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
