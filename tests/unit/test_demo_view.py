"""The demo's live view: rows from observed Jobs and dead letters, queue and alert lines."""

from __future__ import annotations

import io
from typing import Any

import pytest

from devtools.demo import WORKLOAD
from devtools.demo_view import (
    Attempt,
    LiveView,
    Row,
    alert_lines,
    alerting_rules,
    attempts_from_jobs,
    job_rows,
    queue_line,
)
from watcher.core.model import DeadLetter, FailureClass, JobRef

STORIES = [("ingest-orders", "io_timeout, retried"), ("nightly-report", "node_lost")]


def job(name: str, *, attempt: int | None = None, **status: Any) -> dict[str, Any]:
    annotations = {}
    if attempt is not None:
        annotations = {
            "kube-dlq.io/original-name": name.rsplit("-r", 1)[0],
            "kube-dlq.io/attempt": str(attempt),
        }
    return {"metadata": {"name": name, "annotations": annotations}, "status": status}


def condition(kind: str) -> dict[str, Any]:
    return {"conditions": [{"type": kind, "status": "True"}]}


def letter(job_name: str, failure_class: FailureClass, attempts: int = 1) -> DeadLetter:
    return DeadLetter(
        queue="default",
        job=JobRef("demo", job_name, f"uid-{job_name}"),
        failure_class=failure_class,
        reason="r",
        attempts=attempts,
        failed_at=1_700_000_000.0,
        cluster="demo",
    )


def test_jobs_document_gives_each_job_its_original_attempt_and_phase() -> None:
    document = {
        "items": [
            job("ingest-orders", **condition("Failed")),
            job("ingest-orders-r2", attempt=2, active=1),
            job("nightly-report", **condition("Complete")),
            job("fresh"),
        ]
    }
    assert attempts_from_jobs(document) == [
        Attempt("ingest-orders", "ingest-orders", 1, "failed"),
        Attempt("ingest-orders-r2", "ingest-orders", 2, "running"),
        Attempt("nightly-report", "nightly-report", 1, "succeeded"),
        Attempt("fresh", "fresh", 1, "pending"),
    ]


@pytest.mark.parametrize(
    "document",
    [
        None,
        "items",
        {"items": "nope"},
        {"items": [1, {"metadata": "x"}, {"metadata": {"name": 7}}]},
    ],
)
def test_a_malformed_jobs_document_gives_no_attempts(document: object) -> None:
    assert attempts_from_jobs(document) == []


def test_a_malformed_attempt_annotation_counts_as_the_first_run() -> None:
    item = job("x")
    item["metadata"]["annotations"] = {"kube-dlq.io/attempt": "lots"}
    item["status"] = {"conditions": ["bad", {"type": "Failed", "status": "False"}]}
    assert attempts_from_jobs({"items": [item]}) == [Attempt("x", "x", 1, "pending")]


@pytest.mark.parametrize(
    ("attempts", "letters", "expected"),
    [
        ([], [], "submitted"),
        ([Attempt("ingest-orders", "ingest-orders", 1, "running")], [], "running"),
        ([Attempt("ingest-orders", "ingest-orders", 1, "failed")], [], "failed, kube-dlq deciding"),
        (
            [
                Attempt("ingest-orders", "ingest-orders", 1, "failed"),
                Attempt("ingest-orders-r2", "ingest-orders", 2, "running"),
            ],
            [],
            "retried 1, running",
        ),
        (
            [
                Attempt("ingest-orders", "ingest-orders", 1, "failed"),
                Attempt("ingest-orders-r2", "ingest-orders", 2, "failed"),
            ],
            [],
            "retry 1 failed",
        ),
        (
            [
                Attempt("ingest-orders", "ingest-orders", 1, "failed"),
                Attempt("ingest-orders-r2", "ingest-orders", 2, "failed"),
                Attempt("ingest-orders-r3", "ingest-orders", 3, "failed"),
            ],
            # The letter names the last attempt's Job, not the demo Job.
            [letter("ingest-orders-r3", FailureClass.IO_TIMEOUT, attempts=3)],
            "dead-lettered io_timeout after 2 retries",
        ),
        (
            [Attempt("ingest-orders", "ingest-orders", 1, "failed")],
            [letter("ingest-orders", FailureClass.APP_ERROR)],
            "dead-lettered app_error",
        ),
    ],
)
def test_the_state_of_a_job_follows_its_attempts_and_letter(
    attempts: list[Attempt], letters: list[DeadLetter], expected: str
) -> None:
    row = job_rows(STORIES, attempts, letters)[0]
    assert row == Row("ingest-orders", "io_timeout, retried", expected, expected.startswith("dead"))


def test_a_retry_that_succeeds_is_done_and_says_how_many_retries_it_took() -> None:
    attempts = [
        Attempt("nightly-report", "nightly-report", 1, "failed"),
        Attempt("nightly-report-r2", "nightly-report", 2, "succeeded"),
    ]
    rows = job_rows(STORIES, attempts, [])
    assert [(r.name, r.state, r.done) for r in rows] == [
        ("ingest-orders", "submitted", False),
        ("nightly-report", "succeeded after 1 retry", True),
    ]


def test_every_demo_job_has_a_row_in_workload_order() -> None:
    stories = [(name, story) for name, story, _ in WORKLOAD]
    assert [row.name for row in job_rows(stories, [], [])] == [name for name, _ in stories]


def test_the_queue_line_gives_each_queue_and_the_total() -> None:
    assert queue_line({"payments": 2, "default": 5}, 1) == (
        "dead letters: default 5, payments 2 (7 in all) · retries pending: 1"
    )
    assert queue_line({}, 0) == "dead letters: none yet (0 in all) · retries pending: 0"


def alert(name: str, state: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": "warning", **labels},
        "annotations": {"summary": f"{name} summary"},
        "state": state,
        "activeAt": "2026-12-02T05:00:00Z",
        "value": "1e+00",
    }


def test_alert_lines_put_firing_before_pending_with_labels_and_summary() -> None:
    document = {
        "status": "success",
        "data": {
            "alerts": [
                alert("KubeDLQNoLeader", "pending"),
                alert("KubeDLQHandlingErrors", "firing", stage="classify"),
                alert("KubeDLQAbsent", "firing"),
            ]
        },
    }
    assert alert_lines(document) == [
        "firing   KubeDLQAbsent: KubeDLQAbsent summary",
        "firing   KubeDLQHandlingErrors{stage=classify}: KubeDLQHandlingErrors summary",
        "pending  KubeDLQNoLeader: KubeDLQNoLeader summary",
    ]


def test_no_alert_says_so() -> None:
    assert alert_lines({"status": "success", "data": {"alerts": []}}) == [
        "no alert is pending or firing"
    ]


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ({"status": "error", "error": "connection refused"}, "connection refused"),
        ([], "not a success document"),
        ({"status": "success", "data": {"alerts": [1, {"labels": 2}]}}, "no alert"),
        ({"status": "success", "data": None}, "no alert"),
    ],
)
def test_a_failed_or_malformed_alerts_answer_is_one_line_not_an_exception(
    document: object, says: str
) -> None:
    [line] = alert_lines(document)
    assert says in line


URL = "metrics: http://127.0.0.1:9/metrics"


def test_off_a_terminal_the_view_prints_one_line_per_change() -> None:
    out = io.StringIO()
    view = LiveView(out)
    assert not view.live
    with view:
        view.update([Row("a", "story", "running", False)], ["dead letters: none yet", URL])
        view.update([Row("a", "story", "running", False)], ["dead letters: none yet", URL])
        view.update([Row("a", "story", "dead-lettered app_error", True)], ["dead letters: 1", URL])
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "a                running",
        "dead letters: none yet",
        URL,
        "a                dead-lettered app_error",
        "dead letters: 1",
    ]


def test_on_a_terminal_the_view_draws_a_table_of_the_rows() -> None:
    out = io.StringIO()
    view = LiveView(out, force_terminal=True)
    assert view.live
    with view:
        view.update([Row("report-etl", "app_error", "dead-lettered app_error", True)], ["q: 1"])
    text = out.getvalue()
    assert "report-etl" in text
    assert "dead-lettered app_error" in text
    assert "q: 1" in text


def test_alerting_rules_counts_alerts_not_recording_rules() -> None:
    document = {
        "status": "success",
        "data": {
            "groups": [
                {"rules": [{"type": "alerting"}, {"type": "recording"}, {"type": "alerting"}]},
                {"rules": "bad"},
                "bad",
            ]
        },
    }
    assert alerting_rules(document) == 2
    assert alerting_rules({"status": "error"}) == 0
