"""What `kube-dlq demo` shows while it runs: one row per demo Job, the queues, the alerts.

The functions that turn what the demo observes (Jobs from the apiserver, dead letters from
Redis, an /api/v1/alerts answer from Prometheus) into rows and lines are pure, so they are
unit-tested (tests/unit/test_demo_view.py); `LiveView` only draws them: a rich Live table on a
terminal, and one plain line per change elsewhere (CI, a pipe), so logs stay readable.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from watcher.core.annotations import ANNOTATION_ATTEMPT, ANNOTATION_ORIGINAL_NAME
from watcher.core.model import DeadLetter

Phase = Literal["pending", "running", "succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One Job object of the demo: the first run of a demo Job, or one of its retries."""

    name: str
    original: str
    """The demo Job it belongs to (kube-dlq's original-name annotation, else its own name)."""
    attempt: int
    """1 for the submitted Job, 2 for the first retry, ..."""
    phase: Phase


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    story: str
    state: str
    done: bool
    """Nothing more will happen to it: dead-lettered, or succeeded."""


def _phase(status: Mapping[str, Any]) -> Phase:
    for condition in status.get("conditions") or ():
        if not isinstance(condition, Mapping) or condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "succeeded"
        if condition.get("type") == "Failed":
            return "failed"
    return "running" if status.get("active") else "pending"


def attempts_from_jobs(document: object) -> list[Attempt]:
    """The Jobs of a ``kubectl get jobs -o json`` answer; malformed items are left out."""
    items = document.get("items") if isinstance(document, Mapping) else None
    out: list[Attempt] = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, Mapping):
            continue
        meta = item.get("metadata")
        status = item.get("status")
        if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
            continue
        annotations = meta.get("annotations")
        if not isinstance(annotations, Mapping):
            annotations = {}
        original = annotations.get(ANNOTATION_ORIGINAL_NAME)
        raw_attempt = annotations.get(ANNOTATION_ATTEMPT, "1")
        attempt = int(raw_attempt) if isinstance(raw_attempt, str) and raw_attempt.isdigit() else 1
        out.append(
            Attempt(
                name=meta["name"],
                original=original if isinstance(original, str) and original else meta["name"],
                attempt=max(attempt, 1),
                phase=_phase(status if isinstance(status, Mapping) else {}),
            )
        )
    return out


def _state(attempts: Sequence[Attempt], letter: DeadLetter | None) -> tuple[str, bool]:
    retries = max((a.attempt for a in attempts), default=1) - 1
    after = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
    if letter is not None:
        return f"dead-lettered {letter.failure_class}{after}", True
    if any(a.phase == "succeeded" for a in attempts):
        return f"succeeded{after}", True
    if not attempts:
        return "submitted", False
    latest = max(attempts, key=lambda a: a.attempt)
    if latest.phase == "failed":
        return "failed, kube-dlq deciding" if not retries else f"retry {retries} failed", False
    return (f"retried {retries}, {latest.phase}" if retries else latest.phase), False


def job_rows(
    workload: Sequence[tuple[str, str]],
    attempts: Sequence[Attempt],
    letters: Sequence[DeadLetter],
) -> list[Row]:
    """One row per demo Job ``(name, story)``, in workload order, from what was observed."""
    owner = {a.name: a.original for a in attempts}
    letter_of: dict[str, DeadLetter] = {}
    for letter in letters:
        letter_of.setdefault(owner.get(letter.job.name, letter.job.name), letter)
    rows = []
    for name, story in workload:
        state, done = _state([a for a in attempts if a.original == name], letter_of.get(name))
        rows.append(Row(name, story, state, done))
    return rows


def queue_line(depths: Mapping[str, int], pending_retries: int) -> str:
    """``dead letters: default 5 (5 in all) · retries pending: 1``."""
    queues = ", ".join(f"{q} {n}" for q, n in sorted(depths.items())) or "none yet"
    total = sum(depths.values())
    return f"dead letters: {queues} ({total} in all) · retries pending: {pending_retries}"


_STATE_ORDER = {"firing": 0, "pending": 1}
_QUIET_LABELS = {"alertname", "severity"}


def alerting_rules(document: object) -> int:
    """How many alerting rules a ``GET /api/v1/rules`` answer holds (0 when it is no answer)."""
    data = document.get("data") if isinstance(document, Mapping) else None
    groups = data.get("groups") if isinstance(data, Mapping) else None
    count = 0
    for group in groups if isinstance(groups, list) else ():
        rules = group.get("rules") if isinstance(group, Mapping) else None
        for rule in rules if isinstance(rules, list) else ():
            count += isinstance(rule, Mapping) and rule.get("type") == "alerting"
    return count


def alert_lines(document: object) -> list[str]:
    """What a Prometheus ``GET /api/v1/alerts`` answer says: firing first, then pending.

    One line per alert: state, name, its other labels, and its summary annotation. Anything
    that is not a success answer gives one line saying so, never an exception.
    """
    if not isinstance(document, Mapping) or document.get("status") != "success":
        error = document.get("error") if isinstance(document, Mapping) else None
        return [f"alerts: Prometheus gave no answer ({error or 'not a success document'})"]
    data = document.get("data")
    alerts = data.get("alerts") if isinstance(data, Mapping) else None
    seen = []
    for alert in alerts if isinstance(alerts, list) else ():
        if not isinstance(alert, Mapping) or not isinstance(alert.get("labels"), Mapping):
            continue
        labels: Mapping[str, Any] = alert["labels"]
        state = str(alert.get("state", "?"))
        annotations = alert.get("annotations")
        summary = annotations.get("summary", "") if isinstance(annotations, Mapping) else ""
        extra = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in _QUIET_LABELS)
        name = str(labels.get("alertname", "?")) + (f"{{{extra}}}" if extra else "")
        line = f"{state:<8} {name}" + (f": {summary}" if summary else "")
        seen.append((_STATE_ORDER.get(state, 2), line))
    if not seen:
        return ["no alert is pending or firing"]
    return [line for _, line in sorted(seen)]


class LiveView:
    """Draws rows and a footer: a rich Live table on a terminal, else one line per change."""

    def __init__(self, out: TextIO, *, force_terminal: bool | None = None) -> None:
        self.console = Console(file=out, force_terminal=force_terminal)
        self.live = self.console.is_terminal
        self._live: Live | None = None
        self._shown: dict[str, str] = {}
        self._footer: list[str] = []
        self._start = time.monotonic()

    def __enter__(self) -> LiveView:
        self._start = time.monotonic()  # time since the workload was submitted
        if self.live:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def update(self, rows: Sequence[Row], footer: Sequence[str]) -> None:
        if self._live is not None:
            self._live.update(render(rows, footer, time.monotonic() - self._start))
            return
        stamp = f"[{time.monotonic() - self._start:5.1f}s]"
        for row in rows:
            if self._shown.get(row.name) != row.state:
                self._shown[row.name] = row.state
                self.console.print(f"{stamp} {row.name:<16} {row.state}", highlight=False)
        for line in footer:  # only the lines that changed: the URLs are printed once
            if line not in self._footer:
                self.console.print(f"{stamp} {line}", highlight=False)
        self._footer = list(footer)


def render(rows: Sequence[Row], footer: Sequence[str], elapsed_s: float) -> Group:
    table = Table(title=f"kube-dlq demo · {elapsed_s:.0f}s", title_justify="left")
    table.add_column("job", style="bold")
    table.add_column("what it does")
    table.add_column("state")
    for row in rows:
        style = "red" if row.state.startswith("dead") else "green" if row.done else "yellow"
        table.add_row(row.name, row.story, Text(row.state, style=style))
    return Group(table, *(Text(line) for line in footer))
