"""Each `kube-dlq dlq` verb as a user runs it, on a real redis-server: list (every filter,
every output, paging, --watch), show, stats, export and purge (dry run, --yes, the prompt,
no terminal, by id), and the indexes still consistent after the purges."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio import Redis

from devtools.devcluster.redis_server import RedisServer
from tests.integration.conftest import CLUSTER, SETTINGS, make_redis
from tests.integration.test_dlq_select import assert_indexes_consistent, varied
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.store import RedisStore
from watcher.cli.main import main
from watcher.core.model import DeadLetter, OwnerRef

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]


def _run(server: RedisServer, work: Callable[[Redis], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        client = make_redis(server.port)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


class Queue:
    """A fresh installation (its own key prefix), its config file and its written entries."""

    def __init__(self, tmp_path: Path, server: RedisServer, extra: str = "") -> None:
        self.server = server
        self.prefix = f"cli-{uuid.uuid4().hex[:8]}"
        self.keys = Keys(prefix=self.prefix, cluster=CLUSTER)
        self.config = str(tmp_path / "kube-dlq.yaml")
        Path(self.config).write_text(
            f"cluster_name: {CLUSTER}\nredis:\n  url: {server.url}\n  key_prefix: {self.prefix}\n"
            "security:\n  allow_unsigned: true\nlog:\n  format: json\n" + extra
        )

    def write(self, letters: list[DeadLetter]) -> list[str]:
        async def fill(redis: Redis) -> list[str]:
            store = RedisStore(
                redis, replace(SETTINGS, key_prefix=self.prefix), cluster_name=CLUSTER
            )
            return [(await store.dead_letter(x)).ref for x in letters]

        refs: list[str] = _run(self.server, fill)
        return refs

    def consistent(self, queue: str = "batch") -> set[str]:
        ids: set[str] = _run(self.server, lambda r: assert_indexes_consistent(r, self.keys, queue))
        return ids

    def dlq(self, *argv: str) -> int:
        return main(["dlq", argv[0], "--config", self.config, *argv[1:]])


@pytest.fixture
def q(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Queue:
    for name in ("KUBE_DLQ_REDIS_URL", "KUBE_DLQ_CONFIG", "KUBE_DLQ_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    return Queue(tmp_path, redis_server)


def twelve() -> list[DeadLetter]:
    """batch: 0..9 (classes oom/app/node by i % 3, namespaces ns0..ns3 by i % 4), etl: 10, 11;
    the even ones owned by CronJob/nightly."""
    out = [varied(i, queue="batch" if i < 10 else "etl") for i in range(12)]
    return [
        replace(x, owner=OwnerRef("CronJob", "nightly", "c")) if i % 2 == 0 else x
        for i, x in enumerate(out)
    ]


def listed(q: Queue, capsys: pytest.CaptureFixture[str], *flags: str) -> list[str]:
    assert q.dlq("list", "-o", "json", *flags) == 0
    out = capsys.readouterr().out
    return [row["job"] for row in json.loads(out)]


@pytest.mark.parametrize(
    ("flags", "jobs"),
    [
        ((), [f"job-{i}" for i in range(12)]),
        (("--queue", "etl"), ["job-10", "job-11"]),
        (("--class", "app_error"), ["job-1", "job-4", "job-7", "job-10"]),
        (("--namespace", "ns1"), ["job-1", "job-5", "job-9"]),
        (("--class", "app-error", "--namespace", "ns1"), ["job-1"]),
        (("--job", "job-1"), ["job-1", "job-10", "job-11"]),
        (
            ("--owner", "CronJob/nightly", "--queue", "batch"),
            ["job-0", "job-2", "job-4", "job-6", "job-8"],
        ),
        (("--older-than", "1h"), []),
        (("--newer-than", "1h", "--queue", "etl"), ["job-10", "job-11"]),
    ],
)
def test_list_filters(
    q: Queue, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], jobs: list[str]
) -> None:
    q.write(twelve())
    got = listed(q, capsys, *flags)
    # Within a queue in write order; across queues by (stream id, queue), which interleaves
    # entries written in the same ms, so only each queue's order is fixed
    assert sorted(got) == sorted(jobs)
    batch = [j for j in got if int(j.removeprefix("job-")) < 10]
    assert batch == sorted(batch, key=lambda j: int(j.removeprefix("job-")))


def test_list_outputs_and_pages(q: Queue, capsys: pytest.CaptureFixture[str]) -> None:
    q.write(twelve())
    # (listing order is (stream id, queue): entries of two queues in one ms interleave)
    assert q.dlq("list", "-o", "json") == 0
    refs = [row["id"] for row in json.loads(capsys.readouterr().out)]
    assert len(refs) == 12
    # A page cut at --limit names the next one on stderr; stdout stays one document
    assert q.dlq("list", "-o", "jsonl", "--limit", "5") == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["id"] for line in out.splitlines()] == refs[:5]
    assert err.strip() == f"more entries may follow: add --after {refs[4]} for the next page"
    assert q.dlq("list", "-o", "yaml", "--limit", "5", "--after", refs[4]) == 0
    out, err = capsys.readouterr()
    assert [row["id"] for row in yaml.safe_load(out)] == refs[5:10]
    assert q.dlq("list", "--after", refs[9]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("ID") and [line.split()[0] for line in lines[1:]] == refs[10:]
    assert err == ""


def test_list_watch_prints_new_entries_and_ctrl_c_exits_0(q: Queue) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE_DLQ_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "watcher",
            "dlq",
            "list",
            "-c",
            q.config,
            "--watch",
            "-o",
            "json",
            "--class",
            "app_error",
        ],
        cwd=REPO,
        env=env,
        # As from a terminal: a test runner may have SIGINT ignored, which a child inherits.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Live once it says so (a fixed sleep raced a slow start on a loaded machine: entries
        # written before the watch read Redis's clock are, rightly, not new to it).
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stderr.readline() == "kube-dlq: watching for new entries (Ctrl-C to stop)\n"
        q.write([varied(i) for i in range(4)])
        line = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        try:
            rest, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"still running after SIGINT: {proc.communicate()}") from None
    finally:
        proc.kill()
    assert json.loads(line)["job"] == "job-1"
    assert rest == ""  # job-1 only: the others are other classes
    assert proc.returncode == 0, err


def test_show_is_a_summary_and_json_on_request(
    q: Queue, capsys: pytest.CaptureFixture[str]
) -> None:
    [ref] = q.write([twelve()[0]])
    assert q.dlq("show", ref) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ref
    assert "  class:       oom_killed" in out and "  owner:       CronJob/nightly" in out
    assert f"  redrive:     kube-dlq dlq redrive {ref} [--dry-run]" in out
    assert q.dlq("show", ref, "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["job"]["name"] == "job-0"
    assert q.dlq("show", ref.replace("-0", "-9")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no dead letter" in err


def test_stats_table_and_json(q: Queue, capsys: pytest.CaptureFixture[str]) -> None:
    q.write(twelve())
    assert q.dlq("stats", "-o", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["name"]: (r["depth"], r["inflow_last_hour"]) for r in doc["queue"]} == {
        "batch": (10, 10),
        "etl": (2, 2),
    }
    assert {r["name"]: r["depth"] for r in doc["class"]} == {
        "app_error": 4,
        "node_lost": 4,
        "oom_killed": 4,
    }
    assert {r["name"]: r["depth"] for r in doc["namespace"]} == {
        "ns0": 3,
        "ns1": 3,
        "ns2": 3,
        "ns3": 3,
    }
    assert q.dlq("stats") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["QUEUE", "DEPTH", "OLDEST", "LAST", "HOUR"]
    assert lines[1].split()[:2] == ["batch", "10"]


def test_export_writes_every_entry_as_a_line_with_progress(
    q: Queue, capsys: pytest.CaptureFixture[str]
) -> None:
    q.write([varied(i) for i in range(1100)])
    assert q.dlq("export", "--format", "jsonl") == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 1100 and lines[0]["job"]["name"] == "job-0" and "manifest" in lines[0]
    assert err.splitlines() == ["exported 1000 entries...", "exported 1100 entries"]
    assert q.dlq("export", "--class", "node_lost", "--namespace", "ns3") == 0
    out, _ = capsys.readouterr()
    assert {json.loads(line)["job"]["name"] for line in out.splitlines()} == {
        f"job-{i}" for i in range(1100) if i % 3 == 2 and i % 4 == 3
    }


def _audit(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if '"dlq_purge"' in line]


def test_purge_dry_run_then_without_a_terminal_then_yes(
    q: Queue, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = q.write(twelve())
    oom = [refs[i] for i in (0, 3, 6, 9)]
    # A dry run lists what would go and removes nothing
    assert q.dlq("purge", "--class", "oom_killed", "--dry-run") == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [*oom, "dry run: would purge 4 entries (batch: 4)"]
    [line] = _audit(err)
    assert (line["outcome"], line["matched"], line["selection"]) == (
        "dry_run",
        4,
        "--class oom_killed",
    )
    # Without --yes and without a terminal to ask on: refused, one line, nothing removed
    assert q.dlq("purge", "--class", "oom_killed") == 2
    out, err = capsys.readouterr()
    assert err == (
        "kube-dlq dlq purge: would purge 4 entries (batch: 4); "
        "no terminal to confirm on: pass --yes\n"
    )
    assert len(q.consistent()) == 10
    # With --yes: gone from the stream and every index, one audit line naming who and how many
    assert q.dlq("purge", "--class", "oom_killed", "--yes") == 0
    out, err = capsys.readouterr()
    assert out == "purged 4 entries\n"
    [line] = _audit(err)
    assert (line["outcome"], line["purged"], line["dry_run"]) == ("purged", 4, False)
    assert line["user"]
    assert q.consistent() == {r.partition("/")[2] for r in refs[:10]} - {
        r.partition("/")[2] for r in oom
    }
    assert listed(q, capsys, "--class", "oom_killed") == []


def test_purge_asks_at_a_terminal(
    q: Queue, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = q.write(twelve())
    answers = iter(["n", "yes"])
    prompts: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or next(answers))
    assert q.dlq("purge", refs[1], refs[11]) == 1
    assert capsys.readouterr().out == "aborted: nothing purged\n"
    assert q.dlq("purge", refs[1], refs[11]) == 0
    assert capsys.readouterr().out == "purged 2 entries\n"
    assert prompts == ["purge 2 entries (batch: 1, etl: 1)? this cannot be undone [y/N] "] * 2
    assert refs[1].partition("/")[2] not in q.consistent("batch")
    assert q.consistent("etl") == {refs[10].partition("/")[2]}


def test_purge_older_than_and_an_unknown_id(q: Queue, capsys: pytest.CaptureFixture[str]) -> None:
    refs = q.write(twelve())
    assert q.dlq("purge", "--older-than", "1h", "--yes") == 0
    assert capsys.readouterr().out == "nothing to purge\n"
    assert q.dlq("purge", "batch/1-0", "--yes") == 1
    assert (
        capsys.readouterr().err == "kube-dlq dlq purge: no dead letter batch/1-0: nothing purged\n"
    )
    assert q.dlq("purge", "--all", "--yes") == 0
    assert capsys.readouterr().out == f"purged {len(refs)} entries\n"
    assert q.consistent("batch") == set() and q.consistent("etl") == set()
