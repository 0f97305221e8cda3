"""The one way kube-dlq sends a request to the Kubernetes API, and the one place a response
becomes a result or an error.

`KubeClient.send` makes every request (list, watch, get, create, replace, delete) through its
`watcher.adapters.kube.transport.Transport`: host, TLS, the bearer token and its in-cluster
refresh. Bodies are raw JSON both ways; no client model is ever built (CPU and
memory on the hot path, and a model silently drops fields it does not know).

Every failure leaves as a `watcher.core.errors.KubeAPIError` subclass, chosen here:

    no response, a reset, a dead connection, a timeout, a body that is not JSON
                                                        KubeUnavailable (timed_out says which)
    401 KubeUnauthorized   403 KubeForbidden   404 KubeNotFound   409 KubeConflict
    410, or "too old/too large resource version"        KubeGone
    400, 422 KubeInvalid   429 KubeThrottled   5xx KubeServerError   other 4xx KubeAPIError

`error_for` also maps the Status object of a watch ERROR event, so a 410 inside a stream and
a 410 answer to a list are the same error. No kubernetes_asyncio or aiohttp exception leaves
this module.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from watcher.adapters.kube.transport import StatusRaised, Transport, as_transport
from watcher.core.errors import (
    KubeAPIError,
    KubeConflict,
    KubeForbidden,
    KubeGone,
    KubeInvalid,
    KubeNotFound,
    KubeServerError,
    KubeThrottled,
    KubeUnauthorized,
    KubeUnavailable,
)
from watcher.core.rawjson import RawObject
from watcher.core.settings import KubernetesSettings

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

__all__ = ["NO_TARGET", "KubeClient", "Target", "dispose", "error_for", "transport_error"]

Query = Sequence[tuple[str, str]]

_BY_STATUS: Final[dict[int, type[KubeAPIError]]] = {
    400: KubeInvalid,
    401: KubeUnauthorized,
    403: KubeForbidden,
    404: KubeNotFound,
    409: KubeConflict,
    410: KubeGone,
    422: KubeInvalid,
    429: KubeThrottled,
}
_TRANSPORT_ERRORS: Final = (aiohttp.ClientError, OSError, TimeoutError, ValueError)
"""What aiohttp and the client raise when there is no usable response (ValueError: a URL or
header the client could not build)."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a request is about, named in its error message."""

    kind: str = ""
    namespace: str = ""
    name: str = ""


NO_TARGET: Final = Target()


class KubeClient:
    """Raw-JSON requests over one `Transport` (which the caller owns and closes with
    `close`): the daemon's `DirectTransport`, or a kubernetes_asyncio `ApiClient`."""

    def __init__(self, api: Transport | ApiClient, settings: KubernetesSettings) -> None:
        self.api: Transport = as_transport(api)
        self.settings = settings
        self._timeout = aiohttp.ClientTimeout(
            total=settings.request_timeout_s, sock_connect=settings.connect_timeout_s
        )

    async def close(self) -> None:
        """Close the underlying ApiClient and its connections."""
        await self.api.close()

    async def send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        target: Target = NO_TARGET,
        query: Query = (),
        body: Mapping[str, Any] | Sequence[Any] | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
        content_type: str = "application/json",
    ) -> aiohttp.ClientResponse:
        """Send one request and return the response with a 2xx status, its body unread.

        The caller reads (or streams) the body and gives the connection back with `dispose`.
        Any other status raises its `KubeAPIError` (the server's message read from the body);
        no response raises `KubeUnavailable`. `client_timeout` defaults to request_timeout_s.
        """
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type  # a JSON patch is a list
        try:
            resp = await self.api.request(
                method,
                path,
                query=query,
                headers=headers,
                body=body,
                client_timeout=client_timeout or self._timeout,
            )
        except StatusRaised as exc:  # an ApiClient raises for some statuses
            raise error_for(exc.status, _status_object(exc.body), what, target) from exc
        except _TRANSPORT_ERRORS as exc:
            raise transport_error(what, exc, target) from exc
        if 200 <= resp.status < 300:
            return resp
        data = b""
        try:
            data = await resp.read()  # a small Status object
        except _TRANSPORT_ERRORS:
            pass  # the status alone still says what happened
        finally:
            dispose(resp, complete=bool(data))
        raise error_for(
            resp.status,
            _status_object(data),
            what,
            target,
            retry_after_s=_retry_after(resp.headers),
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        target: Target = NO_TARGET,
        query: Query = (),
        body: Mapping[str, Any] | Sequence[Any] | None = None,
        timeout_s: float | None = None,
        content_type: str = "application/json",
    ) -> RawObject:
        """One request whose answer is one JSON object: send it, read it, decode it.

        `timeout_s` (default request_timeout_s) bounds everything, reading the body included.
        """
        limit = self.settings.request_timeout_s if timeout_s is None else timeout_s
        timeout = aiohttp.ClientTimeout(total=limit, sock_connect=self.settings.connect_timeout_s)
        try:
            async with asyncio.timeout(limit):
                resp = await self.send(
                    method,
                    path,
                    what=what,
                    target=target,
                    query=query,
                    body=body,
                    client_timeout=timeout,
                    content_type=content_type,
                )
                return await read_object(resp, what, target)
        except TimeoutError as exc:  # asyncio.timeout above; aiohttp's own are mapped inside
            raise transport_error(what, exc, target) from exc

    async def list_pages(
        self, path: str, *, what: str, query: Query = (), page_size: int | None = None
    ) -> AsyncIterator[RawObject]:
        """Every page of a list, as the raw list objects, following ``continue`` tokens.

        Each page is bounded by list_timeout_s; an expired continue token raises `KubeGone`
        (the caller lists again from the start).
        """
        size = page_size or self.settings.list_page_size
        timeout = aiohttp.ClientTimeout(
            total=self.settings.list_timeout_s, sock_connect=self.settings.connect_timeout_s
        )
        token = ""
        while True:
            params = [*query, ("limit", str(size))]
            if token:
                params.append(("continue", token))
            try:
                async with asyncio.timeout(self.settings.list_timeout_s):
                    resp = await self.send(
                        "GET", path, what=what, query=params, client_timeout=timeout
                    )
                    page = await read_object(resp, what, NO_TARGET)
            except TimeoutError as exc:
                raise transport_error(what, exc, NO_TARGET) from exc
            yield page
            meta = page.get("metadata")
            token = meta.get("continue", "") if isinstance(meta, dict) else ""
            if not isinstance(token, str) or not token:
                return

    async def list_all(self, path: str, *, what: str, query: Query = ()) -> list[RawObject]:
        """Every item of a list (all pages), each with the kind and apiVersion of its list."""
        items: list[RawObject] = []
        async for page in self.list_pages(path, what=what, query=query):
            kind, api_version = item_kind(page)
            for item in page.get("items") or ():
                if isinstance(item, dict):
                    item.setdefault("kind", kind)
                    item.setdefault("apiVersion", api_version)
                    items.append(item)
        return items


async def read_object(resp: aiohttp.ClientResponse, what: str, target: Target) -> RawObject:
    """Read a whole response body that must be a JSON object; gives the connection back."""
    data = b""
    try:
        data = await resp.read()
    except _TRANSPORT_ERRORS as exc:
        raise transport_error(what, exc, target) from exc
    finally:
        dispose(resp, complete=bool(data))
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise KubeUnavailable(
            f"{what} failed",
            status=resp.status,
            reason="the response is not a JSON object",
            kind=target.kind,
            namespace=target.namespace,
            name=target.name,
        )
    return body


def error_for(
    status: int | None,
    status_object: Mapping[str, Any],
    what: str,
    target: Target = NO_TARGET,
    *,
    retry_after_s: float | None = None,
) -> KubeAPIError:
    """The error for an error response, or for a watch ERROR event's Status object.

    `status` is the HTTP status, or None to take the Status object's ``code``.
    """
    if status is None:
        status = _int(status_object.get("code"))
    reason = _str(status_object, "reason")
    message = _str(status_object, "message")
    lowered = message.lower()
    cls: type[KubeAPIError]
    if (
        status == 410
        or reason in ("Expired", "Gone")
        or "too old resource version" in lowered
        # A lagging apiserver (HA, after a restart) refuses a newer rv; client-go relists.
        or "too large resource version" in lowered
    ):
        cls = KubeGone
    elif status is not None and status >= 500:
        cls = KubeServerError
    elif status is not None:
        cls = _BY_STATUS.get(status, KubeAPIError)
    else:
        cls = KubeAPIError
    return cls(
        f"{what} failed",
        status=status,
        reason=message or reason,
        kind=target.kind,
        namespace=target.namespace,
        name=target.name,
        retry_after_s=retry_after_s,
    )


def transport_error(what: str, exc: BaseException, target: Target = NO_TARGET) -> KubeUnavailable:
    """The error for a request that got no usable response."""
    timed_out = isinstance(exc, TimeoutError)
    text = str(exc)
    detail = "timed out" if timed_out and not text else f"{type(exc).__name__}: {text}"
    return KubeUnavailable(
        f"{what} failed",
        reason=detail.rstrip(": "),
        kind=target.kind,
        namespace=target.namespace,
        name=target.name,
        timed_out=timed_out,
    )


def dispose(resp: aiohttp.ClientResponse, *, complete: bool) -> None:
    """Give back a fully read response's connection; abort one abandoned mid-body.

    Closing a TLS connection politely sends close_notify and waits up to 30 s (asyncio's
    ssl_shutdown_timeout) for the peer's: a dead peer's socket would linger that long, and
    outlive an event loop that ends meanwhile. Nothing more is read from an abandoned
    stream (timeout, error, cancellation), so its connection is aborted instead.
    """
    if complete:
        resp.release()
        return
    connection = resp.connection
    transport = connection.transport if connection is not None else None
    if transport is not None:
        transport.abort()
    resp.close()


def item_kind(page: Mapping[str, Any]) -> tuple[str, str]:
    """List items carry no kind/apiVersion; derive them from the list ("JobList" -> "Job")."""
    kind = page.get("kind")
    api_version = page.get("apiVersion")
    kind = kind.removesuffix("List") if isinstance(kind, str) else ""
    return kind, api_version if isinstance(api_version, str) else ""


def _status_object(body: object) -> Mapping[str, Any]:
    if isinstance(body, bytes | bytearray):
        body = bytes(body).decode("utf-8", errors="replace")
    if not isinstance(body, str) or not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""
