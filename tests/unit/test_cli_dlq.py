"""watcher.cli.dlq rendering of entries the codec accepts but a person would not expect."""

from __future__ import annotations

import json

import pytest

from watcher.cli import dlq
from watcher.core.model import DeadLetter, FailureClass, JobRef


def letter(failed_at: float) -> DeadLetter:
    return DeadLetter(
        queue="batch",
        job=JobRef("ns", "job", "uid"),
        failure_class=FailureClass.APP_ERROR,
        reason="exit 1",
        attempts=1,
        failed_at=failed_at,
        cluster="prod",
    )


@pytest.mark.parametrize("failed_at", [1e20, -1e20, 1.7e308])
def test_a_time_beyond_time_t_is_shown_as_a_number(failed_at: float) -> None:
    # Finite, so the codec decodes it; time.gmtime raised OverflowError/OSError on it and
    # stopped the whole `dlq list`.
    row = dlq.summary("batch/1-0", letter(failed_at))
    assert row["failed_at"] == f"{failed_at:g}"
    json.dumps(dlq.full("batch/1-0", letter(failed_at)), default=str)


def test_an_ordinary_time_is_iso() -> None:
    assert dlq.summary("batch/1-0", letter(0.0))["failed_at"] == "1970-01-01T00:00:00Z"
