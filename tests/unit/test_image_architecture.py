"""The architecture image: docs/architecture.svg is what docs/architecture.dot renders to.

Needs graphviz's `dot` (scripts/install-deps.sh installs it); without it these fail, loudly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devtools import diagram

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_svg_is_what_the_dot_source_renders_to() -> None:
    assert diagram.main(["--check"]) == 0, "run: python -m devtools.diagram"


def test_a_changed_source_makes_the_check_fail_and_a_render_fix_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "a.dot"
    svg = tmp_path / "a.svg"
    source.write_text('digraph { a -> b [label="first"] }')
    assert diagram.main([], source, svg) == 0
    assert "first" in svg.read_text()
    source.write_text('digraph { a -> b [label="second"] }')
    assert diagram.main(["--check"], source, svg) == 1
    assert "out of date" in capsys.readouterr().err
    assert diagram.main([], source, svg) == 0
    assert diagram.main(["--check"], source, svg) == 0


def test_a_broken_source_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "bad.dot"
    source.write_text("digraph { a -> ")
    assert diagram.main(["--check"], source, tmp_path / "bad.svg") == 2
    assert "dot failed" in capsys.readouterr().err


def test_every_module_the_picture_names_exists() -> None:
    text = diagram.SOURCE.read_text().replace("\\n", " ")  # label line breaks
    named = set(re.findall(r"(?<![\w.-])([a-z_]+(?:/[a-z_]+)*(?:\.py|/))(?=[\s\"])", text))
    product = {str(p.relative_to(ROOT / "watcher")) for p in (ROOT / "watcher").rglob("*.py")}
    product |= {str(p.relative_to(ROOT / "watcher")) + "/" for p in (ROOT / "watcher").rglob("*")}
    missing = {n for n in named if not any(p == n or p.endswith("/" + n) for p in product)}
    assert named and missing == set()


def test_the_architecture_page_shows_the_svg() -> None:
    assert "](architecture.svg)" in (ROOT / "docs/architecture.md").read_text()
