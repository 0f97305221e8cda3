"""The `Seal` of the ``security`` settings, checked once at start.

The daemon, the sweep and the CLI all build theirs here, so they refuse the same way: no
signing keys and no explicit ``security.allow_unsigned: true`` is a `ConfigError` (exit 2),
and so is a key directory that does not hold the key id that is to sign or encrypt, or holds
a file that is not a usable key. Refusing to start is the secure default: a daemon running
unsigned would create whatever Job anyone with Redis access described.
"""

from __future__ import annotations

from watcher.adapters.redis.keyring import Keyring
from watcher.adapters.redis.seal import Seal
from watcher.core.errors import ConfigError
from watcher.core.settings import SecuritySettings

__all__ = ["build_seal"]

AES_KEY_BYTES = (32,)
"""AES-256 only: 64 hex digits, what ``openssl rand -hex 32`` prints."""
HMAC_MIN_BYTES = 32
"""An HMAC-SHA256 key of at least its output size (RFC 2104's recommendation)."""


def build_seal(settings: SecuritySettings) -> Seal:
    """The seal for `settings`, or ConfigError naming the setting that is wrong."""
    if not settings.signing_keys_dir:
        if not settings.allow_unsigned:
            raise ConfigError(
                "security.signing_keys_dir",
                "required: kube-dlq signs what it stores so that whoever can write to Redis "
                "cannot make it create Jobs (docs/security.md); mount a Secret there, or set "
                "security.allow_unsigned: true to run without",
            )
        return Seal(signing=None, allow_unsigned=True)
    signing = _keyring(
        settings.signing_keys_dir,
        settings.signing_key_id,
        "signing",
        key_bytes=None,
        min_bytes=HMAC_MIN_BYTES,
    )
    encryption = None
    if settings.encryption_keys_dir:
        encryption = _keyring(
            settings.encryption_keys_dir,
            settings.encryption_key_id,
            "encryption",
            key_bytes=AES_KEY_BYTES,
            min_bytes=0,
        )
    return Seal(
        signing=signing,
        signing_key_id=settings.signing_key_id,
        allow_unsigned=settings.allow_unsigned,
        encryption=encryption,
        encryption_key_id=settings.encryption_key_id,
    )


def _keyring(
    directory: str, key_id: str, purpose: str, *, key_bytes: tuple[int, ...] | None, min_bytes: int
) -> Keyring:
    ring = Keyring(directory, key_bytes=key_bytes, min_bytes=min_bytes)
    if ring.problems:
        raise ConfigError(f"security.{purpose}_keys_dir", "; ".join(ring.problems))
    if ring.get(key_id) is None:
        raise ConfigError(
            f"security.{purpose}_key_id",
            f"no key {key_id!r} in {directory} (found: {', '.join(ring.ids()) or 'none'})",
        )
    return ring
