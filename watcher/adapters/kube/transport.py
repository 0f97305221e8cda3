"""How `KubeClient` puts one request on the wire: the `Transport` it sends through.

`DirectTransport` is the daemon's: one aiohttp session over the TLS context and credentials
of a `watcher.adapters.kube.kubeconfig.Connection`, without kubernetes_asyncio (whose import
alone is about 60 MB of RSS). `ClientApiTransport` sends through a kubernetes_asyncio
`ApiClient` instead: for kubeconfigs only kubernetes_asyncio understands (exec plugins, auth
providers), and for callers that already hold an ApiClient (tools, tests). Both send the same
request: the same URL, query string, JSON body, headers and bearer token.
"""

from __future__ import annotations

import json
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final, Protocol, cast
from urllib.parse import urlencode

import aiohttp

from watcher.adapters.kube.kubeconfig import Connection

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

__all__ = [
    "ClientApiTransport",
    "DirectTransport",
    "StatusRaised",
    "Transport",
    "as_transport",
    "ssl_context",
]

POOL_SIZE: Final = 100
"""Connections kept per host (kubernetes_asyncio's connection_pool_maxsize default)."""
USER_AGENT: Final = "kube-dlq"
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "OPTIONS", "DELETE"})


class StatusRaised(Exception):
    """An error status that the transport raised instead of returning the response."""

    def __init__(self, status: int | None, body: object) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class Transport(Protocol):
    """Sends one request and returns the response, its body unread."""

    @property
    def host(self) -> str:
        """The server's base URL (``https://host:port``)."""
        ...

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        body: Any,
        client_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse: ...

    async def close(self) -> None: ...


def as_transport(api: Transport | ApiClient) -> Transport:
    """`api` itself, or a `ClientApiTransport` over it when it is a kubernetes_asyncio
    ApiClient (told by its ``call_api``: kubernetes_asyncio is not imported to check)."""
    if hasattr(api, "call_api"):
        return ClientApiTransport(cast("ApiClient", api))
    return api


def ssl_context(conn: Connection) -> ssl.SSLContext:
    """The TLS context of `conn`: its CA (file or data), client certificate, verification."""
    context = ssl.create_default_context(cafile=conn.ca_file, cadata=conn.ca_data)
    if conn.cert_file:
        context.load_cert_chain(conn.cert_file, keyfile=conn.key_file)
    elif conn.cert_pem is not None and conn.key_pem is not None:
        _load_cert_data(context, conn.cert_pem, conn.key_pem)
    if not conn.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _load_cert_data(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """`load_cert_chain` reads files only: write both to private temp files, load, delete."""
    paths: list[str] = []
    try:
        for data in (cert, key):
            fd, path = tempfile.mkstemp(prefix="kube-dlq-", suffix=".pem")
            paths.append(path)
            with os.fdopen(fd, "wb") as out:  # mkstemp: mode 0600
                out.write(data)
        context.load_cert_chain(paths[0], keyfile=paths[1])
    finally:
        for path in paths:
            with suppress(OSError):
                os.unlink(path)


class DirectTransport:
    """Requests over one aiohttp session built from a `Connection`."""

    def __init__(self, conn: Connection, *, pool_size: int = POOL_SIZE) -> None:
        self.connection = conn
        self._ssl = ssl_context(conn) if conn.host.startswith("https://") else None
        self._session: aiohttp.ClientSession | None = None
        self._pool_size = pool_size

    @property
    def host(self) -> str:
        return self.connection.host

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop (aiohttp binds a session to its loop).
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, ssl=self._ssl if self._ssl is not None else True
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=True, read_bufsize=2**21
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        body: Any,
        client_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        method = method.upper()
        send = {"User-Agent": USER_AGENT, "Content-Type": "application/json", **headers}
        authorization = self.connection.authorization()
        if authorization:
            send["Authorization"] = authorization
        url = self.connection.host + path
        if query:
            url += "?" + urlencode(list(query))
        data = json.dumps(body) if body is not None and method in _BODY_METHODS else None
        extra: dict[str, Any] = {}
        if self.connection.tls_server_name:
            extra["server_hostname"] = self.connection.tls_server_name
        return await self._open().request(
            method, url, headers=send, data=data, timeout=client_timeout, **extra
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> DirectTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ClientApiTransport:
    """Requests through a kubernetes_asyncio `ApiClient` (its configuration, auth hooks and
    session); the caller's client, closed by `close`."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        body: Any,
        client_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            resp: aiohttp.ClientResponse = await self.api.call_api(
                path,
                method,
                query_params=list(query),
                header_params=dict(headers),
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=client_timeout,
            )
        except ApiException as exc:  # raised for some statuses despite _preload_content=False
            status = exc.status if isinstance(exc.status, int) else None
            raise StatusRaised(status, exc.body) from exc
        return resp

    async def close(self) -> None:
        await self.api.close()
