"""Every error kube-dlq raises, and the one error it only reports.

Exceptions are for boundaries (reading the config file, calling the Kubernetes API, writing to
Redis); the pipeline's own outcomes, such as "retries exhausted", are `Decision` values. The
third-party errors (`kubernetes_asyncio` `ApiException`, `aiohttp` errors, `redis.RedisError`)
stop at the adapter that called the library: it raises one of these with the original chained
as ``__cause__``.

    Exception
    └── WatcherError            base of everything kube-dlq raises on purpose
        ├── ConfigError         the daemon config is unreadable or invalid; names the field path
        ├── KubeAPIError        a Kubernetes API call failed (status, object, server message)
        └── SinkError           a Redis read or write failed

    PolicyError                 NOT an exception: a frozen value describing one malformed
                                ``kube-dlq.io/`` Job annotation; logged and counted, the default
                                applies, and the loop carries on

This module imports nothing outside the standard library, so the pure stages can use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["ConfigError", "KubeAPIError", "PolicyError", "SinkError", "WatcherError"]


class WatcherError(Exception):
    """Base class of every exception kube-dlq raises on purpose."""


class ConfigError(WatcherError):
    """The daemon config is invalid; ``str()`` starts with the path of the offending field.

    ``path`` uses dots for mapping keys and ``[i]`` for list items, e.g.
    ``scope.namespaces[2]`` or ``retry.classes.oom_killed.max_attempts``; it is empty when the
    problem concerns the whole document (unreadable file, invalid YAML).
    """

    def __init__(self, path: str, message: str, *, file: str | None = None) -> None:
        self.path = path
        self.message = message
        self.file = file
        """The config file the error was found in, when known (set by ``load_config``)."""
        super().__init__(f"{path}: {message}" if path else message)


@dataclass(frozen=True, slots=True)
class PolicyError:
    """One malformed ``kube-dlq.io/`` annotation on a Job. A value, never raised.

    ``policy_for`` returns these next to the policy it built; the key they name fell back to
    its default and every other annotation still applied.
    """

    key: str
    """The full annotation key, e.g. ``kube-dlq.io/max-retries``."""
    value: str
    """The raw annotation value as found on the Job."""
    message: str
    """What is wrong with it, e.g. "must be an integer between 0 and 100"."""

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: {self.message}"


class KubeAPIError(WatcherError):
    """A call to the Kubernetes API failed.

    ``status`` is the HTTP status, or None when no response arrived (timeout, connection
    reset). Build one with ``from_exception`` inside an ``except`` block and raise it
    ``from`` the original.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        kind: str = "",
        namespace: str = "",
        name: str = "",
    ) -> None:
        self.message = message
        self.status = status
        self.reason = reason
        self.kind = kind
        self.namespace = namespace
        self.name = name
        super().__init__(self._describe())

    @classmethod
    def from_exception(
        cls,
        message: str,
        exc: BaseException,
        *,
        kind: str = "",
        namespace: str = "",
        name: str = "",
    ) -> KubeAPIError:
        """Wrap a client library exception without importing the library.

        Reads ``status``, ``reason`` and ``body`` the way ``kubernetes_asyncio``'s
        ``ApiException`` carries them; the server's Status message (from the JSON body) is
        preferred over the HTTP reason phrase. Anything else (timeouts, connection errors)
        becomes a status-less error named after the exception type.
        """
        status = getattr(exc, "status", None)
        if not isinstance(status, int) or isinstance(status, bool):
            status = None
        reason = _server_message(getattr(exc, "body", None))
        if not reason:
            raw_reason = getattr(exc, "reason", None)
            reason = raw_reason if isinstance(raw_reason, str) and raw_reason else ""
        if status is None and not reason:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return cls(message, status=status, reason=reason, kind=kind, namespace=namespace, name=name)

    @property
    def is_not_found(self) -> bool:
        return self.status == 404

    @property
    def is_conflict(self) -> bool:
        """409: the object already exists, or the write lost a resourceVersion race."""
        return self.status == 409

    @property
    def is_gone(self) -> bool:
        """410: the watch resourceVersion is too old; the caller must re-list."""
        return self.status == 410

    @property
    def is_transient(self) -> bool:
        """True when trying again later may succeed: no response, 429, or a 5xx."""
        return self.status is None or self.status == 429 or self.status >= 500

    def _describe(self) -> str:
        target = "/".join(p for p in (self.kind, self.namespace, self.name) if p)
        parts = [self.message]
        if target:
            parts.append(f"({target})")
        detail = f"{self.status} {self.reason}".strip() if self.status else self.reason
        text = " ".join(parts)
        return f"{text}: {detail}" if detail else text


class SinkError(WatcherError):
    """A Redis read or write failed, or Redis held data kube-dlq cannot decode."""


def _server_message(body: object) -> str:
    """The ``message`` of a Kubernetes Status object in a response body, if there is one."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not isinstance(body, str) or not body.strip():
        return ""
    try:
        parsed = json.loads(body)
    except ValueError:
        return ""
    if isinstance(parsed, dict):
        message = parsed.get("message")
        if isinstance(message, str):
            return message
    return ""
