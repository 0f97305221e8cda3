"""The ``security`` section: where the signing and encryption keys are mounted.

Only the shape is checked here (the config file can be checked on a laptop without the keys);
that the directories hold the named keys is checked when the daemon, the sweep or the CLI
starts (`watcher.app.sealing.build_seal`).
"""

from __future__ import annotations

import re
from typing import Final

from watcher.app.config.fields import Section, field_names
from watcher.core.errors import ConfigError
from watcher.core.settings import SecuritySettings

__all__ = ["parse_security"]

_KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_KEY_ID_HINT: Final = "a key id: 1 to 63 of A-Z, a-z, 0-9, '.', '_' and '-' (a file name)"


def parse_security(raw: object) -> SecuritySettings:
    s = Section(raw, "security", field_names(SecuritySettings))
    d = SecuritySettings()
    config = SecuritySettings(
        signing_keys_dir=s.string("signing_keys_dir", d.signing_keys_dir).strip(),
        signing_key_id=_key_id(s, "signing_key_id"),
        allow_unsigned=s.boolean("allow_unsigned", d.allow_unsigned),
        encryption_keys_dir=s.string("encryption_keys_dir", d.encryption_keys_dir).strip(),
        encryption_key_id=_key_id(s, "encryption_key_id"),
    )
    for purpose in ("signing", "encryption"):
        directory = getattr(config, f"{purpose}_keys_dir")
        key_id = getattr(config, f"{purpose}_key_id")
        if directory and not key_id:
            raise ConfigError(s.path(f"{purpose}_key_id"), f"required with {purpose}_keys_dir")
        if key_id and not directory:
            raise ConfigError(s.path(f"{purpose}_keys_dir"), f"required with {purpose}_key_id")
    if config.encryption_keys_dir and not config.signing_keys_dir:
        # Encrypt-then-sign: the signature is what tells kube-dlq's entries from others'.
        raise ConfigError(s.path("encryption_keys_dir"), "needs signing_keys_dir too")
    return config


def _key_id(s: Section, key: str) -> str:
    value = s.string(key, "").strip()
    if value and not _KEY_ID_RE.fullmatch(value):
        raise ConfigError(s.path(key), f"must be {_KEY_ID_HINT}")
    return value
