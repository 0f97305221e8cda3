"""watcher.core.memory: exact quantities, the bump math and its cap, the oom-memory annotation."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

import pytest

from watcher.core.memory import (
    ANNOTATION_MEMORY_BUMP,
    OomMemoryPolicy,
    bump_memory,
    format_quantity,
    parse_oom_memory,
    parse_quantity,
    without_bump_annotation,
)

KI, MI, GI = 2**10, 2**20, 2**30

QUANTITIES = [
    ("512Mi", 512 * MI),
    ("1Gi", GI),
    ("1.5Gi", 1536 * MI),
    ("0.5Gi", 512 * MI),
    ("1G", 10**9),
    ("1.5G", 1_500_000_000),
    ("100M", 10**8),
    ("128974848", 128_974_848),
    ("129e6", 129_000_000),
    ("1E3", 1000),
    ("128974848000m", 128_974_848),
    ("1k", 1000),
    ("1Ki", KI),
    ("1Ti", 2**40),
    (".5Mi", 512 * KI),
    ("1.1Gi", 1_181_116_007),  # 1181116006.4 rounded up to a byte, as Kubernetes does
    ("1m", 1),  # a milli-byte rounds up to one byte
    (" 2Gi ", 2 * GI),
]


@pytest.mark.parametrize(("text", "n_bytes"), QUANTITIES, ids=[q for q, _ in QUANTITIES])
def test_quantities_parse_exactly(text: str, n_bytes: int) -> None:
    assert parse_quantity(text) == n_bytes


BAD_QUANTITIES = [
    "",
    "Gi",
    "-1Gi",
    "1.5.Gi",
    "1gi",
    "1 Gi",
    "1Gib",
    "0x10",
    "1e999",
    "9" * 50,
    "NaN",
    "inf",
    "1e",
    "1Mi1",
]


@pytest.mark.parametrize("text", BAD_QUANTITIES)
def test_bad_quantities_are_rejected_with_a_message(text: str) -> None:
    with pytest.raises(ValueError, match="not a memory quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("n_bytes", "text"),
    [
        (0, "0"),
        (768 * MI, "768Mi"),
        (8 * GI, "8Gi"),
        (1536 * MI, "1536Mi"),
        (10**9, "1G"),
        (129_000_000, "129M"),
        (3 * KI, "3Ki"),
        (1500, "1500"),
        (123_456_789, "123456789"),
    ],
)
def test_quantities_render_in_their_shortest_exact_form(n_bytes: int, text: str) -> None:
    assert format_quantity(n_bytes) == text
    assert parse_quantity(text) == n_bytes


# --- the bump --------------------------------------------------------------------------------

POLICY = OomMemoryPolicy(factor=Fraction(3, 2), cap_bytes=8 * GI, attempts=2)


def job(
    *containers: dict[str, Any], pod: dict[str, Any] | None = None, init: tuple[Any, ...] = ()
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers), "restartPolicy": "Never"}
    if init:
        spec["initContainers"] = list(init)
    if pod is not None:
        spec["resources"] = pod
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "annotations": {"team": "a"}},
        "spec": {"template": {"spec": spec}},
    }


def container(name: str, limit: str | None = None, request: str | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if limit is not None:
        resources["limits"] = {"memory": limit, "cpu": "1"}
    if request is not None:
        resources["requests"] = {"memory": request, "cpu": "500m"}
    return {"name": name, "image": "busybox", "resources": resources}


def memory_of(manifest: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    spec = manifest["spec"]["template"]["spec"]
    blocks = [("pod", spec["resources"])] if "resources" in spec else []
    for c in (*spec.get("initContainers", ()), *spec["containers"]):
        blocks.append((c["name"], c["resources"]))
    return [
        (name, r.get("limits", {}).get("memory"), r.get("requests", {}).get("memory"))
        for name, r in blocks
    ]


BUMPS = {
    # containers (limit, request), -> expected (limit, request) after x1.5 capped at 8Gi
    "limit and request": ([("main", "512Mi", "256Mi")], [("main", "768Mi", "384Mi")]),
    "limit only": ([("main", "1Gi", None)], [("main", "1536Mi", None)]),
    "request only": ([("main", None, "1Gi")], [("main", None, "1536Mi")]),
    "decimal units round up to a whole Mi": ([("main", "1G", None)], [("main", "1431Mi", None)]),
    "odd bytes round up to a whole Mi": ([("main", "100000000", None)], [("main", "144Mi", None)]),
    "held to the cap": ([("main", "6Gi", "6Gi")], [("main", "8Gi", "8Gi")]),
    "a value over the cap is never lowered": ([("main", "10Gi", None)], [("main", "10Gi", None)]),
    "every container": (
        [("main", "1Gi", None), ("sidecar", "100Mi", "50Mi")],
        [("main", "1536Mi", None), ("sidecar", "150Mi", "75Mi")],
    ),
}


@pytest.mark.parametrize(("before", "after"), BUMPS.values(), ids=list(BUMPS))
def test_bump_multiplies_limits_and_requests_up_to_the_cap(
    before: list[tuple[str, str | None, str | None]],
    after: list[tuple[str, str | None, str | None]],
) -> None:
    manifest = job(*(container(*c) for c in before))
    original = copy.deepcopy(manifest)
    bump = bump_memory(manifest, POLICY)
    assert memory_of(bump.manifest) == after
    assert manifest == original  # the input is not modified
    assert bump.manifest["spec"]["template"]["spec"]["containers"][0]["resources"].get(
        "limits", {}
    ).get("cpu") in (None, "1")


def test_the_summary_names_each_change_old_to_new_and_is_annotated() -> None:
    bump = bump_memory(job(container("main", "512Mi", "256Mi")), POLICY)
    assert bump.summary == "x1.5: main limits 512Mi -> 768Mi, main requests 256Mi -> 384Mi"
    annotations = bump.manifest["metadata"]["annotations"]
    assert annotations == {"team": "a", ANNOTATION_MEMORY_BUMP: bump.summary}


def test_pod_level_resources_and_init_containers_are_bumped() -> None:
    manifest = job(
        container("main", "1Gi"),
        pod={"limits": {"memory": "2Gi"}, "requests": {"memory": "1Gi"}},
        init=(container("setup", "256Mi"),),
    )
    bump = bump_memory(manifest, POLICY)
    assert memory_of(bump.manifest) == [
        ("pod", "3Gi", "1536Mi"),
        ("setup", "384Mi", None),
        ("main", "1536Mi", None),
    ]


def test_a_request_never_exceeds_its_new_limit() -> None:
    # Given a request equal to its limit, both near the cap
    bump = bump_memory(job(container("main", "7Gi", "7Gi")), POLICY)
    # Then both stop at the cap, the request no higher than the limit
    assert memory_of(bump.manifest) == [("main", "8Gi", "8Gi")]


def test_the_cap_is_a_whole_mi_even_when_given_in_decimal_units() -> None:
    policy = OomMemoryPolicy(factor=Fraction(2), cap_bytes=8 * 10**9, attempts=2)
    bump = bump_memory(job(container("main", "6G")), policy)
    assert memory_of(bump.manifest) == [("main", "7629Mi", None)]  # 8G = 7629.39Mi, down


def test_at_the_cap_nothing_changes_and_the_bump_says_so() -> None:
    bump = bump_memory(job(container("main", "8Gi", "4Gi")), OomMemoryPolicy(cap_bytes=8 * GI))
    # The request could still grow, but the limit, where the OOM killer acts, is at the cap
    assert [c.describe() for c in bump.changes] == ["main requests 4Gi -> 6Gi"]
    assert bump.at_cap
    at_cap = bump_memory(job(container("main", "8Gi", "8Gi")), POLICY)
    assert at_cap.at_cap
    assert at_cap.changes == ()
    assert ANNOTATION_MEMORY_BUMP not in at_cap.manifest["metadata"]["annotations"]


def test_a_job_without_memory_settings_has_nothing_to_bump() -> None:
    bump = bump_memory(job({"name": "main", "image": "busybox"}), POLICY)
    assert (bump.found, bump.changes, bump.at_cap) == (0, (), False)


def test_repeated_bumps_grow_to_the_cap_and_stop() -> None:
    manifest: dict[str, Any] = job(container("main", "4Gi"))
    seen = []
    for _ in range(4):
        bump = bump_memory(manifest, POLICY)
        manifest = bump.manifest
        seen.append(memory_of(manifest)[0][1])
    assert seen == ["6Gi", "8Gi", "8Gi", "8Gi"]
    assert bump.at_cap


@pytest.mark.parametrize(
    "manifest",
    [
        {},
        {"spec": None},
        {"spec": {"template": []}},
        {"spec": {"template": {"spec": {"containers": "x"}}}},
        {"spec": {"template": {"spec": {"containers": [1, None, {"resources": []}]}}}},
        {"spec": {"template": {"spec": {"containers": [{"resources": {"limits": []}}]}}}},
        job(container("main", "lots")),
        job(container("main", None, None)),
        {"metadata": "x", "spec": {"template": {"spec": {"resources": 3}}}},
    ],
)
def test_odd_manifests_are_left_alone_never_an_error(manifest: dict[str, Any]) -> None:
    bump = bump_memory(manifest, POLICY)
    assert bump.changes == ()


def test_an_earlier_bump_annotation_is_dropped_from_a_retry_without_one() -> None:
    bumped = bump_memory(job(container("main", "1Gi")), POLICY).manifest
    assert without_bump_annotation(bumped)["metadata"]["annotations"] == {"team": "a"}
    assert without_bump_annotation({"metadata": "odd"}) == {"metadata": "odd"}


# --- the annotation ----------------------------------------------------------------------------

BASE = OomMemoryPolicy(factor=Fraction(2), cap_bytes=4 * GI, attempts=1)

ANNOTATIONS = {
    "all parts": (
        "factor=1.5,cap=8Gi,attempts=2",
        None,
        OomMemoryPolicy(Fraction(3, 2), 8 * GI, 2),
    ),
    "any order and spaces": (
        " attempts=3 , factor=1.25 ,cap=512Mi",
        None,
        OomMemoryPolicy(Fraction(5, 4), 512 * MI, 3),
    ),
    "parts left out keep the config's": (
        "factor=1.5",
        BASE,
        OomMemoryPolicy(Fraction(3, 2), 4 * GI, 1),
    ),
    "parts left out without a config take the defaults": (
        "cap=2Gi",
        None,
        OomMemoryPolicy(cap_bytes=2 * GI),
    ),
    "on with the config's values": ("on", BASE, BASE),
    "on without a config": ("true", None, OomMemoryPolicy()),
    "off": ("off", BASE, None),
    "false": ("False", BASE, None),
    "decimal cap": ("cap=8G", None, OomMemoryPolicy(cap_bytes=8 * 10**9)),
    "zero attempts": ("attempts=0", None, OomMemoryPolicy(attempts=0)),
}


@pytest.mark.parametrize(("text", "base", "expected"), ANNOTATIONS.values(), ids=list(ANNOTATIONS))
def test_oom_memory_annotation(
    text: str, base: OomMemoryPolicy | None, expected: OomMemoryPolicy | None
) -> None:
    assert parse_oom_memory(text, base) == expected


HOSTILE = {
    "empty": ("", "unknown part"),
    "factor below 1.05": ("factor=1.01", "between 1.05 and 4"),
    "factor 1 is no bump": ("factor=1", "between 1.05 and 4"),
    "factor too high": ("factor=10", "between 1.05 and 4"),
    "negative factor": ("factor=-2", "decimal number"),
    "factor with an exponent": ("factor=1e1", "decimal number"),
    "factor nan": ("factor=nan", "decimal number"),
    "factor too precise": ("factor=1.23456", "decimal number"),
    "cap not a quantity": ("cap=lots", "not a memory quantity"),
    "cap too small": ("cap=1Mi", "between 16Mi and 16Ti"),
    "cap too large": ("cap=1Ei", "between 16Mi and 16Ti"),
    "cap negative": ("cap=-8Gi", "not a memory quantity"),
    "attempts not a number": ("attempts=two", "integer between 0 and 100"),
    "attempts too many": ("attempts=1000000", "integer between 0 and 100"),
    "unknown part": ("factor=1.5,size=2Gi", "unknown part 'size=2Gi'"),
    "a part twice": ("factor=1.5,factor=2", "factor given twice"),
    "no value": ("factor", "unknown part"),
    "trailing comma": ("factor=1.5,", "unknown part"),
    "huge input": ("cap=" + "9" * 10_000, "not a memory quantity"),
    "control characters": ("cap=8Gi\x00", "not a memory quantity"),
}


@pytest.mark.parametrize(("text", "message"), HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_oom_memory_values_are_rejected_with_a_short_message(
    text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_oom_memory(text, None)
    assert len(str(caught.value)) < 200


def test_with_requests_only_the_requests_decide_the_cap() -> None:
    grows = bump_memory(job(container("main", None, "1Gi")), POLICY)
    assert not grows.at_cap
    assert bump_memory(job(container("main", None, "8Gi")), POLICY).at_cap


def test_one_container_below_the_cap_is_still_a_bump() -> None:
    bump = bump_memory(job(container("main", "8Gi"), container("sidecar", "1Gi")), POLICY)
    assert not bump.at_cap
    assert [c.describe() for c in bump.changes] == ["sidecar limits 1Gi -> 1536Mi"]


def test_the_summary_of_a_huge_pod_is_clipped() -> None:
    many = [container(f"c{i:03}-" + "x" * 40, "1Gi") for i in range(100)]
    bump = bump_memory(job(*many), POLICY)
    assert len(bump.changes) == 100
    assert len(bump.summary) <= 1000
    assert bump.manifest["metadata"]["annotations"][ANNOTATION_MEMORY_BUMP] == bump.summary
