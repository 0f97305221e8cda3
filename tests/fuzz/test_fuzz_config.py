"""The config loader: `parse_config` and `load_config` return Settings or raise ConfigError.

Inputs: arbitrary documents, documents with the real sections and keys holding arbitrary
values, mutations of the shipped config/kube-dlq.yaml, and arbitrary text as the file (YAML
that parses to odd things: impossible dates, unhashable keys, deep nesting, huge numbers).
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.hostile import (
    COUNTS,
    HOSTILE_SCALARS,
    HOSTILE_VALUES,
    fuzz_settings,
    json_values,
    mutate,
    run_loop,
)
from watcher.app.config import load_config, parse_config
from watcher.core.errors import ConfigError
from watcher.core.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "kube-dlq.yaml"
EXAMPLE_DOC: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())


def _key_paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _key_paths(value, (*prefix, key))
    return found


KEY_PATHS = _key_paths(EXAMPLE_DOC)
SECTIONS = sorted(k for k, v in EXAMPLE_DOC.items() if isinstance(v, dict))


def check_parse(document: Any) -> None:
    try:
        settings = parse_config(document)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(settings, Settings)
    COUNTS["config"] += 1


config_values = (
    st.sampled_from(HOSTILE_SCALARS)
    | json_values
    | st.sampled_from(
        ["90s", "1h30m", "31d", "0s", "-1", "9" * 400 + "s", "redis://[::1", "unix://"]
    )
)


@fuzz_settings(300)
@given(st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=8), json_values, max_size=4))
def test_arbitrary_documents(document: dict[str, Any]) -> None:
    check_parse(document)


@fuzz_settings(500)
@given(st.lists(st.tuples(st.sampled_from(KEY_PATHS), config_values), min_size=1, max_size=4))
def test_real_keys_with_arbitrary_values(changes: list[tuple[tuple[str, ...], Any]]) -> None:
    document = {"cluster_name": "fuzz"}
    for path, value in changes:
        node: Any = document
        for part in path[:-1]:
            child = node.get(part)
            node[part] = child = child if isinstance(child, dict) else {}
            node = child
        node[path[-1]] = value
    check_parse(document)


MUTATED_DOCUMENTS = 4_000


def test_mutated_example() -> None:
    def one(rng: random.Random) -> None:
        check_parse(mutate(EXAMPLE_DOC, rng, palette=HOSTILE_VALUES))

    run_loop(MUTATED_DOCUMENTS, 6, one)


# --- the file: arbitrary text --------------------------------------------------------------------

YAML_SNIPPETS = (
    "cluster_name: fuzz\n",
    "redis:\n  url: redis://localhost:6379/0\n",
    "shutdown_grace_s: " + "1" * 400 + "\n",
    "shutdown_grace_s: 1e400\n",
    "shutdown_grace_s: .nan\n",
    "pipeline:\n  settle_s: 2001-13-40\n",  # a timestamp PyYAML cannot construct
    "server: 2001-02-30 10:00:00\n",
    "? [a, b]\n: 1\n",  # an unhashable key
    "? {a: 1}\n: 1\n",
    "limits: &a [*a]\n",  # a list that contains itself
    "x: " + "[" * 50 + "]" * 50 + "\n",  # deeper ones: the unit test (each takes ~1 s)
    "x: !!binary 'not base64!'\n",
    "x: !!python/object:os.system 'echo'\n",
    "x: !!int 0x\n",
    "x: " + "9" * 5000 + "\n",  # more digits than int() converts
    "<<: 5\n",
    "a: 1\na: 2\n",
    "\t\x00\ufeff",
    "retry:\n  classes:\n    oom_killed: {max_attempts: 1e400}\n",
    "scope:\n  namespaces: [" + ", ".join(["a"] * 50) + "]\n",
)


@pytest.fixture(scope="module")
def config_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / "config.yaml"


def check_load(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        settings = load_config(path)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(settings, Settings)
    COUNTS["config"] += 1


@fuzz_settings(400)
@given(st.lists(st.sampled_from(YAML_SNIPPETS) | st.text(max_size=30), max_size=5).map("".join))
def test_arbitrary_text(config_file: Path, text: str) -> None:
    check_load(config_file, text)


MUTATED_TEXTS = 200
"""Few: PyYAML reads the shipped example in ~13 ms."""


def test_mutated_example_text(config_file: Path) -> None:
    lines = EXAMPLE.read_text().splitlines(keepends=True)

    def one(rng: random.Random) -> None:
        mutated = list(lines)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(mutated))
            roll = rng.random()
            if roll < 0.4:
                mutated.insert(at, rng.choice(YAML_SNIPPETS))
            elif roll < 0.6:
                del mutated[at]
            else:
                line = mutated[at]
                cut = rng.randrange(len(line) + 1)
                junk = rng.choice(("", ":", "- ", "{", "&x ", "*x", "\t"))
                mutated[at] = line[:cut] + junk + line[cut:]
        check_load(config_file, "".join(mutated))

    run_loop(MUTATED_TEXTS, 7, one)
