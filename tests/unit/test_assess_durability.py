"""`assess_durability`: INFO and CONFIG GET answers into what is missing, rule by rule.

The common server setups are checked against real redis-servers in
tests/integration/test_durability.py; these are the states a test server is not easily put in
(a failed AOF write or snapshot) and the edges of each rule.
"""

from __future__ import annotations

from typing import Any

from watcher.adapters.redis.durability import assess_durability

AOF: dict[str, Any] = {
    "run_id": "r1",
    "aof_enabled": 1,
    "aof_last_write_status": "ok",
    "rdb_last_bgsave_status": "ok",
    "role": "master",
    "connected_slaves": 0,
}
CONFIG = {"save": "", "appendfsync": "everysec", "min-replicas-to-write": "0"}


def test_aof_fsynced_every_second_on_a_lone_primary_is_durable() -> None:
    found = assess_durability(AOF, CONFIG)
    assert found.durable and found.run_id == "r1" and found.unchecked == ()
    assert assess_durability(AOF, {**CONFIG, "appendfsync": "always"}).durable


def test_a_failed_aof_write_is_missing_durability() -> None:
    found = assess_durability({**AOF, "aof_last_write_status": "err"}, CONFIG)
    assert found.missing == ("the last AOF write failed (aof_last_write_status err)",)


def test_a_failed_snapshot_matters_only_without_aof() -> None:
    failed = {"rdb_last_bgsave_status": "err"}
    assert assess_durability({**AOF, **failed}, CONFIG).durable
    found = assess_durability({**AOF, **failed, "aof_enabled": 0}, {**CONFIG, "save": "60 1"})
    assert found.missing[1] == "the last RDB snapshot failed (rdb_last_bgsave_status err)"


def test_replicas_need_min_replicas_to_write() -> None:
    two = {**AOF, "connected_slaves": 2}
    assert assess_durability(two, CONFIG).missing[0].startswith("2 replica(s) but")
    assert assess_durability(two, {**CONFIG, "min-replicas-to-write": "1"}).durable


def test_config_refused_leaves_only_info_and_names_what_was_not_read() -> None:
    # AOF on and replicas attached: appendfsync and the guard unknown, so not counted missing
    found = assess_durability({**AOF, "connected_slaves": 1}, None)
    assert found.durable
    assert found.unchecked == ("appendfsync", "min-replicas-to-write")


def test_a_replica_is_not_where_outcomes_are_written() -> None:
    found = assess_durability({**AOF, "role": "slave"}, CONFIG)
    assert [m.split(":")[0] for m in found.missing] == ["role slave"]


def test_info_without_the_fields_reads_as_no_persistence() -> None:
    # (an INFO that says nothing about persistence proves nothing either)
    found = assess_durability({}, None)
    assert not found.durable and found.run_id == ""
