"""``dlq redrive --failed-indexes``: the manifest rewrite (pure) and the Redriver's choice,
against the in-memory fakes of tests/unit/test_redrive_service.py."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import pytest

from tests.support.fakes import FakeJobs
from tests.unit.test_redrive_service import ENTRY, FakeRedriveStore, redriver
from tests.unit.test_redrive_service import letter as plain_letter
from watcher.cli.dlq_redrive import add_arguments, request_from
from watcher.core.dlq_filter import DeadLetterFilter
from watcher.core.model import Classification, DeadLetter, FailureClass, JobRef
from watcher.core.redrive import (
    ORIGINAL_INDEXES_ENV,
    Overrides,
    RedrivePlan,
    decode_plan,
    encode_plan,
    failed_again,
    index_refusal,
    redrive_manifest,
)
from watcher.core.settings import Settings
from watcher.service.redrive import Verdict

TOKEN = "0123456789abcdef0123456789abcdef"


def indexed_letter(indexes: tuple[int, ...] = (1, 3), **spec: Any) -> DeadLetter:
    pod = {
        "initContainers": [{"name": "init", "image": "busybox"}],
        "containers": [
            {"name": "a", "image": "app:1", "env": [{"name": ORIGINAL_INDEXES_ENV, "value": "9"}]},
            {"name": "b", "image": "app:1", "env": [{"name": "KEEP", "value": "1"}]},
        ],
    }
    job_spec = {
        "completionMode": "Indexed",
        "completions": 4,
        "parallelism": 4,
        "template": {"spec": pod},
        **spec,
    }
    manifest = {**plain_letter().manifest, "spec": job_spec}
    return plain_letter(manifest=manifest, failed_indexes=indexes)


def plan(indexes: str) -> RedrivePlan:
    return RedrivePlan("etl", "work-abc123-d1", TOKEN, 1, Overrides(failed_indexes=indexes))


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


@pytest.mark.parametrize(
    ("indexes", "spec", "completions", "parallelism"),
    [
        ("1,3", {}, 2, 2),
        ("0,1,2", {"parallelism": 2}, 3, 2),  # never more at once than the original
        ("2", {"parallelism": None}, 1, 1),
        ("1,3", {"maxFailedIndexes": 3, "backoffLimitPerIndex": 1}, 2, 2),
    ],
)
def test_the_new_job_runs_only_the_failed_indexes(
    indexes: str, spec: dict[str, Any], completions: int, parallelism: int
) -> None:
    letter = indexed_letter(**spec)
    body = redrive_manifest(letter, plan(indexes), ENTRY)
    job_spec = body["spec"]
    assert (job_spec["completions"], job_spec["parallelism"]) == (completions, parallelism)
    assert job_spec["completionMode"] == "Indexed"
    assert job_spec.get("maxFailedIndexes", 0) <= completions
    pod = job_spec["template"]["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        assert env_of(container)[ORIGINAL_INDEXES_ENV] == indexes
        assert [e["name"] for e in container["env"]].count(ORIGINAL_INDEXES_ENV) == 1
    assert env_of(pod["containers"][1])["KEEP"] == "1"
    assert letter.manifest["spec"]["completions"] == 4  # the stored entry is not changed


def test_a_success_policy_naming_the_old_indexes_is_dropped() -> None:
    letter = indexed_letter(successPolicy={"rules": [{"succeededIndexes": "0-3"}]})
    assert "successPolicy" not in redrive_manifest(letter, plan("1,3"), ENTRY)["spec"]


def test_without_the_flag_the_manifest_keeps_its_indexes() -> None:
    body = redrive_manifest(indexed_letter(), RedrivePlan("etl", "w", TOKEN, 1), ENTRY)
    assert body["spec"]["completions"] == 4
    assert ORIGINAL_INDEXES_ENV not in env_of(body["spec"]["template"]["spec"]["containers"][1])


@pytest.mark.parametrize(
    ("letter", "why"),
    [
        (indexed_letter(), ""),
        (indexed_letter(()), "no failed indexes were recorded"),
        (indexed_letter(completionMode="NonIndexed"), "not Indexed"),
    ],
)
def test_index_refusal(letter: DeadLetter, why: str) -> None:
    refused = index_refusal(letter)
    assert (why in refused and refused) if why else refused == ""


def test_the_plan_keeps_the_indexes_and_refuses_forged_ones() -> None:
    assert decode_plan(encode_plan(plan("1,3"))) == plan("1,3")
    forged = encode_plan(plan("1,3")).replace(b'"1,3"', b'"1;rm"')
    with pytest.raises(ValueError, match="failed_indexes"):
        decode_plan(forged)
    old = encode_plan(RedrivePlan("etl", "w", TOKEN, 1)).replace(b',"failed_indexes":""', b"")
    assert decode_plan(old).overrides.failed_indexes == ""


async def test_redrive_with_the_flag_creates_the_failed_indexes_only() -> None:
    entry = indexed_letter((1, 3))
    store, jobs = FakeRedriveStore({ENTRY: entry}), FakeJobs()
    result = await redriver(store, jobs, failed_indexes=True).redrive(ENTRY, entry)
    assert result.verdict is Verdict.REDRIVEN
    [created] = jobs.created
    assert created["spec"]["completions"] == 2
    container = created["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)[ORIGINAL_INDEXES_ENV] == "1,3"
    assert store.records[ENTRY].plan.overrides.failed_indexes == "1,3"


@pytest.mark.parametrize(
    "entry", [indexed_letter(()), indexed_letter((1,), completionMode="NonIndexed")]
)
async def test_redrive_with_the_flag_skips_what_it_cannot_apply_to(entry: DeadLetter) -> None:
    store, jobs = FakeRedriveStore({ENTRY: entry}), FakeJobs()
    result = await redriver(store, jobs, failed_indexes=True).redrive(ENTRY, entry)
    assert result.verdict is Verdict.SKIPPED and "--failed-indexes" in result.detail
    assert store.records == {} and jobs.created == [] and ENTRY in store.queue


async def test_dry_run_shows_the_indexes() -> None:
    entry = indexed_letter((0, 2))
    store, jobs = FakeRedriveStore({ENTRY: entry}), FakeJobs()
    result = await redriver(store, jobs, failed_indexes=True, dry_run=True).redrive(ENTRY, entry)
    assert result.verdict is Verdict.WOULD and "failed-indexes=0,2" in result.detail
    assert jobs.created == []


def test_the_choice_is_in_the_history_when_the_redrive_fails_again() -> None:
    entry = indexed_letter()
    again = failed_again(
        entry,
        ENTRY,
        plan("1,3"),
        job=JobRef("etl", "work-abc123-d1", "u2"),
        classification=Classification(FailureClass.APP_ERROR, "exit 1"),
        failed_at=2.0,
        report={},
        manifest={},
    )
    assert "failed-indexes=1,3" in again.history[-1].reason
    # Its indexes were renumbered 0..1: the original's 1,3 would name the wrong ones.
    assert again.failed_indexes == ()


def test_overrides_describe_the_choice() -> None:
    over = dataclasses.replace(Overrides(memory="2Gi"), failed_indexes="1,3")
    assert over.describe() == "memory=2Gi, failed-indexes=1,3"


def test_the_flag_reaches_the_request() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = Settings(cluster_name="t")
    on = request_from(parser.parse_args([ENTRY, "--failed-indexes"]), config, DeadLetterFilter())
    off = request_from(parser.parse_args([ENTRY]), config, DeadLetterFilter())
    assert (on.failed_indexes, off.failed_indexes) == (True, False)
