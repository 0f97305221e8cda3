"""`kube-dlq dlq consume` and `kube-dlq dlq list --parked GROUP` (docs/consume.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.consumer import ParkedEntry, ParkedList, StreamConsumer, check_group
from watcher.app.sealing import build_seal
from watcher.cli import dlq
from watcher.core.errors import ConfigError, SinkError
from watcher.core.model import DeadLetter
from watcher.core.redis_url import shown_url
from watcher.core.settings import Settings
from watcher.kit.consume_metrics import ConsumeMetrics
from watcher.kit.logs import get_logger
from watcher.service.command import CommandRunner
from watcher.service.consume import ConsumeLoop, ConsumeSettings

__all__ = ["add_parser", "list_parked", "run_consume", "with_parked"]

EPILOG = """\
examples:
  # post every new dead letter of queue "batch" to Slack, 5 tries each
  kube-dlq dlq consume --group slack --queue batch --max-attempts 5 -- \\
      python3 deploy/consume/handler.py

  # any command works: the entry is JSON on stdin, its id in $KUBE_DLQ_ENTRY_ID
  kube-dlq dlq consume --group audit -- sh -c 'jq -c . >> /var/log/dead-letters.jsonl'

  # what a group gave up on
  kube-dlq dlq list --parked slack

The handler gets KUBE_DLQ_ENTRY_ID, KUBE_DLQ_QUEUE, KUBE_DLQ_CLASS, KUBE_DLQ_NAMESPACE,
KUBE_DLQ_JOB, KUBE_DLQ_GROUP and KUBE_DLQ_ATTEMPT. Exit 0 acks the entry; anything else is
retried with backoff, then parked. At least once: a consumer killed between the handler's exit
and the ack runs the entry again, so make the handler idempotent on KUBE_DLQ_ENTRY_ID.
SIGTERM/SIGINT: the running handler may finish (--grace), then gets SIGTERM; exit 0.
"""


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def add_parser(
    dlq_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config: Callable[[argparse.ArgumentParser], None],
) -> None:
    cmd = dlq_sub.add_parser(
        "consume",
        help="run a command for each dead letter, as a Redis consumer group",
        description="Read dead letters with a Redis consumer group and run COMMAND once per\n"
        "entry, the entry as JSON on stdin (as `dlq show` prints it; inline env values\n"
        "hidden unless --reveal). Runs until SIGTERM or SIGINT. docs/consume.md has more.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config(cmd)
    cmd.add_argument(
        "--group", "-g", required=True, help="consumer group: each group sees every entry once"
    )
    cmd.add_argument("--queue", "-q", help="only this queue (default: every queue)")
    cmd.add_argument("--consumer", help="this consumer's name in the group (default: host-pid)")
    cmd.add_argument(
        "--max-attempts", type=_positive, default=3, help="runs per entry before it is parked (3)"
    )
    cmd.add_argument(
        "--handler-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="a run longer than this fails (default: none)",
    )
    cmd.add_argument(
        "--backoff",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="first pause between runs, doubled each time (1)",
    )
    cmd.add_argument(
        "--backoff-cap",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="longest pause between runs (60)",
    )
    cmd.add_argument(
        "--claim-idle",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="take over entries another consumer left pending this long (60)",
    )
    cmd.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="at shutdown, how long the running handler may go on before SIGTERM (30)",
    )
    cmd.add_argument(
        "--park-max",
        type=_positive,
        default=10_000,
        help="parked records kept per group, oldest dropped first (10000)",
    )
    cmd.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus /metrics on this port (default: off)",
    )
    cmd.add_argument(
        "--metrics-address",
        default="0.0.0.0",  # a pod's port is reached from outside it
        metavar="ADDRESS",
        help="address /metrics listens on (0.0.0.0)",
    )
    cmd.add_argument(
        "--reveal",
        action="store_true",
        help="pass inline env values of the manifest to the handler (hidden by default)",
    )
    cmd.add_argument(
        "handler", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS", help="the handler"
    )


def default_consumer() -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:50] or "consumer"
    return f"{name}-{os.getpid()}"


def _handler(args: argparse.Namespace) -> list[str]:
    argv = list(args.handler)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise ConfigError("COMMAND", "missing: give the handler after `--`")
    if shutil.which(argv[0]) is None:
        raise ConfigError("COMMAND", f"{argv[0]!r} is not an executable on PATH")
    return argv


def run_consume(config: Settings, args: argparse.Namespace) -> int:
    try:
        group = check_group(args.group)
        consumer = check_group(args.consumer or default_consumer(), "name")
    except ValueError as exc:
        raise ConfigError("--group" if "group" in str(exc) else "--consumer", str(exc)) from None
    argv = _handler(args)
    seal = build_seal(config.security)  # before connecting: a ConfigError exits 2
    reveal: bool = args.reveal

    def render(entry_id: str, letter: DeadLetter) -> bytes:
        return json.dumps(dlq.full(entry_id, letter, reveal=reveal), default=str).encode() + b"\n"

    def warn(line: str) -> None:
        sys.stderr.write(_one_line(line))
        sys.stderr.flush()

    settings = ConsumeSettings(
        group=group,
        max_attempts=args.max_attempts,
        handler_timeout_s=args.handler_timeout,
        backoff_base_s=args.backoff,
        backoff_cap_s=max(args.backoff, args.backoff_cap),
        claim_idle_s=args.claim_idle,
        # A blocking read must end well inside the socket timeout, or it reads as an outage.
        block_s=min(1.0, config.redis.socket_timeout_s / 2),
    )

    metrics = ConsumeMetrics(group)
    if args.metrics_port is not None:
        try:
            metrics.serve(args.metrics_port, args.metrics_address)
        except OSError as exc:
            raise ConfigError("--metrics-port", f"cannot listen: {exc}") from None

    async def consume() -> int:
        redis = redis_client(config.redis)
        store = StreamConsumer(
            redis,
            config.redis,
            cluster_name=config.cluster_name,
            seal=seal,
            group=group,
            consumer=consumer,
            queue=args.queue,
            claim_idle_s=args.claim_idle,
            park_max=args.park_max,
        )
        logger = get_logger(command="dlq consume", group=group, consumer=consumer)
        loop = ConsumeLoop(
            store=store,
            runner=CommandRunner(argv, grace_s=args.grace),
            settings=settings,
            render=render,
            warn=warn,
            logger=logger,
            metrics=metrics,
        )
        running = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(sig, loop.stop.set)
        logger.info("consume_started", queue=args.queue or "*", handler=argv[0])
        try:
            await loop.run()
        finally:
            await redis.aclose()
        return 0

    return asyncio.run(consume())


async def with_parked(
    config: Settings, args: argparse.Namespace, *, out: TextIO, err: TextIO
) -> int:
    """`dlq list --parked GROUP`: the group's parked list, oldest first."""
    seal = build_seal(config.security)
    redis = redis_client(config.redis)
    try:
        parked = ParkedList(redis, config.redis, cluster_name=config.cluster_name, seal=seal)
        return await list_parked(
            parked, args.parked, count=args.limit, output=args.output, out=out, err=err
        )
    except SinkError as exc:
        err.write(_one_line(f"kube-dlq: redis at {shown_url(config.redis.url)}: {exc}"))
        return 1
    finally:
        await redis.aclose()


async def list_parked(
    parked: ParkedList, group: str, *, count: int, output: str, out: TextIO, err: TextIO
) -> int:
    try:
        entries = await parked.entries(group, count=count)
    except ValueError as exc:
        err.write(_one_line(f"kube-dlq dlq list --parked: {exc}"))
        return 2
    rows = [_row(entry) for entry in entries]
    if output == "json":
        json.dump(rows, out, indent=2)
        out.write("\n")
    elif not rows:
        out.write(f"nothing parked by group {group}\n")
    else:
        out.write(f"{'ID':<30}  {'TRIES':<5}  {'PARKED AT':<20}  {'JOB':<40}  REASON\n")
        for row in rows:
            # Every cell is stored text: one line each, so a record cannot forge table rows.
            job = _cell(f"{row['namespace']}/{row['job']}" if row["job"] else "-")
            out.write(
                f"{_cell(row['id']):<30}  {row['attempts']:<5}  {row['parked_at']:<20}  "
                f"{job:<40}  {_cell(row['reason'])}".rstrip()
                + "\n"
            )
    for entry in entries:
        if entry.problem and entry.letter is None:
            err.write(_one_line(f"warning: parked entry {entry.entry_id}: {entry.problem}"))
    return 0


def _row(entry: ParkedEntry) -> dict[str, Any]:
    letter = entry.letter
    return {
        "id": entry.entry_id,
        "queue": entry.queue,
        "attempts": entry.attempts,
        "reason": entry.reason,
        "parked_at": _iso(entry.parked_at),
        "namespace": letter.job.namespace if letter else None,
        "job": letter.job.name if letter else None,
        "failure_class": letter.failure_class.value if letter else None,
        "problem": entry.problem if letter is None else None,
    }


def _iso(ts: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):
        return f"{ts:g}"


def _cell(text: str) -> str:
    return _one_line(text).rstrip("\n")


def _one_line(text: str, limit: int = 500) -> str:
    """`text` as one line: a stored reason or error can quote stored bytes."""
    line = " ".join(text.split())
    return (line if len(line) <= limit else line[: limit - 1] + "…") + "\n"
