"""The kopf peer of bench/memory.py: an operator watching what kube-dlq watches.

    KUBECONFIG=ADMIN BENCH_KOPF_COUNT=FILE python -m kopf run --standalone \
        --namespace NS bench/observer_kopf.py

Written the way a user would start a failure handler with kopf: event handlers on Jobs, on
the Jobs' pods (the same label selector as the daemon's pod watch) and on Events, each doing
nothing but count. kopf posts no Events of its own here (that would add objects). Every half
second it writes how many events it has handled to $BENCH_KOPF_COUNT, so the benchmark knows
when the initial listing is through.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import kopf

COUNT_FILE = Path(os.environ.get("BENCH_KOPF_COUNT", "kopf-count"))
handled = 0
_tasks: set[asyncio.Task[None]] = set()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False
    _tasks.add(asyncio.get_running_loop().create_task(_report()))


def _write_count() -> None:
    COUNT_FILE.write_text(str(handled))


async def _report() -> None:
    while True:
        _write_count()
        await asyncio.sleep(0.5)


@kopf.on.event("batch", "v1", "jobs")
def job_event(**_: Any) -> None:
    global handled
    handled += 1


@kopf.on.event("", "v1", "pods", labels={"batch.kubernetes.io/controller-uid": kopf.PRESENT})
def pod_event(**_: Any) -> None:
    global handled
    handled += 1


@kopf.on.event("", "v1", "events")
def event_event(**_: Any) -> None:
    global handled
    handled += 1
