"""Signed, and optionally encrypted, stored entries: kube-dlq acts only on what it wrote.

Whoever can write to Redis could otherwise write a retry ticket and have kube-dlq create any
Job it describes. So every entry is stored sealed (envelope version 2)::

    {"v": 2, "kind": "retry_ticket", "kid": "k1", "sig": "<base64 HMAC-SHA256>",
     "enc": "" | "aes-256-gcm:<key id>", "payload": "<the v1 envelope of watcher...codec>"}

``sig`` is an HMAC-SHA256, with the signing key ``kid``, over a domain tag, the entry's kind,
its *place* (the Redis key and, for a ticket, its id in the hash), ``kid``, ``enc`` and the
exact ``payload`` bytes. Binding the place means a valid dead letter copied into the tickets
hash, a ticket copied under another id, or an entry copied to another cluster's or queue's keys
does not verify. With encryption on, ``payload`` is base64 of a 12-byte nonce and the AES-GCM
ciphertext of the v1 envelope (the place as associated data): encrypt, then sign the
ciphertext, so a forged or altered entry is rejected before anything is decrypted, and the
HMAC also covers the encryption key id.

`Seal.open` checks the seal and returns the v1 envelope bytes for `codec` to decode, or raises
`ForgedEntry` (unsigned, unknown key, bad signature: the entry is not kube-dlq's) or
`CorruptEntry` (sealed by kube-dlq but unusable: malformed, or its encryption key is gone).
Both are quarantined by the callers; ForgedEntry is a CorruptEntry, so code that only knows
the latter still quarantines forged entries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Callable
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from watcher.adapters.redis import codec
from watcher.adapters.redis.codec import CorruptEntry
from watcher.adapters.redis.keyring import Keyring
from watcher.adapters.redis.keys import Keys
from watcher.core.errors import SinkError
from watcher.core.model import DeadLetter, RetryTicket

__all__ = [
    "SEALED_VERSION",
    "ForgedEntry",
    "Seal",
    "dead_letter_place",
    "lineage_place",
    "open_ticket",
    "seal_letter",
    "seal_ticket",
    "ticket_place",
]

SEALED_VERSION: Final = 2
SEALED_PREFIX: Final = b'{"v":2,'
"""How every sealed envelope `Seal.seal` writes begins (json.dumps keeps the key order)."""
DOMAIN: Final = b"kube-dlq/sealed-entry/v2"
CIPHER: Final = "aes-256-gcm"
NONCE_BYTES: Final = 12
SIGNATURE_BYTES: Final = 32


def dead_letter_place(keys: Keys, queue: str) -> str:
    """Where a dead letter of `queue` is stored: its stream (the entry id is not known when it
    is signed; XADD picks it)."""
    return keys.dlq(queue)


def lineage_place(keys: Keys, ticket_id: str, namespace: str, name: str) -> str:
    """Where a create record's lineage is valid: that ticket's record, for that Job's name (a
    lineage copied to another ticket's record, or relabelled with another Job, fails)."""
    return f"{keys.retry_create(ticket_id)}|{namespace}/{name}"


def ticket_place(keys: Keys, ticket_id: str) -> str:
    """Where a retry ticket is stored: the tickets hash and its id there."""
    return f"{keys.retry_tickets}#{ticket_id}"


def seal_letter(seal: Seal, keys: Keys, letter: DeadLetter) -> bytes:
    """`letter` as stored in its queue's stream."""
    place = dead_letter_place(keys, letter.queue)
    return seal.seal(codec.KIND_DEAD_LETTER, place, codec.encode_dead_letter(letter))


def seal_ticket(seal: Seal, keys: Keys, ticket: RetryTicket) -> bytes:
    """`ticket` as stored in the tickets hash (its id: the failed Job's uid)."""
    place = ticket_place(keys, ticket.job.uid)
    return seal.seal(codec.KIND_RETRY_TICKET, place, codec.encode_retry_ticket(ticket))


def open_ticket(seal: Seal, keys: Keys, ticket_id: str, stored: bytes) -> RetryTicket:
    """The ticket stored under `ticket_id`, or `ForgedEntry` / `CorruptEntry`."""
    place = ticket_place(keys, ticket_id)
    return codec.decode_retry_ticket(seal.open(codec.KIND_RETRY_TICKET, place, stored))


class ForgedEntry(CorruptEntry):
    """A stored entry kube-dlq did not write: unsigned, signed with a key it does not hold,
    or altered (or moved) since it was signed."""


class Seal:
    """Seals entries before they are stored and opens them after they are read.

    `signing` None: nothing is signed (only with ``security.allow_unsigned``). `allow_unsigned`
    also lets `open` accept unsigned (v1) entries, the ones written before signing was on.
    """

    def __init__(
        self,
        *,
        signing: Keyring | None,
        signing_key_id: str = "",
        allow_unsigned: bool = False,
        encryption: Keyring | None = None,
        encryption_key_id: str = "",
        nonce: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if signing is not None and not signing_key_id:
            raise ValueError("a signing keyring needs the id of the key that signs")
        if encryption is not None and not encryption_key_id:
            raise ValueError("an encryption keyring needs the id of the key that encrypts")
        if signing is None and not allow_unsigned:
            raise ValueError("without a signing keyring, allow_unsigned must be set explicitly")
        self._signing = signing
        self._signing_key_id = signing_key_id
        self.allow_unsigned = allow_unsigned
        self._encryption = encryption
        self._encryption_key_id = encryption_key_id
        self._nonce = nonce

    @property
    def signs(self) -> bool:
        return self._signing is not None

    # --- writing ----------------------------------------------------------------------------

    def seal(self, kind: str, place: str, payload: bytes) -> bytes:
        """The stored form of `payload` (a v1 envelope) at `place`. Raises `SinkError` when
        a configured key is missing from its directory: nothing is stored unsigned then."""
        if self._signing is None:
            return payload  # unsigned (allow_unsigned, no keys): the v1 envelope as before
        enc = ""
        body = payload  # the v1 envelope: UTF-8 JSON (watcher.adapters.redis.codec)
        if self._encryption is not None:
            kid = self._encryption_key_id
            key = self._encryption.get(kid)
            if key is None:
                raise SinkError(_missing("encryption", kid, self._encryption.directory))
            nonce = self._nonce(NONCE_BYTES)
            sealed = nonce + AESGCM(key).encrypt(nonce, payload, place.encode())
            enc = f"{CIPHER}:{kid}"
            body = base64.b64encode(sealed)
        kid = self._signing_key_id
        key = self._signing.get(kid)
        if key is None:
            raise SinkError(_missing("signing", kid, self._signing.directory))
        sig = _mac(key, kind, place, kid, enc, body)
        return envelope_bytes(kind, kid, base64.b64encode(sig).decode(), enc, body.decode())

    # --- reading ----------------------------------------------------------------------------

    def open(self, kind: str, place: str, stored: bytes | str) -> bytes:
        """The v1 envelope inside `stored`, once its seal checks out for `kind` at `place`."""
        # surrogatepass: a str (never what Redis returns here) may hold anything.
        raw = stored.encode(errors="surrogatepass") if isinstance(stored, str) else stored
        envelope = _envelope(raw, kind)
        if envelope is None:
            # Not a sealed envelope: a v1 entry (from before signing), or garbage for the
            # codec to name. Either way unsigned.
            if self.allow_unsigned:
                return raw
            raise ForgedEntry(
                f"{_what(kind)}: not signed (written before signing was turned on, or not by "
                "kube-dlq)"
            )
        kid, sig, enc, body = _sealed_fields(envelope, kind)
        key = None if self._signing is None else self._signing.get(kid)
        if key is None:
            raise ForgedEntry(f"{_what(kind)}: signed with key id {kid!r}, not in the keyring")
        expected = _mac(key, kind, place, kid, enc, body.encode(errors="surrogatepass"))
        if not hmac.compare_digest(expected, sig):
            raise ForgedEntry(
                f"{_what(kind)}: bad signature (altered, moved from another key or id, or "
                "not written by kube-dlq)"
            )
        if not enc:
            return body.encode()  # signed by us, so valid UTF-8
        return self._decrypt(kind, place, enc, body)

    def _decrypt(self, kind: str, place: str, enc: str, body: str) -> bytes:
        cipher, _, kid = enc.partition(":")
        if cipher != CIPHER:
            raise CorruptEntry(f"{_what(kind)}: unknown cipher {cipher!r}")
        key = None if self._encryption is None else self._encryption.get(kid)
        if key is None:
            raise CorruptEntry(
                f"{_what(kind)}: encrypted with key id {kid!r}, which is not in the encryption "
                "keyring (security.encryption_keys_dir): put the key back to read it"
            )
        try:
            sealed = base64.b64decode(body, validate=True)
            nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
            return AESGCM(key).decrypt(nonce, ciphertext, place.encode())
        except (binascii.Error, ValueError, InvalidTag):
            raise CorruptEntry(f"{_what(kind)}: does not decrypt with key {kid!r}") from None


def envelope_bytes(kind: str, kid: str, sig: str, enc: str, payload: str) -> bytes:
    """The sealed envelope as ``json.dumps`` of its dict writes it (``ensure_ascii=False``,
    compact, this key order), without building the dict: byte for byte the same."""
    return b"".join(
        (
            b'{"v":%d,"kind":' % SEALED_VERSION,
            _json_text(kind),
            b',"kid":',
            _json_text(kid),
            b',"sig":',
            _json_text(sig),
            b',"enc":',
            _json_text(enc),
            b',"payload":',
            _json_text(payload),
            b"}",
        )
    )


_json_text: Final = msgspec.json.Encoder().encode
"""One JSON string literal as UTF-8 bytes: the quotes and escapes ``json.dumps`` writes with
``ensure_ascii=False`` (tests/unit/test_seal.py compares every code point), about 4x faster
on a payload of a few kB, which is escaped whole."""


def _mac(key: bytes, kind: str, place: str, kid: str, enc: str, body: bytes) -> bytes:
    # Length-prefixed parts, so no two different tuples give the same message.
    # surrogatepass: a forged entry's JSON may hold a lone surrogate; it must fail the check,
    # not raise.
    mac = hmac.new(key, len(DOMAIN).to_bytes(8, "big") + DOMAIN, hashlib.sha256)
    for text in (kind, place, kid, enc):
        part = text.encode(errors="surrogatepass")
        mac.update(len(part).to_bytes(8, "big") + part)
    mac.update(len(body).to_bytes(8, "big"))
    mac.update(body)  # the payload, not copied into one message with the rest
    return mac.digest()


def _envelope(raw: bytes, kind: str) -> dict[str, Any] | None:
    """The parsed sealed envelope, or None when `raw` is not one (a v1 entry, or junk)."""
    if not raw.startswith(SEALED_PREFIX):
        return None  # cheap: what `seal` writes always starts so, a v1 entry never does
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise ForgedEntry(f"{_what(kind)}: a damaged sealed envelope (not a JSON object)")
    return body


def _sealed_fields(envelope: dict[str, Any], kind: str) -> tuple[str, bytes, str, str]:
    fields = {name: envelope.get(name) for name in ("kind", "kid", "sig", "enc", "payload")}
    if not all(isinstance(value, str) for value in fields.values()):
        raise ForgedEntry(f"{_what(kind)}: a sealed envelope field is missing or not a string")
    if fields["kind"] != kind:
        raise ForgedEntry(f"{_what(kind)}: sealed as {fields['kind']!r}, read as {kind!r}")
    try:
        sig = base64.b64decode(str(fields["sig"]), validate=True)
    except (binascii.Error, ValueError):
        raise ForgedEntry(f"{_what(kind)}: signature is not base64") from None
    if len(sig) != SIGNATURE_BYTES:
        raise ForgedEntry(f"{_what(kind)}: signature is {len(sig)} bytes, not 32")
    return str(fields["kid"]), sig, str(fields["enc"]), str(fields["payload"])


def _what(kind: str) -> str:
    return kind.replace("_", " ")


def _missing(purpose: str, kid: str, directory: str) -> str:
    return f"{purpose} key {kid!r} is not in {directory} (security.{purpose}_key_id)"
