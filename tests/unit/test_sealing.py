"""build_seal: kube-dlq refuses to start unsigned unless told to, and names what is wrong."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from watcher.app.sealing import build_seal
from watcher.cli.main import main
from watcher.core.errors import ConfigError
from watcher.core.settings import SecuritySettings


def keys(path: Path, **files: str) -> str:
    path.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (path / name).write_text(content)
    return str(path)


def test_without_keys_the_seal_is_refused_unless_unsigned_is_allowed() -> None:
    with pytest.raises(ConfigError) as caught:
        build_seal(SecuritySettings())
    assert caught.value.path == "security.signing_keys_dir"
    assert "allow_unsigned" in str(caught.value)
    assert not build_seal(SecuritySettings(allow_unsigned=True)).signs


BAD: dict[str, tuple[dict[str, str], str, str]] = {
    # files in the signing dir, signing key id, the path the error names
    "the signing key is missing": ({"k1": secrets.token_hex(32)}, "k2", "security.signing_key_id"),
    "a file is not hex": (
        {"k1": secrets.token_hex(32), "k2": "nope"},
        "k1",
        "security.signing_keys_dir",
    ),
    "a key is too short": ({"k1": secrets.token_hex(8)}, "k1", "security.signing_keys_dir"),
}


@pytest.mark.parametrize(("files", "kid", "path"), BAD.values(), ids=BAD.keys())
def test_a_bad_key_directory_is_a_config_error_naming_the_setting(
    tmp_path: Path, files: dict[str, str], kid: str, path: str
) -> None:
    settings = SecuritySettings(signing_keys_dir=keys(tmp_path, **files), signing_key_id=kid)
    with pytest.raises(ConfigError) as caught:
        build_seal(settings)
    assert caught.value.path == path


def test_an_encryption_key_must_be_32_bytes(tmp_path: Path) -> None:
    settings = SecuritySettings(
        signing_keys_dir=keys(tmp_path / "s", k1=secrets.token_hex(32)),
        signing_key_id="k1",
        encryption_keys_dir=keys(tmp_path / "e", e1=secrets.token_hex(16)),
        encryption_key_id="e1",
    )
    with pytest.raises(ConfigError, match="need 32 bytes") as caught:
        build_seal(settings)
    assert caught.value.path == "security.encryption_keys_dir"


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_run_and_sweep_exit_2_before_connecting_without_keys(
    tmp_path: Path,
    command: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("KUBE_DLQ_REDIS_URL", "KUBE_DLQ_CONFIG", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "kube-dlq.yaml"
    # A kubeconfig that does not exist: had it connected first, that would be the error.
    doc = {"cluster_name": "c", "kubernetes": {"kubeconfig": str(tmp_path / "absent")}}
    config.write_text(json.dumps(doc))
    assert main([command, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kube-dlq: config error: security.signing_keys_dir: required")
