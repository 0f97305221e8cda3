"""watcher.core.wire and project: typed watch lines project to what watcher.core.snapshot gives.

The daemon's watches decode each line into the Structs of `wire` and `project` projects
those; a line that does not fit (or a failed Job's) is decoded generically and projected by
`snapshot`.
Whichever path a line takes, the pipeline must see the same values as if every line went
through `snapshot`: checked on every captured watch event and on mutations of them (values
retyped, deleted, nested, text damaged), through the watch's own line decoder.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest

from tests.fuzz.hostile import HOSTILE_DOC_VALUES, dumps_hostile, load_captured, mutate, run_loop
from tests.support.projecting import KINDS, by_project, by_snapshot
from watcher.adapters.kube.lines import loads, typed_lines, watch_line
from watcher.core import wire


def _captured(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (event["type"], event["object"])
        for scenario in load_captured()
        for event in scenario["watch"]
        if event["resource"] == kind
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_every_captured_line_is_typed_and_projects_as_snapshot_does(kind: str) -> None:
    decoder = typed_lines(wire.LINE_TYPES[kind])
    events = _captured(kind)
    projected = 0
    for etype, obj in events:
        line = json.dumps({"type": etype, "object": obj}).encode()
        got_type, got, rv = watch_line(line, decoder)
        assert got_type == etype
        # Every real line takes the typed path, but a failed Job's (its manifest is kept)
        # and any Job line holding the text the hint looks for.
        failed = any(
            c["type"] == "Failed" and c["status"] == "True"
            for c in (obj.get("status") or {}).get("conditions") or ()
        )
        if failed:
            assert isinstance(got, dict)
        elif b'"Failed"' not in line:
            assert not isinstance(got, dict)
        assert rv == obj["metadata"].get("resourceVersion")
        expected = by_snapshot(kind, obj)
        assert by_project(kind, got) == expected
        projected += expected not in (None, "malformed")
    assert projected > len(events) / 2  # most are Jobs' pods, Events about them, Nodes


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_lines_project_as_snapshot_does_whichever_path_they_take(kind: str) -> None:
    decoder = typed_lines(wire.LINE_TYPES[kind])
    events = _captured(kind)
    paths: Counter[str] = Counter()

    def one(rng: random.Random) -> None:
        etype, obj = rng.choice(events)
        damaged = mutate(obj, rng, palette=HOSTILE_DOC_VALUES)
        line = dumps_hostile({"type": etype, "object": damaged}).encode("utf-8", "surrogatepass")
        try:
            reference = loads(line)["object"]
        except (ValueError, RecursionError, TypeError, KeyError):
            paths["not json"] += 1
            return
        if not isinstance(reference, dict):
            paths["not an object"] += 1
            return
        _, got, _ = watch_line(line, decoder)
        paths["generic" if isinstance(got, dict) else "typed"] += 1
        assert by_project(kind, got) == by_snapshot(kind, reference), line[:300]

    run_loop(1500, seed=hash(kind) % 1000, one=one)
    # Both paths were exercised, or the test proves nothing about one of them.
    assert paths["typed"] > 100 and paths["generic"] > 100, paths


@pytest.mark.parametrize(
    ("kind", "line", "typed"),
    [
        pytest.param(
            "pods",
            b'{"type":"MODIFIED","object":{"metadata":{"name":"p","uid":"u",'
            b'"ownerReferences":[{"apiVersion":"batch/v1","kind":"Job","uid":"j","controller":true}]},'
            b'"status":{"containerStatuses":[{"name":"c","state":{"terminated":{"exitCode":"137"}}}]}}}',
            True,
            id="exit-code-as-text-still-typed",
        ),
        pytest.param(
            "pods",
            b'{"type":"MODIFIED","object":{"metadata":{"name":"p","uid":"u",'
            b'"labels":{"controller-uid":"j"}},'
            b'"status":{"containerStatuses":[{"name":"c","state":{"terminated":{"exitCode":1.0}}}]}}}',
            False,
            id="exit-code-as-float-generic",
        ),
        pytest.param(
            "events",
            b'{"type":"ADDED","object":{"metadata":{"name":"e","uid":"u","namespace":"n"},'
            b'"involvedObject":{},"regarding":{"kind":"Pod","name":"p"},"note":"x"}}',
            True,
            id="empty-involved-object-reads-regarding",
        ),
        pytest.param(
            "nodes",
            b'{"type":"MODIFIED","object":{"metadata":{"name":"n","uid":"u"},'
            b'"spec":{"unschedulable":"yes"}}}',
            False,
            id="unschedulable-as-text-generic",
        ),
        pytest.param(
            "jobs",
            b'{"type":"MODIFIED","object":{"metadata":{"name":"j","uid":"u","labels":{"a":"b"}},'
            b'"status":{"conditions":[{"type":"Suspended","status":"True"}],"active":1}}}',
            True,
            id="job-not-failed-typed",
        ),
        pytest.param(
            "jobs",
            b'{"type":"MODIFIED","object":{"metadata":{"name":"j","uid":"u"},'
            b'"status":{"conditions":[{"type":"\\u0046ailed","status":"True"}]}}}',
            False,
            id="failed-job-escaped-past-the-hint-still-whole",
        ),
        pytest.param(
            "jobs",
            b'{"type":"MODIFIED","object":{"metadata":{"name":"j","uid":"u"},"spec":{"template":{}},'
            b'"status":{"conditions":[{"type":"Failed","status":"True"}],"failed":1}}}',
            False,
            id="failed-job-whole-for-its-manifest",
        ),
    ],
)
def test_edge_lines_take_the_expected_path_and_agree(kind: str, line: bytes, typed: bool) -> None:
    _, got, _ = watch_line(line, typed_lines(wire.LINE_TYPES[kind]))
    assert isinstance(got, dict) is not typed
    assert by_project(kind, got) == by_snapshot(kind, json.loads(line)["object"])
    assert by_project(kind, got) not in (None, "malformed")


def test_an_error_line_is_never_typed_so_its_status_is_read_whole() -> None:
    line = (
        b'{"type":"ERROR","object":{"kind":"Status","status":"Failure","code":410,'
        b'"reason":"Expired","message":"too old resource version"}}'
    )
    etype, obj, _ = watch_line(line, typed_lines(wire.PodLine))
    assert etype == "ERROR"
    assert obj == json.loads(line)["object"]


def test_a_terminated_state_without_the_fields_read_counts_as_absent_on_both_paths() -> None:
    obj = {
        "metadata": {"name": "p", "uid": "u", "labels": {"controller-uid": "j"}},
        "status": {
            "containerStatuses": [
                {
                    "name": "c",
                    "state": {"terminated": {"startedAt": "2026-01-01T00:00:00Z"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }
            ]
        },
    }
    line = json.dumps({"type": "MODIFIED", "object": obj}).encode()
    _, typed, _ = watch_line(line, typed_lines(wire.PodLine))
    assert not isinstance(typed, dict)
    for seen in (by_project("pods", typed), by_snapshot("pods", obj)):
        assert isinstance(seen, tuple)
        (container,) = seen[2].containers
        assert (container.exit_code, container.terminated_reason) == (137, "OOMKilled")
