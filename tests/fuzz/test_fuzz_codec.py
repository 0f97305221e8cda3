"""Stored entries: `decode_dead_letter` / `decode_retry_ticket` raise `CorruptEntry` or nothing.

Whatever Redis hands back (arbitrary bytes, arbitrary JSON, a valid envelope with one field
swapped for a huge integer, NaN, an infinity, 10_000 nested lists or a wrong type), the
decoders return an entry or raise `CorruptEntry`; a decoded entry is one the rest of the daemon
can use (finite times, JSON it can encode again).
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.hostile import (
    COUNTS,
    HOSTILE_DOC_VALUES,
    HOSTILE_JSON_TEXT,
    dumps_hostile,
    fuzz_settings,
    json_values,
    mutate,
    mutate_bytes,
    run_loop,
)
from watcher.adapters.redis import codec
from watcher.cli import dlq
from watcher.core.manifest import manifest_for_ticket
from watcher.core.model import (
    AttemptRecord,
    DeadLetter,
    FailureClass,
    JobRef,
    OwnerRef,
    RetryTicket,
)

LETTER = DeadLetter(
    queue="batch",
    job=JobRef(namespace="ns", name="job-a", uid="uid-a"),
    failure_class=FailureClass.OOM_KILLED,
    reason="container main was OOM-killed",
    attempts=3,
    failed_at=1_700_000_000.5,
    cluster="prod",
    evidence=("pod p: terminated reason=OOMKilled exitCode=137",),
    owner=OwnerRef(kind="CronJob", name="cj", uid="cj-uid"),
    manifest={"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": 0}},
    history=(
        AttemptRecord(1, "job-a", "uid-0", FailureClass.NODE_LOST, "node gone", 1_699_999_000.0),
    ),
    report={"pods": [{"name": "p", "exitCode": 137}]},
)
TICKET = RetryTicket(
    job=JobRef(namespace="ns", name="job-b", uid="uid-b"),
    attempt=2,
    due_at=1_700_000_100.0,
    failure_class=FailureClass.NODE_LOST,
    reason="node n1 went NotReady",
    manifest={"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "job-b"}},
    history=(AttemptRecord(1, "job-b", "uid-b", FailureClass.NODE_LOST, "lost", 1.0),),
    avoid_node="n1",
)
ENVELOPES = (codec.encode_dead_letter(LETTER), codec.encode_retry_ticket(TICKET))
DECODERS = (codec.decode_dead_letter, codec.decode_retry_ticket)


def check_decodes_or_corrupt(raw: bytes | str) -> None:
    """The contract, for both decoders: an entry fit for use, or CorruptEntry."""
    for decode in DECODERS:
        try:
            entry = decode(raw)
        except codec.CorruptEntry:
            continue
        times = [entry.failed_at if isinstance(entry, DeadLetter) else entry.due_at]
        times += [record.failed_at for record in entry.history]
        assert all(math.isfinite(t) for t in times), entry
        # What was decoded can be stored again (no NaN, nothing too deep to encode), shown by
        # the CLI, and turned into the Job a retry creates.
        if isinstance(entry, DeadLetter):
            codec.encode_dead_letter(entry)
            json.dumps([dlq.summary("q/1-0", entry), dlq.full("q/1-0", entry)], default=str)
        else:
            codec.encode_retry_ticket(entry)
            try:
                json.dumps(manifest_for_ticket(entry), allow_nan=False)
            except ValueError as exc:  # documented: a ticket with attempt < 2
                assert "attempt" in str(exc)
    COUNTS["codec"] += 1


@fuzz_settings(2000)
@given(st.binary(max_size=400))
def test_arbitrary_bytes(raw: bytes) -> None:
    check_decodes_or_corrupt(raw)


@fuzz_settings(600)
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    check_decodes_or_corrupt(dumps_hostile(value))


def envelope_with(kind: int, value: Any, path_choice: int) -> str:
    doc = json.loads(ENVELOPES[kind])
    spots = _spots(doc)
    parent, key = spots[path_choice % len(spots)]
    parent[key] = value
    return dumps_hostile(doc)


def _spots(doc: Any) -> list[tuple[Any, Any]]:
    found: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            found.append((node, key))
            if isinstance(child, dict | list):
                stack.append(child)
    return found


@fuzz_settings(600)
@given(
    st.integers(0, 1),
    st.sampled_from(HOSTILE_DOC_VALUES) | json_values,
    st.integers(0, 10_000),
)
def test_valid_envelope_with_one_field_replaced(kind: int, value: Any, where: int) -> None:
    check_decodes_or_corrupt(envelope_with(kind, value, where))


@fuzz_settings(500)
@given(st.integers(0, 1), st.sampled_from(HOSTILE_JSON_TEXT), st.integers(0, 10_000))
def test_valid_envelope_with_one_number_token_replaced(kind: int, token: str, where: int) -> None:
    raw = ENVELOPES[kind].decode()
    numbers = [i for i, ch in enumerate(raw) if ch.isdigit() and raw[i - 1] in ":["]
    start = numbers[where % len(numbers)]
    end = start
    while end < len(raw) and raw[end] in "0123456789.eE+-":
        end += 1
    check_decodes_or_corrupt(raw[:start] + token + raw[end:])


MUTATED_ENVELOPES = 20_000
MUTATED_BYTES = 12_000


def test_mutated_envelopes() -> None:
    docs = [json.loads(e) for e in ENVELOPES]

    def one(rng: random.Random) -> None:
        check_decodes_or_corrupt(
            dumps_hostile(mutate(rng.choice(docs), rng, palette=HOSTILE_DOC_VALUES))
        )

    before = COUNTS["codec"]
    run_loop(MUTATED_ENVELOPES, 1, one)
    assert COUNTS["codec"] - before == MUTATED_ENVELOPES


def test_mutated_bytes() -> None:
    def one(rng: random.Random) -> None:
        check_decodes_or_corrupt(mutate_bytes(rng.choice(ENVELOPES), rng))

    before = COUNTS["codec"]
    run_loop(MUTATED_BYTES, 2, one)
    assert COUNTS["codec"] - before == MUTATED_BYTES
