"""Where the Kubernetes API is and how to authenticate to it, read without kubernetes_asyncio.

Importing `kubernetes_asyncio.client` (or `.config`, which imports it) costs the daemon about
60 MB of RSS: its package imports every API and model class, and the daemon uses none of
them. So the two common cases are read here directly:

- in-cluster: ``KUBERNETES_SERVICE_HOST``/``_PORT``, the ServiceAccount's CA and token files
  (the token is read again every `TOKEN_REREAD_S`, as client-go does: it is rotated);
- a kubeconfig whose cluster has a server, a CA (file or data) and maybe
  ``insecure-skip-tls-verify``/``tls-server-name``, and whose user has a bearer token
  (``token`` or ``tokenFile``) and/or a client certificate and key (files or data).

Anything else (exec plugins, auth providers, basic auth, impersonation, a proxy-url, several
files in ``KUBECONFIG``, a key this module does not know) is `None` here: the caller then
falls back to kubernetes_asyncio's own loader, which is imported only in that case.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import yaml

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "TOKEN_REREAD_S",
    "Connection",
    "TokenSource",
    "from_kubeconfig",
    "in_cluster",
    "kubeconfig_path",
]

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_S: Final = 60.0
"""A token file is read again when its last read is older than this (kubelet rotates the
projected ServiceAccount token well before it expires; client-go re-reads every minute)."""

_CLUSTER_KEYS: Final = frozenset(
    {
        "server",
        "certificate-authority",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "tls-server-name",
        "extensions",
        "disable-compression",
    }
)
_USER_KEYS: Final = frozenset(
    {
        "token",
        "tokenFile",
        "client-certificate",
        "client-certificate-data",
        "client-key",
        "client-key-data",
        "extensions",
    }
)


@dataclass
class TokenSource:
    """A bearer token: fixed, or read from a file and read again every `reread_s`."""

    token: str = ""
    path: Path | None = None
    reread_s: float = TOKEN_REREAD_S
    clock: Callable[[], float] = time.monotonic
    _read_at: float | None = field(default=None, repr=False)

    def current(self) -> str:
        """The token to send now ("" for none). A file that cannot be read keeps the last."""
        if self.path is None:
            return self.token
        now = self.clock()
        if self._read_at is None or now - self._read_at >= self.reread_s:
            try:
                self.token = self.path.read_text(encoding="utf-8").strip()
                self._read_at = now
            except OSError:
                if self._read_at is None:
                    raise
                self._read_at = now  # keep the token we have; try again in reread_s
        return self.token


@dataclass
class Connection:
    """What a transport needs: the server, TLS material, credentials."""

    host: str
    ca_file: str | None = None
    ca_data: str | None = None
    """PEM text of the CA bundle."""
    verify: bool = True
    tls_server_name: str | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: TokenSource | None = None

    def authorization(self) -> str | None:
        """The Authorization header value, or None when there is no token."""
        token = self.token.current() if self.token is not None else ""
        return f"Bearer {token}" if token else None


def in_cluster(
    environ: Mapping[str, str] | None = None, sa_dir: Path = SERVICE_ACCOUNT_DIR
) -> Connection | None:
    """The in-cluster connection (a pod's ServiceAccount), or None outside a pod."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        return None
    token_file, ca_file = sa_dir / "token", sa_dir / "ca.crt"
    if not token_file.is_file() or not ca_file.is_file():
        return None  # kubernetes_asyncio's loader says what is missing
    if ":" in host:  # IPv6
        host = f"[{host}]"
    source = TokenSource(path=token_file)
    source.current()  # fail now, not on the first request
    return Connection(host=f"https://{host}:{port}", ca_file=str(ca_file), token=source)


def kubeconfig_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The one kubeconfig file to read ($KUBECONFIG, else ~/.kube/config); None when
    $KUBECONFIG names several (they are merged: left to kubernetes_asyncio)."""
    env = os.environ if environ is None else environ
    value = env.get("KUBECONFIG", "")
    paths = [p for p in value.split(os.pathsep) if p]
    if len(paths) > 1:
        return None
    return Path(paths[0] if paths else "~/.kube/config").expanduser()


def from_kubeconfig(path: Path, context: str | None = None) -> Connection | None:
    """The connection of `context` (default: current-context) in `path`, or None when the
    kubeconfig needs more than this module reads (or is not one it understands)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(doc, dict):
        return None
    name = context or doc.get("current-context")
    ctx = _named(doc, "contexts", "context", name)
    if ctx is None:
        return None
    cluster = _named(doc, "clusters", "cluster", ctx.get("cluster"))
    user = _named(doc, "users", "user", ctx.get("user")) if ctx.get("user") else {}
    if cluster is None or user is None:
        return None
    if set(cluster) - _CLUSTER_KEYS or set(user) - _USER_KEYS:
        return None  # exec, auth-provider, username, as, proxy-url, ...
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        return None
    base = path.parent
    try:
        conn = Connection(
            host=server.rstrip("/"),
            ca_file=_file(cluster, "certificate-authority", base),
            ca_data=_data(cluster, "certificate-authority-data").decode() or None,
            verify=cluster.get("insecure-skip-tls-verify") is not True,
            tls_server_name=_opt_str(cluster, "tls-server-name"),
            cert_file=_file(user, "client-certificate", base),
            key_file=_file(user, "client-key", base),
            cert_pem=_data(user, "client-certificate-data") or None,
            key_pem=_data(user, "client-key-data") or None,
        )
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    if (conn.cert_file or conn.cert_pem) and not (conn.key_file or conn.key_pem):
        return None
    try:
        conn.token = _token(user, base)
    except (OSError, ValueError, TypeError):
        return None
    return conn


def _token(user: Mapping[str, object], base: Path) -> TokenSource | None:
    """The user's bearer token: ``token``, else ``tokenFile`` (read again as it rotates)."""
    token = _opt_str(user, "token")
    if token:
        return TokenSource(token=token)
    token_file = _file(user, "tokenFile", base)
    if token_file is None:
        return None
    source = TokenSource(path=Path(token_file))
    source.current()  # unreadable: OSError, the caller falls back
    return source


def _named(
    doc: Mapping[str, object], section: str, key: str, name: object
) -> dict[str, object] | None:
    if not isinstance(name, str) or not name:
        return None
    entries = doc.get(section)
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(key)
            if body is None:
                return {}
            return body if isinstance(body, dict) else None
    return None


def _opt_str(section: Mapping[str, object], key: str) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(key)
    return value or None


def _file(section: Mapping[str, object], key: str, base: Path) -> str | None:
    """A file named in the kubeconfig; a relative path is relative to the kubeconfig."""
    value = _opt_str(section, key)
    if value is None:
        return None
    path = (base / Path(value).expanduser()).resolve()
    if not path.is_file():
        raise ValueError(f"{key}: {value} is not a file")
    return str(path)


def _data(section: Mapping[str, object], key: str) -> bytes:
    """Base64 data in the kubeconfig, decoded ("" when absent)."""
    value = _opt_str(section, key)
    if value is None:
        return b""
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(key) from exc
