"""CPU per watch event of the daemon's per-event path, in one process, without the network.

    python -m bench.watch_cpu [--copies 100] [--rounds 5] [--only decode,pipeline]

The part of `bench.throughput`'s (b) that is paid per watch event, not per failure: the real
``Watcher`` reading the replayed streams (bench/replay: the captured scenarios, scaled to
``--copies``) from an aiohttp ``StreamReader`` fed in the replay server's 64 KiB chunks, and
the pipeline's ``on_job`` / ``on_pod`` / ``on_event`` / ``on_node`` consuming each event (the
projections of core/snapshot.py and the correlator). No writer runs: failed Jobs are only
queued. Two consumers of the same four streams, run in turn ``--rounds`` times:

  decode    the watch layer alone: lines, JSON, per-event metrics (the consumer drops each)
  pipeline  the watch layer and the pipeline's on_* methods, as the daemon's watch tasks do

Each figure is the process CPU time (``time.process_time``) per 10,000 events, the lowest
and the median of the rounds (the machine is shared: the lowest is the least disturbed).
Run it on two checkouts to compare them; the ratio of the two is the figure to keep.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from bench.replay.scenarios import JOB_PODS_LABEL, build_corpus
from watcher.adapters.kube import watch
from watcher.core import wire
from watcher.core.settings import (
    ClassifySettings,
    KubernetesSettings,
    LimitsSettings,
    PipelineSettings,
    ScopeSettings,
)
from watcher.kit.metrics import Metrics
from watcher.service.pipeline import Pipeline

CHUNK_BYTES = 64 * 1024
"""What the replay server writes at a time (bench/replay/server.py)."""
PLAN = (
    ("jobs", watch.JOBS),
    ("pods", watch.JOB_PODS),
    ("events", watch.EVENTS),
    ("nodes", watch.NODES),
)


class _Protocol:
    """What a StreamReader asks of its protocol; the whole stream is fed up front."""

    _reading_paused = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


class _Response:
    """Enough of an aiohttp response for `Watcher._watch_once`: a real StreamReader."""

    def __init__(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.content = aiohttp.StreamReader(_Protocol(), 2**16, loop=loop)  # type: ignore[arg-type]
        for start in range(0, len(data), CHUNK_BYTES):
            self.content.feed_data(data[start : start + CHUNK_BYTES])
        self.content.feed_eof()
        self.connection = None
        self.status = 200

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Client:
    """A KubeClient that answers every watch request with one stream's lines."""

    def __init__(self, data: bytes) -> None:
        self.settings = KubernetesSettings()
        self._data = data

    async def send(self, *args: object, **kwargs: object) -> _Response:
        return _Response(self._data)


def _streams(copies: int) -> dict[str, tuple[bytes, int]]:
    corpus = build_corpus(copies)
    out = {}
    for name, resource in PLAN:
        stored = corpus.streams[name]
        if resource.label_selector:
            stored = [s for s in stored if JOB_PODS_LABEL in s.obj["metadata"].get("labels", {})]
        lines = [
            json.dumps({"type": s.type, "object": s.obj}, separators=(",", ":")).encode() + b"\n"
            for s in stored
        ]
        out[name] = (b"".join(lines), len(lines))
    return out


def _pipeline(metrics: Metrics) -> Pipeline:
    return Pipeline(
        handler=None,  # type: ignore[arg-type]  # the writer does not run
        jobs=None,  # type: ignore[arg-type]
        scope=ScopeSettings(),
        classify=ClassifySettings(),
        settings=PipelineSettings(),
        limits=LimitsSettings(),
        metrics=metrics,
        logger=structlog.get_logger(),
    )


async def _consume(
    name: str,
    resource: watch.Resource,
    data: bytes,
    expected: int,
    on_event: Callable[[str, dict[str, Any]], None] | None,
    metrics: Metrics,
) -> None:
    w = watch.Watcher(
        _Client(data),  # type: ignore[arg-type]
        resource,
        metrics=metrics,
        logger=structlog.get_logger(),
        line_type=wire.LINE_TYPES.get(resource.name),  # as the daemon's watchers
    )
    w._rv = "1"  # no list first: the streams are what is measured
    seen = 0
    async with contextlib.aclosing(w.stream()) as items:
        async for item in items:
            if isinstance(item, watch.WatchEvent):
                if on_event is not None:
                    on_event(item.type, item.obj)
                seen += 1
                if seen == expected:
                    return


async def _round(streams: dict[str, tuple[bytes, int]], mode: str) -> float:
    metrics = Metrics()
    pipeline = _pipeline(metrics)
    handlers = {
        "jobs": pipeline.on_job,
        "pods": pipeline.on_pod,
        "events": pipeline.on_event,
        "nodes": pipeline.on_node,
    }
    started = time.process_time()
    await asyncio.gather(
        *(
            _consume(
                name,
                resource,
                *streams[name],
                handlers[name] if mode == "pipeline" else None,
                metrics,
            )
            for name, resource in PLAN
        )
    )
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="decode,pipeline")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    streams = _streams(args.copies)
    events = sum(n for _, n in streams.values())
    print(f"{events:,} watch events, {args.copies} copies")
    modes = args.only.split(",")
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:  # interleaved, so a burst of load hits both alike
            cpu[mode].append(asyncio.run(_round(streams, mode)))
    for mode in modes:
        per = [c / events * 10_000 for c in cpu[mode]]
        print(
            f"{mode:9s} CPU-s per 10k events: min {min(per):.3f}  median "
            f"{statistics.median(per):.3f}  ({', '.join(f'{p:.3f}' for p in per)})"
        )


if __name__ == "__main__":
    main()
