"""Sealed entries: only what kube-dlq signed opens, wherever and however else it was written.

Pure: `Seal` over `Keyring`s of temporary directories laid out like a mounted Secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.adapters.redis import codec
from watcher.adapters.redis.codec import CorruptEntry
from watcher.adapters.redis.keyring import Keyring, read_keys
from watcher.adapters.redis.seal import ForgedEntry, Seal, envelope_bytes
from watcher.core.model import FailureClass, JobRef, RetryTicket

KIND = codec.KIND_RETRY_TICKET
PLACE = "kube-dlq:{c}:retry:tickets#uid-1"
TICKET = RetryTicket(
    job=JobRef("batch", "nightly", "uid-1"),
    attempt=2,
    due_at=1_800_000_000.0,
    failure_class=FailureClass.OOM_KILLED,
    reason="OOMKilled",
    manifest={
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"env": [{"name": "TOKEN", "value": "s3cr3t-inline-value"}]}]
                }
            }
        }
    },
)
PAYLOAD = codec.encode_retry_ticket(TICKET)


def key_dir(path: Path, **keys: str) -> str:
    path.mkdir(parents=True, exist_ok=True)
    for kid, hexkey in keys.items():
        (path / kid).write_text(hexkey + "\n")
    return str(path)


@pytest.fixture
def ring(tmp_path: Path) -> Keyring:
    return Keyring(key_dir(tmp_path / "sign", k1=secrets.token_hex(32), k2=secrets.token_hex(32)))


@pytest.fixture
def seal(ring: Keyring) -> Seal:
    return Seal(signing=ring, signing_key_id="k2")


def resealed(stored: bytes, **changes: Any) -> bytes:
    envelope = json.loads(stored)
    envelope.update(changes)
    return json.dumps(envelope, separators=(",", ":")).encode()


def test_a_sealed_ticket_opens_to_its_v1_envelope(seal: Seal) -> None:
    stored = seal.seal(KIND, PLACE, PAYLOAD)
    assert codec.decode_retry_ticket(seal.open(KIND, PLACE, stored)) == TICKET


def _altered_payload(stored: bytes) -> bytes:
    envelope = json.loads(stored)
    payload = envelope["payload"].replace('"batch"', '"kube-system"')
    return resealed(stored, payload=payload)


TAMPERING: dict[str, Callable[[bytes], bytes]] = {
    "payload altered (namespace)": _altered_payload,
    "signature of another payload": lambda s: resealed(
        s, sig=base64.b64encode(b"\0" * 32).decode()
    ),
    "signature not base64": lambda s: resealed(s, sig="%%%"),
    "signature truncated": lambda s: resealed(s, sig=base64.b64encode(b"ab").decode()),
    "key id switched to another key in the ring": lambda s: resealed(s, kid="k1"),
    "key id not in the ring": lambda s: resealed(s, kid="nope"),
    "kind relabelled": lambda s: resealed(s, kind=codec.KIND_DEAD_LETTER),
    "a field of the wrong type": lambda s: resealed(s, kid=7),
    "a lone surrogate in a field": lambda s: resealed(s, enc="\ud800"),
    "unsigned v1 envelope": lambda s: PAYLOAD,
    "not JSON at all": lambda s: b"\xff\xfe garbage",
}


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
def test_a_tampered_entry_is_forged(seal: Seal, tamper: Callable[[bytes], bytes]) -> None:
    with pytest.raises(ForgedEntry):
        seal.open(KIND, PLACE, tamper(seal.seal(KIND, PLACE, PAYLOAD)))


PLACES = {
    "another ticket id": (KIND, "kube-dlq:{c}:retry:tickets#uid-2"),
    "another cluster": (KIND, "kube-dlq:{d}:retry:tickets#uid-1"),
    "a dead letter read as a ticket": (codec.KIND_DEAD_LETTER, PLACE),
}


@pytest.mark.parametrize(("kind", "place"), PLACES.values(), ids=PLACES.keys())
def test_an_entry_moved_elsewhere_is_forged(seal: Seal, kind: str, place: str) -> None:
    with pytest.raises(ForgedEntry):
        seal.open(kind, place, seal.seal(KIND, PLACE, PAYLOAD))


def test_a_dead_letter_copied_into_the_tickets_hash_is_forged(seal: Seal) -> None:
    queue = "kube-dlq:{c}:dlq:default"
    letter = seal.seal(codec.KIND_DEAD_LETTER, queue, b'{"v":1,"kind":"dead_letter","data":{}}')
    with pytest.raises(ForgedEntry, match="sealed as 'dead_letter'"):
        seal.open(KIND, PLACE, letter)


def test_entries_signed_with_an_older_key_still_open_after_rotation(
    tmp_path: Path, ring: Keyring
) -> None:
    old = Seal(signing=ring, signing_key_id="k1").seal(KIND, PLACE, PAYLOAD)
    rotated = Seal(signing=ring, signing_key_id="k2")
    assert codec.decode_retry_ticket(rotated.open(KIND, PLACE, old)) == TICKET
    assert json.loads(rotated.seal(KIND, PLACE, PAYLOAD))["kid"] == "k2"


def test_unsigned_entries_open_only_when_allowed(ring: Keyring) -> None:
    assert (
        Seal(signing=ring, signing_key_id="k1", allow_unsigned=True).open(KIND, PLACE, PAYLOAD)
        == PAYLOAD
    )
    with pytest.raises(ForgedEntry, match="not signed"):
        Seal(signing=ring, signing_key_id="k1").open(KIND, PLACE, PAYLOAD)


def test_without_keys_a_seal_must_be_asked_to_be_unsigned() -> None:
    with pytest.raises(ValueError, match="allow_unsigned"):
        Seal(signing=None)
    unsigned = Seal(signing=None, allow_unsigned=True)
    assert unsigned.seal(KIND, PLACE, PAYLOAD) == PAYLOAD
    with pytest.raises(ForgedEntry, match="not in the keyring"):
        unsigned.open(
            KIND, PLACE, Seal(signing=_ring_of_one(), signing_key_id="k").seal(KIND, PLACE, PAYLOAD)
        )


def _ring_of_one() -> Keyring:
    import tempfile

    return Keyring(key_dir(Path(tempfile.mkdtemp()), k=secrets.token_hex(32)))


# --- encryption -------------------------------------------------------------------------------


@pytest.fixture
def enc_dir(tmp_path: Path) -> Path:
    key_dir(tmp_path / "enc", e1=secrets.token_hex(32))
    return tmp_path / "enc"


def test_encrypted_entries_hold_no_manifest_text_and_still_open(
    ring: Keyring, enc_dir: Path
) -> None:
    seal = Seal(
        signing=ring,
        signing_key_id="k1",
        encryption=Keyring(str(enc_dir), key_bytes=(32,)),
        encryption_key_id="e1",
    )
    stored = seal.seal(KIND, PLACE, PAYLOAD)
    for plain in (b"s3cr3t-inline-value", b"TOKEN", b"nightly", b"OOMKilled"):
        assert plain not in stored
    assert json.loads(stored)["enc"] == "aes-256-gcm:e1"
    assert codec.decode_retry_ticket(seal.open(KIND, PLACE, stored)) == TICKET


def test_encryption_keys_rotate_and_a_missing_one_is_a_clear_corrupt_entry(
    ring: Keyring, enc_dir: Path
) -> None:
    def seal_with(kid: str) -> Seal:
        enc = Keyring(str(enc_dir), key_bytes=(32,), refresh_s=0.0)
        return Seal(signing=ring, signing_key_id="k1", encryption=enc, encryption_key_id=kid)

    old = seal_with("e1").seal(KIND, PLACE, PAYLOAD)
    (enc_dir / "e2").write_text(secrets.token_hex(32))
    assert seal_with("e2").open(KIND, PLACE, old) == PAYLOAD  # old key still decrypts
    os.remove(enc_dir / "e1")
    with pytest.raises(CorruptEntry, match="encrypted with key id 'e1'") as caught:
        seal_with("e2").open(KIND, PLACE, old)
    assert not isinstance(caught.value, ForgedEntry)  # it is ours, only unreadable here


def test_a_missing_signing_key_refuses_to_write(tmp_path: Path) -> None:
    from watcher.core.errors import SinkError

    directory = key_dir(tmp_path / "s", k1=secrets.token_hex(32))
    seal = Seal(signing=Keyring(directory, refresh_s=0.0), signing_key_id="k1")
    os.remove(Path(directory) / "k1")
    with pytest.raises(SinkError, match="signing key 'k1' is not in"):
        seal.seal(KIND, PLACE, PAYLOAD)


# --- the key directory ------------------------------------------------------------------------


def test_the_keyring_reads_a_mounted_secret_layout(tmp_path: Path) -> None:
    # Given a directory laid out like a kubelet's Secret volume
    data = tmp_path / "..2026_12_01_23_00_00.1"
    key_dir(data, k1=secrets.token_hex(32))
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "k1").symlink_to("..data/k1")
    # Then only the key files count, as their ids
    assert Keyring(str(tmp_path)).ids() == ("k1",)


BAD_FILES = {
    "not hex": "zz-not-hex",
    "too short": secrets.token_hex(8),
    "empty": "",
}


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_an_unusable_key_file_is_named_not_used(tmp_path: Path, content: str) -> None:
    read = read_keys(key_dir(tmp_path, bad=content), key_bytes=None, min_bytes=32)
    assert read.keys == {}
    assert len(read.problems) == 1 and "bad" in read.problems[0]


def test_an_aes_key_must_be_32_bytes(tmp_path: Path) -> None:
    read = read_keys(key_dir(tmp_path, e=secrets.token_hex(20)), key_bytes=(32,), min_bytes=0)
    assert read.keys == {} and "need 32 bytes" in read.problems[0]


def test_a_missing_directory_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    assert (
        Keyring(str(tmp_path / "absent"))
        .problems[0]
        .endswith("cannot list the key directory: No such file or directory")
    )


def test_a_key_added_to_the_secret_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    now = [0.0]
    directory = key_dir(tmp_path, k1=secrets.token_hex(32))
    ring = Keyring(directory, refresh_s=30.0, clock=lambda: now[0])
    key = secrets.token_hex(32)
    (tmp_path / "k2").write_text(key)
    now[0] = 5.0  # not stale yet, but an unknown id forces one more read
    assert ring.get("k2") == bytes.fromhex(key)
    now[0] = 5.1  # a flood of made-up ids: at most one forced read per refresh_s / 10
    (tmp_path / "k3").write_text(secrets.token_hex(32))
    assert ring.get("k3") is None
    now[0] = 40.0
    assert ring.get("k3") is not None


# --- the envelope's bytes ---------------------------------------------------------------------


def reference_seal(key: bytes, kid: str, kind: str, place: str, enc: str, body: str) -> bytes:
    """How envelope v2 was first written: one message for the HMAC, json.dumps of a dict."""
    parts = [b"kube-dlq/sealed-entry/v2", *(t.encode() for t in (kind, place, kid, enc))]
    parts.append(body.encode())
    message = b"".join(len(p).to_bytes(8, "big") + p for p in parts)
    sig = hmac.new(key, message, hashlib.sha256).digest()
    envelope = {
        "v": 2,
        "kind": kind,
        "kid": kid,
        "sig": base64.b64encode(sig).decode(),
        "enc": enc,
        "payload": body,
    }
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


UTF8_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]))  # no lone surrogates


@given(UTF8_TEXT, UTF8_TEXT)
def test_sealed_bytes_are_those_of_the_dict_encoding(payload_text: str, place: str) -> None:
    # Whatever the payload's characters (quotes, controls, U+2028, astral), the envelope is
    # byte for byte what json.dumps of the envelope dict writes, signed over the same message
    key = b"\x07" * 32
    with tempfile.TemporaryDirectory() as directory:
        ring = Keyring(key_dir(Path(directory), k1=key.hex()))
        payload = json.dumps({"v": 1, "data": payload_text}, ensure_ascii=False).encode()
        sealed = Seal(signing=ring, signing_key_id="k1").seal(KIND, place, payload)
        assert sealed == reference_seal(key, "k1", KIND, place, "", payload.decode())
        assert Seal(signing=ring, signing_key_id="k1").open(KIND, place, sealed) == payload


def test_every_code_point_is_escaped_as_json_dumps_escapes_it() -> None:
    # The envelope's string literals come from msgspec; json.dumps (ensure_ascii=False) is the
    # reference. Every scalar value, in one payload, and each beside the quotes it may need.
    every = "".join(chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF)
    reference = json.JSONEncoder(ensure_ascii=False).encode
    assert (
        envelope_bytes("k", "i", "s", "", every)
        == json.dumps(
            {"v": 2, "kind": "k", "kid": "i", "sig": "s", "enc": "", "payload": every},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
    )
    for cp in [*range(0x100), 0x2028, 0x2029, 0xFEFF, 0xFFFF, 0x10FFFF]:
        text = f'"\\{chr(cp)}"'
        assert envelope_bytes(text, "", "", "", "").startswith(
            b'{"v":2,"kind":' + reference(text).encode() + b","
        )
