"""The codec's quick check (`codec._vouched`): ordinary entries skip the per-node walk, and no
entry, hostile or not, decodes differently with it than with the full walk alone."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgspec
import pytest

from watcher.adapters.redis import codec
from watcher.core.model import FailureClass, JobRef, RetryTicket

WIDE_MANIFEST: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {"name": f"c{i}", "env": [{"name": "A", "value": "[{"}], "args": ["x"]}
                    for i in range(40)
                ]
            }
        }
    },
}
"""Shallow but with far more than MAX_DEPTH brackets (and brackets inside strings)."""

TICKET = RetryTicket(
    job=JobRef("batch", "nightly", "uid-1"),
    attempt=2,
    due_at=1_795_169_000.0,
    failure_class=FailureClass.NODE_LOST,
    reason="node lost",
    manifest={"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": 0}},
)


def _forbid_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    def walk(value: object) -> Any:
        raise AssertionError("the per-node walk ran for an ordinary entry")

    monkeypatch.setattr(codec, "_nodes", walk)


@pytest.mark.parametrize("manifest", [TICKET.manifest, WIDE_MANIFEST], ids=["small", "wide"])
def test_an_ordinary_ticket_decodes_without_the_per_node_walk(
    monkeypatch: pytest.MonkeyPatch, manifest: dict[str, Any]
) -> None:
    # Given a good ticket, small or with many containers, and a codec whose full walk fails
    ticket = dataclasses.replace(TICKET, manifest=manifest)
    raw = codec.encode_retry_ticket(ticket)
    _forbid_walk(monkeypatch)
    # When it is decoded, Then it round-trips (the quick check vouched for it)
    assert codec.decode_retry_ticket(raw) == ticket


def _deep(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def _variants() -> list[tuple[str, str]]:
    """(name, stored text): good ones and each kind of hostile one, small and wide."""
    out: list[tuple[str, str]] = []
    for size, manifest in (("small", TICKET.manifest), ("wide", WIDE_MANIFEST)):
        base = json.loads(codec.encode_retry_ticket(dataclasses.replace(TICKET, manifest=manifest)))

        def variant(name: str, change: Any, size: str = size, base: Any = base) -> None:
            body = json.loads(json.dumps(base))
            change(body)
            out.append((f"{size}-{name}", json.dumps(body, ensure_ascii=False)))

        variant("good", lambda b: None)
        variant("at-limit", lambda b: b["data"]["manifest"].update(deep=_deep(codec.MAX_DEPTH - 3)))
        variant("too-deep", lambda b: b["data"]["manifest"].update(deep=_deep(codec.MAX_DEPTH)))
        variant("deep-elsewhere", lambda b: b["data"].update(extra=_deep(codec.MAX_DEPTH)))
        variant("bracket-text", lambda b: b["data"].update(reason="[" * 200 + "{" * 200))
        for where in ("manifest", "report", "extra"):
            variant(f"inf-{where}", lambda b, w=where: b["data"].update({w: {"n": 1e400}}))
        variant("inf-due", lambda b: b["data"].update(due_at=1e400))
        variant("big-int", lambda b: b["data"]["manifest"].update(n=10**30))
    # Lone surrogates: only the escaped form exists as stored text.
    text = codec.encode_retry_ticket(TICKET).decode()
    out.append(("surrogate-value", text.replace('"node lost"', '"\\ud800"')))
    out.append(("surrogate-key", text.replace('"kind":"Job"', '"\\udfff":"Job"')))
    wide = codec.encode_retry_ticket(dataclasses.replace(TICKET, manifest=WIDE_MANIFEST)).decode()
    out.append(("wide-surrogate", wide.replace('"c7"', '"\\udbff"')))
    return out


def _refuse(raw: object) -> object:
    raise msgspec.DecodeError("refused")


def _outcome(raw: str) -> object:
    try:
        return codec.decode_retry_ticket(raw)
    except codec.CorruptEntry as exc:
        return f"CorruptEntry: {exc}"


@pytest.mark.parametrize(("name", "raw"), _variants(), ids=[n for n, _ in _variants()])
def test_the_quick_check_never_changes_what_an_entry_decodes_to(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str
) -> None:
    # Given a stored ticket, good or hostile; When decoded with the quick check, and again with
    # it never vouching (the full walk every time, as before it existed)
    fast = _outcome(raw)
    monkeypatch.setattr(codec, "_vouched", lambda raw, body, strict: False)
    slow = _outcome(raw)
    # And again parsed by json.loads alone (msgspec refusing everything)
    monkeypatch.setattr(codec, "_DECODE", _refuse)
    loaded = _outcome(raw)
    # Then all say the same: the same ticket, or the same error
    assert fast == slow == loaded
    if "surrogate" in name or name.endswith(("too-deep", "inf-manifest", "inf-report", "inf-due")):
        assert isinstance(fast, str), fast
    # And the bytes form decodes the same as the text form
    assert _outcome(raw.encode(errors="surrogatepass")) == fast
