"""`python -m devtools.diagram [--check]`: render (or check) docs/architecture.svg.

The picture's source is docs/architecture.dot; the SVG is committed so it shows on any
renderer of docs/architecture.md. Rendered by Debian's graphviz (`apt-get install graphviz`,
scripts/install-deps.sh does it): the same `dot` gives the same SVG byte for byte, so a stale
SVG is a difference, and `make test` (tests/unit/test_image_architecture.py) fails on it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "docs/architecture.dot"
SVG = ROOT / "docs/architecture.svg"


class DotMissing(RuntimeError):
    """No graphviz `dot` on PATH: a missing dependency, reported, never skipped."""


def render(source: Path = SOURCE) -> str:
    """The SVG `dot` makes of `source` (its errors raise CalledProcessError with stderr)."""
    dot = shutil.which("dot")
    if dot is None:
        raise DotMissing("graphviz `dot` is not on PATH: apt-get install graphviz")
    done = subprocess.run(
        [dot, "-Tsvg", str(source)], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def main(argv: list[str] | None = None, source: Path = SOURCE, svg_path: Path = SVG) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.diagram", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args(argv)
    try:
        svg = render(source)
    except DotMissing as exc:
        print(f"diagram: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"diagram: dot failed on {source}:\n{exc.stderr}", file=sys.stderr)
        return 2
    if svg_path.exists() and svg_path.read_text(encoding="utf-8") == svg:
        return 0
    if args.check:
        print(f"{svg_path} is out of date: run python -m devtools.diagram", file=sys.stderr)
        return 1
    svg_path.write_text(svg, encoding="utf-8")
    print(f"wrote {svg_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
