"""Connection setup without kubernetes_asyncio: kubeconfig (token, client certificates),
in-cluster ServiceAccount files (token rotation), and the fallback to kubernetes_asyncio.

Each path is checked end to end against a local HTTPS server (aiohttp, a CA made here) that
records the Authorization header and the client certificate of every request.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from watcher.adapters.kube import kubeconfig
from watcher.adapters.kube.connect import connect, direct_connection, transport
from watcher.adapters.kube.kubeconfig import TokenSource, from_kubeconfig, in_cluster
from watcher.adapters.kube.transport import ClientApiTransport, DirectTransport
from watcher.core.errors import KubeUnauthorized
from watcher.core.settings import KubernetesSettings

REPO = Path(__file__).resolve().parents[2]


# --- a CA, a server certificate, a client certificate ----------------------------------------


@dataclass
class Pki:
    folder: Path
    ca: Path = field(init=False)
    server_cert: Path = field(init=False)
    server_key: Path = field(init=False)
    client_cert: Path = field(init=False)
    client_key: Path = field(init=False)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    cn: str,
    *,
    server: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("kube.test")]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    out = Pki(tmp_path_factory.mktemp("pki"))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test-ca"))
        .issuer_name(_name("test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out.ca = out.folder / "ca.crt"
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role, server in (("server", True), ("client", False)):
        cert, key = _issue(ca_key, ca.subject, f"{role}-cn", server=server)
        cert_path, key_path = out.folder / f"{role}.crt", out.folder / f"{role}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        setattr(out, f"{role}_cert", cert_path)
        setattr(out, f"{role}_key", key_path)
    return out


# --- the server --------------------------------------------------------------------------


@dataclass
class Seen:
    authorization: list[str | None] = field(default_factory=list)
    client_cn: list[str | None] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    url: str = ""


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[Seen]:
    seen = Seen()

    async def handle(request: web.Request) -> web.Response:
        seen.authorization.append(request.headers.get("Authorization"))
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = None
        if peer:
            cn = next((v for rdn in peer["subject"] for k, v in rdn if k == "commonName"), None)
        seen.client_cn.append(cn)
        seen.paths.append(request.path_qs)
        seen.bodies.append(await request.json() if request.can_read_body else None)
        if request.headers.get("Authorization") == "Bearer denied":
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        return web.json_response({"kind": "Status", "ok": True})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate is checked when sent
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    seen.url = f"https://127.0.0.1:{port}"
    yield seen
    await runner.cleanup()


def _kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any] | None) -> Path:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "k", "cluster": cluster}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "users": [{"name": "u", "user": user}] if user is not None else [],
    }
    if user is None:
        del doc["contexts"][0]["context"]["user"]
    path.write_text(yaml.safe_dump(doc))
    return path


async def _get(settings: KubernetesSettings) -> dict[str, Any]:
    kube = await connect(settings)
    try:
        return await kube.call("GET", "/api/v1/namespaces/x/pods", what="probe")
    finally:
        await kube.close()


# --- kubeconfig ------------------------------------------------------------------------------


async def test_kubeconfig_token_and_ca_file(server: Seen, pki: Pki, tmp_path: Path) -> None:
    # Given a kubeconfig with a server, a CA file (relative to the kubeconfig) and a token
    (tmp_path / "ca.crt").write_bytes(pki.ca.read_bytes())
    path = _kubeconfig(
        tmp_path / "config",
        {"server": server.url, "certificate-authority": "ca.crt"},
        {"token": "s3cret"},
    )
    settings = KubernetesSettings(kubeconfig=str(path))
    # When a request is sent
    assert isinstance(await transport(settings), DirectTransport)
    body = await _get(settings)
    # Then it went over verified TLS with the bearer token, without kubernetes_asyncio
    assert body["ok"] is True
    assert server.authorization == ["Bearer s3cret"]
    assert server.paths == ["/api/v1/namespaces/x/pods"]


async def test_kubeconfig_client_certificate_files_and_data(
    server: Seen, pki: Pki, tmp_path: Path
) -> None:
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    as_files = {"client-certificate": str(pki.client_cert), "client-key": str(pki.client_key)}
    as_data = {
        "client-certificate-data": b64(pki.client_cert),
        "client-key-data": b64(pki.client_key),
    }
    for i, user in enumerate((as_files, as_data)):
        path = _kubeconfig(
            tmp_path / f"config{i}",
            {"server": server.url, "certificate-authority-data": b64(pki.ca)},
            user,
        )
        await _get(KubernetesSettings(kubeconfig=str(path)))
    # The client certificate was presented both ways, and no token was sent
    assert server.client_cn == ["client-cn", "client-cn"]
    assert server.authorization == [None, None]


def test_client_key_data_leaves_no_file(pki: Pki, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    path = _kubeconfig(
        tmp_path / "config",
        {"server": "https://127.0.0.1:1", "certificate-authority": str(pki.ca)},
        {"client-certificate-data": b64(pki.client_cert), "client-key-data": b64(pki.client_key)},
    )
    conn = from_kubeconfig(path)
    assert conn is not None and conn.cert_pem is not None
    DirectTransport(conn)  # loads the pair into its TLS context
    assert not list(tmp_path.glob("kube-dlq-*"))


async def test_untrusted_server_is_refused(server: Seen, tmp_path: Path) -> None:
    # A kubeconfig without the server's CA: verification fails, the token is never sent
    path = _kubeconfig(tmp_path / "config", {"server": server.url}, {"token": "t"})
    with pytest.raises(Exception, match="probe failed"):
        await _get(KubernetesSettings(kubeconfig=str(path)))
    assert server.authorization == []


async def test_insecure_skip_verify_and_tls_server_name(
    server: Seen, pki: Pki, tmp_path: Path
) -> None:
    insecure = _kubeconfig(
        tmp_path / "a", {"server": server.url, "insecure-skip-tls-verify": True}, {"token": "a"}
    )
    named = _kubeconfig(
        tmp_path / "b",
        {
            "server": server.url.replace("127.0.0.1", "localhost"),
            "certificate-authority": str(pki.ca),
            "tls-server-name": "kube.test",
        },
        {"token": "b"},
    )
    await _get(KubernetesSettings(kubeconfig=str(insecure)))
    await _get(KubernetesSettings(kubeconfig=str(named)))  # localhost is not in the SANs
    assert server.authorization == ["Bearer a", "Bearer b"]


async def test_status_errors_map_as_before(server: Seen, pki: Pki, tmp_path: Path) -> None:
    path = _kubeconfig(
        tmp_path / "config",
        {"server": server.url, "certificate-authority": str(pki.ca)},
        {"token": "denied"},
    )
    with pytest.raises(KubeUnauthorized):
        await _get(KubernetesSettings(kubeconfig=str(path)))


async def test_json_body_is_sent(server: Seen, pki: Pki, tmp_path: Path) -> None:
    path = _kubeconfig(
        tmp_path / "config",
        {"server": server.url, "certificate-authority": str(pki.ca)},
        {"token": "t"},
    )
    kube = await connect(KubernetesSettings(kubeconfig=str(path)))
    try:
        await kube.call(
            "POST", "/apis/batch/v1/jobs", what="create", body={"a": [1]}, query=[("x", "a b")]
        )
    finally:
        await kube.close()
    assert server.bodies == [{"a": [1]}]
    assert server.paths == ["/apis/batch/v1/jobs?x=a+b"]


async def test_token_file_is_read_again(server: Seen, pki: Pki, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    path = _kubeconfig(
        tmp_path / "config",
        {"server": server.url, "certificate-authority": str(pki.ca)},
        {"tokenFile": "token"},
    )
    conn = from_kubeconfig(path)
    assert conn is not None and conn.token is not None and conn.token.path == token
    assert conn.authorization() == "Bearer one"


@pytest.mark.parametrize(
    "user",
    [
        pytest.param({"exec": {"command": "x", "apiVersion": "v1"}}, id="exec"),
        pytest.param({"auth-provider": {"name": "oidc"}}, id="auth-provider"),
        pytest.param({"username": "a", "password": "b"}, id="basic"),
        pytest.param({"token": "t", "as": "admin"}, id="impersonation"),
        pytest.param({"client-certificate-data": "bm90IGI2NA=="}, id="cert-without-key"),
        pytest.param({"client-key-data": "%%%"}, id="bad-base64"),
        pytest.param({"tokenFile": "/nonexistent/token"}, id="missing-token-file"),
        pytest.param({"token": 7}, id="token-not-a-string"),
    ],
)
def test_what_kube_dlq_does_not_read_falls_back(tmp_path: Path, user: dict[str, Any]) -> None:
    path = _kubeconfig(tmp_path / "config", {"server": "https://127.0.0.1:1"}, user)
    assert from_kubeconfig(path) is None


@pytest.mark.parametrize(
    "text",
    ["", "[1, 2]", "{not: yaml: [", "current-context: nope\ncontexts: []", "\x00\xff"],
)
def test_garbage_kubeconfig_falls_back(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config"
    path.write_text(text, errors="surrogateescape")
    assert from_kubeconfig(path) is None
    assert from_kubeconfig(tmp_path / "absent") is None


def test_context_is_chosen(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "current-context": "first",
                "clusters": [
                    {"name": "one", "cluster": {"server": "https://one.example:6443"}},
                    {"name": "two", "cluster": {"server": "https://two.example:6443/"}},
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "first", "context": {"cluster": "one", "user": "u"}},
                    {"name": "second", "context": {"cluster": "two"}},
                ],
            }
        )
    )
    first, second = from_kubeconfig(path), from_kubeconfig(path, "second")
    assert first is not None and first.host == "https://one.example:6443"
    assert second is not None and second.host == "https://two.example:6443"
    assert second.authorization() is None
    assert from_kubeconfig(path, "third") is None


def test_several_kubeconfig_files_fall_back() -> None:
    assert kubeconfig.kubeconfig_path({"KUBECONFIG": "/a:/b"}) is None
    assert kubeconfig.kubeconfig_path({"KUBECONFIG": "/a"}) == Path("/a")
    assert kubeconfig.kubeconfig_path({}) == Path("~/.kube/config").expanduser()


# --- in-cluster --------------------------------------------------------------------------------


def _service_account(folder: Path, pki: Pki, token: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "ca.crt").write_bytes(pki.ca.read_bytes())
    (folder / "token").write_text(token)
    return folder


async def test_in_cluster_token_rotation(server: Seen, pki: Pki, tmp_path: Path) -> None:
    # Given the ServiceAccount files of a pod, and the service env pointing at the server
    sa = _service_account(tmp_path / "sa", pki, "first")
    port = server.url.rsplit(":", 1)[1]
    conn = in_cluster({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}, sa)
    assert conn is not None and conn.token is not None and conn.ca_file == str(sa / "ca.crt")
    now = [0.0]
    conn.token.clock = lambda: now[0]
    conn.token._read_at = 0.0
    api = DirectTransport(conn)
    from watcher.adapters.kube.request import KubeClient

    kube = KubeClient(api, KubernetesSettings())
    try:
        await kube.call("GET", "/version", what="a")
        # When kubelet rotates the token
        (sa / "token").write_text("second")
        now[0] = 30.0
        await kube.call("GET", "/version", what="b")  # not yet re-read
        now[0] = 61.0
        await kube.call("GET", "/version", what="c")
        # Then requests after the re-read interval carry the new token
        (sa / "token").unlink()
        now[0] = 200.0
        await kube.call("GET", "/version", what="d")  # unreadable: keeps the last token
    finally:
        await kube.close()
    assert server.authorization == [
        "Bearer first",
        "Bearer first",
        "Bearer second",
        "Bearer second",
    ]


def test_in_cluster_needs_env_and_files(pki: Pki, tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster({}, tmp_path) is None
    assert in_cluster(env, tmp_path / "missing") is None
    conn = in_cluster(env, _service_account(tmp_path / "sa", pki, "t"))
    assert conn is not None and conn.host == "https://[fd00::1]:443"


def test_token_source_fixed() -> None:
    assert TokenSource(token="x").current() == "x"


# --- the fallback ---------------------------------------------------------------------------


async def test_exec_plugin_falls_back_to_kubernetes_asyncio(
    server: Seen, pki: Pki, tmp_path: Path
) -> None:
    # Given a kubeconfig whose user is an exec plugin (here: a script printing a credential)
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json\nprint(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',"
        " 'kind': 'ExecCredential', 'status': {'token': 'from-exec'}}))\n"
    )
    path = _kubeconfig(
        tmp_path / "config",
        {"server": server.url, "certificate-authority": str(pki.ca)},
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": sys.executable,
                "args": [str(plugin)],
                "interactiveMode": "Never",
            }
        },
    )
    settings = KubernetesSettings(kubeconfig=str(path))
    assert direct_connection(settings) is None
    api = await transport(settings)
    try:
        # Then kubernetes_asyncio's loader made the client, and requests carry its token
        assert isinstance(api, ClientApiTransport)
        assert api.host == server.url
    finally:
        await api.close()
    await _get(settings)
    assert server.authorization == ["Bearer from-exec"]


def test_the_daemon_does_not_import_kubernetes_asyncio() -> None:
    code = (
        "import sys, watcher.app.daemon, watcher.app.sweep\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kubernetes_asyncio'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == []
