"""Every error kube-dlq raises, and the one error it only reports.

Exceptions are for boundaries (reading the config file, calling the Kubernetes API, writing to
Redis); the pipeline's own outcomes, such as "retries exhausted", are `Decision` values. The
third-party errors (`kubernetes_asyncio` `ApiException`, `aiohttp` errors, `redis.RedisError`)
stop at the adapter that called the library: it raises one of these with the original chained
as ``__cause__``. Every Kubernetes response is mapped to a `KubeAPIError` subclass in one
place, `watcher.adapters.kube.request`.

    Exception
    └── WatcherError            base of everything kube-dlq raises on purpose
        ├── ConfigError         the daemon config is unreadable or invalid; names the field path
        ├── KubeAPIError        a Kubernetes API call failed (status, object, server message)
        │   ├── KubeUnavailable     no usable response: connection failed, timeout, not JSON
        │   ├── KubeUnauthorized    401
        │   ├── KubeForbidden       403
        │   ├── KubeNotFound        404
        │   ├── KubeConflict        409
        │   ├── KubeGone            410, or a resourceVersion too old or too new
        │   ├── KubeInvalid         400, 422
        │   ├── KubeThrottled       429
        │   └── KubeServerError     5xx
        ├── SinkError           a Redis read or write failed
        └── FencedWrite         a write carried a leadership term older than Redis's fence:
                                another replica has led since; this one must stop writing

    PolicyError                 NOT an exception: a frozen value describing one malformed
                                ``kube-dlq.io/`` Job annotation; logged and counted, the default
                                applies, and the loop carries on

This module imports nothing outside the standard library, so the pure stages can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "FencedWrite",
    "KubeAPIError",
    "KubeConflict",
    "KubeForbidden",
    "KubeGone",
    "KubeInvalid",
    "KubeNotFound",
    "KubeServerError",
    "KubeThrottled",
    "KubeUnauthorized",
    "KubeUnavailable",
    "PolicyError",
    "SinkError",
    "WatcherError",
]


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
    """A call to the Kubernetes API failed. Raised only by `watcher.adapters.kube.request`.

    ``status`` is the HTTP status, or None when no usable response arrived; ``reason`` is the
    server's message (from its Status object) or a description of the transport failure.
    The subclass says what kind of failure it was; ``transient`` whether trying the same
    request again later may succeed.
    """

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        kind: str = "",
        namespace: str = "",
        name: str = "",
        retry_after_s: float | None = None,
        timed_out: bool = False,
    ) -> None:
        self.message = message
        self.status = status
        self.reason = reason
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.retry_after_s = retry_after_s
        """The server's Retry-After, when it sent one (429, 503)."""
        self.timed_out = timed_out
        """No answer in time (a `KubeUnavailable`)."""
        super().__init__(self._describe())

    def _describe(self) -> str:
        target = "/".join(p for p in (self.kind, self.namespace, self.name) if p)
        parts = [self.message]
        if target:
            parts.append(f"({target})")
        detail = f"{self.status} {self.reason}".strip() if self.status else self.reason
        text = " ".join(parts)
        return f"{text}: {detail}" if detail else text


class KubeUnavailable(KubeAPIError):
    """No usable response: connection refused, reset or dead, a timeout, or a body that is not
    the JSON the API sends."""

    transient = True


class KubeUnauthorized(KubeAPIError):
    """401: the credentials were rejected (an expired or revoked token)."""


class KubeForbidden(KubeAPIError):
    """403: RBAC denies the request, or the namespace is being deleted."""


class KubeNotFound(KubeAPIError):
    """404: the object, or its namespace, does not exist."""


class KubeConflict(KubeAPIError):
    """409: the object already exists, or a write lost a resourceVersion race."""


class KubeGone(KubeAPIError):
    """410 (or "too old/too large resource version"): a list or watch must start over."""


class KubeInvalid(KubeAPIError):
    """400 or 422: the request is malformed or the object invalid; sending it again as it is
    can never succeed."""


class KubeThrottled(KubeAPIError):
    """429: the apiserver (API Priority and Fairness) asks to slow down."""

    transient = True


class KubeServerError(KubeAPIError):
    """5xx: the apiserver or something in front of it failed."""

    transient = True


class SinkError(WatcherError):
    """A Redis read or write failed, or Redis held data kube-dlq cannot decode."""


class FencedWrite(WatcherError):
    """A Redis write was refused, writing nothing: its leadership term is below the fence.

    Another replica became leader (with a higher term) since this one's term began, so this
    one must stop acting as leader at once. Not a `SinkError`: trying again cannot succeed.
    """

    def __init__(self, operation: str, *, term: int, fence: int) -> None:
        self.operation = operation
        """The store method refused, e.g. ``dead_letter`` or ``claim_due_retries``."""
        self.term = term
        """The term the write carried."""
        self.fence = fence
        """The highest term Redis has seen."""
        self.refused = 1
        """How many writes of this term Redis refused in the same round trip (writes sent
        together, in one pipeline, are all refused together): what is counted and logged."""
        super().__init__(f"redis {operation} refused: leadership term {term} < fence {fence}")
