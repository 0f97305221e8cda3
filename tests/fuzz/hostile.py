"""What the fuzz tests feed the parsers: hostile values, mutators, strategies, and the count.

Every parser of user-controlled text has one contract: it returns a value or raises only its
documented error. The tests here check that contract on generated documents (hypothesis, fixed
seed) and on mutations of real documents (a seeded `random.Random` loop, for the bulk, where
hypothesis would be too slow). `COUNTS` records how many documents each parser saw; the
conftest prints the total at the end of the run.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

COUNTS: Counter[str] = Counter()
"""Documents fed to each parser in this run, by parser family."""

CAPTURED = Path(__file__).resolve().parents[1] / "data" / "captured"


def fuzz_settings(max_examples: int) -> settings:
    """Reproducible runs: a fixed derivation of every example, no example database, no clock."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


# --- hostile values ------------------------------------------------------------------------------


def nested_lists(depth: int) -> Any:
    """``[[[...]]]`` built without recursion, as deep as asked."""
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"a": value}
    return value


HOSTILE_SCALARS: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**63,
    -(2**63) - 1,
    10**400,
    -(10**400),
    0.5,
    -0.0,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    " ",
    "x",
    "0",
    "-1",
    "1e400",
    "NaN",
    "Infinity",
    "9" * 400,
    "١٢٣",  # Arabic-Indic digits: \d matches them
    "\x00",
    "\udcff",  # a lone surrogate: legal in a Python str, not in UTF-8
    "\u202e",
    "a" * 10_000,
)

DEEP = "\x00DEEP\x00"
"""Placeholder that `dumps_hostile` turns into 10_000 nested lists, written as text (a value
that deep cannot be dumped by `json` itself)."""

_SHAPES: tuple[Any, ...] = (
    [],
    {},
    [None],
    {"": None},
    [1, "2", None],
    {"a": {"b": {"c": []}}},
    nested_lists(200),
    nested_dicts(200),
)
_VERY_DEEP = nested_lists(10_000)

HOSTILE_VALUES: tuple[Any, ...] = (*HOSTILE_SCALARS, *_SHAPES, _VERY_DEEP)
"""For parsers of decoded values: anything `json.loads` (which accepts NaN) could hand over,
and more."""

HOSTILE_DOC_VALUES: tuple[Any, ...] = (*HOSTILE_SCALARS, *_SHAPES, DEEP)
"""For documents that are dumped to text first: `DEEP` stands for the very deep value."""

PARSED_VALUES: tuple[Any, ...] = (*HOSTILE_SCALARS, *_SHAPES)
"""What `json.loads` of an apiserver's answer can hand over (it stops near 1000 levels)."""

_OPAQUE = frozenset(id(v) for v in (*_SHAPES, _VERY_DEEP))
"""Hostile values the mutator never walks into or copies (they are shared, and immutable by
convention): walking 10_000 levels per mutation would make the loop crawl."""

HOSTILE_JSON_TEXT: tuple[str, ...] = (
    "1e400",
    "-1e400",
    "1" + "0" * 400,
    "-" + "9" * 400,
    "9" * 5000,  # more digits than int() converts by default
    "NaN",
    "Infinity",
    "-Infinity",
    "null",
    "true",
    '""',
    "[]",
    "{}",
    '"\\ud800"',  # a lone surrogate escape
    "[" * 10_000 + "]" * 10_000,
    '{"a":' * 10_000 + "1" + "}" * 10_000,
    "[" * 500 + "]" * 500,
    "0.1e-400",
    "1E+999",
)

MESSAGE_FRAGMENTS: tuple[str, ...] = (
    "i/o timeout",
    "context deadline exceeded",
    "MountVolume.SetUp failed ",
    "Volume.x failed ",
    " timed out",
    "Pod was rejected",
    "Cancelling deletion",
    "pulling image",
    "shutdown",
    "OOMKilled",
    "\n",
    "…",
    "\udcff",
)


# --- mutation of real documents ------------------------------------------------------------------


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON value (dict keys and list indexes), iteratively, root first."""
    stack: list[tuple[tuple[Any, ...], Any]] = [(prefix, value)]
    while stack:
        path, node = stack.pop()
        yield path
        if id(node) in _OPAQUE:
            continue
        if isinstance(node, dict):
            stack.extend(((*path, k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend(((*path, i), v) for i, v in enumerate(node))


def _parent(root: Any, path: tuple[Any, ...]) -> Any:
    node = root
    for part in path[:-1]:
        node = node[part]
    return node


def mutate(
    doc: Any, rng: random.Random, *, rounds: int = 3, palette: tuple[Any, ...] = HOSTILE_VALUES
) -> Any:
    """A deep copy of `doc` with a few random paths replaced, deleted, retyped or duplicated."""
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, rounds)):
        all_paths = [p for p in paths(doc) if p]
        if not all_paths:
            return rng.choice(palette)
        path = rng.choice(all_paths)
        parent, last = _parent(doc, path), path[-1]
        roll = rng.random()
        if roll < 0.55:
            parent[last] = rng.choice(palette)
        elif roll < 0.7:
            del parent[last]
        elif roll < 0.8:
            parent[last] = [parent[last]]  # one level deeper, same content
        elif roll < 0.9 and isinstance(parent[last], str):
            parent[last] = _mutate_text(parent[last], rng)
        elif id(parent[last]) not in _OPAQUE:
            parent[last] = copy.deepcopy(rng.choice([parent, parent[last]]), _opaque_memo())
    return doc


def _opaque_memo() -> dict[int, Any]:
    """A deepcopy memo that keeps the hostile shared values shared instead of copying them."""
    return {key: value for key, value in _OPAQUE_BY_ID.items()}


_OPAQUE_BY_ID: dict[int, Any] = {id(v): v for v in (*_SHAPES, _VERY_DEEP)}


def _mutate_text(text: str, rng: random.Random) -> str:
    cut = rng.randint(0, len(text))
    return text[:cut] + rng.choice((*MESSAGE_FRAGMENTS, "", "x" * 5000)) + text[cut:]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Byte-level damage: flips, cuts, insertions, and hostile JSON tokens in number slots."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        at = rng.randrange(len(buf) + 1)
        if roll < 0.3 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif roll < 0.5:
            del buf[at : at + rng.randint(1, 16)]
        elif roll < 0.7:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            buf = bytearray(_replace_a_number(bytes(buf), rng))
    return bytes(buf)


def _replace_a_number(data: bytes, rng: random.Random) -> bytes:
    starts = [i for i in range(len(data)) if data[i : i + 1].isdigit() and data[i - 1 : i] == b":"]
    if not starts:
        return data
    start = rng.choice(starts)
    end = start
    while end < len(data) and data[end : end + 1] in b"0123456789.eE+-":
        end += 1
    return data[:start] + rng.choice(HOSTILE_JSON_TEXT).encode() + data[end:]


def dumps_hostile(value: Any) -> str:
    """JSON text of `value`, NaN and infinities as Python writes them, DEEP as deep nesting."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=True, default=str)
    return text.replace(json.dumps(DEEP), "[" * 10_000 + "]" * 10_000)


def load_captured() -> list[dict[str, Any]]:
    """The real watch events in tests/data/captured: (resource, type, object) records."""
    return [json.loads(path.read_text()) for path in sorted(CAPTURED.glob("*.json"))]


def run_loop(count: int, seed: int, one: Callable[[random.Random], object]) -> None:
    """Call `one` `count` times with one rng seeded `seed`: the same documents every run."""
    rng = random.Random(seed)
    for _ in range(count):
        one(rng)


# --- strategies ----------------------------------------------------------------------------------

huge_ints = st.sampled_from([10**400, -(10**400), 2**63, 2**64 + 1, -(2**63) - 1])
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(HOSTILE_SCALARS)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
deep_values = st.sampled_from([nested_lists(200), nested_dicts(200), nested_lists(10_000)])
any_value = json_values | deep_values


def messages() -> st.SearchStrategy[str]:
    """Message text: arbitrary, or built from the fragments the classifier looks for."""
    built = st.lists(st.sampled_from(MESSAGE_FRAGMENTS) | st.text(max_size=20), max_size=8).map(
        "".join
    )
    return st.text(max_size=200) | built
