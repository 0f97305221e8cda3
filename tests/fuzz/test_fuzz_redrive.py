"""Redrive's readers of hostile input: Job annotations, stored plans, stored manifests, watch
events. Each returns a value or raises its documented ValueError; none crashes a loop."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.hostile import (
    COUNTS,
    HOSTILE_DOC_VALUES,
    PARSED_VALUES,
    dumps_hostile,
    fuzz_settings,
    json_values,
    mutate,
    run_loop,
)
from watcher.core.annotations import ANNOTATION_REDRIVE_OF, ANNOTATION_REDRIVE_TOKEN
from watcher.core.model import DeadLetter, FailureClass, JobRef
from watcher.core.redrive import (
    Overrides,
    RedrivePlan,
    decode_plan,
    encode_plan,
    redrive_manifest,
    redrive_pointer,
    refusal,
)
from watcher.kit.logs import get_logger
from watcher.service.redrive_settle import RedriveSettler

TOKEN = "0123456789abcdef0123456789abcdef"
PLAN = RedrivePlan("etl", "work-abc123-d1", TOKEN, 1, Overrides(memory="1Gi", image="app:2"))
JOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "name": "work-abc123-d1",
        "namespace": "etl",
        "uid": "u1",
        "annotations": {ANNOTATION_REDRIVE_OF: "batch/1-0", ANNOTATION_REDRIVE_TOKEN: TOKEN},
        "finalizers": ["kube-dlq.io/redrive-ack"],
    },
    "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "a", "resources": {}}]}}},
    "status": {"conditions": [{"type": "Complete", "status": "True"}]},
}


@fuzz_settings(300)
@given(
    st.dictionaries(
        st.sampled_from([ANNOTATION_REDRIVE_OF, ANNOTATION_REDRIVE_TOKEN, "x"]), json_values
    )
)
def test_pointers_are_none_or_well_formed(annotations: dict[str, Any]) -> None:
    COUNTS["redrive pointers"] += 1
    found = redrive_pointer(annotations)
    assert found is None or (found[0] == annotations[ANNOTATION_REDRIVE_OF] and len(found[1]) == 32)


def test_stored_plans_decode_or_raise_value_error() -> None:
    good = json.loads(encode_plan(PLAN))

    def one(rng: random.Random) -> None:
        COUNTS["redrive plans"] += 1
        raw = dumps_hostile(mutate(good, rng, palette=HOSTILE_DOC_VALUES)).encode(
            errors="surrogatepass"
        )
        try:
            plan = decode_plan(raw)
        except ValueError:
            return
        assert isinstance(plan.redrive, int) and isinstance(plan.name, str)

    run_loop(2000, seed=8, one=one)


def test_stored_manifests_become_a_job_or_a_value_error() -> None:
    def one(rng: random.Random) -> None:
        COUNTS["redrive manifests"] += 1
        manifest = mutate(JOB, rng, palette=PARSED_VALUES)  # the codec's depth cap holds
        letter = DeadLetter(
            queue="batch",
            job=JobRef("etl", "work", "u0"),
            failure_class=FailureClass.APP_ERROR,
            reason="r",
            attempts=1,
            failed_at=0.0,
            cluster="c",
            manifest=manifest if isinstance(manifest, dict) else {},
        )
        refusal(letter, max_redrives=3)
        for plan in (PLAN, dataclasses.replace(PLAN, overrides=Overrides())):
            try:
                body = redrive_manifest(letter, plan, "batch/1-0")
            except ValueError:
                continue
            json.dumps(body)
            assert body["metadata"]["annotations"][ANNOTATION_REDRIVE_OF] == "batch/1-0"

    run_loop(2000, seed=9, one=one)


def test_hostile_watch_events_never_raise_from_observe() -> None:
    settler = RedriveSettler(
        store=None,  # type: ignore[arg-type]  (observe never reads the store)
        jobs=None,  # type: ignore[arg-type]
        rules=None,  # type: ignore[arg-type]
        in_scope=lambda ns: True,
        logger=get_logger(),
    )

    def one(rng: random.Random) -> None:
        COUNTS["redrive watch events"] += 1
        event = mutate(JOB, rng, palette=PARSED_VALUES)
        settler.observe(rng.choice(["ADDED", "MODIFIED"]), event if isinstance(event, dict) else {})

    run_loop(2000, seed=10, one=one)
