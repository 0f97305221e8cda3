"""Keys by id, read from a directory: a Kubernetes Secret mounted as a volume.

A mounted Secret is one file per key, named by the key; the kubelet updates the files in place
(an atomic swap of the ``..data`` symlink) when the Secret changes. So a key id is a file name,
its key is the file's content as hex (``openssl rand -hex 32``), and `Keyring` reads the
directory again when it is older than ``refresh_s``, and once more when asked for an id it does
not hold: a key added to the Secret is picked up without a restart, a key removed is gone.

Reading is a mount, not an API call: kube-dlq needs no RBAC on Secrets for it.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["KEY_ID_RE", "Keyring", "KeyringRead", "read_keys"]

KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
"""A key id: a Secret data key kube-dlq accepts (no dot first: the mount's own ``..data``)."""

MAX_KEY_FILE_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class KeyringRead:
    """What one read of the directory found."""

    keys: Mapping[str, bytes]
    problems: tuple[str, ...]
    """One line per file that is not a usable key (or the directory itself unreadable)."""


def read_keys(directory: str, *, key_bytes: tuple[int, ...] | None, min_bytes: int) -> KeyringRead:
    """Every usable key in `directory`: file name -> bytes decoded from the hex content.

    `key_bytes` (AES: 16, 24 or 32) lists the lengths allowed, None any of at least
    `min_bytes`. Never raises: what cannot be used is named in ``problems``.
    """
    keys: dict[str, bytes] = {}
    problems: list[str] = []
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        return KeyringRead({}, (f"{directory}: cannot list the key directory: {exc.strerror}",))
    for name in names:
        if name.startswith("."):
            continue  # the Secret mount's ..data and ..<timestamp> entries
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        if not KEY_ID_RE.fullmatch(name):
            problems.append(f"{path}: not a key id (1 to 63 of A-Z a-z 0-9 . _ -)")
            continue
        try:
            with open(path, "rb") as fh:
                content = fh.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc.strerror}")
            continue
        try:
            key = bytes.fromhex(content.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            problems.append(f"{path}: not a hex key (make one with: openssl rand -hex 32)")
            continue
        if len(content) > MAX_KEY_FILE_BYTES:
            problems.append(f"{path}: longer than {MAX_KEY_FILE_BYTES} bytes")
        elif key_bytes is not None and len(key) not in key_bytes:
            allowed = ", ".join(str(n) for n in key_bytes)
            problems.append(f"{path}: a {len(key)}-byte key; need {allowed} bytes")
        elif len(key) < min_bytes:
            problems.append(f"{path}: a {len(key)}-byte key; need at least {min_bytes} bytes")
        else:
            keys[name] = key
    return KeyringRead(keys, tuple(problems))


class Keyring:
    """The keys of one directory, re-read when stale or when an unknown id is asked for."""

    def __init__(
        self,
        directory: str,
        *,
        key_bytes: tuple[int, ...] | None = None,
        min_bytes: int = 32,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self._key_bytes = key_bytes
        self._min_bytes = min_bytes
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()  # the CLI and the daemon are single-threaded; cheap
        self._read = self._load()
        self._read_at = clock()

    @property
    def problems(self) -> tuple[str, ...]:
        return self._read.problems

    def ids(self) -> tuple[str, ...]:
        self._refresh(force=False)
        return tuple(sorted(self._read.keys))

    def get(self, key_id: str) -> bytes | None:
        """The key of `key_id`, or None: not in the directory even after reading it again
        (the second read is rate-limited like the first, so a flood of entries naming
        made-up ids costs at most one directory read per ``refresh_s``)."""
        self._refresh(force=False)
        key = self._read.keys.get(key_id)
        if key is None and self._refresh(force=True):
            key = self._read.keys.get(key_id)
        return key

    def _refresh(self, *, force: bool) -> bool:
        now = self._clock()
        age = now - self._read_at
        if age < self._refresh_s and not (force and age > self._refresh_s / 10):
            return False
        with self._lock:
            self._read = self._load()
            self._read_at = now
        return True

    def _load(self) -> KeyringRead:
        return read_keys(self.directory, key_bytes=self._key_bytes, min_bytes=self._min_bytes)
