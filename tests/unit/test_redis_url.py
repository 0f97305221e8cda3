"""`redis.url` forms: one server, a Redis Cluster, a Sentinel-managed primary; and the client
each one gets (built, not connected: nothing here talks to a server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.durability import Durability, weakest
from watcher.cli.main import main
from watcher.core.errors import ConfigError
from watcher.core.redis_url import RedisTarget, parse_redis_url, shown_url
from watcher.core.settings import RedisSettings

GOOD = [
    pytest.param("redis://redis:6379/0", RedisTarget("server", "redis://redis:6379/0"), id="one"),
    pytest.param("unix:///run/r.sock", RedisTarget("server", "unix:///run/r.sock"), id="unix"),
    pytest.param(
        "redis+cluster://a:7000,b:7001/",
        RedisTarget("cluster", "redis+cluster://a:7000,b:7001/", (("a", 7000), ("b", 7001))),
        id="cluster",
    ),
    pytest.param(
        "rediss+cluster://u:p%40ss@a/0",
        RedisTarget("cluster", "rediss+cluster://u:p%40ss@a/0", (("a", 6379),), True, "u", "p@ss"),
        id="cluster-tls-auth-default-port-db0",
    ),
    pytest.param(
        "redis+cluster://[::1]:7000,[fd00::2]",
        RedisTarget(
            "cluster", "redis+cluster://[::1]:7000,[fd00::2]", (("::1", 7000), ("fd00::2", 6379))
        ),
        id="cluster-ipv6",
    ),
    pytest.param(
        "redis+sentinel://s1:26379,s2/mymaster",
        RedisTarget(
            "sentinel",
            "redis+sentinel://s1:26379,s2/mymaster",
            (("s1", 26379), ("s2", 26379)),
            service="mymaster",
        ),
        id="sentinel-default-port-db0",
    ),
    pytest.param(
        "rediss+sentinel://:secret@s1/mymaster/3",
        RedisTarget(
            "sentinel",
            "rediss+sentinel://:secret@s1/mymaster/3",
            (("s1", 26379),),
            True,
            None,
            "secret",
            "mymaster",
            3,
        ),
        id="sentinel-tls-password-db",
    ),
]


@pytest.mark.parametrize(("url", "expected"), GOOD)
def test_parse_redis_url_accepts(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected


BAD = [
    pytest.param("http://u:pw@redis:6379", "must be a redis://, rediss://", id="scheme"),
    pytest.param("redis://", "needs a host", id="no-host"),
    pytest.param("redis+cluster://a:7000/1", "only db 0", id="cluster-db"),
    pytest.param("redis+cluster://a:7000,/", "every node needs a host", id="cluster-empty-node"),
    pytest.param("redis+cluster://a:70000/", "port must be a number", id="port-range"),
    pytest.param("redis+cluster://a:x/", "port must be a number", id="port-text"),
    pytest.param("redis+cluster://[::1/", "not a valid URL", id="ipv6-unclosed"),
    pytest.param("redis+cluster://a/?ssl=1", "takes no query", id="cluster-query"),
    pytest.param("redis+sentinel://s1:26379/", "ends with /<service name>", id="no-service"),
    pytest.param("redis+sentinel://s1/m/x", "must be a number", id="sentinel-db-text"),
    pytest.param("redis+sentinel://s1/m/0/1", "ends with /<service name>", id="sentinel-extra"),
]


@pytest.mark.parametrize(("url", "message"), BAD)
def test_parse_redis_url_rejects_with_one_line_naming_the_setting(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_redis_url(f"{url}".replace("u:pw", "u:s3cret"), "redis.url")
    shown = str(caught.value)
    assert shown.startswith("redis.url: ")
    assert message in shown
    assert "\n" not in shown
    assert "s3cret" not in shown


def test_a_cluster_url_gets_the_cluster_client_with_the_same_timeouts() -> None:
    client = redis_client(
        RedisSettings(url="redis+cluster://127.0.0.1:7000,127.0.0.1:7001/", socket_timeout_s=1.5)
    )
    assert isinstance(client, RedisCluster)
    kwargs = client.get_connection_kwargs()
    assert kwargs["socket_timeout"] == 1.5
    assert kwargs["socket_connect_timeout"] == 1.5
    assert not kwargs.get("decode_responses")
    assert [(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()] == [
        ("127.0.0.1", 7000),
        ("127.0.0.1", 7001),
    ]


async def test_a_sentinel_url_gets_a_client_of_the_named_primary() -> None:
    client = redis_client(
        RedisSettings(url="redis+sentinel://:pw@127.0.0.1:26380/orders/2", socket_timeout_s=1.5)
    )
    try:
        assert isinstance(client, Redis)
        pool = client.connection_pool
        assert getattr(pool, "service_name", None) == "orders"
        assert pool.connection_kwargs["db"] == 2
        assert pool.connection_kwargs["password"] == "pw"
        assert pool.connection_kwargs["socket_timeout"] == 1.5
    finally:
        await client.aclose()


def test_weakest_names_each_weak_primary_and_joins_run_ids() -> None:
    verdict = weakest(
        {
            "10.0.0.2:6379": Durability("b", ("appendonly no",)),
            "10.0.0.1:6379": Durability("a", (), ("save",)),
        }
    )
    assert not verdict.durable
    assert verdict.missing == ("10.0.0.2:6379: appendonly no",)
    assert verdict.unchecked == ("save",)
    assert verdict.run_id == "10.0.0.1:6379=a,10.0.0.2:6379=b"
    assert weakest({"a:1": Durability("x"), "b:2": Durability("y")}).durable


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://redis:6379/0"),
        ("redis+cluster://u:s3cret@a:7000,[::1]:7001/", "redis+cluster://a:7000,[::1]:7001/"),
        ("rediss+sentinel://:s3cret@s1/orders/2", "rediss+sentinel://s1:26379/orders/2"),
        ("redis+cluster://s3cret@a:99999/", "<unparsable redis url>"),
    ],
)
def test_shown_url_never_carries_the_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_check_config_prints_a_cluster_url_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A multi-host URL has no single port: urlsplit(url).port raised ValueError here before
    monkeypatch.delenv("KUBE_DLQ_REDIS_URL", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text("cluster_name: prod\nredis:\n  url: redis+cluster://:pw@a:7000,b:7001/\n")

    assert main(["check-config", str(config)]) == 0

    out = capsys.readouterr().out
    assert "redis redis+cluster://a:7000,b:7001/," in out
    assert "pw" not in out
