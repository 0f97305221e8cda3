"""What the monitoring tests read: the committed rules and dashboard, their queries, promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devtools.monitoring import rules

REPO_ROOT = Path(__file__).resolve().parents[2]
UNIT_TESTS = Path(__file__).resolve().parent / "alerts.test.yaml"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"
ALERTS_DOC = REPO_ROOT / "docs" / "alerts.md"

NOT_YET_EXPORTED: set[str] = set()
"""Metrics the rules and the dashboard use that today's daemon does not export yet."""

METRIC = re.compile(r"\bkube_dlq_[a-z_]+\b")
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)\s*(-?[0-9][0-9.e+]*)(?![0-9.]*\s*[-+*/%^])")
_PERMISSIVE = {">": "> -Inf", ">=": "> -Inf", "<": "< +Inf", "<=": "< +Inf"}


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rules.load_groups() for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(rules.DASHBOARD_FILE.read_text())
    return board


def panels() -> list[dict[str, Any]]:
    """Every panel but the rows."""
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def panel_queries() -> list[tuple[str, str]]:
    """(panel title/refId, expr) of every dashboard query."""
    return [(f"{p['title']}/{t['refId']}", t["expr"]) for p in panels() for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """The kube_dlq_* metric names an expression reads."""
    return set(METRIC.findall(expr))


def as_instant(expr: str, rate_interval: str) -> str:
    """A dashboard query as Prometheus runs it: Grafana's variables filled in."""
    return expr.replace("$__rate_interval", rate_interval).replace('=~"$job"', '=~".+"')


def without_thresholds(expr: str) -> str:
    """The alert expression with every comparison against a number made always true.

    `x > 100` becomes `x > -Inf`, `x == 0` becomes `x > -Inf`: what is left returns every
    series the expression reads, so an empty answer means a metric or label that does not
    exist. Comparisons against another vector (`a > 3 * b`) are kept.
    """

    def permissive(match: re.Match[str]) -> str:
        return _PERMISSIVE.get(match.group(1), "> -Inf")

    return _COMPARISON.sub(permissive, expr)


def promtool() -> str:
    """The promtool binary; fails the test (never skips) when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: it comes with Debian's prometheus package, which "
            "scripts/install-deps.sh (make deps) installs"
        )
    return path


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def anchors(markdown: Path) -> set[str]:
    """GitHub-style anchors of a page's headings."""
    found = set()
    for line in markdown.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return found
