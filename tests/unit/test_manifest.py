"""watcher.core.manifest: clean a Job for replay, name and annotate its retry, read lineage back."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from watcher.core.annotations import (
    ANNOTATION_ATTEMPT,
    ANNOTATION_FIRST_FAILED_AT,
    ANNOTATION_HISTORY,
    ANNOTATION_ORIGINAL_NAME,
    ANNOTATION_ORIGINAL_UID,
)
from watcher.core.errors import PolicyError
from watcher.core.manifest import (
    CONTROLLER_LABELS,
    MAX_JOB_NAME,
    REASON_MAX_CHARS,
    attempt_of,
    encode_history,
    first_failed_at_of,
    history_from_annotations,
    manifest_for_ticket,
    replayable_manifest,
    retry_job_name,
    retry_manifest,
)
from watcher.core.model import AttemptRecord, FailureClass, JobRef, JobSnapshot, RetryTicket
from watcher.core.policy import RetryPolicy, policy_for

Raw = dict[str, Any]
FC = FailureClass

UID = "1dbfd3e7-844a-4408-9b74-b223af8f075e"
DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def api_job() -> Raw:
    """A Job as kube-apiserver 1.34 returned it (GET, managedFields shown), owned by a CronJob."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": '{"apiVersion":"batch/v1"}\n',
                "batch.kubernetes.io/cronjob-scheduled-timestamp": "2026-11-28T00:23:00Z",
                "owner": "alice",
            },
            "creationTimestamp": "2026-11-28T00:23:23Z",
            "generation": 1,
            "labels": {"team": "data"},
            "managedFields": [
                {
                    "apiVersion": "batch/v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:backoffLimit": {}}},
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "time": "2026-11-28T00:23:23Z",
                }
            ],
            "name": "nightly-report",
            "namespace": "batch",
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "blockOwnerDeletion": True,
                    "controller": True,
                    "kind": "CronJob",
                    "name": "nightly",
                    "uid": "7d2f8e11-aaaa-4b0c-8e2d-1c2b3a4d5e6f",
                }
            ],
            "resourceVersion": "234",
            "uid": UID,
        },
        "spec": {
            "backoffLimit": 0,
            "completionMode": "NonIndexed",
            "completions": 1,
            "manualSelector": False,
            "parallelism": 1,
            "podReplacementPolicy": "TerminatingOrFailed",
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": UID}},
            "suspend": False,
            "template": {
                "metadata": {
                    "creationTimestamp": None,
                    "labels": {
                        "app": "report",
                        "batch.kubernetes.io/controller-uid": UID,
                        "batch.kubernetes.io/job-name": "nightly-report",
                        "controller-uid": UID,
                        "job-name": "nightly-report",
                    },
                },
                "spec": {
                    "containers": [
                        {
                            "command": ["true"],
                            "image": "busybox",
                            "imagePullPolicy": "Always",
                            "name": "main",
                            "resources": {},
                        }
                    ],
                    "restartPolicy": "Never",
                    "schedulerName": "default-scheduler",
                },
            },
            "ttlSecondsAfterFinished": 3600,
        },
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
            "failed": 1,
            "startTime": "2026-11-28T00:23:23Z",
            "uncountedTerminatedPods": {},
        },
    }


def clean_job() -> Raw:
    """What replayable_manifest makes of api_job()."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "nightly-report",
            "namespace": "batch",
            "labels": {"team": "data"},
            "annotations": {
                "batch.kubernetes.io/cronjob-scheduled-timestamp": "2026-11-28T00:23:00Z",
                "owner": "alice",
            },
        },
        "spec": {
            "backoffLimit": 0,
            "completionMode": "NonIndexed",
            "completions": 1,
            "parallelism": 1,
            "podReplacementPolicy": "TerminatingOrFailed",
            "suspend": False,
            "template": {
                "metadata": {"labels": {"app": "report"}},
                "spec": {
                    "containers": [
                        {
                            "command": ["true"],
                            "image": "busybox",
                            "imagePullPolicy": "Always",
                            "name": "main",
                            "resources": {},
                        }
                    ],
                    "restartPolicy": "Never",
                    "schedulerName": "default-scheduler",
                },
            },
            "ttlSecondsAfterFinished": 3600,
        },
    }


def edited(base: Raw, *paths: tuple[str, Any]) -> Raw:
    """``base`` with ``"a.b.c"`` set to a value (``DELETE`` removes it); dicts made on the way."""
    out = copy.deepcopy(base)
    for path, value in paths:
        *parents, last = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return out


DELETE = object()


def manual_selector_job() -> Raw:
    return edited(
        api_job(),
        ("spec.manualSelector", True),
        ("spec.selector", {"matchLabels": {"controller-uid": "mine"}}),
        ("spec.template.metadata.labels", {"app": "report", "controller-uid": "mine"}),
        ("metadata.labels", {"controller-uid": "mine"}),
    )


# --- replayable_manifest -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(api_job(), clean_job(), id="apiserver-job"),
        pytest.param(
            edited(
                api_job(),
                ("metadata.deletionTimestamp", "2026-11-28T00:30:00Z"),
                ("metadata.deletionGracePeriodSeconds", 0),
                ("metadata.finalizers", ["batch.kubernetes.io/job-tracking"]),
                ("metadata.selfLink", "/apis/batch/v1/namespaces/batch/jobs/nightly-report"),
                ("metadata.generateName", "nightly-"),
            ),
            clean_job(),
            id="deleting-job",
        ),
        pytest.param(
            # defaulting copies the template labels onto a Job that has none
            edited(
                api_job(),
                ("metadata.labels", dict(api_job()["spec"]["template"]["metadata"]["labels"])),
            ),
            edited(clean_job(), ("metadata.labels", {"app": "report"})),
            id="job-labels-copied-from-template",
        ),
        pytest.param(
            edited(api_job(), ("metadata.annotations.batch.kubernetes.io/job-tracking", "")),
            clean_job(),
            id="legacy-job-tracking-annotation",
        ),
        pytest.param(
            manual_selector_job(),
            edited(
                clean_job(),
                ("spec.manualSelector", True),
                ("spec.selector", {"matchLabels": {"controller-uid": "mine"}}),
                ("spec.template.metadata.labels", {"app": "report", "controller-uid": "mine"}),
                ("metadata.labels", {"controller-uid": "mine"}),
            ),
            id="manual-selector-kept-with-its-labels",
        ),
        pytest.param(
            edited(api_job(), ("spec.suspend", True)),
            edited(clean_job(), ("spec.suspend", True)),
            id="suspend-true-kept",
        ),
        pytest.param(
            edited(api_job(), ("apiVersion", DELETE), ("kind", DELETE)),
            clean_job(),
            id="list-item-without-kind",
        ),
        pytest.param(
            edited(
                api_job(),
                ("spec.template.metadata.labels", {"job-name": "nightly-report"}),
                ("metadata.labels", DELETE),
                ("metadata.annotations", {"kubectl.kubernetes.io/last-applied-configuration": ""}),
            ),
            edited(
                clean_job(),
                ("spec.template.metadata", DELETE),
                ("metadata.labels", DELETE),
                ("metadata.annotations", DELETE),
            ),
            id="empty-label-and-annotation-maps-left-out",
        ),
        pytest.param({}, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {}, "spec": {}}),
        pytest.param(
            {"metadata": None, "spec": None, "status": None},
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": {}, "spec": {}},
            id="nulls",
        ),
        pytest.param(
            {
                "apiVersion": 3,
                "metadata": {"name": 5, "labels": ["a"], "annotations": {"k": 1, "ok": "v"}},
                "spec": {"template": "nonsense", "selector": {}},
            },
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"annotations": {"ok": "v"}},
                "spec": {"template": "nonsense"},
            },
            id="mistyped-fields",
        ),
    ],
)
def test_replayable_manifest(raw: Raw, expected: Raw) -> None:
    assert replayable_manifest(raw) == expected


CLEANING_INPUTS = [
    pytest.param(api_job(), id="apiserver-job"),
    pytest.param(manual_selector_job(), id="manual-selector"),
    pytest.param({}, id="empty"),
    pytest.param({"spec": {"template": {"metadata": {"creationTimestamp": None}}}}, id="bare"),
]


@pytest.mark.parametrize("raw", CLEANING_INPUTS)
def test_cleaning_is_idempotent(raw: Raw) -> None:
    once = replayable_manifest(raw)
    assert replayable_manifest(once) == once


@pytest.mark.parametrize("raw", CLEANING_INPUTS)
def test_cleaning_neither_mutates_nor_shares_the_input(raw: Raw) -> None:
    before = copy.deepcopy(raw)
    clean = replayable_manifest(raw)
    assert raw == before
    # mutating every nested container of the output leaves the input alone
    _scribble(clean)
    assert raw == before


def _scribble(node: Any) -> None:
    if isinstance(node, dict):
        for value in list(node.values()):
            _scribble(value)
        node["scribbled"] = True
    elif isinstance(node, list):
        for value in node:
            _scribble(value)
        node.append("scribbled")


def test_clean_manifest_has_no_server_fields() -> None:
    clean = replayable_manifest(api_job())
    assert set(clean) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(clean["metadata"]) == {"name", "namespace", "labels", "annotations"}
    template_labels = clean["spec"]["template"]["metadata"]["labels"]
    assert not set(CONTROLLER_LABELS) & set(template_labels)
    assert "selector" not in clean["spec"]
    assert "manualSelector" not in clean["spec"]


# --- retry_job_name ------------------------------------------------------------------------------

LONG_63 = "a" * 30 + "-" + "b" * 32
SHARED_PREFIX = "etl-customer-orders-backfill-2026-11-28-partition-"


@pytest.mark.parametrize(
    ("original", "attempt", "expected"),
    [
        pytest.param("nightly-report", 2, "nightly-report-r2", id="short"),
        pytest.param("x" * 60, 2, "x" * 60 + "-r2", id="exactly-63"),
        pytest.param("x" * 59, 10, "x" * 59 + "-r10", id="exactly-63-two-digits"),
        pytest.param("x" * 61, 2, "x" * 51 + "-c508e75f-r2", id="64-cut-with-hash"),
        pytest.param(LONG_63, 2, "a" * 30 + "-" + "b" * 20 + "-d45e2b37-r2", id="63-original"),
        pytest.param(LONG_63, 100, "a" * 30 + "-" + "b" * 18 + "-d45e2b37-r100", id="r100"),
        pytest.param("a" * 50 + "-" + "c" * 12, 2, "a" * 50 + "-8a3e8aaa-r2", id="cut-at-dash"),
        pytest.param("a" * 50 + ".c" + "c" * 11, 2, "a" * 50 + "-35196d7e-r2", id="cut-at-dot"),
        pytest.param("-" * 62, 2, "cd359c1b-r2", id="nothing-left-but-hash"),
    ],
)
def test_retry_job_name(original: str, attempt: int, expected: str) -> None:
    # The hashes are pinned: changing them renames the retries of tickets already scheduled,
    # and a second firing after an upgrade would then create a second Job.
    assert retry_job_name(original, attempt) == expected


NAME_CASES = [
    ("nightly-report", 2),
    ("x" * 60, 2),
    ("x" * 61, 2),
    (LONG_63, 2),
    (LONG_63, 99_999),
    ("a" * 50 + "-" + "c" * 12, 2),
    ("a" * 50 + ".c" + "c" * 11, 3),
    ("job.with.dots." + "d" * 49, 2),
    ("z" * 253, 7),
    ("1" * 63, 2),
]


@pytest.mark.parametrize(("original", "attempt"), NAME_CASES)
def test_retry_job_name_is_a_valid_job_name(original: str, attempt: int) -> None:
    name = retry_job_name(original, attempt)
    assert len(name) <= MAX_JOB_NAME
    assert name.isascii()
    assert DNS_1123_SUBDOMAIN.fullmatch(name), name
    assert name.endswith(f"-r{attempt}")
    assert retry_job_name(original, attempt) == name  # deterministic


def test_long_names_sharing_a_prefix_get_different_retry_names() -> None:
    first = retry_job_name(SHARED_PREFIX + "0001", 2)
    second = retry_job_name(SHARED_PREFIX + "0002", 2)
    assert first != second
    assert first[:-3] == retry_job_name(SHARED_PREFIX + "0001", 3)[:-3]  # same stem and hash


@pytest.mark.parametrize("attempt", [1, 0, -1])
def test_retry_job_name_rejects_non_retry_attempts(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt >= 2"):
        retry_job_name("job", attempt)


# --- retry_manifest ------------------------------------------------------------------------------

HISTORY = (
    AttemptRecord(1, "nightly-report", UID, FC.NODE_LOST, "node kwok-node-0 lost", 1795168800.25),
)


def retry_of(clean: Raw, attempt: int = 2, **kwargs: Any) -> Raw:
    args: dict[str, Any] = {
        "attempt": attempt,
        "original_name": "nightly-report",
        "original_uid": UID,
        "first_failed_at": 1795168800.25,
        "history": HISTORY,
    }
    args.update(kwargs)
    return retry_manifest(clean, **args)


def test_retry_manifest_names_and_annotates_the_retry() -> None:
    body = retry_of(clean_job())
    assert body["metadata"]["name"] == "nightly-report-r2"
    assert body["metadata"]["namespace"] == "batch"
    assert body["metadata"]["annotations"] == {
        "batch.kubernetes.io/cronjob-scheduled-timestamp": "2026-11-28T00:23:00Z",
        "owner": "alice",
        ANNOTATION_ORIGINAL_NAME: "nightly-report",
        ANNOTATION_ORIGINAL_UID: UID,
        ANNOTATION_ATTEMPT: "2",
        ANNOTATION_FIRST_FAILED_AT: "1795168800.250",
        ANNOTATION_HISTORY: (
            '[{"attempt":1,"class":"node_lost","reason":"node kwok-node-0 lost",'
            f'"failed_at":1795168800.25,"job":"nightly-report","uid":"{UID}"}}]'
        ),
    }
    assert body["spec"] == clean_job()["spec"]  # no avoid_node: the spec is untouched


def test_retry_manifest_does_not_mutate_its_input() -> None:
    clean = clean_job()
    retry_of(clean, avoid_node="kwok-node-0")
    assert clean == clean_job()


def test_retry_of_a_retry_replaces_the_lineage() -> None:
    second = retry_of(clean_job())
    third_history = (
        *HISTORY,
        AttemptRecord(2, "nightly-report-r2", "uid-2", FC.PREEMPTED, "preempted", 1795168900.0),
    )
    third = retry_of(second, attempt=3, history=third_history)
    annotations = third["metadata"]["annotations"]
    assert third["metadata"]["name"] == "nightly-report-r3"
    assert annotations[ANNOTATION_ATTEMPT] == "3"
    assert annotations[ANNOTATION_ORIGINAL_NAME] == "nightly-report"
    read = history_from_annotations(annotations)
    assert tuple(read) == third_history
    assert read.error is None


def test_every_annotation_kube_dlq_writes_is_accepted_by_policy_for() -> None:
    body = retry_of(clean_job(), avoid_node="kwok-node-0")
    snapshot = JobSnapshot(
        ref=JobRef("batch", "nightly-report-r2", "uid-2"),
        annotations=tuple(body["metadata"]["annotations"].items()),
    )
    _, errors = policy_for(snapshot, RetryPolicy())
    assert errors == ()


# --- node avoidance ------------------------------------------------------------------------------

HOST_NOT_IN_0 = {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["kwok-node-0"]}
ZONE_IN_A = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
GPU_EXISTS = {"key": "gpu", "operator": "Exists"}
NAME_FIELD = {"key": "metadata.name", "operator": "In", "values": ["n1"]}
PREFERRED = [{"weight": 1, "preference": {"matchExpressions": [ZONE_IN_A]}}]


def with_affinity(affinity: Raw | None) -> Raw:
    job = clean_job()
    if affinity is not None:
        job["spec"]["template"]["spec"]["affinity"] = affinity
    return job


def required(*terms: Raw) -> Raw:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


@pytest.mark.parametrize(
    ("affinity", "expected"),
    [
        pytest.param(None, required({"matchExpressions": [HOST_NOT_IN_0]}), id="no-affinity"),
        pytest.param(
            {"podAntiAffinity": {"x": 1}},
            {"podAntiAffinity": {"x": 1}, **required({"matchExpressions": [HOST_NOT_IN_0]})},
            id="other-affinity-kept",
        ),
        pytest.param(
            {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": PREFERRED}},
            {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": PREFERRED,
                    **required({"matchExpressions": [HOST_NOT_IN_0]})["nodeAffinity"],
                }
            },
            id="preferred-only",
        ),
        pytest.param(required(), required({"matchExpressions": [HOST_NOT_IN_0]}), id="no-terms"),
        pytest.param(
            required({"matchExpressions": [ZONE_IN_A]}, {"matchExpressions": [GPU_EXISTS]}),
            required(
                {"matchExpressions": [ZONE_IN_A, HOST_NOT_IN_0]},
                {"matchExpressions": [GPU_EXISTS, HOST_NOT_IN_0]},
            ),
            id="merged-into-every-term",
        ),
        pytest.param(
            required({"matchFields": [NAME_FIELD]}),
            required({"matchFields": [NAME_FIELD], "matchExpressions": [HOST_NOT_IN_0]}),
            id="fields-only-term",
        ),
        pytest.param(
            required({"matchExpressions": [{**HOST_NOT_IN_0, "values": ["kwok-node-9"]}]}),
            required(
                {"matchExpressions": [{**HOST_NOT_IN_0, "values": ["kwok-node-9", "kwok-node-0"]}]}
            ),
            id="earlier-avoided-node-kept",
        ),
        pytest.param(
            required({"matchExpressions": [HOST_NOT_IN_0]}),
            required({"matchExpressions": [HOST_NOT_IN_0]}),
            id="already-avoided",
        ),
        pytest.param(
            required({}, {"matchExpressions": []}, {"matchExpressions": [ZONE_IN_A]}),
            required(
                {}, {"matchExpressions": []}, {"matchExpressions": [ZONE_IN_A, HOST_NOT_IN_0]}
            ),
            id="empty-terms-still-match-nothing",
        ),
    ],
)
def test_avoid_node_affinity(affinity: Raw | None, expected: Raw) -> None:
    body = retry_of(with_affinity(affinity), avoid_node="kwok-node-0")
    assert body["spec"]["template"]["spec"]["affinity"] == expected


def test_avoid_node_tolerates_a_spec_without_template() -> None:
    body = retry_of({"metadata": {"name": "x"}}, avoid_node="kwok-node-0")
    assert body["spec"] == {
        "template": {"spec": {"affinity": required({"matchExpressions": [HOST_NOT_IN_0]})}}
    }


# --- lineage annotations -------------------------------------------------------------------------

ROUND_TRIP_HISTORIES = [
    pytest.param((), id="empty"),
    pytest.param(HISTORY, id="one"),
    pytest.param(
        tuple(
            AttemptRecord(n, f"job-r{n}", f"uid-{n}", fc, f"reason {n} ünïcode", 1795168800.0 + n)
            for n, fc in enumerate(FailureClass, start=1)
        ),
        id="every-class",
    ),
]


@pytest.mark.parametrize("history", ROUND_TRIP_HISTORIES)
def test_history_round_trips(history: tuple[AttemptRecord, ...]) -> None:
    annotations = {ANNOTATION_HISTORY: encode_history(history)}
    for given in (annotations, tuple(annotations.items())):
        read = history_from_annotations(given)
        assert read == history
        assert isinstance(read, tuple)
        assert read.error is None and not read.malformed


def test_history_is_ordered_by_attempt_and_reasons_are_cut() -> None:
    long_reason = "x" * 500
    history = (
        AttemptRecord(2, "j-r2", "u2", FC.PREEMPTED, long_reason, 20.0),
        AttemptRecord(1, "j", "u1", FC.NODE_LOST, "lost", 10.0),
    )
    decoded = history_from_annotations({ANNOTATION_HISTORY: encode_history(history)})
    assert decoded.error is None
    assert [r.attempt for r in decoded] == [1, 2]
    assert decoded[1].reason == "x" * (REASON_MAX_CHARS - 1) + "…"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("not json", "malformed history: Expecting value", id="not-json"),
        pytest.param('{"attempt": 1}', "not a JSON list", id="object"),
        pytest.param("[1]", "entry 0 is not an object", id="entry-not-object"),
        pytest.param(
            '[{"attempt":1,"class":"node_lost","reason":"r","failed_at":1,"job":"j"}]',
            "entry 0: 'uid' is not a string",
            id="missing-uid",
        ),
        pytest.param(
            '[{"attempt":true,"class":"node_lost","reason":"r","failed_at":1,"job":"j","uid":"u"}]',
            "entry 0: 'attempt' is not an integer >= 1",
            id="bool-attempt",
        ),
        pytest.param(
            '[{"attempt":0,"class":"node_lost","reason":"r","failed_at":1,"job":"j","uid":"u"}]',
            "'attempt' is not an integer >= 1",
            id="attempt-zero",
        ),
        pytest.param(
            '[{"attempt":1,"class":"oom","reason":"r","failed_at":1,"job":"j","uid":"u"}]',
            "entry 0: unknown failure class 'oom'",
            id="unknown-class",
        ),
        pytest.param(
            '[{"attempt":1,"class":"oom_killed","reason":"r","failed_at":NaN,"job":"j","uid":"u"}]',
            "'failed_at' is not a number",
            id="nan",
        ),
        pytest.param(
            '[{"attempt":1,"class":"oom_killed","reason":"r","failed_at":"1","job":"j","uid":"u"}]',
            "'failed_at' is not a number",
            id="string-time",
        ),
        pytest.param("[" * 100_000, "malformed history", id="deeply-nested"),
    ],
)
def test_malformed_history_is_a_reported_value(value: str, message: str) -> None:
    records = history_from_annotations({ANNOTATION_HISTORY: value})
    assert tuple(records) == ()
    assert records.malformed
    error = records.error
    assert isinstance(error, PolicyError)
    assert error.key == ANNOTATION_HISTORY
    assert message in error.message
    assert len(error.value) <= 200


@pytest.mark.parametrize("annotations", [None, {}, (), {"other": "x"}])
def test_no_history_is_not_an_error(annotations: Any) -> None:
    read = history_from_annotations(annotations)
    assert tuple(read) == ()
    assert read.error is None


def test_non_text_history_is_an_error() -> None:
    records = history_from_annotations({ANNOTATION_HISTORY: ["a"]})
    assert tuple(records) == ()
    assert records.error is not None and records.error.message == "not text"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, 1, id="absent"),
        pytest.param("2", 2, id="two"),
        pytest.param(" 17 ", 17, id="spaces"),
        pytest.param("100000", 100_000, id="largest"),
        pytest.param("100001", 1, id="too-large"),
        pytest.param("0", 1, id="zero"),
        pytest.param("-3", 1, id="negative"),
        pytest.param("2.5", 1, id="fraction"),
        pytest.param("two", 1, id="word"),
        pytest.param("", 1, id="empty"),
        pytest.param("٣", 1, id="non-ascii-digit"),
        pytest.param(3, 1, id="not-text"),
    ],
)
def test_attempt_of(value: Any, expected: int) -> None:
    annotations = {} if value is None else {ANNOTATION_ATTEMPT: value}
    assert attempt_of(annotations) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("1795168800.250", 1795168800.25, id="written"),
        pytest.param("17", 17.0, id="integer"),
        pytest.param("nan", None, id="nan"),
        pytest.param("inf", None, id="inf"),
        pytest.param("-1", None, id="negative"),
        pytest.param("yesterday", None, id="word"),
    ],
)
def test_first_failed_at_of(value: str | None, expected: float | None) -> None:
    annotations = {} if value is None else {ANNOTATION_FIRST_FAILED_AT: value}
    assert first_failed_at_of(annotations) == expected


def test_attempt_of_reads_pairs_and_tolerates_junk() -> None:
    assert attempt_of(((ANNOTATION_ATTEMPT, "4"),)) == 4
    assert attempt_of(None) == 1
    assert attempt_of([("only-one",)]) == 1  # type: ignore[list-item]


# --- manifest_for_ticket -------------------------------------------------------------------------


def ticket(**changes: Any) -> RetryTicket:
    fields: dict[str, Any] = {
        "job": JobRef("batch", "nightly-report", UID),
        "attempt": 2,
        "due_at": 1795168860.0,
        "failure_class": FC.NODE_LOST,
        "reason": "node kwok-node-0 lost",
        "manifest": replayable_manifest(api_job()),
        "history": HISTORY,
        "avoid_node": "",
    }
    fields.update(changes)
    return RetryTicket(**fields)


def test_first_retry_takes_the_lineage_from_the_ticket() -> None:
    body = manifest_for_ticket(ticket(avoid_node="kwok-node-0"))
    assert body == retry_of(clean_job(), avoid_node="kwok-node-0")


def test_retry_of_a_retry_keeps_the_original_name_and_first_failure() -> None:
    # Given the Job of attempt 2 failed in turn
    second = retry_of(clean_job())
    history = (*HISTORY, AttemptRecord(2, "nightly-report-r2", "uid-2", FC.PREEMPTED, "p", 9e8))
    # When its ticket for attempt 3 is turned into a Job
    body = manifest_for_ticket(
        ticket(
            job=JobRef("batch", "nightly-report-r2", "uid-2"),
            attempt=3,
            manifest=second,
            history=history,
        )
    )
    # Then the name and lineage come from the original, not from attempt 2
    annotations = body["metadata"]["annotations"]
    assert body["metadata"]["name"] == "nightly-report-r3"
    assert annotations[ANNOTATION_ORIGINAL_NAME] == "nightly-report"
    assert annotations[ANNOTATION_ORIGINAL_UID] == UID
    assert annotations[ANNOTATION_FIRST_FAILED_AT] == "1795168800.250"


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        pytest.param(HISTORY, "1795168800.250", id="earliest-in-history"),
        pytest.param((), "1795168860.000", id="due-at-without-history"),
    ],
)
def test_first_failed_at_fallbacks(history: tuple[AttemptRecord, ...], expected: str) -> None:
    body = manifest_for_ticket(ticket(history=history))
    assert body["metadata"]["annotations"][ANNOTATION_FIRST_FAILED_AT] == expected


def test_malformed_lineage_annotations_fall_back_to_the_failed_job() -> None:
    manifest = edited(
        clean_job(),
        (
            "metadata.annotations",
            {ANNOTATION_ORIGINAL_NAME: "Not A Name!", ANNOTATION_ATTEMPT: "x"},
        ),
    )
    body = manifest_for_ticket(ticket(manifest=manifest))
    assert body["metadata"]["name"] == "nightly-report-r2"
    assert body["metadata"]["annotations"][ANNOTATION_ORIGINAL_NAME] == "nightly-report"


def test_the_ticket_namespace_wins() -> None:
    body = manifest_for_ticket(ticket(job=JobRef("other", "nightly-report", UID)))
    assert body["metadata"]["namespace"] == "other"


def test_ticket_with_attempt_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="attempt >= 2"):
        manifest_for_ticket(ticket(attempt=1))


def test_history_annotation_is_compact_json() -> None:
    encoded = encode_history(HISTORY)
    assert " " not in encoded.replace("node kwok-node-0 lost", "")
    assert json.loads(encoded)[0]["class"] == "node_lost"
