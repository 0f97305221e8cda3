"""Signed entries in a real Redis: kube-dlq fires only the tickets it wrote itself.

Whoever can write to Redis writes tickets and dead letters here straight into the keys, the
way an attacker (or the previous, unsigned version) would: the retry loop quarantines them,
counts them in ``kube_dlq_forged_entries_total`` and fires the rest; ``dlq list`` names them
on stderr. Keys live in a directory laid out like a mounted Secret; rotation adds a file.
With encryption on, the raw bytes in Redis hold no manifest text.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis
from structlog.testing import capture_logs

from devtools.devcluster.redis_server import RedisServer
from tests.integration.conftest import CLUSTER, SETTINGS, make_redis
from tests.integration.test_sink import T0, letter, ticket
from tests.support.fakes import FakeJobs
from watcher.adapters.redis import codec
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.adapters.redis.seal import Seal
from watcher.adapters.redis.store import RedisStore
from watcher.app.sealing import build_seal
from watcher.cli.main import main
from watcher.core.lineage import Lineage
from watcher.core.model import AttemptRecord, BeginStatus, FailureClass, JobRef
from watcher.core.settings import RetryLoopSettings, SecuritySettings
from watcher.kit.metrics import Metrics
from watcher.service.retrying import RetryLoop

pytestmark = pytest.mark.redis

SECRET_VALUE = "hunter2-inline-password"

FORGED_MANIFEST: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "pwn", "namespace": "kube-system"},
    "spec": {
        "template": {
            "spec": {
                "serviceAccountName": "replicaset-controller",
                "hostPID": True,
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "x",
                        "image": "busybox",
                        "securityContext": {"privileged": True},
                        "volumeMounts": [{"name": "root", "mountPath": "/host"}],
                    }
                ],
                "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            }
        }
    },
}


def forged_ticket_bytes(uid: str) -> bytes:
    """A well-formed v1 ticket for kube-system, as anyone with Redis access can write it."""
    forged = replace(ticket(uid), manifest=FORGED_MANIFEST)
    forged = replace(forged, job=replace(forged.job, namespace="kube-system", name="pwn"))
    return codec.encode_retry_ticket(forged)


def keys_dir(path: Path, *kids: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for kid in kids:
        (path / kid).write_text(secrets.token_hex(32) + "\n")
    return path


def security(signing: Path, kid: str, **more: Any) -> SecuritySettings:
    return SecuritySettings(signing_keys_dir=str(signing), signing_key_id=kid, **more)


def store_with(redis: Redis, seal: Seal) -> RedisStore:
    return RedisStore(redis, SETTINGS, cluster_name=CLUSTER, seal=seal)


def loop_over(store: RedisStore, jobs: FakeJobs, metrics: Metrics) -> RetryLoop:
    return RetryLoop(
        store=store,
        jobs=jobs,
        settings=RetryLoopSettings(),
        cluster_name=CLUSTER,
        metrics=metrics,
        logger=structlog.get_logger(),
    )


async def plant(redis: Redis, keys: Keys, ticket_id: str, body: bytes) -> None:
    await redis.hset(keys.retry_tickets, ticket_id, body)
    await redis.zadd(keys.retry_due, {ticket_id: T0 * 1000})


def forged_count(metrics: Metrics, kind: str = "retry_ticket") -> float:
    return metrics.registry.get_sample_value("kube_dlq_forged_entries_total", {"kind": kind}) or 0


@pytest.fixture
def seal(tmp_path: Path) -> Seal:
    return build_seal(security(keys_dir(tmp_path / "signing", "k1"), "k1"))


async def test_a_forged_ticket_creates_no_job_and_is_quarantined_and_counted(
    redis: Redis, keys: Keys, seal: Seal
) -> None:
    # Given a ticket kube-dlq signed, and two it did not: one unsigned (as the previous
    # version, or anyone, writes them), one with a made-up signature
    store = store_with(redis, seal)
    await store.schedule_retry(ticket("good"))
    await plant(redis, keys, "unsigned", forged_ticket_bytes("unsigned"))
    fake_sig = {
        "v": 2,
        "kind": "retry_ticket",
        "kid": "k1",
        "sig": "A" * 43 + "=",
        "enc": "",
        "payload": forged_ticket_bytes("bad-sig").decode(),
    }
    await plant(redis, keys, "bad-sig", json.dumps(fake_sig, separators=(",", ":")).encode())
    jobs, metrics = FakeJobs(), Metrics()

    # When the retry loop runs one cycle
    with capture_logs() as logs:
        await loop_over(store, jobs, metrics).fire_due()

    # Then only the signed ticket's Job is created, nothing in kube-system
    assert sorted(jobs.jobs) == [("ns", "job-good-r2")]
    # And the forged ones are set aside (kept, for the operator), counted and logged
    assert set(await store.corrupt_retries()) == {"unsigned", "bad-sig"}
    assert forged_count(metrics) == 2
    assert (
        metrics.registry.get_sample_value(
            "kube_dlq_quarantined_entries_total", {"kind": "retry_ticket"}
        )
        == 2
    )
    forged = {e["ticket_id"]: e["error"] for e in logs if e["event"] == "retry_ticket_forged"}
    assert "not signed" in forged["unsigned"] and "bad signature" in forged["bad-sig"]
    assert await store.pending_retries() == 0


async def test_a_payload_altered_after_signing_is_rejected(
    redis: Redis, keys: Keys, seal: Seal
) -> None:
    # Given a signed ticket whose payload someone edited in Redis to point elsewhere
    store = store_with(redis, seal)
    await store.schedule_retry(ticket("t1"))
    stored = json.loads(await redis.hget(keys.retry_tickets, "t1"))
    stored["payload"] = stored["payload"].replace('"namespace":"ns"', '"namespace":"kube-system"')
    await redis.hset(keys.retry_tickets, "t1", json.dumps(stored))
    # When it is claimed, then it is quarantined as forged, not handed out
    batch = await store.claim_due_retries(limit=10)
    assert list(batch) == []
    assert [(q.ticket_id, q.forged) for q in batch.quarantined] == [("t1", True)]


async def test_a_dead_letter_copied_into_the_tickets_hash_is_rejected(
    redis: Redis, keys: Keys, seal: Seal
) -> None:
    # Given a dead letter kube-dlq signed, copied as it is into the tickets hash
    store = store_with(redis, seal)
    await store.dead_letter(letter("dl-1", queue="batch"))
    [(_, fields)] = await redis.xrange(keys.dlq("batch"))
    await plant(redis, keys, "dl-1", fields[STREAM_FIELD.encode()])
    # And a signed ticket copied under another ticket id
    await store.schedule_retry(ticket("t1"))
    await plant(redis, keys, "t2", await redis.hget(keys.retry_tickets, "t1"))
    # When they are claimed, then only the original ticket is handed out
    batch = await store.claim_due_retries(limit=10)
    assert [c.ticket_id for c in batch] == ["t1"]
    assert {q.ticket_id: q.forged for q in batch.quarantined} == {"dl-1": True, "t2": True}


async def test_a_ticket_signed_with_an_old_key_still_fires_after_rotation(
    redis: Redis, tmp_path: Path
) -> None:
    # Given a ticket signed with k1
    signing = keys_dir(tmp_path / "signing", "k1")
    await store_with(redis, build_seal(security(signing, "k1"))).schedule_retry(ticket("old"))
    # When k2 is added to the Secret and becomes the signing key (a restart with the new id)
    keys_dir(signing, "k2")
    rotated = store_with(redis, build_seal(security(signing, "k2")))
    await rotated.schedule_retry(ticket("new"))
    jobs = FakeJobs()
    await loop_over(rotated, jobs, Metrics()).fire_due()
    # Then both fire, and new entries carry k2
    assert sorted(jobs.jobs) == [("ns", "job-new-r2"), ("ns", "job-old-r2")]
    await rotated.dead_letter(letter("after"))
    [(_, fields)] = await redis.xrange(rotated.keys.dlq("batch"))
    assert json.loads(fields[STREAM_FIELD.encode()])["kid"] == "k2"


# --- encryption at rest -----------------------------------------------------------------------


def secret_ticket(uid: str) -> Any:
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"job-{uid}"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "c", "env": [{"name": "DB_PASSWORD", "value": SECRET_VALUE}]}
                    ]
                }
            }
        },
    }
    return replace(ticket(uid), manifest=manifest)


async def raw_values(redis: Redis) -> list[bytes]:
    """Every value of every key in the test db, as Redis holds it."""
    found: list[bytes] = []
    async for key in redis.scan_iter():
        kind = (await redis.type(key)).decode()
        if kind == "hash":
            found += list((await redis.hgetall(key)).values())
        elif kind == "stream":
            found += [v for _, fields in await redis.xrange(key) for v in fields.values()]
        elif kind == "string":
            found.append(await redis.get(key))
    return found


async def test_with_encryption_redis_holds_no_manifest_text_and_retries_still_work(
    redis: Redis, tmp_path: Path
) -> None:
    # Given a store that encrypts, writing a ticket and a dead letter with an inline secret
    seal = build_seal(
        security(
            keys_dir(tmp_path / "signing", "k1"),
            "k1",
            encryption_keys_dir=str(keys_dir(tmp_path / "enc", "e1")),
            encryption_key_id="e1",
        )
    )
    store = store_with(redis, seal)
    await store.schedule_retry(secret_ticket("t1"))
    await store.dead_letter(replace(letter("d1"), manifest=secret_ticket("d1").manifest))
    # Then no raw byte in Redis holds the env value or the manifest text
    raw = b"".join(await raw_values(redis))
    for plain in (SECRET_VALUE.encode(), b"DB_PASSWORD", b"job-t1", b"OOM-killed"):
        assert plain not in raw
    # And the retry is created with its manifest intact
    jobs = FakeJobs()
    await loop_over(store, jobs, Metrics()).fire_due()
    env = jobs.jobs[("ns", "job-t1-r2")]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "DB_PASSWORD", "value": SECRET_VALUE}]


# --- the CLI ------------------------------------------------------------------------------------


def _run(server: RedisServer, work: Callable[[Redis], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        client = make_redis(server.port)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


def _config(tmp_path: Path, server: RedisServer, prefix: str, **security_keys: str) -> str:
    path = tmp_path / "kube-dlq.yaml"
    doc = {
        "cluster_name": CLUSTER,
        "redis": {"url": server.url, "key_prefix": prefix},
        "security": security_keys,
    }
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBE_DLQ_REDIS_URL", "KUBE_DLQ_CONFIG", "KUBE_DLQ_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("cli_env")
def test_dlq_list_and_show_name_each_forged_entry_once(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a queue with a signed dead letter, an unsigned one, and one moved from another queue
    prefix = f"sig-{uuid.uuid4().hex[:8]}"
    signing = keys_dir(tmp_path / "signing", "k1")
    seal = build_seal(security(signing, "k1"))

    async def fill(redis: Redis) -> tuple[str, str, str]:
        settings = replace(SETTINGS, key_prefix=prefix)
        store = RedisStore(redis, settings, cluster_name=CLUSTER, seal=seal)
        good = (await store.dead_letter(letter("good"))).ref
        plain = codec.encode_dead_letter(letter("plain"))
        unsigned = await redis.xadd(store.keys.dlq("batch"), {STREAM_FIELD: plain})
        await store.dead_letter(letter("other", queue="other"))
        [(_, fields)] = await redis.xrange(store.keys.dlq("other"))
        moved = await redis.xadd(store.keys.dlq("batch"), fields)
        return good, f"batch/{unsigned.decode()}", f"batch/{moved.decode()}"

    good, unsigned, moved = _run(redis_server, fill)
    config = _config(
        tmp_path, redis_server, prefix, signing_keys_dir=str(signing), signing_key_id="k1"
    )

    # When listing, then the signed entries are on stdout and each forged one is one warning
    assert main(["dlq", "list", "--config", config, "-o", "json"]) == 0
    out, err = capsys.readouterr()
    assert sorted(e["job_uid"] for e in json.loads(out)) == ["good", "other"]
    assert err.splitlines() == [
        f"warning: entry {unsigned} is not signed by kube-dlq, not shown: dead letter: not "
        "signed (written before signing was turned on, or not by kube-dlq)",
        f"warning: entry {moved} is not signed by kube-dlq, not shown: dead letter: bad "
        "signature (altered, moved from another key or id, or not written by kube-dlq)",
    ]
    # And show refuses a forged entry with one line, and shows the signed one
    assert main(["dlq", "show", "--config", config, moved]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "is not signed by kube-dlq" in err
    assert main(["dlq", "show", "--config", config, good, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["job"]["uid"] == "good"


@pytest.mark.usefixtures("cli_env")
def test_the_cli_refuses_to_read_without_keys_unless_told_unsigned(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, redis_server, "none")
    assert main(["dlq", "list", "--config", config]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kube-dlq: config error: security.signing_keys_dir: required")
    assert err.count("\n") == 1


@pytest.mark.usefixtures("cli_env")
def test_encrypted_entries_show_with_reveal_rotate_and_a_lost_key_is_one_line(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two dead letters encrypted with e1, then e2 added and made the encrypting key
    prefix = f"enc-{uuid.uuid4().hex[:8]}"
    signing, enc = keys_dir(tmp_path / "signing", "k1"), keys_dir(tmp_path / "enc", "e1")
    keys = {"signing_keys_dir": str(signing), "signing_key_id": "k1"}

    def write(kid: str, uids: tuple[str, ...]) -> list[str]:
        seal = build_seal(
            security(signing, "k1", encryption_keys_dir=str(enc), encryption_key_id=kid)
        )

        async def fill(redis: Redis) -> list[str]:
            store = RedisStore(
                redis, replace(SETTINGS, key_prefix=prefix), cluster_name=CLUSTER, seal=seal
            )
            manifest = secret_ticket("x").manifest
            return [
                (await store.dead_letter(replace(letter(u), manifest=manifest))).ref for u in uids
            ]

        written: list[str] = _run(redis_server, fill)
        return written

    old = write("e1", ("old-1", "old-2"))
    keys_dir(enc, "e2")
    [new] = write("e2", ("new",))
    config = _config(
        tmp_path, redis_server, prefix, **keys, encryption_keys_dir=str(enc), encryption_key_id="e2"
    )
    # Then both old and new entries show, the inline value only with --reveal
    assert main(["dlq", "show", "--config", config, old[0], "--reveal", "-o", "json"]) == 0
    assert SECRET_VALUE in capsys.readouterr().out
    assert main(["dlq", "show", "--config", config, new, "-o", "json"]) == 0
    assert SECRET_VALUE not in capsys.readouterr().out
    # When e1 is dropped from the Secret, then each old entry is one clear line, no crash
    (enc / "e1").unlink()
    assert main(["dlq", "list", "--config", config, "-o", "json"]) == 0
    out, err = capsys.readouterr()
    assert [e["job_uid"] for e in json.loads(out)] == ["new"]
    lines = err.splitlines()
    assert len(lines) == 2
    for entry_id, line in zip(old, lines, strict=True):
        assert line.startswith(f"warning: entry {entry_id} could not be read: dead letter: ")
        assert "encrypted with key id 'e1', which is not in the encryption keyring" in line


@pytest.mark.usefixtures("cli_env")
def test_tickets_of_an_unsigned_version_are_quarantined_and_listed_with_the_reason(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a pending ticket the previous, unsigned version wrote, and a daemon now signing
    prefix = f"upg-{uuid.uuid4().hex[:8]}"
    signing = keys_dir(tmp_path / "signing", "k1")
    settings = replace(SETTINGS, key_prefix=prefix)

    async def upgrade(redis: Redis) -> list[str]:
        old = RedisStore(redis, settings, cluster_name=CLUSTER)  # unsigned, as before
        await old.schedule_retry(ticket("from-before"))
        new = RedisStore(
            redis, settings, cluster_name=CLUSTER, seal=build_seal(security(signing, "k1"))
        )
        jobs = FakeJobs()
        # When the upgraded daemon's retry loop comes to it
        await loop_over(new, jobs, Metrics()).fire_due()
        return [name for _, name in jobs.jobs]

    # Then it is not fired, and not lost: dlq list names it and why
    with capture_logs() as logs:
        assert _run(redis_server, upgrade) == []
    assert [e["event"] for e in logs] == ["retry_ticket_forged"]
    config = _config(
        tmp_path, redis_server, prefix, signing_keys_dir=str(signing), signing_key_id="k1"
    )
    assert main(["dlq", "list", "--config", config]) == 0
    out, err = capsys.readouterr()
    assert out == "no dead letters\n"
    assert err.splitlines() == [
        "warning: retry-ticket/from-before was quarantined, not fired: retry ticket: not signed "
        "(written before signing was turned on, or not by kube-dlq)"
    ]


async def test_a_create_record_lineage_not_sealed_by_kube_dlq_is_forged(
    redis: Redis, keys: Keys, seal: Seal
) -> None:
    # Given two tickets whose creates began with a signed lineage
    store = store_with(redis, seal)
    lineage = Lineage(3, (AttemptRecord(2, "etl-r2", "u2", FailureClass.NODE_LOST, "x", 1.0),))
    for ticket_id in ("t1", "t2"):
        await store.schedule_retry(ticket(ticket_id))
    for claimed in await store.claim_due_retries(limit=10):
        job = JobRef("ns", f"job-{claimed.ticket_id}-r2", "")
        begun = await store.begin_create(
            claimed.ticket_id, claim=claimed.claim, job=job, lineage=lineage
        )
        assert begun.status is BeginStatus.BEGUN
    genuine = await store.create_record("t1")
    assert genuine is not None and genuine.lineage == lineage and not genuine.forged

    # When a Redis writer replaces one lineage with a hand-written one (a higher attempt, say)
    # and copies the other's signed lineage under another Job's name
    await redis.hset(keys.retry_create("t1"), "lineage", '{"attempt":9,"history":[]}')
    await redis.hset(keys.retry_create("t2"), "name", "someone-else")

    # Then neither is believed: each reads as forged, with no lineage
    for ticket_id in ("t1", "t2"):
        record = await store.create_record(ticket_id)
        assert record is not None and record.lineage is None and record.forged, ticket_id
        assert "signed" in record.error or "signature" in record.error
