"""The store's Lua scripts, read once at import from the ``scripts/`` directory beside this file.

Each script lives in its own ``.lua`` file (one per atomic operation, with a header saying
which KEYS and ARGV it takes and what it returns), so it reads, diffs and lints as Lua rather
than as a Python string. They are read through `importlib.resources`, which works from a source
tree, an installed wheel or a zip alike; the wheel ships them as package data (pyproject.toml).

Fencing: every write script read with `_read` starts with ``fence_prelude.lua``, which pops the
leader fence key off the end of KEYS and a leadership term off the end of ARGV and refuses the
call, writing nothing, when the term is below the fence (docs/scale-out.md, "Fencing"). So a
new script is fenced by being read with `_read` and called through ``RedisStore._script``
(which appends the two); its body is written as if the prelude were not there. Only
``claim_term.lua``, the fence's own write, is read without it.

``scripts/`` deliberately has no ``__init__.py``: it is a data directory, not a package. With
one, it would shadow this module, which has the same name.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

__all__ = [
    "ABANDON_RETRY",
    "BAD_FENCE_REPLY",
    "BEGIN_CREATE",
    "CLAIM",
    "CLAIM_TERM",
    "DEAD_LETTER",
    "FENCED_REPLY",
    "FENCE_PRELUDE",
    "FORGET",
    "PURGE",
    "RELEASE",
    "SCHEDULE_RETRY",
    "SETTLE_CREATED",
]

_PACKAGE: Final = __name__.rpartition(".")[0]

FENCED_REPLY: Final = "KUBEDLQ_FENCED"
"""The error reply's first word when a call's term is below the fence; the fence follows."""
BAD_FENCE_REPLY: Final = "KUBEDLQ_BAD_FENCE"
"""The error reply's first word when the fence key holds something that is not a term."""


def _source(name: str) -> str:
    return files(_PACKAGE).joinpath("scripts", name).read_text(encoding="utf-8")


FENCE_PRELUDE: Final = _source("fence_prelude.lua")


def _read(name: str) -> str:
    """A write script, behind the fence prelude."""
    return f"{FENCE_PRELUDE}\n{_source(name)}"


DLQ_INDEX: Final = _source("dlq_index.lua")


def _read_indexed(name: str) -> str:
    """A write script that adds or removes dead letters: fenced, with the index functions."""
    return f"{FENCE_PRELUDE}\n{DLQ_INDEX}\n{_source(name)}"


# Read at import, not per call: a missing file fails the daemon at start, not mid-write.
DEAD_LETTER: Final = _read_indexed("dead_letter.lua")
SCHEDULE_RETRY: Final = _read("schedule_retry.lua")
CLAIM: Final = _read("claim.lua")
RELEASE: Final = _read("release.lua")
FORGET: Final = _read("forget.lua")
ABANDON_RETRY: Final = _read_indexed("abandon_retry.lua")
PURGE: Final = _read_indexed("purge.lua")
BEGIN_CREATE: Final = _read("begin_create.lua")
SETTLE_CREATED: Final = _read("settle_created.lua")
CLAIM_TERM: Final = _source("claim_term.lua")


_MANY_LOOP: Final = """
end
-- ARGV[1] calls n, ARGV[2c] / ARGV[2c+1] call c's KEYS / ARGV count, then each call's ARGV
local n = tonumber(ARGV[1])
local ki, ai = 0, 1 + 2 * n
local out = {}
for c = 1, n do
  local nk, na = tonumber(ARGV[2 * c]), tonumber(ARGV[2 * c + 1])
  local keys, argv = {}, {}
  for j = 1, nk do keys[j] = KEYS[ki + j] end
  for j = 1, na do argv[j] = ARGV[ai + j] end
  ki, ai = ki + nk, ai + na
  local ok, reply = pcall(one, keys, argv)
  if not ok then
    -- as the call alone would have failed: its own error reply, the others unaffected
    reply = type(reply) == 'table' and reply.err and reply or redis.error_reply(tostring(reply))
  elseif reply == nil then
    reply = false  -- a nil would end the array: false is the same nil reply
  end
  out[c] = reply
end
return out
"""


def many(source: str) -> str:
    """The write script `source` (read with `_read`) for several calls in one script call.

    The fence prelude runs once, then the body once per call with that call's own KEYS and
    ARGV, in order, as a function (its ``return`` ends only its own call); a call that fails
    gets its error reply in its place and the next runs, as in a pipeline of single calls.
    Being one script, nothing else runs in between: one of the orders a pipeline allows.
    Replies: one per call, in order (`Fence.call_many` builds the ARGV).
    """
    if not source.startswith(FENCE_PRELUDE):
        raise ValueError("not a fenced write script")
    body = source[len(FENCE_PRELUDE) :]
    return f"{FENCE_PRELUDE}\nlocal function one(KEYS, ARGV)\n{body}{_MANY_LOOP}"
