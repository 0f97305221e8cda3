"""The `kube-dlq` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from watcher import __version__, dlq
from watcher.config import Config, apply_env, load_config
from watcher.dlq import redis_client, sink_for
from watcher.errors import ConfigError, SinkError
from watcher.logs import configure, get_logger
from watcher.sink import RedisSink

DESCRIPTION = """\
kube-dlq notices every failed Kubernetes Job, says why it failed (node lost, OOM, eviction,
deadline, image pull, application error, ...), and either re-creates it later with backoff or
puts it on a dead-letter queue in Redis for people and programs to inspect and replay.
"""


def _add_dev(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser(
        "dev",
        help="a local Kubernetes control plane (etcd, apiserver, controllers, kwok nodes)",
        description=(
            "Run a real local control plane built from the Go module proxy: etcd, "
            "kube-apiserver, kube-controller-manager, kube-scheduler, and kwok standing in for "
            "kubelets. Binaries are built once into ~/.cache/kube-dlq (needs Go >= 1.26; "
            "KUBEBUILDER_ASSETS may supply etcd and kube-apiserver)."
        ),
    )
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    state_help = "cluster state folder (default: ~/.local/state/kube-dlq/dev-cluster)"
    up = dev_sub.add_parser("up", help="build if needed, start the cluster, print how to use it")
    up.add_argument("--state-dir", type=Path, help=state_help)
    up.add_argument("--nodes", type=int, default=2, help="kwok nodes to create (default 2)")
    dev_sub.add_parser(
        "build",
        help="build (once) or locate the control-plane binaries and print where they are",
        description="Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, "
        "kubectl and kwok from the Go module proxy into ~/.cache/kube-dlq (XDG_CACHE_HOME), "
        "unless cached. KUBEBUILDER_ASSETS may supply etcd and kube-apiserver.",
    )
    for name, text in (
        ("down", "stop every process `dev up` started (state and logs are kept)"),
        ("status", "show each component's process and the apiserver's readiness"),
        ("env", 'print shell exports (KUBECONFIG, PATH with kubectl): eval "$(kube-dlq dev env)"'),
    ):
        cmd = dev_sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--state-dir", type=Path, help=state_help)


CONFIG_HELP = "daemon config file (YAML; see config/kube-dlq.yaml). Default: $KUBE_DLQ_CONFIG"


def _add_config(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--config", "-c", type=Path, default=None, help=CONFIG_HELP)


def _add_product(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        help="inspect the dead-letter queues",
        description="Inspect what landed on the dead-letter queues.",
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    ls = dlq_sub.add_parser(
        "list",
        help="list dead letters, oldest first",
        description="List dead letters, oldest first, across queues.",
    )
    _add_config(ls)
    ls.add_argument("--queue", "-q", help="only this queue (default: every queue)")
    ls.add_argument("--limit", "-n", type=int, default=100, help="at most N entries (100)")
    ls.add_argument(
        "--output",
        "-o",
        choices=("table", "json"),
        default="table",
        help="table for people, json for scripts (stable keys)",
    )
    show = dlq_sub.add_parser(
        "show",
        help="print one dead letter, evidence included",
        description="Print one dead letter as JSON, evidence included.",
    )
    _add_config(show)
    show.add_argument("id", help="entry id as shown by `dlq list` (<queue>/<stream-id>)")
    demo = sub.add_parser(
        "demo",
        help="local control plane + redis + daemon + a failing demo workload",
        description="Start a local control plane and redis-server, run the daemon, submit a "
        "workload that fails in typical ways, and show what kube-dlq made of each failure.",
    )
    demo.add_argument("--state-dir", type=Path, help="keep the cluster state here")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="leave everything running after the demo (Ctrl-C to stop)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kube-dlq", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"kube-dlq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_product(sub)
    _add_dev(sub)
    return parser


def _load(path: Path | None) -> Config:
    """The config file (or $KUBE_DLQ_CONFIG) with environment overrides applied."""
    chosen = path or (
        Path(os.environ["KUBE_DLQ_CONFIG"]) if os.environ.get("KUBE_DLQ_CONFIG") else None
    )
    if chosen is None:
        raise ConfigError("", "no config file: pass --config FILE or set KUBE_DLQ_CONFIG")
    return apply_env(load_config(chosen), os.environ)


async def _with_redis(config: Config, action: Callable[[RedisSink], Awaitable[int]]) -> int:
    redis = redis_client(config)
    try:
        return await action(sink_for(config, redis))
    except SinkError as exc:
        print(f"kube-dlq: redis at {_safe_url(config.redis.url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}:{parts.port or ''}{parts.path}"


def _run_product(args: argparse.Namespace) -> int:
    if args.command == "check-config":
        config = apply_env(load_config(args.file), os.environ)
        print(
            f"{args.file}: ok (cluster {config.cluster_name}, redis "
            f"{_safe_url(config.redis.url)}, default queue {config.dead_letter.default_queue})"
        )
        return 0
    if args.command == "demo":
        from watcher import demo

        return demo.main(args.state_dir, args.keep)
    config = _load(args.config)
    configure(config.log.level, config.log.format)
    if args.command == "run":
        from watcher.app import run_daemon

        return asyncio.run(run_daemon(config))
    if args.command == "sweep":
        return asyncio.run(_sweep(config))
    if args.dlq_command == "list":
        return asyncio.run(
            _with_redis(
                config,
                lambda sink: dlq.list_entries(
                    sink, queue=args.queue, count=args.limit, output=args.output, out=sys.stdout
                ),
            )
        )
    return asyncio.run(
        _with_redis(
            config, lambda sink: dlq.show_entry(sink, args.id, out=sys.stdout, err=sys.stderr)
        )
    )


async def _sweep(config: Config) -> int:
    from watcher.kubeapi import api_client
    from watcher.metrics import Metrics
    from watcher.sweep import sweep

    api = await api_client(config.kubernetes.kubeconfig, config.kubernetes.context)
    redis = redis_client(config)
    try:
        async with api:
            result = await sweep(config, api, redis, metrics=Metrics(), logger=get_logger())
    finally:
        await redis.aclose()
    return 0 if result.unwritten == 0 else 1


def _run_dev(args: argparse.Namespace) -> int:
    from watcher.devcluster import commands

    if args.dev_command == "build":
        return commands.build()
    if args.dev_command == "up":
        return commands.up(args.state_dir, args.nodes)
    if args.dev_command == "down":
        return commands.down(args.state_dir)
    if args.dev_command == "status":
        return commands.status(args.state_dir)
    return commands.env(args.state_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        return _run_dev(args)
    try:
        return _run_product(args)
    except ConfigError as exc:
        print(f"kube-dlq: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
