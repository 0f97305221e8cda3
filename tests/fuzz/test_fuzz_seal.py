"""Sealed entries: `Seal.open` returns what was sealed, or raises `CorruptEntry`; never another
error, and never anything else than what kube-dlq sealed.

Sealed envelopes (signed, and signed-and-encrypted) are damaged structurally (fields replaced
with hostile values, deleted, retyped, nested) and byte by byte, then opened by a seal that
allows unsigned entries and one that does not. Whatever opens must be the original payload
byte for byte: damage never yields a different entry that passes the check.
"""

from __future__ import annotations

import json
import random
import secrets
import tempfile
from pathlib import Path

from tests.fuzz.hostile import (
    COUNTS,
    HOSTILE_DOC_VALUES,
    dumps_hostile,
    mutate,
    mutate_bytes,
    run_loop,
)
from tests.fuzz.test_fuzz_codec import ENVELOPES
from watcher.adapters.redis import codec
from watcher.adapters.redis.keyring import Keyring
from watcher.adapters.redis.seal import Seal

KINDS = (codec.KIND_DEAD_LETTER, codec.KIND_RETRY_TICKET)
PLACES = ("kube-dlq:{prod}:dlq:batch", "kube-dlq:{prod}:retry:tickets#uid-b")


def _seals() -> tuple[Seal, Seal]:
    root = Path(tempfile.mkdtemp(prefix="fuzz-seal-"))
    for name, key in (("sign", "k1"), ("enc", "e1")):
        (root / name).mkdir()
        (root / name / key).write_text(secrets.token_hex(32))
    signing = Keyring(str(root / "sign"), refresh_s=3600)
    encryption = Keyring(str(root / "enc"), key_bytes=(32,), refresh_s=3600)
    strict = Seal(
        signing=signing, signing_key_id="k1", encryption=encryption, encryption_key_id="e1"
    )
    lenient = Seal(signing=signing, signing_key_id="k1", allow_unsigned=True)
    return strict, lenient


STRICT, LENIENT = _seals()
SEALED = [
    (kind, place, payload, seal.seal(kind, place, payload), seal)
    for seal in (STRICT, LENIENT)
    for kind, place, payload in zip(KINDS, PLACES, ENVELOPES, strict=True)
]


def check_opens_or_corrupt(kind: str, place: str, payload: bytes, stored: bytes | str) -> None:
    COUNTS["seal"] += 1
    for seal in (STRICT, LENIENT):
        try:
            opened = seal.open(kind, place, stored)
        except codec.CorruptEntry:
            continue
        raw = stored.encode(errors="surrogatepass") if isinstance(stored, str) else stored
        if seal.allow_unsigned and not raw.startswith(b'{"v":2,'):
            assert opened == raw  # unsigned, passed on as is for the codec to judge
        else:
            assert opened == payload  # a sealed entry opens only to what was sealed


MUTATED_SEALED = 8_000
MUTATED_SEALED_BYTES = 8_000


def test_mutated_sealed_envelopes() -> None:
    docs = [
        (kind, place, payload, json.loads(stored)) for kind, place, payload, stored, _ in SEALED
    ]

    def one(rng: random.Random) -> None:
        kind, place, payload, doc = rng.choice(docs)
        damaged = dumps_hostile(mutate(doc, rng, palette=HOSTILE_DOC_VALUES))
        check_opens_or_corrupt(kind, place, payload, damaged)

    before = COUNTS["seal"]
    run_loop(MUTATED_SEALED, 11, one)
    assert COUNTS["seal"] - before == MUTATED_SEALED


def test_mutated_sealed_bytes() -> None:
    def one(rng: random.Random) -> None:
        kind, place, payload, stored, _ = rng.choice(SEALED)
        check_opens_or_corrupt(kind, place, payload, mutate_bytes(stored, rng))

    before = COUNTS["seal"]
    run_loop(MUTATED_SEALED_BYTES, 12, one)
    assert COUNTS["seal"] - before == MUTATED_SEALED_BYTES


def test_undamaged_entries_open() -> None:
    for kind, place, payload, stored, seal in SEALED:
        assert seal.open(kind, place, stored) == payload
