"""`kube-dlq dlq redrive`: re-create dead-lettered Jobs, exactly once each (docs/redrive.md).

Entries are chosen by id or by the `dlq list` filters (``--all`` for everything). Each is
claimed off its queue in one atomic step before its Job is POSTed (watcher.service.redrive);
a run killed halfway is finished by the next one, which first resumes every redrive that an
earlier run began and did not record. ``--dry-run`` prints the Jobs it would create and
changes nothing. One line per entry on stdout, a progress bar on a terminal, a closing count;
exit 0 when every entry was redriven (or already was), 1 when any failed or was refused.
``dead_letter.read_only: true`` refuses the verb before Redis is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib.util
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from watcher.adapters.redis.queries import CorruptRecord, DeadLetterQueries
from watcher.adapters.redis.store import RedisStore
from watcher.app.sealing import build_seal
from watcher.core.dlq_filter import DeadLetterFilter
from watcher.core.errors import KubeAPIError
from watcher.core.memory import parse_quantity
from watcher.core.model import DeadLetter
from watcher.core.redrive import Overrides, parse_image_override
from watcher.core.settings import Settings
from watcher.kit.logs import get_logger
from watcher.service.redrive import Redriver, RedriveResult, Verdict

if TYPE_CHECKING:
    from watcher.adapters.kube.request import KubeClient

__all__ = [
    "EXAMPLES",
    "RedriveRequest",
    "add_arguments",
    "list_archived",
    "redrive_entries",
    "request_from",
]

_PREFIX = "kube-dlq dlq redrive:"
_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)(?:/s)?")
_PROGRESS_FROM = 5
"""A progress bar only for runs of at least this many entries (and only on a terminal)."""

EXAMPLES = """\
examples:
  kube-dlq dlq redrive -c config.yaml batch/1795827114648-0          # one entry
  kube-dlq dlq redrive -c config.yaml --class node_lost --dry-run    # what would be created
  kube-dlq dlq redrive -c config.yaml --namespace etl --rate 5/s     # at most 5 Jobs a second
  kube-dlq dlq redrive -c config.yaml batch/1795827114648-0 --memory 4Gi --image app:v2.1
  kube-dlq dlq redrive -c config.yaml --all --max-redrives 1         # never a third time
  kube-dlq dlq redrive -c config.yaml batch/1795827114648-0 --failed-indexes  # Indexed Job

Each entry leaves its queue when claimed; the daemon archives it when the new Job succeeds
(`dlq list --archived`) and puts it back, with redrive_count + 1, when it fails. Interrupted?
Run the same command again: nothing is created twice.
"""


@dataclass(frozen=True, slots=True)
class RedriveRequest:
    ids: Sequence[str]
    flt: DeadLetterFilter
    everything: bool
    dry_run: bool
    rate: float | None
    """Jobs per second at most (None: as fast as the API answers)."""
    max_redrives: int
    overrides: Overrides
    failed_indexes: bool = False
    """Re-run only each entry's recorded failed indexes (Indexed Jobs)."""


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    """The verb's own flags (the filters and --config are added by dlq_args)."""
    cmd.add_argument("ids", nargs="*", metavar="ID", help="entry ids (<queue>/<stream-id>)")
    cmd.add_argument("--all", dest="everything", action="store_true", help="every entry")
    cmd.add_argument("--dry-run", action="store_true", help="print what would be created only")
    cmd.add_argument("--rate", metavar="N/s", help="create at most N Jobs a second, e.g. 5/s")
    cmd.add_argument(
        "--max-redrives",
        type=int,
        default=3,
        metavar="N",
        help="refuse entries redriven N times already (3): a Job that keeps failing",
    )
    cmd.add_argument("--memory", metavar="Q", help="set every container's memory limit, e.g. 4Gi")
    cmd.add_argument(
        "--image", metavar="[CONTAINER=]IMAGE", help="another image (CONTAINER= for several)"
    )
    cmd.add_argument(
        "--failed-indexes",
        action="store_true",
        help="Indexed Jobs: run only the indexes that failed; the workload reads its original "
        "index from $KUBE_DLQ_ORIGINAL_INDEXES (other entries are skipped)",
    )


def request_from(
    args: argparse.Namespace, config: Settings, flt: DeadLetterFilter
) -> RedriveRequest:
    """The request the flags ask for; ValueError (one line, exit 2) when they do not fit."""
    if config.dead_letter.read_only:
        raise ValueError("refused: this config sets dead_letter.read_only (nothing redriven)")
    if args.ids and (not flt.empty or args.everything):
        raise ValueError("give entry ids or a filter, not both")
    if not args.ids and flt.empty and not args.everything:
        raise ValueError("name what to redrive: entry ids, a filter (--class ...) or --all")
    if args.everything and not flt.empty:
        raise ValueError("--all redrives everything: drop the filter, or drop --all")
    if args.max_redrives < 1:
        raise ValueError(f"--max-redrives must be >= 1, got {args.max_redrives}")
    rate = None
    if args.rate is not None:
        match = _RATE_RE.fullmatch(args.rate.strip())
        if match is None or float(match[1]) <= 0:
            raise ValueError(f"--rate: expected N/s with N > 0, e.g. 5/s, got {args.rate!r}")
        rate = float(match[1])
    memory = ""
    if args.memory:
        parse_quantity(args.memory)  # ValueError names the value
        memory = args.memory.strip()
    if args.image:
        parse_image_override(args.image)
    return RedriveRequest(
        ids=tuple(args.ids),
        flt=flt,
        everything=args.everything,
        dry_run=args.dry_run,
        rate=rate,
        max_redrives=args.max_redrives,
        overrides=Overrides(memory=memory, image=args.image or ""),
        failed_indexes=args.failed_indexes,
    )


async def redrive_entries(
    queries: DeadLetterQueries,
    config: Settings,
    request: RedriveRequest,
    *,
    out: TextIO,
    err: TextIO,
) -> int:
    """Run the redrive `request` asks for; the exit code."""
    log = get_logger().bind(user=_user(), dry_run=request.dry_run)
    store = RedisStore(
        queries.client,
        config.redis,
        cluster_name=config.cluster_name,
        seal=build_seal(config.security),
    )
    # Imported here: the Kubernetes client and rich cost a second at start, which every other
    # dlq verb (and `dlq list --watch`, whose start is its cut-off) would pay otherwise.
    from watcher.adapters.kube.connect import connect
    from watcher.adapters.kube.jobs import JobsAPI
    from watcher.adapters.kube.namespaces import namespaces_matching
    from watcher.kit.metrics import Metrics
    from watcher.service.scope import ScopedJobs, namespace_allowed

    async with AsyncExitStack() as stack:
        kube: KubeClient = await connect(config.kubernetes)
        stack.push_async_callback(kube.close)
        selected = None
        if config.scope.namespace_label_selector:
            selected = await namespaces_matching(kube, config.scope.namespace_label_selector)
        jobs = ScopedJobs(
            JobsAPI(kube),
            scope=config.scope,
            selected=lambda: selected,
            metrics=Metrics(),
            logger=log,
        )
        redriver = Redriver(
            store,
            jobs,
            max_redrives=request.max_redrives,
            overrides=request.overrides,
            dry_run=request.dry_run,
            failed_indexes=request.failed_indexes,
            in_scope=lambda ns: namespace_allowed(ns, config.scope, selected),
        )
        work, early = await _targets(queries, store, redriver, request)
        counts: Counter[Verdict] = Counter()
        for result in early:
            _report(result, counts, out)
        await _run(work, redriver, request, counts, out, err)
    total = ", ".join(f"{counts[v]} {v.value.replace('_', ' ')}" for v in Verdict if counts[v])
    out.write(("dry run: " if request.dry_run else "") + (total or "nothing to redrive") + "\n")
    log.info("dlq_redrive", **{v.value: counts[v] for v in Verdict})
    return 1 if counts[Verdict.FAILED] or counts[Verdict.SKIPPED] else 0


Work = tuple[str, DeadLetter | None]
"""(entry id, the letter read from its queue; None: resume its redriving record)."""


async def _targets(
    queries: DeadLetterQueries, store: RedisStore, redriver: Redriver, request: RedriveRequest
) -> tuple[list[Work], list[RedriveResult]]:
    """What to redrive, in order: unfinished earlier redrives first, then the selection; and
    the results already known (entries that cannot be read or are not there)."""
    work: list[Work] = []
    early: list[RedriveResult] = []
    resumed: set[str] = set()
    if not request.dry_run:
        for entry_id in await redriver.unfinished():
            work.append((entry_id, None))
            resumed.add(entry_id)
    if request.ids:
        for entry_id in request.ids:
            try:
                hit = await queries.find_dead_letter(entry_id)
            except ValueError as exc:
                early.append(RedriveResult(entry_id, Verdict.FAILED, str(exc)))
                continue
            if isinstance(hit, tuple):
                work.append(hit)
            elif isinstance(hit, CorruptRecord):
                early.append(_unreadable(hit))
            elif entry_id in resumed:
                continue
            elif await store.redrive_record(entry_id) is not None:
                work.append((entry_id, None))  # being redriven: show where it stands
            else:
                early.append(RedriveResult(entry_id, Verdict.FAILED, "no dead letter with this id"))
        return work, early
    now = await queries.now_ms()
    async for item in queries.iterate(request.flt, now_ms=now):
        if isinstance(item.decoded, CorruptRecord):
            early.append(_unreadable(item.decoded))
        else:
            work.append(item.decoded)
    return work, early


async def _run(
    work: list[Work],
    redriver: Redriver,
    request: RedriveRequest,
    counts: Counter[Verdict],
    out: TextIO,
    err: TextIO,
) -> None:
    interval = 0.0 if request.rate is None or request.dry_run else 1.0 / request.rate
    started = time.monotonic()
    advance: Callable[[], None] = lambda: None  # noqa: E731 (replaced by the bar's)
    with ExitStack() as stack:
        if err.isatty() and len(work) >= _PROGRESS_FROM and _has_rich():
            advance = stack.enter_context(_progress(err, len(work)))
        for index, (entry_id, letter) in enumerate(work):
            wait = started + index * interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                result = await (
                    redriver.resume(entry_id)
                    if letter is None
                    else redriver.redrive(entry_id, letter)
                )
            except KubeAPIError as exc:  # a read of the API failed: this entry only
                line = " ".join(str(exc).split())[:300]
                result = RedriveResult(entry_id, Verdict.FAILED, f"{line}; run again to finish")
            _report(result, counts, out)
            advance()


def _has_rich() -> bool:
    """rich is optional (``kube-dlq[progress]``): without it, no bar, the same lines."""
    return importlib.util.find_spec("rich") is not None


@contextmanager
def _progress(err: TextIO, total: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar on `err` (a terminal); yields what advances it by one entry."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = ("redrive", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=err), transient=True) as progress:
        task = progress.add_task("redrive", total=total)
        yield lambda: progress.advance(task)


def _report(result: RedriveResult, counts: Counter[Verdict], out: TextIO) -> None:
    counts[result.verdict] += 1
    detail = " ".join(result.detail.split())[:400]
    out.write(f"{result.verdict.value.replace('_', ' ')}: {result.entry_id}")
    out.write(f" -> {detail}\n" if detail else "\n")


def _unreadable(bad: CorruptRecord) -> RedriveResult:
    what = "not signed by kube-dlq: refused" if bad.forged else "unreadable: refused"
    return RedriveResult(bad.entry_id, Verdict.FAILED, f"{what} ({bad.error})")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (a bare container)
        return "unknown"


async def list_archived(
    queries: DeadLetterQueries,
    config: Settings,
    *,
    queue: str | None,
    limit: int,
    output: str,
    out: TextIO,
    err: TextIO,
) -> int:
    """`dlq list --archived`: entries whose redriven Job succeeded, newest first per queue."""
    store = RedisStore(
        queries.client,
        config.redis,
        cluster_name=config.cluster_name,
        seal=build_seal(config.security),
    )
    rows: list[dict[str, object]] = []
    for name in [queue] if queue is not None else await queries.queues():
        for sid, was, job, letter in await store.archived(name, count=limit):
            if isinstance(letter, str):
                err.write(f"kube-dlq dlq list: archive {name}/{sid} could not be read: {letter}\n")
                continue
            rows.append(
                {
                    "id": f"{name}/{sid}",
                    "was": was,
                    "job": job,
                    "failure_class": letter.failure_class.value,
                    "redrive_count": letter.redrive_count,
                    "reason": letter.reason,
                }
            )
    if output in ("json", "yaml"):
        json.dump(rows, out, indent=2)
        out.write("\n")
    elif output == "jsonl":
        out.writelines(json.dumps(row) + "\n" for row in rows)
    else:
        out.write(f"{'ARCHIVED':30} {'WAS':30} {'REDRIVEN JOB':50} CLASS\n")
        for row in rows:
            out.write(
                f"{row['id']!s:30} {row['was']!s:30} {row['job']!s:50} {row['failure_class']}\n"
            )
    return 0
