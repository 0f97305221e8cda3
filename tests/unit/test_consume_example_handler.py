"""deploy/consume/handler.py against a local HTTP server on a real socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.webhook import webhook_server

HANDLER = Path(__file__).resolve().parents[2] / "deploy" / "consume" / "handler.py"

ENTRY = {
    "id": "batch/1700000000000-0",
    "queue": "batch",
    "job": {"namespace": "etl", "name": "nightly-load", "uid": "u1"},
    "failure_class": "oom_killed",
    "reason": "container worker was OOM-killed " + "x" * 1000,
    "attempts": 3,
    "failed_at": "2023-11-14T22:13:20Z",
    "cluster": "prod",
}


def run(url: str, entry: Any = ENTRY) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KUBE_DLQ_WEBHOOK_URL": url,
        "KUBE_DLQ_ENTRY_ID": ENTRY["id"],
        "KUBE_DLQ_WEBHOOK_TIMEOUT": "5",
    }
    return subprocess.run(
        [sys.executable, str(HANDLER)],
        input=json.dumps(entry),
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_2xx_answer_exits_0_and_the_post_is_a_short_slack_message() -> None:
    with webhook_server() as hook:
        done = run(hook.url)
    assert done.returncode == 0, done.stderr
    [(headers, body)] = hook.posts
    assert headers["content-type"] == "application/json"
    assert headers["x-kube-dlq-entry-id"] == "batch/1700000000000-0"
    assert body["text"].startswith(
        "Job etl/nightly-load dead-lettered (oom_killed) in queue batch on prod after 3 "
        "attempt(s): container worker was OOM-killed xxx"
    )
    assert len(body["text"]) < 500  # a summary: the long reason is cut
    assert [block["type"] for block in body["blocks"]] == ["section", "context"]
    assert "kube-dlq dlq show batch/1700000000000-0" in json.dumps(body["blocks"])


def test_an_error_answer_exits_1_so_consume_retries_and_the_url_is_not_printed() -> None:
    with webhook_server() as hook:
        hook.statuses = [500]
        done = run(hook.url)
    assert done.returncode == 1
    assert "webhook POST for batch/1700000000000-0 failed" in done.stderr
    assert hook.url not in done.stderr and "/hooks/" not in done.stderr


def test_an_unreachable_webhook_and_bad_input_exit_1() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"
    assert run(closed).returncode == 1
    with webhook_server() as hook:
        assert run(hook.url, entry=[1, 2]).returncode == 1
        assert hook.posts == []
