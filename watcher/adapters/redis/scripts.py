"""The store's Lua scripts, read once at import from the ``scripts/`` directory beside this file.

Each script lives in its own ``.lua`` file (one per atomic operation, with a header saying
which KEYS and ARGV it takes and what it returns), so it reads, diffs and lints as Lua rather
than as a Python string. They are read through `importlib.resources`, which works from a source
tree, an installed wheel or a zip alike; the wheel ships them as package data (pyproject.toml).

``scripts/`` deliberately has no ``__init__.py``: it is a data directory, not a package. With
one, it would shadow this module, which has the same name.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

__all__ = [
    "ABANDON_RETRY",
    "BEGIN_CREATE",
    "CLAIM",
    "DEAD_LETTER",
    "FORGET",
    "RELEASE",
    "SCHEDULE_RETRY",
    "SETTLE_CREATED",
]

_PACKAGE: Final = __name__.rpartition(".")[0]


def _read(name: str) -> str:
    return files(_PACKAGE).joinpath("scripts", name).read_text(encoding="utf-8")


# Read at import, not per call: a missing file fails the daemon at start, not mid-write.
DEAD_LETTER: Final = _read("dead_letter.lua")
SCHEDULE_RETRY: Final = _read("schedule_retry.lua")
CLAIM: Final = _read("claim.lua")
RELEASE: Final = _read("release.lua")
FORGET: Final = _read("forget.lua")
ABANDON_RETRY: Final = _read("abandon_retry.lua")
BEGIN_CREATE: Final = _read("begin_create.lua")
SETTLE_CREATED: Final = _read("settle_created.lua")
