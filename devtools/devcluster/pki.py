"""Certificates, the service-account key pair and static tokens for a local cluster.

Made with the openssl command line (Debian package `openssl`), once per state dir.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class PKIError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Identity:
    """A static-token user of the local apiserver."""

    name: str
    user: str
    groups: tuple[str, ...]
    token: str


DAEMON_NAMESPACE = "kube-dlq"
DAEMON_SERVICE_ACCOUNT = "kube-dlq"


def identities() -> tuple[Identity, ...]:
    """Fresh random tokens for every component and for the two people-facing identities.

    Infrastructure components sit in system:masters; the daemon's identity is the username a
    real ServiceAccount token would carry, so the RBAC shipped in deploy/ binds to it unchanged
    and the tests exercise the daemon's real permissions.
    """
    daemon_user = f"system:serviceaccount:{DAEMON_NAMESPACE}:{DAEMON_SERVICE_ACCOUNT}"
    daemon_groups = ("system:serviceaccounts", f"system:serviceaccounts:{DAEMON_NAMESPACE}")
    return (
        Identity("admin", "kube-dlq-dev-admin", ("system:masters",), secrets.token_hex(16)),
        Identity(
            "controller-manager",
            "system:kube-controller-manager",
            ("system:masters",),
            secrets.token_hex(16),
        ),
        Identity("scheduler", "system:kube-scheduler", ("system:masters",), secrets.token_hex(16)),
        Identity("kwok", "kwok-controller", ("system:masters",), secrets.token_hex(16)),
        Identity("daemon", daemon_user, daemon_groups, secrets.token_hex(16)),
    )


def write_token_file(path: Path, ids: tuple[Identity, ...]) -> None:
    # Format: token,user,uid,"group1,group2" (kube-apiserver --token-auth-file).
    lines = [f'{i.token},{i.user},uid-{i.name},"{",".join(i.groups)}"' for i in ids]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def make_pki(folder: Path) -> None:
    """CA, apiserver serving cert (loopback SANs) and service-account keys in `folder`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise PKIError("openssl not found on PATH: install the Debian package 'openssl'")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        result = subprocess.run(
            [openssl, *args], cwd=folder, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise PKIError(f"openssl {args[0]} failed: {result.stderr.strip()[-300:]}")

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        "/CN=kube-dlq-dev-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kube-apiserver",
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
    )
    (folder / "san.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,IP:10.0.0.1\n"
    )
    run(
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        "san.ext",
        "-out",
        "apiserver.crt",
    )
    run("genrsa", "-out", "sa.key", "2048")
    run("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")
    for key in ("ca.key", "apiserver.key", "sa.key"):
        (folder / key).chmod(0o600)
