"""watcher.adapters.redis.codec on hostile stored bytes: CorruptEntry, never another error.

Each case here is a crash the fuzz tests (tests/fuzz/test_fuzz_codec.py) found: before the fix
the decoder let RecursionError, OverflowError or an unusable value through.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from watcher.adapters.redis import codec
from watcher.core.model import AttemptRecord, DeadLetter, FailureClass, JobRef, RetryTicket, Started

TICKET = RetryTicket(
    job=JobRef("batch", "nightly", "uid-1"),
    attempt=2,
    due_at=1_795_169_000.0,
    failure_class=FailureClass.NODE_LOST,
    reason="node lost",
    manifest={"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": 0}},
)
LETTER = DeadLetter(
    queue="batch",
    job=JobRef("batch", "nightly", "uid-1"),
    failure_class=FailureClass.APP_ERROR,
    reason="exit 3",
    attempts=1,
    failed_at=1_795_169_000.0,
    cluster="prod",
)


def ticket_text() -> str:
    return codec.encode_retry_ticket(TICKET).decode()


def letter_text() -> str:
    return codec.encode_dead_letter(LETTER).decode()


@pytest.mark.parametrize("depth", [10_000, 1_000, codec.MAX_DEPTH + 1])
def test_deep_nesting_is_a_corrupt_entry(depth: int) -> None:
    # 10_000 nested lists made json.loads raise RecursionError; a few hundred levels decoded,
    # then crashed whatever walked the manifest recursively (deepcopy, asdict, json.dumps).
    deep = "[" * depth + "]" * depth
    raw = ticket_text().replace('"backoffLimit":0', f'"backoffLimit":{deep}')
    with pytest.raises(codec.CorruptEntry, match="nested deeper than 64 levels"):
        codec.decode_retry_ticket(raw)
    with pytest.raises(codec.CorruptEntry, match="nested deeper"):
        codec.decode_dead_letter(deep)


def test_nesting_up_to_the_limit_decodes_and_survives_recursive_walks() -> None:
    value: Any = 0
    for _ in range(codec.MAX_DEPTH - 3):  # envelope, data, manifest are three levels
        value = [value]
    body = json.loads(ticket_text())
    body["data"]["manifest"] = {"deep": value}
    ticket = codec.decode_retry_ticket(json.dumps(body))
    copy.deepcopy(ticket.manifest)
    dataclasses.asdict(ticket)
    json.dumps(ticket.manifest, indent=2)


@pytest.mark.parametrize("number", ["1" + "0" * 400, "-" + "9" * 400, "1e400", "-1e400"])
def test_a_time_beyond_a_float_is_a_corrupt_entry(number: str) -> None:
    # float(10**400) raised OverflowError; 1e400 decoded as infinity, a due time never reached.
    with pytest.raises(codec.CorruptEntry, match="due_at"):
        codec.decode_retry_ticket(ticket_text().replace("1795169000.0", number))
    with pytest.raises(codec.CorruptEntry, match="failed_at"):
        codec.decode_dead_letter(letter_text().replace("1795169000.0", number))


def test_an_infinite_number_anywhere_is_a_corrupt_entry() -> None:
    # 1e400 in the manifest decoded to inf, which neither Redis nor the apiserver take back.
    raw = ticket_text().replace('"backoffLimit":0', '"backoffLimit":1e400')
    with pytest.raises(codec.CorruptEntry, match="'manifest': a number is out of range"):
        codec.decode_retry_ticket(raw)


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 10**400])
def test_an_integer_beyond_64_bits_is_a_corrupt_entry(number: int) -> None:
    raw = ticket_text().replace('"attempt":2', f'"attempt":{number}')
    with pytest.raises(codec.CorruptEntry, match="'attempt': expected integer of at most 64"):
        codec.decode_retry_ticket(raw)


def test_an_integer_of_too_many_digits_is_a_corrupt_entry() -> None:
    # More digits than int() converts: json.loads says ValueError, which the codec maps.
    raw = ticket_text().replace('"attempt":2', f'"attempt":{"9" * 5000}')
    with pytest.raises(codec.CorruptEntry, match="not valid UTF-8 JSON"):
        codec.decode_retry_ticket(raw)


@pytest.mark.parametrize("where", ['"reason":"node lost"', '"kind":"Job"'])
def test_a_lone_surrogate_is_a_corrupt_entry(where: str) -> None:
    # "\ud800" is valid JSON text but no encodable string: the entry could not be written back,
    # printed by the CLI or sent to the apiserver.
    key, _ = where.split(":")
    raw = ticket_text().replace(where, f'{key}:"\\ud800"')
    with pytest.raises(codec.CorruptEntry, match="lone surrogate"):
        codec.decode_retry_ticket(raw)
    raw = ticket_text().replace('"kind":"Job"', '"\\udfff":"Job"')
    with pytest.raises(codec.CorruptEntry, match="lone surrogate"):
        codec.decode_retry_ticket(raw)


def test_good_entries_still_round_trip() -> None:
    assert codec.decode_retry_ticket(codec.encode_retry_ticket(TICKET)) == TICKET
    assert codec.decode_dead_letter(codec.encode_dead_letter(LETTER)) == LETTER


# --- started, and the memory change in the history (additive fields) -------------------------

BUMPED = AttemptRecord(
    1, "nightly", "uid-1", FailureClass.OOM_KILLED, "oom", 1.0, memory="x1.5: main 1Gi -> 1536Mi"
)


@pytest.mark.parametrize("started", list(Started))
def test_started_round_trips_in_tickets_and_dead_letters(started: Started) -> None:
    ticket = dataclasses.replace(TICKET, started=started, history=(BUMPED,))
    letter = dataclasses.replace(LETTER, started=started, history=(BUMPED,))
    assert codec.decode_retry_ticket(codec.encode_retry_ticket(ticket)) == ticket
    assert codec.decode_dead_letter(codec.encode_dead_letter(letter)) == letter


def test_entries_written_before_started_read_as_unknown() -> None:
    for text, decode in (
        (ticket_text(), codec.decode_retry_ticket),
        (letter_text(), codec.decode_dead_letter),
    ):
        body = json.loads(text)
        del body["data"]["started"]
        assert decode(json.dumps(body)).started is Started.UNKNOWN


@pytest.mark.parametrize("value", ["maybe", 1, None, True, ["yes"]])
def test_a_bad_started_value_is_a_corrupt_entry(value: Any) -> None:
    body = json.loads(letter_text())
    body["data"]["started"] = value
    with pytest.raises(codec.CorruptEntry, match="started"):
        codec.decode_dead_letter(json.dumps(body))


@pytest.mark.parametrize("value", [1, None, ["x"], {"a": 1}])
def test_a_bad_memory_value_in_the_history_is_a_corrupt_entry(value: Any) -> None:
    body = json.loads(codec.encode_dead_letter(dataclasses.replace(LETTER, history=(BUMPED,))))
    body["data"]["history"][0]["memory"] = value
    with pytest.raises(codec.CorruptEntry, match="memory"):
        codec.decode_dead_letter(json.dumps(body))


def test_a_record_without_a_memory_change_writes_no_memory_key() -> None:
    plain = dataclasses.replace(BUMPED, memory="")
    body = json.loads(codec.encode_dead_letter(dataclasses.replace(LETTER, history=(plain,))))
    assert "memory" not in body["data"]["history"][0]


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_number_is_stored_as_null_not_refused(number: float) -> None:
    # Only the json.loads fallback of a watch line can hand over NaN or an infinity (1e400).
    # The entry is still written, that one value as null (JSON has no such number), and it
    # reads back as JSON every other reader accepts.
    letter = dataclasses.replace(
        LETTER, manifest={"spec": {"n": number, "ok": 1.5}}, report={"x": [number]}
    )
    raw = codec.encode_dead_letter(letter)
    assert json.loads(raw, parse_constant=pytest.fail)["data"]["manifest"]["spec"]["n"] is None
    back = codec.decode_dead_letter(raw)
    assert back.manifest == {"spec": {"n": None, "ok": 1.5}}
    assert back.report == {"x": [None]}
    assert dataclasses.replace(back, manifest={}, report={}) == dataclasses.replace(
        letter, manifest={}, report={}
    )


def test_the_encoding_is_compact_utf8_in_field_order() -> None:
    letter = dataclasses.replace(LETTER, reason='exit 3 "é"\u2028\x01', manifest={"b": 1, "a": 2})
    raw = codec.encode_dead_letter(letter)
    assert raw.startswith(b'{"v":1,"kind":"dead_letter","data":{"queue":"batch","job":')
    assert '"reason":"exit 3 \\"é\\"\u2028\\u0001"'.encode() in raw
    assert b'"manifest":{"b":1,"a":2}' in raw
    assert b", " not in raw and b'": ' not in raw
