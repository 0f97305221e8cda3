"""watcher.core.classify on what a real control plane wrote: the files in tests/data/captured.

Each file is one failure provoked on the local cluster by `tests.support.capture` (real
apiserver, Job / pod-GC / node-lifecycle / taint-eviction controllers and scheduler, kwok for
kubelets), recorded as the watch events kube-dlq receives. Replaying them in arrival order
through `watcher.core.snapshot` and a `Correlator` must give the expected class, and the reason and
evidence must cite the signal that decided it. `tests/cluster/test_capture_fresh.py` checks
that the stored files still look like what Kubernetes writes today.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.capture import (
    RESOURCES,
    SCENARIOS,
    STUCK_DWELL_S,
    Replay,
    load,
    replay,
    stored,
)
from watcher.core.model import FailureClass

CAPTURED = Path(__file__).resolve().parents[1] / "data" / "captured"
FILES = list(stored(CAPTURED))
MAX_FILE_BYTES = 100 * 1024


@dataclass(frozen=True)
class Signal:
    """What the classification must say (`says`, regexes on the reason) and cite (`shows`,
    regexes on the evidence); `first` is what the first evidence line names: the deciding
    pod or the Job."""

    says: tuple[str, ...]
    shows: tuple[str, ...]
    first: str = "pod"


SIGNALS: dict[str, Signal] = {
    "exit-1-plain": Signal(
        says=(r"container main exited with code 1$",),
        shows=(r"terminated reason=Error exitCode=1 message='report generation failed",),
    ),
    "exit-2-invalid-input": Signal(
        says=(r"container main exited with code 2$",),
        shows=(r"terminated reason=Error exitCode=2 message=\"invalid input: ",),
    ),
    "oom-killed": Signal(
        says=(r"OOM-killed \(exit 137\)",),
        shows=(r"terminated reason=OOMKilled exitCode=137",),
    ),
    "exit-137-sigkill": Signal(
        says=(r"killed by SIGKILL \(exit 137\) without an OOMKilled reason",),
        shows=(r"terminated reason=Error exitCode=137",),
    ),
    "io-timeout": Signal(
        says=(r"I/O timeout \(exited with code 1\)",),
        shows=(r"exitCode=1 message='connect to db: dial tcp 10\.0\.0\.5:5432: i/o timeout'",),
    ),
    "active-deadline": Signal(
        says=(r"ran longer than its activeDeadlineSeconds",),
        shows=(r": Failed reason=DeadlineExceeded message='Job was active longer",),
        first="job",
    ),
    "node-not-ready-taint-eviction": Signal(
        says=(r"deleted by the taint manager",),
        shows=(r"DisruptionTarget reason=DeletionByTaintManager message='Taint manager: ",),
    ),
    "node-deleted-pod-gc": Signal(
        says=(r"garbage-collected: its node no longer exists",),
        shows=(r"DisruptionTarget reason=DeletionByPodGC message='PodGC: node no longer exists'",),
    ),
    "eviction-api": Signal(
        says=(r"evicted through the Eviction API",),
        shows=(r"DisruptionTarget reason=EvictionByEvictionAPI message='Eviction API: evicting'",),
    ),
    "scheduler-preemption": Signal(
        says=(r"preempted by the scheduler",),
        shows=(r"DisruptionTarget reason=PreemptionByScheduler message='default-scheduler: ",),
    ),
    "image-pull-stuck": Signal(
        says=(r"could not pull its image \((ErrImagePull|ImagePullBackOff)\)", r"stuck for \d+ s"),
        shows=(r"container main waiting reason=(ErrImagePull|ImagePullBackOff)",),
    ),
    "unschedulable": Signal(
        says=(r"could not be scheduled on any node", r"stuck for \d+ s"),
        shows=(r"PodScheduled reason=Unschedulable message=[\"']0/\d+ nodes are available: ",),
    ),
    "pod-failure-policy-failjob": Signal(
        says=(r"^podFailurePolicy failed the job: container main exited with code 42$",),
        shows=(
            r"terminated reason=Error exitCode=42 message='tenant quota exhausted",
            r": Failed reason=PodFailurePolicy message='Container main for pod .* exit code 42 "
            r"matching FailJob rule",
        ),
    ),
}


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@pytest.fixture(params=FILES, ids=_ids(FILES))
def record(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


def test_every_scenario_has_a_stored_capture_and_a_signal() -> None:
    assert _ids(FILES) == sorted(SCENARIOS), (
        "tests/data/captured is out of date: run `python -m tests.support.capture "
        "--out tests/data/captured`"
    )
    assert set(SIGNALS) == set(SCENARIOS)


def test_file_is_a_small_unscrubbed_capture(record: dict[str, Any]) -> None:
    name = record["scenario"]
    path = CAPTURED / f"{name}.json"
    assert path.stat().st_size < MAX_FILE_BYTES
    # The expectation is the capture tool's, never edited in the file.
    assert record["expected_class"] == SCENARIOS[name].expected
    assert record["kubernetes_version"].startswith("v1.")
    assert {e["resource"] for e in record["watch"]} <= set(RESOURCES)
    assert {e["type"] for e in record["watch"]} <= {"ADDED", "MODIFIED", "DELETED"}
    for entry in record["watch"]:
        meta = entry["object"]["metadata"]
        assert "managedFields" not in meta
        assert meta["uid"] and meta["resourceVersion"]


def test_replayed_capture_classifies_as_expected(record: dict[str, Any]) -> None:
    got = replay(record)
    name, cls = record["scenario"], got.classification

    assert cls.failure_class == FailureClass(record["expected_class"]), _explain(name, got)
    signal = SIGNALS[name]
    for pattern in signal.says:
        assert re.search(pattern, cls.reason), f"{name}: reason {cls.reason!r} lacks {pattern!r}"
    evidence = "\n".join(cls.evidence)
    for pattern in signal.shows:
        assert re.search(pattern, evidence), f"{name}: evidence lacks {pattern!r}:\n{evidence}"
    assert cls.evidence[0].startswith(_first_evidence_owner(got, signal.first))


def test_stuck_captures_are_found_stuck_by_the_correlator(record: dict[str, Any]) -> None:
    got = replay(record)
    failed = got.report.job.condition("Failed") is not None
    if failed:
        assert got.stuck_for_s is None
    else:  # Kubernetes never fails these Jobs; kube-dlq does, after a dwell time.
        assert got.stuck_for_s is not None and got.stuck_for_s >= STUCK_DWELL_S
        assert got.report.job.active == 1


def test_class_holds_from_the_moment_the_job_fails_or_is_stuck(record: dict[str, Any]) -> None:
    """The daemon classifies shortly after the Failed condition arrives, while pod and Event
    watches may still be catching up: every later prefix of the recording must agree. A stuck
    Job is classified whenever the correlator first finds it stuck: from there on, likewise."""
    watch = record["watch"]
    expected = FailureClass(record["expected_class"])
    checked = 0
    first_job = next(i for i, e in enumerate(watch) if e["resource"] == "jobs")
    for end in range(first_job + 1, len(watch) + 1):
        got = replay({**record, "watch": watch[:end]})
        if got.report.job.condition("Failed") is None and got.stuck_for_s is None:
            assert checked == 0, f"entry {end - 1}: the Job is neither failed nor stuck any more"
            continue
        checked += 1
        assert got.classification.failure_class == expected, (
            f"after entry {end - 1} ({watch[end - 1]['resource']} {watch[end - 1]['type']}): "
            + _explain(record["scenario"], got)
        )
    assert checked >= 1


def _first_evidence_owner(got: Replay, first: str) -> str:
    if first == "job":
        ref = got.report.job.ref
        return f"job {ref.namespace}/{ref.name}: "
    (pod,) = got.report.pods
    return f"pod {pod.name}: "


def _explain(name: str, got: Replay) -> str:
    cls = got.classification
    return f"{name}: got {cls.failure_class} ({cls.reason}); evidence: {list(cls.evidence)}"
