"""The `kube-dlq dlq` verbs' flags, help texts (with examples) and dispatch.

Every error a user can cause (a bad flag value, an id that is not there, a refused purge)
is one line on stderr and a non-zero exit: 2 for bad input or a refusal, 1 for "not found"
or a Redis failure, as elsewhere in the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeAlias

from watcher.adapters.redis.purge import DeadLetterPurger
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.cli import dlq, dlq_list, dlq_purge, dlq_redrive
from watcher.core.dlq_filter import Cursor, DeadLetterFilter, parse_cursor
from watcher.core.settings import Settings

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
WithRedis = Callable[
    [Settings, Callable[[DeadLetterQueries], Awaitable[int]]], Coroutine[Any, Any, int]
]

__all__ = ["VERBS", "add_verbs", "run_verb"]

VERBS = frozenset({"list", "show", "stats", "export", "purge", "redrive"})

_C = "-c config.yaml"

LIST_EXAMPLES = f"""\
examples:
  kube-dlq dlq list {_C}                                  # oldest first, 100 at most
  kube-dlq dlq list {_C} --class oom_killed --newer-than 1d
  kube-dlq dlq list {_C} --namespace etl --queue batch -o jsonl
  kube-dlq dlq list {_C} --owner CronJob/nightly --older-than 2h
  kube-dlq dlq list {_C} --limit 500 --after batch/1795827114648-0   # the next page
  kube-dlq dlq list {_C} --class image_pull --watch      # new entries as they land
  kube-dlq dlq list {_C} --archived                      # redriven, and succeeded
"""

SHOW_EXAMPLES = f"""\
examples:
  kube-dlq dlq show {_C} batch/1795827114648-0          # a summary for people
  kube-dlq dlq show {_C} 1795827114648-0 -o json        # everything (any queue)
  kube-dlq dlq show {_C} batch/1795827114648-0 -o json --reveal | jq .manifest
"""

STATS_EXAMPLES = f"""\
examples:
  kube-dlq dlq stats {_C}
  kube-dlq dlq stats {_C} --queue batch -o json
"""

EXPORT_EXAMPLES = f"""\
examples:
  kube-dlq dlq export {_C} --format jsonl > dlq-$(date +%F).jsonl
  kube-dlq dlq export {_C} --namespace etl --older-than 7d | gzip > etl-old.jsonl.gz
"""

PURGE_EXAMPLES = f"""\
examples:
  kube-dlq dlq purge {_C} batch/1795827114648-0 batch/1795827114650-0
  kube-dlq dlq purge {_C} --older-than 14d --dry-run
  kube-dlq dlq purge {_C} --class image_pull --namespace etl --yes
  kube-dlq dlq purge {_C} --all --yes                   # every queue, everything
"""


def _verb(
    sub: Subparsers, name: str, help_: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_filters(cmd: argparse.ArgumentParser) -> None:
    f = cmd.add_argument_group("filters (all given must match)")
    f.add_argument("--queue", "-q", help="only this queue (default: every queue)")
    f.add_argument(
        "--class", dest="failure_class", metavar="CLASS", help="failure class, e.g. oom_killed"
    )
    f.add_argument("--namespace", "-N", help="the Job's namespace")
    f.add_argument("--job", metavar="TEXT", help="the Job's name contains TEXT")
    f.add_argument("--owner", metavar="KIND/NAME", help="owned by, e.g. CronJob/nightly")
    f.add_argument("--older-than", metavar="AGE", help="written longer ago than AGE (2h, 3d)")
    f.add_argument("--newer-than", metavar="AGE", help="written within the last AGE")


def add_verbs(dlq_sub: Subparsers, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    ls = _verb(
        dlq_sub,
        "list",
        "list dead letters, oldest first, with filters and paging",
        "List dead letters, oldest first, across queues. --class and --namespace read small "
        "indexes, not the whole queue; a page cut at --limit names its --after on stderr.",
        LIST_EXAMPLES,
    )
    add_config(ls)
    _add_filters(ls)
    ls.add_argument("--limit", "-n", type=int, default=100, help="at most N entries (100)")
    ls.add_argument("--after", metavar="ID", help="start after this entry id (the next page)")
    ls.add_argument("--parked", metavar="GROUP", help="what `dlq consume --group GROUP` parked")
    ls.add_argument(
        "--archived",
        action="store_true",
        help="entries whose redriven Job succeeded (newest first)",
    )
    ls.add_argument(
        "--output",
        "-o",
        choices=dlq_list.OUTPUTS,
        default="table",
        help="table for people; json, jsonl or yaml for scripts (stable keys)",
    )
    ls.add_argument(
        "--watch",
        "-w",
        action="store_true",
        help="print only entries written from now on, as they land (Ctrl-C ends, exit 0)",
    )

    show = _verb(
        dlq_sub,
        "show",
        "print one dead letter: class, reason, evidence, history",
        "Print one dead letter: a summary for people, or -o json for everything stored.",
        SHOW_EXAMPLES,
    )
    add_config(show)
    show.add_argument("id", help="entry id as shown by `dlq list` (<queue>/<stream-id>)")
    show.add_argument(
        "--output", "-o", choices=("text", "json"), default="text", help="text (default) or json"
    )
    show.add_argument(
        "--reveal",
        action="store_true",
        help="print inline env values of the manifest (hidden by default: they may be secrets)",
    )

    stats = _verb(
        dlq_sub,
        "stats",
        "depth, oldest age and last-hour inflow by queue, class and namespace",
        "Depth, age of the oldest entry and entries written in the last hour, by queue, by "
        "failure class and by namespace (read from the indexes: no scan).",
        STATS_EXAMPLES,
    )
    add_config(stats)
    stats.add_argument("--queue", "-q", help="only this queue")
    stats.add_argument("--output", "-o", choices=("table", "json"), default="table")

    export = _verb(
        dlq_sub,
        "export",
        "write entries as JSON lines, for archiving",
        "Write every matching entry, everything stored, one JSON object a line, to stdout; "
        "progress and the final count on stderr. Inline env values are hidden unless --reveal.",
        EXPORT_EXAMPLES,
    )
    add_config(export)
    _add_filters(export)
    export.add_argument(
        "--format", choices=("jsonl",), default="jsonl", help="jsonl (the only one)"
    )
    export.add_argument("--reveal", action="store_true", help="include inline env values")

    purge = _verb(
        dlq_sub,
        "purge",
        "delete dead letters by id or filter (asks first)",
        "Delete dead letters, each from its queue and its indexes in one step. Asks before "
        "deleting unless --yes; without a terminal, --yes is required. One audit log line per "
        "run. Refused when the config sets dead_letter.read_only.",
        PURGE_EXAMPLES,
    )
    add_config(purge)
    purge.add_argument("ids", nargs="*", metavar="ID", help="entry ids (<queue>/<stream-id>)")
    _add_filters(purge)
    purge.add_argument(
        "--all", dest="everything", action="store_true", help="every entry of every queue"
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="print what would be purged, purge nothing"
    )
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask")

    redrive = _verb(
        dlq_sub,
        "redrive",
        "re-create dead-lettered Jobs, exactly once each",
        "Re-create the Jobs of dead letters from their stored manifests. Each entry leaves its "
        "queue in one atomic step before its Job is created; a run killed halfway is finished "
        "by the next one, and nothing is created twice. Refused when the config sets "
        "dead_letter.read_only (docs/redrive.md).",
        dlq_redrive.EXAMPLES,
    )
    add_config(redrive)
    _add_filters(redrive)
    dlq_redrive.add_arguments(redrive)


class UsageError(Exception):
    """Bad input: one line, exit 2."""


def _filter(args: argparse.Namespace) -> DeadLetterFilter:
    try:
        return DeadLetterFilter.parse(
            queue=args.queue,
            failure_class=getattr(args, "failure_class", None),
            namespace=getattr(args, "namespace", None),
            job=getattr(args, "job", None),
            owner=getattr(args, "owner", None),
            older_than=getattr(args, "older_than", None),
            newer_than=getattr(args, "newer_than", None),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run_verb(args: argparse.Namespace, config: Settings, with_redis: WithRedis) -> int:
    verb = args.dlq_command
    try:
        action = _action(args, config)
    except UsageError as exc:
        print(f"kube-dlq dlq {verb}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(with_redis(config, action))
    except KeyboardInterrupt:
        # Ctrl-C is how --watch (and a long export) ends: a clean exit for --watch.
        return 0 if getattr(args, "watch", False) else 130


def _action(
    args: argparse.Namespace, config: Settings
) -> Callable[[DeadLetterQueries], Awaitable[int]]:
    out, err = sys.stdout, sys.stderr
    verb = args.dlq_command
    if verb == "show":
        return lambda q: dlq.show_entry(
            q, args.id, out=out, err=err, reveal=args.reveal, output=args.output
        )
    if verb == "stats":
        queue = _filter(args).queue
        return lambda q: dlq_list.show_stats(q, queue=queue, output=args.output, out=out)
    flt = _filter(args)
    if verb == "export":
        return lambda q: dlq_list.export_entries(q, flt, reveal=args.reveal, out=out, err=err)
    if verb == "purge":
        return _purge_action(args, config, flt)
    if verb == "redrive":
        return _redrive_action(args, config, flt)
    if args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    after: Cursor | None = None
    if args.after:
        try:
            after = parse_cursor(args.after)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.archived:
        return _redrive_action(args, config, flt)
    if args.watch:
        if flt.older_than_s is not None or after is not None:
            raise UsageError("--watch prints new entries: --older-than and --after do not apply")
        return lambda q: dlq_list.watch_entries(q, flt, output=args.output, out=out, err=err)
    return lambda q: dlq_list.list_entries(
        q, flt, limit=args.limit, after=after, output=args.output, out=out, err=err
    )


def _redrive_action(
    args: argparse.Namespace, config: Settings, flt: DeadLetterFilter
) -> Callable[[DeadLetterQueries], Awaitable[int]]:
    """`dlq redrive`, and `dlq list --archived` (what redrive archived)."""
    out, err = sys.stdout, sys.stderr
    if args.dlq_command == "list":
        return lambda q: dlq_redrive.list_archived(
            q, config, queue=flt.queue, limit=args.limit, output=args.output, out=out, err=err
        )
    try:
        request = dlq_redrive.request_from(args, config, flt)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return lambda q: dlq_redrive.redrive_entries(q, config, request, out=out, err=err)


def _purge_action(
    args: argparse.Namespace, config: Settings, flt: DeadLetterFilter
) -> Callable[[DeadLetterQueries], Awaitable[int]]:
    if config.dead_letter.read_only:
        raise UsageError("refused: this config sets dead_letter.read_only (nothing purged)")
    if args.ids and (not flt.empty or args.everything):
        raise UsageError("give entry ids or a filter, not both")
    if not args.ids and flt.empty and not args.everything:
        raise UsageError(
            "name what to purge: entry ids, a filter (--older-than 14d, --class ...) or --all"
        )
    if args.everything and not flt.empty:
        raise UsageError("--all purges everything: drop the filter, or drop --all")
    request = dlq_purge.PurgeRequest(
        ids=tuple(args.ids), flt=flt, everything=args.everything, dry_run=args.dry_run, yes=args.yes
    )

    async def purge(q: DeadLetterQueries) -> int:
        purger = DeadLetterPurger(q.client, config.redis, cluster_name=config.cluster_name)
        return await dlq_purge.purge_entries(
            q,
            purger,
            request,
            interactive=sys.stdin.isatty(),
            confirm=_ask,
            out=sys.stdout,
            err=sys.stderr,
        )

    return purge


def _ask(prompt: str) -> bool:
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        return False
