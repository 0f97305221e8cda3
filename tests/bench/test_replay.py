"""The replay server's corpus and selectors (bench/replay): pure, from a table."""

from __future__ import annotations

from typing import Any

import pytest

from bench.replay.scenarios import (
    RESOURCES,
    Stored,
    build_corpus,
    is_failed_job,
    load_scenarios,
)
from bench.replay.server import matches

POD: dict[str, Any] = {
    "metadata": {
        "namespace": "ns",
        "name": "p",
        "labels": {"batch.kubernetes.io/controller-uid": "u1", "app": "x"},
    },
    "spec": {"nodeName": "n1"},
}


@pytest.mark.parametrize(
    ("labels", "fields", "namespace", "expected"),
    [
        ("", "", None, True),
        ("batch.kubernetes.io/controller-uid", "", None, True),
        ("batch.kubernetes.io/controller-uid=u1", "", None, True),
        ("batch.kubernetes.io/controller-uid==u1,app=x", "", None, True),
        ("batch.kubernetes.io/controller-uid=u2", "", None, False),
        ("app!=x", "", None, False),
        ("!app", "", None, False),
        ("missing", "", None, False),
        ("", "spec.nodeName=n1", None, True),
        ("", "spec.nodeName!=n1", None, False),
        ("", "metadata.name=q", None, False),
        ("", "", "ns", True),
        ("", "", "other", False),
    ],
)
def test_selectors(labels: str, fields: str, namespace: str | None, expected: bool) -> None:
    assert matches(POD, labels, fields, namespace) is expected


def test_copies_are_distinct_objects_with_increasing_resource_versions() -> None:
    scenarios = load_scenarios()
    one, three = build_corpus(1, scenarios), build_corpus(3, scenarios)

    assert three.events == 3 * one.events
    assert three.failed_jobs == 3 * one.failed_jobs == 33  # 11 of 13 scenarios end Failed
    for resource in RESOURCES:
        rvs = [s.rv for s in three.streams[resource]]
        assert rvs == sorted(set(rvs)), resource  # strictly increasing per stream
    job_uids = {s.obj["metadata"]["uid"] for s in three.streams["jobs"]}
    assert len(job_uids) == 3 * len({s.obj["metadata"]["uid"] for s in one.streams["jobs"]})
    namespaces = {s.obj["metadata"]["namespace"] for s in three.streams["jobs"]}
    assert len(namespaces) == 3 * len(scenarios)


def test_a_copy_keeps_its_references_consistent() -> None:
    corpus = build_corpus(2)
    jobs = {s.obj["metadata"]["uid"]: s.obj for s in corpus.streams["jobs"]}
    nodes = {s.obj["metadata"]["name"] for s in corpus.streams["nodes"]}
    owned = 0
    for stored in corpus.streams["pods"]:
        pod = stored.obj
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job":
                job = jobs[ref["uid"]]  # the owner's uid was rewritten with the Job's
                assert job["metadata"]["namespace"] == pod["metadata"]["namespace"]
                assert pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] == ref["uid"]
                owned += 1
        node = (pod.get("spec") or {}).get("nodeName")
        if node and node.startswith("kwok-node-0"):
            assert node in nodes  # renamed with the copy's nodes
    assert owned > 0


def test_quiet_copies_add_events_but_no_failures_spread_between_the_copies() -> None:
    scenarios = load_scenarios()
    plain, quiet = build_corpus(4, scenarios), build_corpus(4, scenarios, quiet_copies=10)

    assert quiet.failed_jobs == plain.failed_jobs == 44
    assert quiet.events > plain.events
    namespaces = [s.obj["metadata"]["namespace"] for s in quiet.streams["jobs"]]
    assert len(set(namespaces)) == 4 * len(scenarios) + 10 * 2  # two scenarios never fail
    for resource in RESOURCES:
        rvs = [s.rv for s in quiet.streams[resource]]
        assert rvs == sorted(set(rvs)), resource

    # Spread evenly: 10 quiet copies among 4 full ones are 2, 3, 2, 3 before each.
    def copy_of(stored: Stored) -> int:
        return int(stored.obj["metadata"]["namespace"].rsplit("-c", 1)[1])

    full = sorted({copy_of(s) for s in quiet.streams["jobs"] if is_failed_job(s.obj)})
    quiet_tags = sorted({copy_of(s) for s in quiet.streams["jobs"]} - set(full))
    before = [
        sum(prev < q < f for q in quiet_tags)
        for prev, f in zip([-1, *full[:-1]], full, strict=True)
    ]
    assert before == [2, 3, 2, 3]
