"""Where a failing Job's time goes on the way to its dead letter, and which process burns the
CPU meanwhile: what bench/latency.py reports beside the dead-letter latency, so that a run
that misses the goal says which step of the control plane (or the daemon) was the limit.

Steps, each timed by the observer (bench/observer.py) the moment it reads the watch event:

    created   the loader's POST answered 201 (the loader's own clock, unix seconds)
    pod       the Job controller's pod appears
    bound     the scheduler set the pod's nodeName
    running   kwok's pod-ready stage made it Running
    pod_fail  kwok's fail stage made it Failed (1 s after Running, by the bench's annotation)
    failed    the Job controller set the Job's Failed condition
    lettered  the dead letter appeared in Redis

For each step: how many Jobs reached it, its rate over the first to the last arrival, and the
p50/p99 of the time since the step before it. A step whose count falls short, or whose rate
is below the create rate, or whose latency grows along the run (``late_p50`` over the last
fifth of the Jobs, against ``early_p50`` over the first), is where the backlog builds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.scheduler import quantiles

STEPS = ("created", "pod", "bound", "running", "pod_fail", "failed", "lettered")


@dataclass(frozen=True)
class Step:
    name: str
    reached: int
    rate_per_s: float
    """Arrivals over the span from the first to the last one (0 with fewer than two)."""
    since_previous_ms: dict[str, float]
    early_p50_ms: float
    late_p50_ms: float


def step_times(
    created: Mapping[str, float],
    pods: Mapping[str, Mapping[str, float]],
    failed: Mapping[str, float],
    lettered: Mapping[str, float],
) -> dict[str, dict[str, float]]:
    """Per Job uid, the unix time of each step it reached (by name, see STEPS)."""
    out: dict[str, dict[str, float]] = {}
    for uid, at in created.items():
        times = {"created": at}
        for step, t in (pods.get(uid) or {}).items():
            if step in STEPS:
                times[step] = t
        if uid in failed:
            times["failed"] = failed[uid]
        if uid in lettered:
            times["lettered"] = lettered[uid]
        out[uid] = times
    return out


def _rate(times: Sequence[float]) -> float:
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def summarise(per_job: Mapping[str, Mapping[str, float]]) -> list[Step]:
    """One Step per entry of STEPS, Jobs in the order they were created."""
    order = sorted(per_job, key=lambda uid: per_job[uid].get("created", 0.0))
    steps = []
    for i, name in enumerate(STEPS):
        arrivals = sorted(per_job[uid][name] for uid in order if name in per_job[uid])
        deltas: list[float] = []
        if i > 0:
            prev = STEPS[i - 1]
            deltas = [
                (per_job[uid][name] - per_job[uid][prev]) * 1000
                for uid in order
                if name in per_job[uid] and prev in per_job[uid]
            ]
        fifth = max(1, len(deltas) // 5)
        steps.append(
            Step(
                name=name,
                reached=len(arrivals),
                rate_per_s=round(_rate(arrivals), 1),
                since_previous_ms={k: round(v, 1) for k, v in quantiles(deltas).items()},
                early_p50_ms=round(quantiles(deltas[:fifth])["p50"], 1),
                late_p50_ms=round(quantiles(deltas[-fifth:])["p50"], 1),
            )
        )
    return steps


def format_steps(steps: Iterable[Step]) -> list[str]:
    head = f"  {'step':<10}{'reached':>8}{'rate/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
    lines = [head + f"{'first 1/5 p50':>15}{'last 1/5 p50':>14}"]
    for s in steps:
        q = s.since_previous_ms
        lines.append(
            f"  {s.name:<10}{s.reached:>8}{s.rate_per_s:>8}{q['p50']:>9,.0f}{q['p99']:>9,.0f}"
            f"{s.early_p50_ms:>15,.0f}{s.late_p50_ms:>14,.0f}"
        )
    return lines


# -- CPU per process ----------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` so far (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in first]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks) - idle) / _TICK, sum(ticks) / _TICK


class CpuMeter:
    """CPU seconds of named processes, and of the machine, between start() and stop()."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, float] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)
        self._t0 = 0.0
        self.seconds: dict[str, float] = {}

    def start(self, now: float) -> None:
        self._t0 = now
        self._machine = machine_busy_seconds()
        self._start = {n: c for n, p in self.pids.items() if (c := cpu_seconds(p)) is not None}

    def stop(self, now: float) -> dict[str, float]:
        """Per process, its share of one core over the interval (1.0 = a whole core); also
        'machine' (busy share of every core, 2.0 = both of two cores busy) and 'load1'.
        `seconds` keeps each process's CPU seconds."""
        span = max(now - self._t0, 1e-9)
        out = {}
        self.seconds = {}
        for name, pid in self.pids.items():
            end = cpu_seconds(pid)
            if end is not None and name in self._start:
                self.seconds[name] = end - self._start[name]
                out[name] = round(self.seconds[name] / span, 2)
        busy, total = machine_busy_seconds()
        cores = os.cpu_count() or 1
        spent = max(total - self._machine[1], 1e-9)
        out["machine"] = round(cores * (busy - self._machine[0]) / spent, 2)
        out["load1"] = round(os.getloadavg()[0], 2)
        return out
