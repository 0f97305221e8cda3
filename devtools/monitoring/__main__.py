"""`python -m devtools.monitoring [--check]`: regenerate (or check) deploy/monitoring/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devtools.monitoring import dashboard, rules


def outputs() -> dict[Path, str]:
    """Every generated file and the text it must have."""
    return {rules.DASHBOARD_FILE: dashboard.render(), rules.PROMETHEUS_RULE_FILE: rules.render()}


def main(argv: list[str] | None = None, files: dict[Path, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.monitoring", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in (outputs() if files is None else files).items():
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    for path in stale:
        print(f"{path} is out of date: run python -m devtools.monitoring", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
