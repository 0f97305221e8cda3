"""Report how many documents the fuzz tests fed the parsers, on the line `fuzz: N documents`."""

from __future__ import annotations

import pytest

from tests.fuzz.hostile import COUNTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not COUNTS:
        return
    parts = ", ".join(f"{name} {count}" for name, count in sorted(COUNTS.items()))
    terminalreporter.write_line(f"fuzz: {sum(COUNTS.values())} documents ({parts})")
