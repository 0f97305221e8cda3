"""watcher.adapters.kube.lines: the watch's JSON decoder and line splitter, and the Watcher's
chunk loop that uses them (a real aiohttp StreamReader fed chunk by chunk, no server).

`loads` must return exactly what `json.loads` does, whichever decoder answered; the splitter
must give every line once, in order, whatever the chunk boundaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.hostile import fuzz_settings, load_captured, mutate_bytes
from tests.support.projecting import by_project
from tests.support.watching import sample
from watcher.adapters.kube import lines, watch
from watcher.adapters.kube.lines import LineSplitter, LineTooLong, loads
from watcher.core import wire
from watcher.core.settings import KubernetesSettings
from watcher.kit.metrics import Metrics

# --- loads --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b'{"type":"ADDED","object":{"a":[1,2.5,"x",null,true]}}', id="plain"),
        pytest.param(b'{"a":1,"a":2}', id="duplicate-key-last-wins"),
        pytest.param(b'{"a":123456789012345678901234567890}', id="int-past-64-bits"),
        pytest.param(b'{"a":-9223372036854775809}', id="negative-int-past-64-bits"),
        pytest.param(b'{"a":1e400}', id="float-overflow-is-inf"),
        pytest.param(b'{"a":NaN,"b":-Infinity}', id="nan-infinity"),
        pytest.param(b'{"a":"\\ud800"}', id="lone-surrogate-escape"),
        pytest.param(b'{"a":"\xed\xa0\x80"}', id="encoded-surrogate"),
        pytest.param(b'\xef\xbb\xbf{"a":1}', id="utf8-bom"),
        pytest.param('{"a":"é"}'.encode("utf-16"), id="utf-16"),
        pytest.param(b'  {"a":"\\u00e9\\ud83d\\ude00"}\r\n', id="escapes-and-whitespace"),
        pytest.param(b"[1,2]", id="not-an-object"),
    ],
)
def test_loads_is_json_loads(text: bytes) -> None:
    expected = json.loads(text)
    got = loads(text)
    assert _same(got, expected)


@pytest.mark.parametrize(
    "text",
    [b"", b"{", b'{"a":1,}', b"[01]", b'["\xff"]', b'["\x01"]', b"[1] [2]", b"\x00[1]", b"{'a':1}"],
)
def test_loads_refuses_what_json_loads_refuses(text: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        loads(text)


def test_loads_tries_json_loads_only_for_what_msgspec_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    real = json.loads

    def counting(text: bytes) -> Any:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(lines.json, "loads", counting)
    assert loads(b'{"a":1}') == {"a": 1}
    assert calls == []
    assert math.isnan(loads(b"[NaN]")[0])
    assert calls == [b"[NaN]"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@fuzz_settings(400)
@given(json_values, st.binary(max_size=3), st.integers(min_value=0))
def test_loads_agrees_with_json_loads_on_generated_and_damaged_text(
    value: Any, noise: bytes, where: int
) -> None:
    text = json.dumps(value, ensure_ascii=bool(where % 2)).encode()
    assert _same(loads(text), json.loads(text))
    cut = where % (len(text) + 1)
    damaged = text[:cut] + noise + text[cut:]
    try:
        expected = json.loads(damaged)
    except (ValueError, RecursionError):
        with pytest.raises((ValueError, RecursionError)):
            loads(damaged)
    else:
        assert _same(loads(damaged), expected)


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 and 1.0 differ; NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


# --- LineSplitter -------------------------------------------------------------------------


def _split(data: bytes, cuts: list[int], max_bytes: int = 1 << 20) -> list[bytes]:
    splitter = LineSplitter(max_bytes)
    out: list[bytes] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        out.extend(splitter.feed(data[start:cut]))
        start = cut
    out.append(splitter.end())
    return out


@fuzz_settings(300)
@given(
    st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=400), max_size=20),
)
def test_every_line_comes_out_once_in_order_whatever_the_chunks(
    lines_in: list[bytes], final_newline: bool, cuts: list[int]
) -> None:
    data = b"\n".join(lines_in) + (b"\n" if final_newline and lines_in else b"")
    cuts = [c for c in cuts if c <= len(data)]
    assert _split(data, cuts) == data.split(b"\n")


def test_a_line_past_the_limit_raises_whether_in_one_chunk_or_many() -> None:
    with pytest.raises(LineTooLong):
        LineSplitter(10).feed(b"ok\n" + b"x" * 11 + b"\n")
    splitter = LineSplitter(10)
    assert splitter.feed(b"xxxxxx") == []
    with pytest.raises(LineTooLong):
        splitter.feed(b"xxxxx")  # 11 bytes and still no newline
    splitter = LineSplitter(10)
    splitter.feed(b"xxxxxx")
    with pytest.raises(LineTooLong):
        splitter.feed(b"xxxxx\nok\n")
    assert LineSplitter(10).feed(b"x" * 10 + b"\n") == [b"x" * 10]
    # The lines a chunk completes come out before the too long rest is refused
    splitter = LineSplitter(10)
    assert splitter.feed(b"ok\n" + b"x" * 11) == [b"ok"]
    with pytest.raises(LineTooLong):
        splitter.feed(b"x\n")
    splitter = LineSplitter(10)
    splitter.feed(b"ok\n" + b"x" * 11)
    with pytest.raises(LineTooLong):
        splitter.end()


def test_too_long_is_a_value_error() -> None:
    # The watch maps it like any transport error (a restart with reason "error").
    assert issubclass(LineTooLong, ValueError)


# --- the Watcher's chunk loop --------------------------------------------------------------


class _Protocol:
    _reading_paused = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


class _Response:
    def __init__(self, chunks: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        self.content = aiohttp.StreamReader(_Protocol(), 2**16, loop=loop)  # type: ignore[arg-type]
        for chunk in chunks:
            self.content.feed_data(chunk)
        self.content.feed_eof()
        self.connection = None
        self.status = 200

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Client:
    """Answers the n-th watch request with the n-th list of chunks; records each query."""

    def __init__(self, *streams: list[bytes]) -> None:
        self.settings = KubernetesSettings(watch_timeout_s=None)
        self.streams = list(streams)
        self.queries: list[dict[str, str]] = []

    async def send(self, *args: object, query: list[tuple[str, str]], **kwargs: object) -> Any:
        self.queries.append(dict(query))
        if not self.streams:
            await asyncio.Event().wait()  # nothing more: hang until cancelled
        return _Response(self.streams.pop(0))


def _line(etype: str, rv: int, name: str = "j") -> bytes:
    obj = {
        "kind": "Job",
        "metadata": {"name": f"{name}{rv}", "uid": f"u{rv}", "resourceVersion": str(rv)},
    }
    return json.dumps({"type": etype, "object": obj}).encode() + b"\n"


def _chunks(data: bytes, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    start = 0
    while start < len(data):
        size = rng.randint(1, 90)
        yield data[start : start + size]
        start += size


async def _take(client: _Client, n: int, metrics: Metrics) -> tuple[watch.Watcher, list[Any]]:
    w = watch.Watcher(client, watch.JOBS, metrics=metrics, logger=structlog.get_logger())  # type: ignore[arg-type]
    w._rv = "1"  # a watch from rv 1, no list first
    got: list[Any] = []
    async with asyncio.timeout(10), contextlib.aclosing(w.stream()) as items:
        async for item in items:
            got.append(item)
            if len(got) == n:
                break
    return w, got


@pytest.mark.parametrize("seed", range(5))
async def test_events_cut_across_chunks_come_out_whole_once_in_order(seed: int) -> None:
    data = b"".join(
        [_line("ADDED", 2), b"\n", _line("MODIFIED", 3), _line("BOOKMARK", 4), _line("DELETED", 5)]
    )
    metrics = Metrics()
    w, got = await _take(_Client(list(_chunks(data, seed))), 3, metrics)
    assert [(e.type, e.obj["metadata"]["resourceVersion"]) for e in got] == [
        ("ADDED", "2"),
        ("MODIFIED", "3"),
        ("DELETED", "5"),
    ]
    assert w.resource_version == "5"
    for etype in ("ADDED", "MODIFIED", "BOOKMARK", "DELETED"):
        assert sample(metrics, "watch_events_total", resource="jobs", type=etype) == 1
    assert sample(metrics, "watch_last_event_timestamp_seconds", resource="jobs") > 0


async def test_a_malformed_line_ends_the_stream_after_the_good_lines_before_it() -> None:
    # One chunk: two good events, a broken line, one more event the next stream resends.
    first = [
        _line("ADDED", 2) + _line("MODIFIED", 3) + b'{"type":"MODIFIED","obj\n' + _line("ADDED", 4)
    ]
    client = _Client(first, [_line("ADDED", 4)])
    metrics = Metrics()
    _, got = await _take(client, 3, metrics)
    assert [e.obj["metadata"]["resourceVersion"] for e in got] == ["2", "3", "4"]
    assert [q["resourceVersion"] for q in client.queries] == ["1", "3"]
    assert sample(metrics, "watch_restarts_total", resource="jobs", reason="error") == 1
    assert sample(metrics, "malformed_input_total", source="watch_jobs") == 1
    assert sample(metrics, "watch_events_total", resource="jobs", type="ADDED") == 2


async def test_a_line_past_the_limit_restarts_the_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "MAX_LINE_BYTES", 200)
    client = _Client([_line("ADDED", 2), b"x" * 150, b"y" * 100], [_line("ADDED", 3)])
    metrics = Metrics()
    _, got = await _take(client, 2, metrics)
    assert [e.obj["metadata"]["resourceVersion"] for e in got] == ["2", "3"]
    assert [q["resourceVersion"] for q in client.queries] == ["1", "2"]
    assert sample(metrics, "watch_restarts_total", resource="jobs", reason="error") == 1


async def test_a_last_line_without_newline_is_still_read() -> None:
    client = _Client([_line("ADDED", 2), _line("ADDED", 3).rstrip(b"\n")])
    _, got = await _take(client, 2, Metrics())
    assert [e.obj["metadata"]["resourceVersion"] for e in got] == ["2", "3"]


def _expected(data: bytes) -> list[tuple[str, Any]]:
    """What one stream of `data` must yield, by json.loads: the changes up to the first line
    that is not a usable watch event (that line restarts the watch)."""
    out: list[tuple[str, Any]] = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            etype, obj = raw["type"], raw["object"]
        except (ValueError, KeyError, TypeError, RecursionError):
            break
        if not isinstance(etype, str) or not isinstance(obj, dict) or etype == "ERROR":
            break
        if etype in ("ADDED", "MODIFIED", "DELETED"):
            out.append((etype, obj))
    return out


@pytest.mark.parametrize("seed", range(40))
async def test_damaged_captured_streams_yield_what_json_loads_reads_then_restart(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch.Watcher, "_delay", lambda self, restart, failures: 0.0)
    rng = random.Random(seed)
    captured = [event for scenario in load_captured() for event in scenario["watch"]]
    picked = rng.sample(captured, 12)
    lines_ = [json.dumps({"type": e["type"], "object": e["object"]}).encode() for e in picked]
    for i in rng.sample(range(len(lines_)), rng.randint(0, 3)):
        lines_[i] = mutate_bytes(lines_[i], rng).replace(b"\n", b" ")
    data = b"\n".join(lines_) + b"\n"
    sentinel = _line("ADDED", 999_999, name="sentinel")
    expected = _expected(data)
    client = _Client(list(_chunks(data, seed)), [sentinel])
    _, got = await _take(client, len(expected) + 1, Metrics())
    assert [(e.type, e.obj) for e in got[:-1]] == expected
    assert got[-1].obj["metadata"]["name"] == "sentinel999999"


# --- typed lines (watcher.core.wire) -------------------------------------------------------


def _pod_line(etype: str, rv: int, exit_code: object = 1) -> bytes:
    obj = {
        "kind": "Pod",
        "metadata": {"name": f"p{rv}", "uid": f"u{rv}", "resourceVersion": str(rv)},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {
            "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": exit_code}}}]
        },
    }
    return json.dumps({"type": etype, "object": obj}).encode() + b"\n"


async def test_a_typed_watcher_yields_typed_objects_and_dicts_for_lines_that_do_not_fit() -> None:
    error = json.dumps(
        {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd hiccup"}}
    ).encode()
    first = [
        _pod_line("ADDED", 2)
        + _pod_line("MODIFIED", 3, exit_code=True)
        + _pod_line("BOOKMARK", 4)
        + error
        + b"\n"
    ]
    client = _Client(first, [_pod_line("DELETED", 5)])
    metrics = Metrics()
    w = watch.Watcher(
        client,  # type: ignore[arg-type]
        watch.JOB_PODS,
        metrics=metrics,
        logger=structlog.get_logger(),
        line_type=wire.PodLine,
    )
    w._rv = "1"
    got: list[Any] = []
    async with asyncio.timeout(10), contextlib.aclosing(w.stream()) as items:
        async for item in items:
            got.append(item)
            if len(got) == 3:
                break
    added, retyped, deleted = (e.obj for e in got)
    assert isinstance(added, wire.WirePod) and added.metadata.name == "p2"  # type: ignore[union-attr]
    # A bool where an exit code belongs does not fit the type: the dict, as before.
    assert isinstance(retyped, dict) and retyped["metadata"]["name"] == "p3"
    assert isinstance(deleted, wire.WirePod) and [e.type for e in got] == [
        "ADDED",
        "MODIFIED",
        "DELETED",
    ]
    # The bookmark's resourceVersion was kept: the watch resumed from it after the ERROR.
    assert [q["resourceVersion"] for q in client.queries] == ["1", "4"]
    assert sample(metrics, "watch_restarts_total", resource="pods", reason="error") == 1
    for etype in ("ADDED", "MODIFIED", "BOOKMARK", "ERROR", "DELETED"):
        assert sample(metrics, "watch_events_total", resource="pods", type=etype) == 1


_KIND_OF = {
    "jobs": watch.JOBS,
    "pods": watch.JOB_PODS,
    "events": watch.EVENTS,
    "nodes": watch.NODES,
}


async def _until_sentinel(
    resource: str, streams: list[list[bytes]], line_type: type[wire.WireLine] | None
) -> list[Any]:
    w = watch.Watcher(
        _Client(*streams),  # type: ignore[arg-type]
        _KIND_OF[resource],
        metrics=Metrics(),
        logger=structlog.get_logger(),
        line_type=line_type,
    )
    w._rv = "1"
    got: list[Any] = []
    async with asyncio.timeout(10), contextlib.aclosing(w.stream()) as items:
        async for item in items:
            if by_project(resource, item.obj) == by_project(resource, _SENTINELS[resource]):
                return got
            got.append((item.type, by_project(resource, item.obj)))
    raise AssertionError("the stream ended before the sentinel")


_SENTINELS = {
    "jobs": {"metadata": {"name": "sentinel", "uid": "s0"}},
    "pods": {"metadata": {"name": "sentinel", "uid": "s0", "labels": {"controller-uid": "s1"}}},
    "events": {
        "metadata": {"name": "sentinel", "uid": "s0"},
        "involvedObject": {"kind": "Pod", "name": "sentinel"},
    },
    "nodes": {"metadata": {"name": "sentinel", "uid": "s0"}},
}


@pytest.mark.parametrize("seed", range(24))
async def test_a_typed_watcher_projects_damaged_streams_as_the_generic_one_does(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch.Watcher, "_delay", lambda self, restart, failures: 0.0)
    rng = random.Random(seed)
    resource = ("jobs", "pods", "events", "nodes")[seed % 4]
    captured = [
        event
        for scenario in load_captured()
        for event in scenario["watch"]
        if event["resource"] == resource
    ]
    picked = [rng.choice(captured) for _ in range(12)]
    lines_ = [json.dumps({"type": e["type"], "object": e["object"]}).encode() for e in picked]
    for i in rng.sample(range(len(lines_)), rng.randint(0, 3)):
        lines_[i] = mutate_bytes(lines_[i], rng).replace(b"\n", b" ")
    data = b"\n".join(lines_) + b"\n"
    sentinel = json.dumps({"type": "ADDED", "object": _SENTINELS[resource]}).encode() + b"\n"
    generic = await _until_sentinel(resource, [list(_chunks(data, seed)), [sentinel]], None)
    typed = await _until_sentinel(
        resource, [list(_chunks(data, seed)), [sentinel]], wire.LINE_TYPES[resource]
    )
    # The typed decoder falls back to the generic one for every line it refuses, so it accepts
    # at least what the generic watcher did, and yields the same projections for those lines.
    assert typed[: len(generic)] == generic
    assert len(typed) >= len(generic)
