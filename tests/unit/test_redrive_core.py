"""watcher.core.redrive: names, manifests, refusals and pointers, table-driven."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from watcher.core.annotations import (
    ANNOTATION_ATTEMPT,
    ANNOTATION_CREATE_TOKEN,
    ANNOTATION_REDRIVE_OF,
    ANNOTATION_REDRIVE_TOKEN,
    ANNOTATION_RETRY_OF,
    FINALIZER_REDRIVE_ACK,
)
from watcher.core.model import AttemptRecord, Classification, DeadLetter, FailureClass, JobRef
from watcher.core.redrive import (
    Overrides,
    RedrivePlan,
    decode_plan,
    encode_plan,
    failed_again,
    is_this_job,
    original_name_of,
    redrive_job_name,
    redrive_manifest,
    redrive_pointer,
    refusal,
)

TOKEN = "0123456789abcdef0123456789abcdef"
ENTRY = "batch/1700000000000-0"


def manifest(containers: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "work-r2",
            "namespace": "etl",
            "annotations": {ANNOTATION_ATTEMPT: "2", ANNOTATION_RETRY_OF: "t1", "team": "data"},
        },
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": f"c{i}",
                            "image": "app:1",
                            "resources": {"requests": {"memory": "3Gi"}},
                        }
                        for i in range(containers)
                    ]
                }
            },
            **spec,
        },
    }


def letter(**changes: Any) -> DeadLetter:
    base = DeadLetter(
        queue="batch",
        job=JobRef("etl", "work-r2", "u2"),
        failure_class=FailureClass.OOM_KILLED,
        reason="OOM",
        attempts=2,
        failed_at=10.0,
        cluster="c",
        manifest=manifest(),
        history=(
            AttemptRecord(1, "work", "u1", FailureClass.OOM_KILLED, "OOM", 1.0),
            AttemptRecord(2, "work-r2", "u2", FailureClass.OOM_KILLED, "OOM", 5.0),
        ),
    )
    return dataclasses.replace(base, **changes)


def plan(**changes: Any) -> RedrivePlan:
    return dataclasses.replace(RedrivePlan("etl", "work-abc123-d1", TOKEN, 1), **changes)


@pytest.mark.parametrize(
    ("original", "entry", "number", "expect_len", "starts"),
    [
        ("work", ENTRY, 1, None, "work-"),
        ("a" * 63, ENTRY, 12, 63, "a" * 10),
        ("x-" * 40, ENTRY, 1, 63, "x-x"),
    ],
)
def test_redrive_names_fit_a_label_and_start_with_the_original(
    original: str, entry: str, number: int, expect_len: int | None, starts: str
) -> None:
    name = redrive_job_name(original, entry, number)
    assert len(name) <= 63 and name.endswith(f"-d{number}") and name.startswith(starts)
    assert expect_len is None or len(name) == expect_len
    assert not name.startswith("-") and "--d" not in name and ".-" not in name
    assert redrive_job_name(original, entry, number) == name  # deterministic


def test_two_entries_of_one_job_get_two_names_and_one_entry_one_per_redrive() -> None:
    names = {
        redrive_job_name("work", "batch/1-0", 1),
        redrive_job_name("work", "batch/2-0", 1),
        redrive_job_name("work", "batch/1-0", 2),
    }
    assert len(names) == 3


@pytest.mark.parametrize(
    ("history_name", "expected"),
    [("work", "work"), ("Not A Name!", "work-r2"), ("", "work-r2")],
)
def test_the_original_name_comes_from_the_first_attempt_when_valid(
    history_name: str, expected: str
) -> None:
    first = AttemptRecord(1, history_name, "u1", FailureClass.OOM_KILLED, "OOM", 1.0)
    assert original_name_of(letter(history=(first,))) == expected


@pytest.mark.parametrize(
    ("changes", "max_redrives", "refused_for"),
    [
        ({}, 3, ""),
        ({"manifest": manifest(managedBy="kubernetes.io/job-controller")}, 3, ""),
        ({"manifest": manifest(managedBy="kueue.x-k8s.io/multikueue")}, 3, "managedBy"),
        ({"redrive_count": 2}, 3, ""),
        ({"redrive_count": 3}, 3, "--max-redrives 3"),
        ({"redrive_count": 1}, 1, "--max-redrives 1"),
        ({"manifest": {}}, 3, "no replayable manifest"),
    ],
)
def test_refusals(changes: dict[str, Any], max_redrives: int, refused_for: str) -> None:
    why = refusal(letter(**changes), max_redrives=max_redrives)
    assert (refused_for in why) if refused_for else why == ""
    assert bool(why) == bool(refused_for)


def test_the_manifest_drops_the_retry_lineage_and_points_at_the_entry() -> None:
    body = redrive_manifest(letter(), plan(), ENTRY)
    meta = body["metadata"]
    assert (meta["namespace"], meta["name"]) == ("etl", "work-abc123-d1")
    assert meta["annotations"] == {
        "team": "data",
        ANNOTATION_REDRIVE_OF: ENTRY,
        ANNOTATION_REDRIVE_TOKEN: TOKEN,
    }
    assert meta["finalizers"] == [FINALIZER_REDRIVE_ACK]
    assert ANNOTATION_CREATE_TOKEN not in meta["annotations"]
    assert letter().manifest == manifest()  # the stored one is untouched


@pytest.mark.parametrize(
    ("overrides", "containers", "expect"),
    [
        (Overrides(memory="4Gi"), 1, {"c0": ("app:1", "4Gi", "3Gi")}),
        (Overrides(memory="2Gi"), 1, {"c0": ("app:1", "2Gi", "2Gi")}),  # request lowered too
        (Overrides(image="app:2"), 1, {"c0": ("app:2", None, "3Gi")}),
        (
            Overrides(image="c1=app:2"),
            2,
            {"c0": ("app:1", None, "3Gi"), "c1": ("app:2", None, "3Gi")},
        ),
    ],
)
def test_overrides(overrides: Overrides, containers: int, expect: dict[str, Any]) -> None:
    body = redrive_manifest(letter(manifest=manifest(containers)), plan(overrides=overrides), ENTRY)
    got = {
        c["name"]: (
            c["image"],
            c["resources"].get("limits", {}).get("memory"),
            c["resources"]["requests"]["memory"],
        )
        for c in body["spec"]["template"]["spec"]["containers"]
    }
    assert got == expect


@pytest.mark.parametrize(
    ("image", "containers", "error"),
    [("app:2", 2, "several containers"), ("nope=app:2", 1, "no container 'nope'")],
)
def test_an_image_override_that_does_not_fit_is_an_error(
    image: str, containers: int, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        redrive_manifest(
            letter(manifest=manifest(containers)), plan(overrides=Overrides(image=image)), ENTRY
        )


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({ANNOTATION_REDRIVE_OF: ENTRY, ANNOTATION_REDRIVE_TOKEN: TOKEN}, (ENTRY, TOKEN)),
        ({ANNOTATION_REDRIVE_OF: ENTRY}, None),
        ({ANNOTATION_REDRIVE_OF: "batch/*", ANNOTATION_REDRIVE_TOKEN: TOKEN}, None),
        ({ANNOTATION_REDRIVE_OF: "a/b/1-0", ANNOTATION_REDRIVE_TOKEN: TOKEN}, None),
        ({ANNOTATION_REDRIVE_OF: ENTRY + "\n", ANNOTATION_REDRIVE_TOKEN: TOKEN}, None),
        ({ANNOTATION_REDRIVE_OF: ENTRY, ANNOTATION_REDRIVE_TOKEN: TOKEN.upper()}, None),
        ({ANNOTATION_REDRIVE_OF: 7, ANNOTATION_REDRIVE_TOKEN: TOKEN}, None),
    ],
)
def test_pointers_are_parsed_strictly(annotations: dict[str, Any], expected: Any) -> None:
    assert redrive_pointer(annotations) == expected


@pytest.mark.parametrize(
    ("recorded_uid", "job", "token", "ours"),
    [
        ("u9", JobRef("etl", "work-abc123-d1", "u9"), "", True),
        ("u9", JobRef("etl", "work-abc123-d1", "u8"), TOKEN, False),  # another Job, same name
        ("", JobRef("etl", "work-abc123-d1", "u8"), TOKEN, True),  # uid not recorded yet
        ("", JobRef("etl", "work-abc123-d1", "u8"), "f" * 32, False),
        ("", JobRef("other", "work-abc123-d1", "u8"), TOKEN, False),
        ("u9", JobRef("etl", "elsewhere", "u9"), TOKEN, False),
    ],
)
def test_a_job_is_a_records_only_by_name_and_uid_or_token(
    recorded_uid: str, job: JobRef, token: str, ours: bool
) -> None:
    assert is_this_job(plan(), recorded_uid, job, token) is ours


def test_plans_round_trip_and_garbage_is_an_error() -> None:
    full = plan(overrides=Overrides(memory="1Gi", image="a=b"))
    assert decode_plan(encode_plan(full)) == full
    for junk in (b"", b"[]", b'{"namespace": 1}', b"\xff", b'{"namespace":"a","name":"b",'):
        with pytest.raises(ValueError):
            decode_plan(junk)


def test_a_failed_redrive_counts_links_and_extends_the_history() -> None:
    job = JobRef("etl", "work-abc123-d1", "u9")
    classification = Classification(FailureClass.APP_ERROR, "exit code 3", ("pod p: exit 3",))
    again = failed_again(
        letter(),
        ENTRY,
        plan(overrides=Overrides(memory="4Gi")),
        job=job,
        classification=classification,
        failed_at=99.0,
        report={"decision": "x"},
        manifest={"kind": "Job"},
    )
    assert (again.redrive_count, again.redrive_of, again.job) == (1, ENTRY, job)
    assert again.failure_class is FailureClass.APP_ERROR and again.attempts == 3
    assert again.evidence == ("pod p: exit 3",) and again.queue == "batch"
    last = again.history[-1]
    assert (last.attempt, last.job_uid, last.memory) == (3, "u9", "4Gi")
    assert "redrive 1 failed" in last.reason and "memory=4Gi" in last.reason
