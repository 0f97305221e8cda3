"""Whether a Redis keeps what it acknowledged: its persistence and replication, judged from
INFO and CONFIG GET (pure; `RedisStore.durability` reads them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Durability", "assess_durability", "weakest"]


@dataclass(frozen=True, slots=True)
class Durability:
    """Whether Redis keeps an outcome it acknowledged across a restart or a failover."""

    run_id: str
    """INFO run_id: a new one means the server restarted (and, if it was not durable, that
    outcomes acknowledged before may be gone)."""
    missing: tuple[str, ...] = ()
    """Why acknowledged outcomes can be lost, one phrase each; empty when they are durable."""
    unchecked: tuple[str, ...] = ()
    """Settings that could not be read (CONFIG refused: renamed away, or denied by an ACL, as
    on managed Redis), so the check could not use them."""

    @property
    def durable(self) -> bool:
        return not self.missing


def assess_durability(info: Mapping[str, Any], config: Mapping[str, str] | None) -> Durability:
    """What `info` (INFO's default sections) and `config` (CONFIG GET of DURABILITY_CONFIG,
    or None when refused) say about durability.

    Durable means: the append-only file is on, fsynced at least every second, its last write
    succeeded, and this is the primary; and when it has replicas, min-replicas-to-write >= 1,
    so it refuses writes rather than acknowledging them with no replica attached. RDB
    snapshots alone are not durable: a restart loses everything written since the last one.
    """
    missing: list[str] = []
    unchecked: list[str] = []

    def setting(name: str) -> str | None:
        if config is None or name not in config:
            unchecked.append(name)
            return None
        return config[name]

    if _int(info.get("aof_enabled")) != 1:
        save = setting("save")
        if save == "":
            missing.append('no persistence (appendonly no, save ""): a restart loses every outcome')
        else:
            snapshots = "RDB snapshots" if save is None else f"RDB snapshots (save {save})"
            missing.append(
                f"appendonly no: at most {snapshots}; a restart loses every outcome written "
                "since the last one"
            )
        if str(info.get("rdb_last_bgsave_status", "ok")) != "ok":
            missing.append("the last RDB snapshot failed (rdb_last_bgsave_status err)")
    else:
        if setting("appendfsync") == "no":
            missing.append(
                "appendfsync no: the OS decides when the AOF reaches the disk; a host crash "
                "loses what it had not written (often ~30 s)"
            )
        if str(info.get("aof_last_write_status", "ok")) != "ok":
            missing.append("the last AOF write failed (aof_last_write_status err)")
    role = str(info.get("role", "master"))
    if role != "master":
        missing.append(f"role {role}: this is a replica, not the primary outcomes are written to")
    elif (replicas := _int(info.get("connected_slaves"))) > 0:
        guard = setting("min-replicas-to-write")
        if guard is not None and _int(guard) < 1:
            missing.append(
                f"{replicas} replica(s) but min-replicas-to-write 0: a failover can promote a "
                "replica without the latest acknowledged outcomes"
            )
    return Durability(str(info.get("run_id", "")), tuple(missing), tuple(unchecked))


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def weakest(per_node: Mapping[str, Durability]) -> Durability:
    """One verdict for several primaries (a Redis Cluster): durable only if every one is.

    Each reason keeps the node it is about (``"<host:port>: <reason>"``), so the log and the
    /readyz detail name the weak node; the run ids of all of them are joined, so a restart of
    any one is seen as a restart.
    """
    missing = tuple(f"{name}: {why}" for name, d in sorted(per_node.items()) for why in d.missing)
    unchecked = tuple(sorted({name for d in per_node.values() for name in d.unchecked}))
    run_id = ",".join(f"{name}={d.run_id}" for name, d in sorted(per_node.items()))
    return Durability(run_id, missing, unchecked)
