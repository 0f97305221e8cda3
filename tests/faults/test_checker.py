"""The checker itself, on made-up ledgers: each verdict is counted when it happens, and only
then. (A checker that always says 0 would make every fault test pass.)"""

from __future__ import annotations

from typing import Any

from tests.faults.checker import LedgerReport, join
from tests.faults.ledger import WORKLOADS, Entry, Ledger
from watcher.core.annotations import ANNOTATION_ATTEMPT, ANNOTATION_ORIGINAL_UID
from watcher.core.model import DeadLetter, FailureClass, JobRef

W = {w.key: w for w in WORKLOADS}
NS = "ns"


def entry(seq: int, key: str) -> Entry:
    return Entry(seq, f"load-{seq:04d}-{key}", f"uid-{seq}", W[key], 0.0)


def job(uid: str, name: str, *, original: str = "", attempt: int = 0, done: str = "Failed") -> Any:
    annotations = (
        {ANNOTATION_ORIGINAL_UID: original, ANNOTATION_ATTEMPT: str(attempt)} if original else {}
    )
    return {
        "metadata": {"uid": uid, "name": name, "annotations": annotations},
        "status": {"conditions": [{"type": done, "status": "True"}]},
    }


def letter(uid: str, name: str, cls: str, attempts: int) -> DeadLetter:
    return DeadLetter(
        queue="default",
        job=JobRef(NS, name, uid),
        failure_class=FailureClass(cls),
        reason="r",
        attempts=attempts,
        failed_at=0.0,
        cluster="c",
    )


def report(
    entries: list[Entry],
    jobs: list[Any],
    letters: list[DeadLetter],
    tickets: set[str] | None = None,
) -> LedgerReport:
    ledger = Ledger(entries)
    found = [(f"default/{i}-0", lt) for i, lt in enumerate(letters)]
    by_uid = {j["metadata"]["uid"]: j for j in jobs}
    return join(ledger, found, tickets or set(), by_uid, title="t", faults=[])


def test_every_outcome_as_expected_is_clean() -> None:
    app, dl2, ok1 = entry(0, "app"), entry(1, "io-dl2"), entry(2, "io-ok1")
    jobs = [
        job(app.uid, app.name),
        job(dl2.uid, dl2.name),
        job("r2", f"{dl2.name}-r2", original=dl2.uid, attempt=2),
        job("r3", f"{dl2.name}-r3", original=dl2.uid, attempt=3),
        job(ok1.uid, ok1.name),
        job("k2", f"{ok1.name}-r2", original=ok1.uid, attempt=2, done="Complete"),
    ]
    letters = [
        letter(app.uid, app.name, "app_error", 1),
        letter("r3", f"{dl2.name}-r3", "io_timeout", 3),
    ]
    got = report([app, dl2, ok1], jobs, letters)
    assert got.numbers() == {
        "injected": 3,
        "dead_lettered": 2,
        "succeeded": 1,
        "lost": 0,
        "duplicated": 0,
        "double_created": 0,
        "wrong": 0,
        "retry_jobs": 3,
        "pending_tickets": 0,
        "stray_letters": 0,
    }
    got.settled = True
    assert got.ok, got.table()


def test_lost_duplicated_double_created_and_wrong_are_each_counted() -> None:
    lost, dup, twice, wrong = (
        entry(0, "app"),
        entry(1, "oom"),
        entry(2, "io-ok1"),
        entry(3, "io-now"),
    )
    jobs = [
        job(lost.uid, lost.name),
        job(dup.uid, dup.name),
        job(twice.uid, twice.name),
        job("a", f"{twice.name}-r2", original=twice.uid, attempt=2, done="Complete"),
        job("b", f"{twice.name}-r2", original=twice.uid, attempt=2, done="Complete"),
        job(wrong.uid, wrong.name),
        job("w2", f"{wrong.name}-r2", original=wrong.uid, attempt=2),
    ]
    letters = [
        letter(dup.uid, dup.name, "oom_killed", 1),
        letter(dup.uid, dup.name, "oom_killed", 1),
        letter("w2", f"{wrong.name}-r2", "io_timeout", 2),
        letter("nobody", "other", "app_error", 1),
    ]
    got = report([lost, dup, twice, wrong], jobs, letters, tickets={"pending"})
    n = got.numbers()
    assert (n["lost"], n["duplicated"], n["double_created"], n["wrong"]) == (1, 1, 1, 1)
    assert (n["pending_tickets"], n["stray_letters"]) == (1, 1)
    assert not got.ok
    by_name = {r.entry.name: r for r in got.results}
    assert by_name[lost.name].outcome == "none"
    assert by_name[twice.name].jobs[2] == ["a", "b"]
    assert "Jobs of attempts [1, 2], expected 1..1" in by_name[wrong.name].problems[0]
    table = got.table()
    assert "total" in table and "! load-0000-app" in table


def test_a_pending_ticket_is_lost_until_its_retry_exists() -> None:
    dl1 = entry(0, "io-dl1")
    got = report([dl1], [job(dl1.uid, dl1.name)], [], tickets={dl1.uid})
    [result] = got.results
    assert (result.outcome, result.lost, got.all_resolved) == ("pending", True, False)
