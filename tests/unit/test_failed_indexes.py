"""Failed completion indexes: parsed from hostile text, recorded on the dead letter, stored.

The parser reads what anyone can write (a Job's status, a pod's annotation, a stored entry):
garbage gives () and never an error; an index outside completions or too many give () too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.support.objects import raw_job, raw_pod, report, terminated
from tests.unit.test_handler import rig
from watcher.adapters.redis.codec import decode_dead_letter, encode_dead_letter
from watcher.core.indexes import (
    MAX_INDEXES,
    failed_indexes_of,
    format_indexes,
    indexes_from_pods,
    parse_indexes,
)
from watcher.core.model import DeadLetter, FailureClass, JobRef
from watcher.core.policy import RetryPolicy
from watcher.core.snapshot import pod_snapshot


@pytest.mark.parametrize(
    ("text", "completions", "expected"),
    [
        ("1,3-5", 10, (1, 3, 4, 5)),
        ("3", None, (3,)),
        (" 5 , 1,1 ", 6, (1, 5)),  # spaces, duplicates, any order
        ("0-2,1-3", 4, (0, 1, 2, 3)),
        ("1,3", 4, (1, 3)),
        ("", 4, ()),
        ("   ", 4, ()),
        ("1,,3", 4, ()),
        ("a,b", 4, ()),
        ("-1", 4, ()),
        ("5-3", 10, ()),  # a reversed range
        ("4", 4, ()),  # index == completions: outside the Job
        ("1-4", 4, ()),
        ("0x10", 20, ()),
        ("\uff11", 4, ()),  # a full-width digit
        ("1234567890", None, ()),  # longer than any index
        (f"0-{MAX_INDEXES}", None, ()),  # one more than the cap
        (f"0-{MAX_INDEXES - 1}", None, tuple(range(MAX_INDEXES))),
        ("0-999999999", None, ()),  # bounded before it is expanded
        ("0-5,7-9", 8, ()),  # 9 >= completions
        (None, 4, ()),
        (17, 4, ()),
        (["1"], 4, ()),
        ("1," * 600_000, None, ()),  # too long to read at all
    ],
)
def test_parse_indexes(text: Any, completions: int | None, expected: tuple[int, ...]) -> None:
    assert parse_indexes(text, completions=completions) == expected


def test_many_ranges_past_the_cap_are_refused_without_expanding_them_all() -> None:
    text = ",".join(f"{i * 50_000}-{i * 50_000 + 49_999}" for i in range(3))
    assert parse_indexes(text) == ()


@pytest.mark.parametrize(
    ("values", "completions", "expected"),
    [
        (["3", "1", "3"], 4, (1, 3)),
        (["1", "", "x", "-2", "9", "\u0663", None, 2], 4, (1,)),  # garbage and out of range ignored
        ([], 4, ()),
        (["7"], None, (7,)),
    ],
)
def test_indexes_from_pods(values: list[Any], completions: int | None, expected: Any) -> None:
    assert indexes_from_pods(values, completions=completions) == expected


def indexed_job(**status: Any) -> dict[str, Any]:
    return {"spec": {"completionMode": "Indexed", "completions": 4}, "status": status}


@pytest.mark.parametrize(
    ("job", "pods", "expected"),
    [
        (indexed_job(failedIndexes="1,3"), ["0"], (1, 3)),  # the status wins over the pods
        (indexed_job(), ["3", "1"], (1, 3)),  # no backoffLimitPerIndex: the failed pods
        (indexed_job(failedIndexes=""), ["2"], (2,)),
        (indexed_job(failedIndexes="1,9"), ["1"], ()),  # garbage status: nothing, no error
        ({"spec": {"completions": 4}, "status": {"failedIndexes": "1"}}, ["1"], ()),  # NonIndexed
        ({"spec": "x", "status": []}, ["1"], ()),
        ({}, [], ()),
    ],
)
def test_failed_indexes_of(job: dict[str, Any], pods: list[str], expected: Any) -> None:
    assert failed_indexes_of(job, pods) == expected


def test_format_indexes_lists_every_index() -> None:
    assert format_indexes((1, 3, 4)) == "1,3,4" and format_indexes(()) == ""


def letter(**changes: Any) -> DeadLetter:
    base = DeadLetter(
        queue="q",
        job=JobRef("ns", "j", "u"),
        failure_class=FailureClass.APP_ERROR,
        reason="r",
        attempts=1,
        failed_at=1.0,
        cluster="c",
    )
    return dataclasses.replace(base, **changes)


def test_the_codec_keeps_the_indexes_and_old_or_hostile_entries_decode_to_none() -> None:
    assert decode_dead_letter(encode_dead_letter(letter(failed_indexes=(1, 3)))).failed_indexes == (
        1,
        3,
    )
    raw = encode_dead_letter(letter())
    old = raw.replace(b',"failed_indexes":[]', b"")
    assert old != raw and decode_dead_letter(old).failed_indexes == ()
    for hostile in (b'"1,3"', b"[1,-3]", b'[1,"3"]', b"[true]", b"{}", b"[1.5]"):
        bad = raw.replace(b'"failed_indexes":[]', b'"failed_indexes":' + hostile)
        assert decode_dead_letter(bad).failed_indexes == ()


def test_a_pods_completion_index_is_kept_in_its_snapshot() -> None:
    pod = raw_pod()
    pod["metadata"].setdefault("annotations", {})["batch.kubernetes.io/job-completion-index"] = "3"
    assert pod_snapshot(pod).completion_index == "3"
    pod["metadata"]["annotations"] = "not a mapping"
    assert pod_snapshot(pod).completion_index == ""


async def test_the_dead_letter_of_an_indexed_job_records_its_failed_pods_indexes() -> None:
    job = raw_job()
    job["spec"] = {**job.get("spec", {}), "completionMode": "Indexed", "completions": 4}
    pods = []
    for index, phase in (("1", "Failed"), ("3", "Failed"), ("0", "Succeeded")):
        pod = raw_pod(f"p{index}", phase=phase, containers=[terminated(exit_code=1)])
        pod["metadata"].setdefault("annotations", {})[
            "batch.kubernetes.io/job-completion-index"
        ] = index
        pods.append(pod)
    r = rig(RetryPolicy(app_budget=0, infra_budget=0))  # no retry: straight to the queue
    await r.handler.handle(report(job, pods), job)
    [written] = r.store.dead_letters
    assert written.failed_indexes == (1, 3)


async def test_a_job_that_is_not_indexed_records_no_indexes() -> None:
    job = raw_job()
    pod = raw_pod(containers=[terminated(exit_code=1)])
    pod["metadata"].setdefault("annotations", {})["batch.kubernetes.io/job-completion-index"] = "1"
    r = rig(RetryPolicy(app_budget=0, infra_budget=0))
    await r.handler.handle(report(job, [pod]), job)
    [written] = r.store.dead_letters
    assert written.failed_indexes == ()
