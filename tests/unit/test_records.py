"""watcher.core.records: one encoder and one decoder for both stored shapes of an attempt record.

The literals below are what the encoders of the previous release wrote (the annotation's
encode_history and the Redis codec's _attempt), byte for byte: they exist in clusters, so they
must keep decoding to the same records, and the encoders must keep writing them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from watcher.adapters.redis import codec
from watcher.core.annotations import ANNOTATION_HISTORY
from watcher.core.manifest import encode_history, history_from_annotations
from watcher.core.model import AttemptRecord, FailureClass, JobRef, RetryTicket
from watcher.core.records import (
    ENTRY_SHAPE,
    HISTORY_SHAPE,
    RecordError,
    RecordShape,
    decode_attempt,
    encode_attempt,
)

FC = FailureClass

RECORDS = (
    AttemptRecord(1, "nightly", "uid-1", FC.NODE_LOST, "node kwok-node-0 lost", 1795168800.25),
    AttemptRecord(2, "nightly-r2", "uid-2", FC.OOM_KILLED, "container «w» was OOM-killed", 1.5),
    AttemptRecord(3, "nightly-r3", "uid-3", FC.APP_ERROR, "exit 3", 10.0),
)

# What the previous release wrote into kube-dlq.io/history for RECORDS.
LEGACY_ANNOTATION = (
    '[{"attempt":1,"class":"node_lost","reason":"node kwok-node-0 lost",'
    '"failed_at":1795168800.25,"job":"nightly","uid":"uid-1"},'
    '{"attempt":2,"class":"oom_killed","reason":"container «w» was OOM-killed",'
    '"failed_at":1.5,"job":"nightly-r2","uid":"uid-2"},'
    '{"attempt":3,"class":"app_error","reason":"exit 3","failed_at":10.0,'
    '"job":"nightly-r3","uid":"uid-3"}]'
)

# What the previous release wrote into Redis for a retry ticket carrying RECORDS.
LEGACY_ENTRY = (
    '{"v":1,"kind":"retry_ticket","data":{"job":{"namespace":"batch","name":"nightly-r3",'
    '"uid":"uid-3"},"attempt":4,"due_at":1795169000.0,"failure_class":"app_error",'
    '"reason":"exit 3","manifest":{},"history":['
    '{"attempt":1,"job_name":"nightly","job_uid":"uid-1","failure_class":"node_lost",'
    '"reason":"node kwok-node-0 lost","failed_at":1795168800.25},'
    '{"attempt":2,"job_name":"nightly-r2","job_uid":"uid-2","failure_class":"oom_killed",'
    '"reason":"container «w» was OOM-killed","failed_at":1.5},'
    '{"attempt":3,"job_name":"nightly-r3","job_uid":"uid-3","failure_class":"app_error",'
    '"reason":"exit 3","failed_at":10.0}],"avoid_node":""}}'
).encode()

TICKET = RetryTicket(
    job=JobRef("batch", "nightly-r3", "uid-3"),
    attempt=4,
    due_at=1795169000.0,
    failure_class=FC.APP_ERROR,
    reason="exit 3",
    history=RECORDS,
)


def entry_with_history(history: list[Any]) -> bytes:
    """LEGACY_ENTRY with its history list replaced."""
    body = json.loads(LEGACY_ENTRY)
    body["data"]["history"] = history
    return json.dumps(body).encode()


# --- both legacy shapes, written and read -------------------------------------------------------


def test_the_annotation_is_written_as_before() -> None:
    assert encode_history(RECORDS) == LEGACY_ANNOTATION


def test_redis_entries_are_written_as_before() -> None:
    # Byte for byte as before, but for the queue and started fields tickets carry since
    # (additive v1 changes: readers before them ignore the fields, and a ticket without them
    # reads as "default" and "unknown").
    assert LEGACY_ENTRY.endswith(b"}}")
    added = b',"queue":"default","started":"unknown"}}'
    assert codec.encode_retry_ticket(TICKET) == LEGACY_ENTRY[:-2] + added


def test_a_legacy_annotation_reads_back() -> None:
    read = history_from_annotations({ANNOTATION_HISTORY: LEGACY_ANNOTATION})
    assert read.error is None
    assert tuple(read) == RECORDS


def test_a_legacy_redis_entry_reads_back() -> None:
    assert codec.decode_retry_ticket(LEGACY_ENTRY) == TICKET


LEGACY_RECORDS = [
    pytest.param(
        {
            "attempt": 2,
            "class": "io_timeout",
            "reason": "r",
            "failed_at": 7,
            "job": "j-r2",
            "uid": "u2",
        },
        AttemptRecord(2, "j-r2", "u2", FC.IO_TIMEOUT, "r", 7.0),
        id="annotation-int-time",
    ),
    pytest.param(
        {
            "attempt": 1,
            "class": "node_lost",
            "reason": "",
            "failed_at": 0.0,
            "job": "j",
            "uid": "u",
            "note": "unknown keys are ignored",
        },
        AttemptRecord(1, "j", "u", FC.NODE_LOST, "", 0.0),
        id="annotation-extra-key",
    ),
    pytest.param(
        {
            "attempt": 5,
            "job_name": "j-r5",
            "job_uid": "u5",
            "failure_class": "preempted",
            "reason": "preempted",
            "failed_at": 1700000123.456789,
        },
        AttemptRecord(5, "j-r5", "u5", FC.PREEMPTED, "preempted", 1700000123.456789),
        id="entry-full-precision",
    ),
    pytest.param(
        {
            "failed_at": 3,
            "reason": "x" * 500,
            "failure_class": "unknown",
            "job_uid": "",
            "job_name": "",
            "attempt": 1,
        },
        AttemptRecord(1, "", "", FC.UNKNOWN, "x" * 500, 3.0),
        id="entry-any-key-order-long-reason",
    ),
]


@pytest.mark.parametrize("shape", [HISTORY_SHAPE, ENTRY_SHAPE], ids=["as-history", "as-entry"])
@pytest.mark.parametrize(("item", "expected"), LEGACY_RECORDS)
def test_either_shape_decodes_wherever_it_is_read(
    item: dict[str, Any], expected: AttemptRecord, shape: RecordShape
) -> None:
    assert decode_attempt(item, shape=shape, where="entry 0") == expected


@pytest.mark.parametrize(("item", "expected"), LEGACY_RECORDS)
def test_either_shape_decodes_in_the_annotation_and_in_redis(
    item: dict[str, Any], expected: AttemptRecord
) -> None:
    read = history_from_annotations({ANNOTATION_HISTORY: json.dumps([item])})
    assert read.error is None
    assert tuple(read) == (expected,)
    assert codec.decode_retry_ticket(entry_with_history([item])).history == (expected,)


@pytest.mark.parametrize("shape", [HISTORY_SHAPE, ENTRY_SHAPE], ids=["history", "entry"])
@pytest.mark.parametrize("record", RECORDS)
def test_encode_then_decode_is_the_identity(record: AttemptRecord, shape: RecordShape) -> None:
    encoded = json.loads(json.dumps(encode_attempt(record, shape)))
    assert decode_attempt(encoded, shape=shape, where="record") == record


def test_shapes_write_their_keys_in_their_order() -> None:
    record = RECORDS[0]
    assert list(encode_attempt(record, HISTORY_SHAPE)) == [
        "attempt",
        "class",
        "reason",
        "failed_at",
        "job",
        "uid",
    ]
    assert list(encode_attempt(record, ENTRY_SHAPE)) == [
        "attempt",
        "job_name",
        "job_uid",
        "failure_class",
        "reason",
        "failed_at",
    ]


def test_a_shape_must_name_every_field_once() -> None:
    with pytest.raises(ValueError, match="names each of"):
        RecordShape((("attempt", "attempt"), ("job_name", "job")))


# --- hostile input ------------------------------------------------------------------------------

GOOD_HISTORY: dict[str, Any] = {
    "attempt": 1,
    "class": "node_lost",
    "reason": "r",
    "failed_at": 1.0,
    "job": "j",
    "uid": "u",
}
GOOD_ENTRY: dict[str, Any] = {
    "attempt": 1,
    "job_name": "j",
    "job_uid": "u",
    "failure_class": "node_lost",
    "reason": "r",
    "failed_at": 1.0,
}
HUGE = 10**400  # valid JSON, too large for a float


def spoiled(base: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``base`` with ``key`` set to ``value``, or removed when ``value`` is ``...``."""
    item = {k: v for k, v in base.items() if k != key}
    if value is not ...:
        item[key] = value
    return item


HOSTILE = [
    pytest.param([], "is not an object", id="list"),
    pytest.param("text", "is not an object", id="string"),
    pytest.param(None, "is not an object", id="null"),
    *(
        pytest.param(spoiled(base, "attempt", value), "'attempt' is not an integer >= 1", id=id_)
        for base, tag in ((GOOD_HISTORY, "history"), (GOOD_ENTRY, "entry"))
        for value, id_ in (
            (..., f"{tag}-no-attempt"),
            (True, f"{tag}-bool-attempt"),
            (0, f"{tag}-attempt-zero"),
            (-3, f"{tag}-negative-attempt"),
            (1.0, f"{tag}-float-attempt"),
            ("1", f"{tag}-string-attempt"),
        )
    ),
    *(
        pytest.param(spoiled(base, "failed_at", value), "'failed_at' is not a number", id=id_)
        for base, tag in ((GOOD_HISTORY, "history"), (GOOD_ENTRY, "entry"))
        for value, id_ in (
            (..., f"{tag}-no-time"),
            (float("nan"), f"{tag}-nan"),
            (float("inf"), f"{tag}-infinity"),
            (-float("inf"), f"{tag}-minus-infinity"),
            (HUGE, f"{tag}-huge-int"),
            (-HUGE, f"{tag}-huge-negative-int"),
            (False, f"{tag}-bool-time"),
            ("1", f"{tag}-string-time"),
            ([1], f"{tag}-list-time"),
        )
    ),
    pytest.param(spoiled(GOOD_HISTORY, "class", "oom"), "unknown failure class 'oom'", id="oom"),
    pytest.param(spoiled(GOOD_ENTRY, "failure_class", ""), "unknown failure class ''", id="empty"),
    pytest.param(spoiled(GOOD_HISTORY, "class", 7), "'class' is not a string", id="int-class"),
    pytest.param(spoiled(GOOD_HISTORY, "uid", ...), "'uid' is not a string", id="no-uid"),
    pytest.param(spoiled(GOOD_HISTORY, "job", None), "'job' is not a string", id="null-job"),
    pytest.param(spoiled(GOOD_ENTRY, "job_uid", 1), "'job_uid' is not a string", id="int-uid"),
    pytest.param(spoiled(GOOD_ENTRY, "reason", {}), "'reason' is not a string", id="obj-reason"),
    pytest.param(spoiled(GOOD_ENTRY, "job_name", [[[]]]), "'job_name' is not a string", id="deep"),
]


@pytest.mark.parametrize("shape", [HISTORY_SHAPE, ENTRY_SHAPE], ids=["as-history", "as-entry"])
@pytest.mark.parametrize(("item", "message"), HOSTILE)
def test_a_bad_record_raises_record_error_only(item: Any, message: str, shape: RecordShape) -> None:
    with pytest.raises(RecordError) as raised:
        decode_attempt(item, shape=shape, where="entry 3")
    assert str(raised.value).startswith("entry 3")
    assert message in str(raised.value)


@pytest.mark.parametrize(("item", "message"), HOSTILE)
def test_a_bad_record_in_the_annotation_is_an_error_value(item: Any, message: str) -> None:
    read = history_from_annotations({ANNOTATION_HISTORY: json.dumps([item])})
    assert tuple(read) == ()
    assert read.error is not None
    assert f"entry 0: {message}" in read.error.message or f"entry 0 {message}" in read.error.message


@pytest.mark.parametrize(("item", "message"), HOSTILE)
def test_a_bad_record_in_redis_is_a_corrupt_entry(item: Any, message: str) -> None:
    raw = entry_with_history([dict(GOOD_ENTRY), item])
    with pytest.raises(codec.CorruptEntry) as raised:
        codec.decode_retry_ticket(raw)
    if not isinstance(item, dict):  # the codec itself rejects a history item that is no object
        assert "history[1]" in str(raised.value)
    elif is_strict_json(item):
        assert str(raised.value) == f"retry ticket: field 'history[1]': {message}"
    else:  # NaN and Infinity are not JSON: the codec rejects the whole entry before the record
        assert "not valid UTF-8 JSON" in str(raised.value)


def is_strict_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("text", ["1e400", "-1e400", "1" + "0" * 400])
def test_out_of_range_times_in_json_text_are_rejected(text: str) -> None:
    annotation = LEGACY_ANNOTATION.replace("1795168800.25", text, 1)
    read = history_from_annotations({ANNOTATION_HISTORY: annotation})
    assert read.error is not None and "'failed_at' is not a number" in read.error.message
    entry = LEGACY_ENTRY.replace(b"1795168800.25", text.encode(), 1)
    with pytest.raises(codec.CorruptEntry, match="'failed_at' is not a number"):
        codec.decode_retry_ticket(entry)
