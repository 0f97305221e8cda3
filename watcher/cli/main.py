"""The `kube-dlq` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TypeAlias

from watcher import __version__
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.app.config import apply_env, load_config
from watcher.app.sealing import build_seal
from watcher.cli import consume, dlq_args
from watcher.core.errors import ConfigError, SinkError
from watcher.core.redis_url import shown_url
from watcher.core.settings import Settings
from watcher.kit.logs import configure

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DESCRIPTION = """\
kube-dlq notices every failed Kubernetes Job, says why it failed (node lost, OOM, eviction,
deadline, image pull, application error, ...), and either re-creates it later with backoff or
puts it on a dead-letter queue in Redis for people and programs to inspect and replay.
"""


CONFIG_HELP = "daemon config file (YAML; see config/kube-dlq.yaml). Default: $KUBE_DLQ_CONFIG"


def _add_config(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--config", "-c", type=Path, default=None, help=CONFIG_HELP)


def _add_product(sub: Subparsers) -> None:
    run = sub.add_parser(
        "run",
        help="run the daemon: watch, classify, retry or dead-letter (until SIGTERM)",
        description="Watch Jobs, their pods, Events and Nodes; classify every failed Job; "
        "re-create it later with backoff or write it to a dead-letter queue in Redis, exactly "
        "once. Serves /healthz, /readyz and /metrics. SIGTERM stops it gracefully (exit 0).",
    )
    _add_config(run)
    sweep = sub.add_parser(
        "sweep",
        help="one pass: handle every failed or stuck Job not handled yet, then exit",
        description="List failed and stuck Jobs in scope and write a dead letter or retry "
        "ticket for each one that has none yet (same exactly-once guarantee as the daemon). "
        "Exit 0 when everything found was written, 1 otherwise. Suited to a CronJob.",
    )
    _add_config(sweep)
    check = sub.add_parser(
        "check-config",
        help="validate a config file and print the effective settings",
        description="Load the file, apply environment overrides (KUBE_DLQ_REDIS_URL, "
        "KUBECONFIG, KUBE_DLQ_LOG_LEVEL) and report the first bad field by its path.",
    )
    check.add_argument("file", type=Path)
    dlq = sub.add_parser(
        "dlq",
        help="work the dead-letter queues: list, show, stats, export, purge",
        description="Work the dead-letter queues: list and filter, show one, stats, export, "
        "purge (docs/cli.md).",
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    dlq_args.add_verbs(dlq_sub, _add_config)
    consume.add_parser(dlq_sub, _add_config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kube-dlq", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"kube-dlq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_product(sub)
    for add_commands in _plugins():
        add_commands(sub)
    return parser


def _plugins() -> list[Callable[[Subparsers], None]]:
    """Commands other distributions register (``kube_dlq.commands`` entry points).

    The development tools add `dev` and `demo` this way; the product imports none of them.
    """
    found = entry_points(group="kube_dlq.commands")
    return [point.load() for point in sorted(found, key=lambda p: p.name)]


def _load(path: Path | None) -> Settings:
    """The config file (or $KUBE_DLQ_CONFIG) with environment overrides applied."""
    chosen = path or (
        Path(os.environ["KUBE_DLQ_CONFIG"]) if os.environ.get("KUBE_DLQ_CONFIG") else None
    )
    if chosen is None:
        raise ConfigError("", "no config file: pass --config FILE or set KUBE_DLQ_CONFIG")
    return apply_env(load_config(chosen), os.environ)


async def _with_redis(
    config: Settings, action: Callable[[DeadLetterQueries], Awaitable[int]]
) -> int:
    seal = build_seal(config.security)  # before connecting: a ConfigError exits 2
    redis = redis_client(config.redis)
    try:
        return await action(
            DeadLetterQueries(redis, config.redis, cluster_name=config.cluster_name, seal=seal)
        )
    except SinkError as exc:
        print(f"kube-dlq: redis at {shown_url(config.redis.url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()


def _run_product(args: argparse.Namespace) -> int:
    if args.command == "check-config":
        config = apply_env(load_config(args.file), os.environ)
        print(
            f"{args.file}: ok (cluster {config.cluster_name}, redis "
            f"{shown_url(config.redis.url)}, default queue {config.dead_letter.default_queue})"
        )
        return 0
    config = _load(args.config)
    configure(config.log)
    if args.command == "run":
        from watcher.app.daemon import run_daemon

        return asyncio.run(run_daemon(config))
    if args.command == "sweep":
        from watcher.app.sweep import run_sweep

        return asyncio.run(run_sweep(config))
    if args.dlq_command == "consume":
        return consume.run_consume(config, args)
    if args.dlq_command == "list" and args.parked:
        return asyncio.run(consume.with_parked(config, args, out=sys.stdout, err=sys.stderr))
    if args.dlq_command in dlq_args.VERBS:
        return dlq_args.run_verb(args, config, _with_redis)
    raise AssertionError(f"unknown dlq command {args.dlq_command!r}")  # argparse refuses it


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plugin: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if plugin is not None:
        return plugin(args)
    try:
        return _run_product(args)
    except ConfigError as exc:
        print(f"kube-dlq: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
