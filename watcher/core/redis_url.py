"""What ``redis.url`` names: one server, a Redis Cluster, or a Sentinel-managed primary (pure).

Forms (``rediss`` instead of ``redis`` for TLS; ``user:password@`` after ``//`` if any)::

    redis://host:6379/0                          one server (redis-py's own URL rules), or
    unix:///run/redis.sock?db=0                  a local socket
    redis+cluster://host:6379[,host:6379...]/    Redis Cluster: seed nodes; the client learns
                                                 the rest (CLUSTER SLOTS) and follows MOVED/ASK
    redis+sentinel://host:26379[,host:26379...]/<service>[/<db>]
                                                 the primary that these Sentinels name
                                                 <service> (their `sentinel monitor` name)

Parsed here, in the core, so the config loader (which must reject a malformed URL at start,
naming the setting) and the Redis adapter (which builds the client) read one grammar. Errors
are a one-line `ConfigError` that never repeats the URL: it may carry a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

from watcher.core.errors import ConfigError

__all__ = ["RedisTarget", "parse_redis_url", "shown_url"]

RedisKind = Literal["server", "cluster", "sentinel"]

_SERVER_SCHEMES: Final = ("redis", "rediss", "unix")
_MULTI_SCHEMES: Final[dict[str, tuple[RedisKind, bool]]] = {
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
_DEFAULT_PORT: Final[dict[RedisKind, int]] = {"server": 6379, "cluster": 6379, "sentinel": 26379}
_SCHEMES_HELP: Final = (
    "must be a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL"
)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """The parsed ``redis.url``; for ``kind == "server"`` only ``url`` matters."""

    kind: RedisKind
    url: str
    """The URL as given (a ``server`` URL goes to redis-py's ``from_url`` unchanged)."""
    nodes: tuple[tuple[str, int], ...] = ()
    """Cluster seed nodes or Sentinels, (host, port), in the order given."""
    tls: bool = False
    username: str | None = None
    password: str | None = None
    """Credentials of the data nodes (the cluster's nodes, the Sentinel-managed primary)."""
    service: str = ""
    """Sentinel: the monitored primary's name."""
    db: int = 0


def parse_redis_url(url: str, path: str = "redis.url") -> RedisTarget:
    """Parse `url`, or raise `ConfigError` at `path` saying what is wrong (never the URL)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(path, "is not a valid URL") from None
    if parts.scheme in _SERVER_SCHEMES:
        if parts.scheme == "unix" and not parts.path:
            raise ConfigError(path, "a unix:// URL needs a socket path")
        if parts.scheme != "unix" and not parts.hostname:
            raise ConfigError(path, "needs a host, e.g. redis://redis:6379/0")
        return RedisTarget("server", url)
    if parts.scheme not in _MULTI_SCHEMES:
        raise ConfigError(path, _SCHEMES_HELP)
    kind, tls = _MULTI_SCHEMES[parts.scheme]
    if parts.query or parts.fragment:
        raise ConfigError(path, f"a {parts.scheme}:// URL takes no query or fragment")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    nodes = tuple(_node(spec, _DEFAULT_PORT[kind], path) for spec in hostlist.split(","))
    segments = [s for s in parts.path.split("/") if s]
    if kind == "cluster":
        # Redis Cluster has database 0 only (SELECT is refused), so any other is a mistake.
        if segments not in ([], ["0"]):
            raise ConfigError(path, "a Redis Cluster has only db 0: end the URL with / or /0")
        return RedisTarget(kind, url, nodes, tls, username, password)
    if not segments or len(segments) > 2:
        raise ConfigError(
            path, "a redis+sentinel:// URL ends with /<service name>[/<db>], e.g. /mymaster/0"
        )
    db = _db(segments[1], path) if len(segments) == 2 else 0
    return RedisTarget(kind, url, nodes, tls, username, password, unquote(segments[0]), db)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, sep, password = userinfo.partition(":")
    if not sep:  # "secret@host": redis-py's convention is that a lone part is the password
        return None, unquote(user)
    return unquote(user) or None, unquote(password)


def _node(spec: str, default_port: int, path: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(path, "a bracketed IPv6 host is written [addr]:port")
        port_text = rest[1:]
    else:
        host, _, port_text = spec.partition(":")
    if not host:
        raise ConfigError(path, "every node needs a host: host:port[,host:port...]")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(path, "a node's port must be a number from 1 to 65535")
    return host, int(port_text)


def _db(text: str, path: str) -> int:
    if not text.isdigit():
        raise ConfigError(path, "the db after the service name must be a number, e.g. /0")
    return int(text)


def shown_url(url: str) -> str:
    """`url` for a log line or a message: scheme, hosts and path, never the credentials.

    Total: a URL that does not parse is shown as ``<unparsable redis url>``.
    """
    try:
        target = parse_redis_url(url)
        parts = urlsplit(url)
        if target.kind == "server":
            return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or ''}{parts.path}"
    except (ConfigError, ValueError):
        return "<unparsable redis url>"
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in target.nodes)
    return f"{parts.scheme}://{hosts}{parts.path}"
