"""`kube-dlq dlq consume` on a real redis-server, as an operator runs it: a subprocess.

The handler is a small Python script that records each run (entry id, attempt, consumer, the
JSON it read on stdin) in a file and exits as told by its mode, so a test sees what a user
would: how often COMMAND ran, with what, and what is left in Redis afterwards (acked, parked,
pending). Entries are written by the daemon's own store, signed with the test's keys.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from devtools.devcluster.redis_server import RedisServer
from tests.integration.conftest import CLUSTER, SETTINGS, make_redis
from tests.integration.test_signing import keys_dir, security
from tests.integration.test_sink import letter
from tests.support.webhook import webhook_server
from watcher.adapters.redis import codec
from watcher.adapters.redis.consumer import StreamConsumer, attempts_key, parked_key
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.adapters.redis.store import RedisStore
from watcher.app.sealing import build_seal
from watcher.cli.main import main
from watcher.core.settings import SecuritySettings

pytestmark = pytest.mark.redis

HANDLER = r"""
import json, os, sys, time, signal
runs, mode = sys.argv[1], sys.argv[2]
entry = os.environ["KUBE_DLQ_ENTRY_ID"]
doc = json.load(sys.stdin)
record = {k: v for k, v in os.environ.items() if k.startswith("KUBE_DLQ_")}
record.update(pid=os.getpid(), tag=os.environ.get("TEST_TAG", ""), uid=doc["job"]["uid"],
              manifest=doc["manifest"], hidden=doc.get("hidden_env_values"))
with open(runs, "a") as f:
    f.write(json.dumps(record) + "\n")
before = sum(1 for line in open(runs) if json.loads(line)["KUBE_DLQ_ENTRY_ID"] == entry)
if mode == "fail-twice":
    sys.exit(0 if before >= 3 else 3)
if mode == "always-fail":
    sys.exit(1)
if mode == "hang-under-a":
    if os.environ.get("TEST_TAG") == "a":
        time.sleep(600)
    sys.exit(0)
if mode == "slow":
    def done(*_):
        with open(runs + ".term", "a") as f:
            f.write(entry + "\n")
        sys.exit(143)
    signal.signal(signal.SIGTERM, done)
    time.sleep(float(os.environ.get("TEST_SLEEP", "1")))
    with open(runs + ".done", "a") as f:
        f.write(entry + "\n")
sys.exit(0)
"""


class Installation:
    """One test's kube-dlq installation: a key prefix, signing keys, a config file."""

    def __init__(self, tmp_path: Path, server: RedisServer) -> None:
        self.tmp = tmp_path
        self.server = server
        self.prefix = f"consume-{uuid.uuid4().hex[:8]}"
        signing = keys_dir(tmp_path / "signing", "k1")
        self.seal = build_seal(security(signing, "k1"))
        self.keys = Keys(prefix=self.prefix, cluster=CLUSTER)
        self.config = tmp_path / "kube-dlq.yaml"
        doc = {
            "cluster_name": CLUSTER,
            "redis": {"url": server.url, "key_prefix": self.prefix},
            "security": {"signing_keys_dir": str(signing), "signing_key_id": "k1"},
            "log": {"format": "json"},
        }
        self.config.write_text(json.dumps(doc))
        self.handler = tmp_path / "handler.py"
        self.handler.write_text(HANDLER)
        self.runs = tmp_path / "runs.jsonl"
        self.procs: list[subprocess.Popen[str]] = []

    def redis(self, work: Callable[[Redis], Any]) -> Any:
        async def run() -> Any:
            client = make_redis(self.server.port)
            try:
                return await work(client)
            finally:
                await client.aclose()

        return asyncio.run(run())

    def dead_letter(self, *uids: str, **changes: Any) -> list[str]:
        async def write(redis: Redis) -> list[str]:
            settings = replace(SETTINGS, key_prefix=self.prefix)
            store = RedisStore(redis, settings, cluster_name=CLUSTER, seal=self.seal)
            return [(await store.dead_letter(letter(uid, **changes))).ref for uid in uids]

        return list(self.redis(write))

    def consume(
        self,
        mode: str,
        *flags: str,
        tag: str = "",
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> subprocess.Popen[str]:
        argv = [
            sys.executable,
            "-m",
            "watcher",
            "dlq",
            "consume",
            "--config",
            str(self.config),
            "--group",
            "g",
            "--backoff",
            "0.05",
            "--backoff-cap",
            "0.2",
            *flags,
            "--",
            *(command or [sys.executable, str(self.handler), str(self.runs), mode]),
        ]
        environ = {**os.environ, "TEST_TAG": tag, **(env or {})}
        for name in ("KUBE_DLQ_REDIS_URL", "KUBE_DLQ_CONFIG", "KUBE_DLQ_LOG_LEVEL"):
            environ.pop(name, None)
        proc = subprocess.Popen(
            argv, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        return proc

    def run_records(self) -> list[dict[str, Any]]:
        if not self.runs.exists():
            return []
        return [json.loads(line) for line in self.runs.read_text().splitlines()]

    def pending(self, queue: str = "batch") -> int:
        async def count(redis: Redis) -> int:
            info = await redis.xpending(self.keys.dlq(queue), "g")
            return int(info["pending"])

        return int(self.redis(count))

    def parked(self) -> list[dict[str, Any]]:
        async def read(redis: Redis) -> list[bytes]:
            return list(await redis.lrange(parked_key(self.keys, "g"), 0, -1))

        return [json.loads(raw) for raw in self.redis(read)]

    def delivered(self, queue: str = "batch") -> int:
        """Entries the group has read (last-delivered position reached), pending or not."""

        async def read(redis: Redis) -> int:
            groups = await redis.xinfo_groups(self.keys.dlq(queue))
            return int(groups[0]["entries-read"] or 0)

        return int(self.redis(read))


def wait_for(what: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll `what`; a NOGROUP reply (the consumer has not made its group yet) is a no."""
    deadline = time.monotonic() + timeout_s
    while not _holds(what):
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _holds(what: Callable[[], bool]) -> bool:
    try:
        return what()
    except ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return False


def stop(proc: subprocess.Popen[str], timeout_s: float = 15.0) -> tuple[int, str]:
    """SIGTERM, then the exit code and stderr."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, err


@pytest.fixture
def site(tmp_path: Path, redis_server: RedisServer) -> Iterator[Installation]:
    made = Installation(tmp_path, redis_server)
    try:
        yield made
    finally:
        for proc in made.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_a_handler_that_fails_twice_then_succeeds_runs_three_times_and_is_acked_once(
    site: Installation,
) -> None:
    # Given one dead letter (with an inline secret in its manifest) before the group exists
    container = {"name": "w", "image": "busybox", "env": [{"name": "PW", "value": "hunter2"}]}
    manifest = {"kind": "Job", "spec": {"template": {"spec": {"containers": [container]}}}}
    [ref] = site.dead_letter("u1", manifest=manifest)

    # When a consumer runs a handler that fails twice, then succeeds
    proc = site.consume("fail-twice", "--queue", "batch", "--max-attempts", "5")
    wait_for(lambda: len(site.run_records()) == 3 and site.pending() == 0)
    time.sleep(0.3)  # would any further run show up?
    code, err = stop(proc)

    # Then it ran three times, attempts 1..3, with the entry's identity, and was acked once
    runs = site.run_records()
    assert [r["KUBE_DLQ_ATTEMPT"] for r in runs] == ["1", "2", "3"]
    assert {r["KUBE_DLQ_ENTRY_ID"] for r in runs} == {ref}
    first = runs[0]
    assert (first["KUBE_DLQ_QUEUE"], first["KUBE_DLQ_CLASS"]) == ("batch", "oom_killed")
    assert (first["KUBE_DLQ_NAMESPACE"], first["KUBE_DLQ_JOB"]) == ("ns", "job-u1")
    assert first["KUBE_DLQ_GROUP"] == "g"
    # And the JSON on stdin is `dlq show`'s, the inline secret masked
    assert first["uid"] == "u1" and "hunter2" not in json.dumps(first)
    assert first["hidden"]
    assert site.pending() == 0 and site.delivered() == 1 and site.parked() == []
    # And the attempt count is gone with the ack: nothing grows per entry
    assert not site.redis(lambda r: r.exists(attempts_key(site.keys, "g")))
    assert code == 0, err
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert events.count("consume_handler_failed") == 2 and events.count("consume_handled") == 1


def test_an_always_failing_handler_parks_the_entry_after_n_runs_and_list_parked_shows_it(
    site: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two dead letters
    refs = site.dead_letter("u1", "u2")

    # When the handler always fails, with 2 attempts allowed
    proc = site.consume("always-fail", "--max-attempts", "2")
    wait_for(lambda: len(site.parked()) == 2)
    code, err = stop(proc)
    assert code == 0, err

    # Then each ran exactly twice and is parked (and acked), none left pending
    runs = site.run_records()
    assert sorted(r["KUBE_DLQ_ENTRY_ID"] for r in runs) == sorted(refs * 2)
    assert site.pending() == 0
    assert [(p["id"], p["attempts"], p["reason"]) for p in site.parked()] == [
        (ref, 2, "handler exit 1") for ref in refs
    ]
    # And `dlq list --parked g` shows them, with their Jobs, as JSON and as a table
    assert main(["dlq", "list", "--config", str(site.config), "--parked", "g", "-o", "json"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [(r["id"], r["job"], r["attempts"]) for r in rows] == [
        (refs[0], "job-u1", 2),
        (refs[1], "job-u2", 2),
    ]
    assert err == ""
    assert main(["dlq", "list", "--config", str(site.config), "--parked", "g"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["ID", "TRIES", "PARKED"]
    assert refs[0] in table[1] and "ns/job-u1" in table[1] and "handler exit 1" in table[1]
    # And another group has parked nothing
    assert main(["dlq", "list", "--config", str(site.config), "--parked", "other"]) == 0
    assert capsys.readouterr().out == "nothing parked by group other\n"


def test_a_dead_consumers_entry_is_reclaimed_by_a_second_consumer(site: Installation) -> None:
    # Given consumer "a" in the middle of a handler run
    [ref] = site.dead_letter("u1")
    a = site.consume("hang-under-a", "--consumer", "a", "--claim-idle", "1", tag="a")
    wait_for(lambda: len(site.run_records()) == 1)

    # When it is killed with SIGKILL (its handler too, as a pod's death would)
    a.kill()
    os.kill(site.run_records()[0]["pid"], signal.SIGKILL)
    a.communicate()  # after the handler: it holds the consumer's stderr open
    assert site.pending() == 1

    # Then consumer "b" takes the entry over once it is idle, runs it, and acks it
    b = site.consume("hang-under-a", "--consumer", "b", "--claim-idle", "1", tag="b")
    wait_for(lambda: site.pending() == 0)
    code, err = stop(b)
    assert code == 0, err
    runs = site.run_records()
    assert [(r["tag"], r["KUBE_DLQ_ENTRY_ID"]) for r in runs] == [("a", ref), ("b", ref)]
    # And the attempt count carried over: the run a started counts
    assert [r["KUBE_DLQ_ATTEMPT"] for r in runs] == ["1", "2"]
    assert site.parked() == []


def test_a_forged_entry_never_reaches_the_handler_and_the_consumer_goes_on(
    site: Installation,
) -> None:
    # Given an unsigned entry and one moved from another queue, then a signed one
    async def forge(redis: Redis) -> list[str]:
        plain = codec.encode_dead_letter(letter("evil"))
        unsigned = await redis.xadd(site.keys.dlq("batch"), {STREAM_FIELD: plain})
        return [f"batch/{unsigned.decode()}"]

    [unsigned] = site.redis(forge)
    [other] = site.dead_letter("moved", queue="other")

    async def move(redis: Redis) -> str:
        [(_, fields)] = await redis.xrange(site.keys.dlq("other"))
        return f"batch/{(await redis.xadd(site.keys.dlq('batch'), fields)).decode()}"

    moved = site.redis(move)
    [good] = site.dead_letter("good")

    # When consuming the queue
    port = free_port()
    proc = site.consume("ok", "--queue", "batch", "--metrics-port", str(port))
    wait_for(lambda: len(site.run_records()) == 1 and site.pending() == 0)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    code, err = stop(proc)
    assert code == 0, err

    # Then only the signed entry ran; each forged one is one warning line, and parked
    assert [r["KUBE_DLQ_ENTRY_ID"] for r in site.run_records()] == [good]
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: entry {unsigned} is not signed by kube-dlq, parked, not run: dead letter: "
        "not signed (written before signing was turned on, or not by kube-dlq)",
        f"warning: entry {moved} is not signed by kube-dlq, parked, not run: dead letter: bad "
        "signature (altered, moved from another key or id, or not written by kube-dlq)",
    ]
    parked = site.parked()
    assert [(p["id"], p["attempts"]) for p in parked] == [(unsigned, 0), (moved, 0)]
    assert all(p["reason"].startswith("refused: dead letter:") for p in parked)
    assert other.startswith("other/")
    # And /metrics counts them
    text = metrics.decode()
    assert 'kube_dlq_consume_entries_total{group="g",outcome="refused"} 2.0' in text
    assert 'kube_dlq_consume_entries_total{group="g",outcome="acked"} 1.0' in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_sigterm_lets_the_running_handler_finish_and_acks_its_entry(site: Installation) -> None:
    # Given a handler that takes a second
    [ref] = site.dead_letter("u1")
    proc = site.consume("slow", env={"TEST_SLEEP": "1"})
    wait_for(lambda: len(site.run_records()) == 1)

    # When the consumer gets SIGTERM mid-run
    code, err = stop(proc)

    # Then the handler finished, the entry is acked, and the consumer exited 0
    assert code == 0, err
    assert Path(f"{site.runs}.done").read_text() == f"{ref}\n"
    assert site.pending() == 0 and site.parked() == []


def test_sigterm_after_the_grace_stops_the_handler_and_leaves_the_entry_pending(
    site: Installation,
) -> None:
    # Given a handler that would take a minute, and a grace of half a second
    [ref] = site.dead_letter("u1")
    proc = site.consume("slow", "--grace", "0.5", env={"TEST_SLEEP": "60"})
    wait_for(lambda: len(site.run_records()) == 1)

    # When the consumer gets SIGTERM
    started = time.monotonic()
    code, err = stop(proc)

    # Then the handler got SIGTERM after the grace, the entry stays pending for the next
    # consumer, and the consumer exited 0 promptly
    assert code == 0, err
    assert time.monotonic() - started < 10
    assert Path(f"{site.runs}.term").read_text() == f"{ref}\n"
    assert site.pending() == 1 and site.parked() == []
    # And the cut-short run does not use up an attempt
    counts = site.redis(lambda r: r.hgetall(attempts_key(site.keys, "g")))
    assert counts == {ref.encode(): b"0"}


EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "consume" / "handler.py"


def test_the_example_handler_posts_each_dead_letter_once_even_when_the_webhook_fails_first(
    site: Installation,
) -> None:
    # Given two dead letters and a webhook that answers 503 once
    refs = site.dead_letter("u1", "u2")
    with webhook_server() as hook:
        hook.statuses = [503]
        # When the shipped example handler consumes them
        proc = site.consume(
            "",
            env={"KUBE_DLQ_WEBHOOK_URL": hook.url},
            command=[sys.executable, str(EXAMPLE)],
        )
        wait_for(lambda: site.pending() == 0 and site.delivered() == 2)
        code, err = stop(proc)
    # Then each entry's summary arrived once after the retry, and both are acked
    assert code == 0, err
    ids = [headers["x-kube-dlq-entry-id"] for headers, _ in hook.posts]
    assert ids == [refs[0], refs[0], refs[1]]  # the first POST got the 503
    assert "Job ns/job-u2 dead-lettered (oom_killed)" in hook.posts[-1][1]["text"]
    assert site.parked() == []


async def test_consumers_long_gone_with_nothing_pending_are_dropped_from_the_group(
    redis: Redis, keys: Keys
) -> None:
    # Given a group with a consumer that left cleanly, and one that died holding an entry
    store = RedisStore(redis, SETTINGS, cluster_name=CLUSTER)
    await store.dead_letter(letter("u1"))
    seal = build_seal(SecuritySettings(allow_unsigned=True))

    def member(name: str) -> StreamConsumer:
        return StreamConsumer(
            redis,
            SETTINGS,
            cluster_name=CLUSTER,
            seal=seal,
            group="g",
            consumer=name,
            claim_idle_s=60,
            forget_idle_s=0.05,
        )

    await member("holder").prepare()
    assert len(await member("holder").next(block_s=0.05)) == 1
    await redis.xgroup_createconsumer(keys.dlq("batch"), "g", "left")
    await asyncio.sleep(0.1)

    # When another consumer sweeps the group
    assert await member("sweeper").reclaim() is None  # nothing idle for 60 s yet

    # Then the empty one is gone; the one holding an entry stays, its entry still pending
    names = {c["name"] for c in await redis.xinfo_consumers(keys.dlq("batch"), "g")}
    assert b"left" not in names and b"holder" in names
    assert (await redis.xpending(keys.dlq("batch"), "g"))["pending"] == 1


def test_list_parked_survives_hostile_records_one_warning_each(
    site: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a parked list someone with Redis access wrote into: junk, and a forged row
    fake_row = json.dumps(
        {
            "v": 1,
            "id": "batch/1-0\nbatch/2-0  9  x",
            "queue": "batch",
            "attempts": 1,
            "reason": "a\nb",
            "parked_at": 0,
        }
    )

    async def plant(redis: Redis) -> None:
        await redis.rpush(parked_key(site.keys, "g"), b"\xff not json", fake_row)

    site.redis(plant)

    # When listing it, then each record is one line of the table, never a crash
    assert main(["dlq", "list", "--config", str(site.config), "--parked", "g"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3  # the header and one line per record
    assert err.count("warning: parked entry") == 2
    assert main(["dlq", "list", "--config", str(site.config), "--parked", "g", "-o", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
