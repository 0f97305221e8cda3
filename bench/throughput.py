"""Throughput on one core: kube-dlq's whole daemon against a bare consumer, kopf and models.

    python -m bench.throughput [--copies 100] [--quiet-copies 0] [--only a,b,c,d] [--rounds 1]
                               [--json FILE]
                               [--profile FILE] [--spy FILE]

A replay server (bench/replay, its own process) serves the streams captured on the local
control plane, scaled to `--copies` copies of every scenario, over the list and watch
protocol. In the same run, one after another, each consumer is a subprocess reading the same
streams:

  (a) bare     list + watch, ``json.loads`` of every line, nothing else    bench/peers/bare.py
  (b) kube-dlq ``python -m watcher run``, the real daemon, writing to a real redis-server
  (c) kopf     a kopf operator: on a Job turning Failed, read its pods, one entry to Redis
  (d) models   kubernetes_asyncio ``Watch`` with model deserialization     bench/peers/models.py

Each consumer starts, opens its watches (the server holds their events back), then the
stream is let go; its CPU time (user + system, /proc) is read at that moment and when it is
done: (a) and (d) when they read every event, (b) and (c) when Redis holds one outcome per
failed Job. CPU time, not wall time: (b) waits ``pipeline.settle_s`` per failure by design, and
the machine is shared. Events/s is events per CPU-second of the consumer. A consumer that
wrote a different number of outcomes than there are failed Jobs makes the run invalid
(exit 1). Ratios are the figures to compare across machines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

from devtools.devcluster.redis_server import RedisServer
from watcher.adapters.redis.keys import Keys
from watcher.core.model import FailureClass

REPO = Path(__file__).resolve().parents[1]
CLUSTER = "bench"
KOPF_STREAM = "bench:kopf:dlq"
TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 60.0
"""For a consumer's watches to open; the replay server gets this plus 0.2 s per copy (it
rewrites every copy before it listens)."""
QUIET_S = 0.5
"""After its watches are open, a consumer gets this long to finish starting before the CPU
clock is read, so imports and connection setup are not counted."""

PEERS = {
    "a": ("bare", "bare consumer (json.loads)"),
    "b": ("kube-dlq", "kube-dlq daemon + redis"),
    "c": ("kopf", "kopf operator + redis"),
    "d": ("models", "kubernetes_asyncio models"),
}


@dataclass(slots=True)
class Result:
    peer: str
    label: str
    events: int
    cpu_s: float
    wall_s: float
    outcomes: int | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.cpu_s if self.cpu_s > 0 else float("inf")

    @property
    def cpu_per_10k(self) -> float:
        return self.cpu_s / self.events * 10_000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _http(url: str, method: str = "GET") -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


class Run:
    """One replay server and one redis-server for every consumer of the run."""

    def __init__(self, copies: int, workdir: Path, timeout_s: float, quiet_copies: int = 0) -> None:
        self.copies = copies
        self.quiet_copies = quiet_copies
        self.workdir = workdir
        self.timeout_s = timeout_s
        self.redis = RedisServer()
        self.server: subprocess.Popen[bytes] | None = None
        self.corpus: dict[str, Any] = {}
        self.url = ""

    def __enter__(self) -> Run:
        self.redis.start()
        port_file = self.workdir / "replay.json"
        port_file.unlink(missing_ok=True)  # a kept workdir holds the last run's
        with (self.workdir / "replay.log").open("wb") as log:  # the child keeps its own fd
            self.server = self._spawn_server(port_file, log)
        deadline = time.monotonic() + READY_TIMEOUT_S + 0.2 * self.copies + 0.05 * self.quiet_copies
        while not port_file.exists():
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"replay server did not start: {self.workdir / 'replay.log'}")
            time.sleep(0.05)
        self.corpus = json.loads(port_file.read_text())
        self.url = f"http://127.0.0.1:{self.corpus['port']}"
        self.kubeconfig = self._write_kubeconfig()
        return self

    def _spawn_server(self, port_file: Path, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.replay.server",
                "--copies",
                str(self.copies),
                "--quiet-copies",
                str(self.quiet_copies),
                "--port-file",
                str(port_file),
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            _stop(self.server)
        self.redis.stop()

    def _write_kubeconfig(self) -> Path:
        path = self.workdir / "kubeconfig"
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "replay", "cluster": {"server": self.url}}],
            "users": [{"name": "bench", "user": {"token": "bench"}}],
            "contexts": [{"name": "replay", "context": {"cluster": "replay", "user": "bench"}}],
            "current-context": "replay",
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    def daemon_config(self) -> Path:
        keys = self.workdir / "keys"
        keys.mkdir(exist_ok=True)
        (keys / "k1").write_text(secrets.token_hex(32))
        doc = {
            "cluster_name": CLUSTER,
            "redis": {"url": self.redis.url},
            "kubernetes": {"kubeconfig": str(self.kubeconfig)},
            # Not stuck (the captured Jobs are days old), and retries far off and claimed
            # hourly: with full jitter a few of thousands of 1-day delays are minutes, and
            # re-creating Jobs is not the work measured.
            "classify": {"stuck_pending_after_s": "30d"},
            "retry": {
                "classes": {fc.value: {"base_s": "1d", "cap_s": "1d"} for fc in FailureClass}
            },
            "retry_loop": {"poll_interval_s": "1h"},
            "server": {"bind_address": "127.0.0.1", "port": 0},
            "log": {"level": "warning", "format": "json"},
            "security": {"signing_keys_dir": str(keys), "signing_key_id": "k1"},
        }
        path = self.workdir / "kube-dlq.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def argv(self, peer: str, profile: Path | None) -> list[str]:
        common = [
            "--url",
            self.url,
            "--kubeconfig",
            str(self.kubeconfig),
            "--redis-url",
            self.redis.url,
        ]
        if peer == "a":
            return [
                sys.executable,
                "-m",
                "bench.peers.bare",
                *common,
                "--expect",
                str(self.corpus["watched_events"]),
            ]
        if peer == "d":
            return [
                sys.executable,
                "-m",
                "bench.peers.models",
                *common,
                "--expect",
                str(self.corpus["watched_events"]),
            ]
        if peer == "c":
            return [sys.executable, "-m", "bench.peers.kopf_operator", *common, "--expect", "0"]
        run = ["-m", "watcher", "run", "--config", str(self.daemon_config())]
        if profile is not None:
            return [sys.executable, "-m", "cProfile", "-o", str(profile), *run]
        return [sys.executable, *run]

    def outcomes(self, peer: str) -> int:
        """What the consumer wrote to Redis: kopf's entries, or kube-dlq's outcomes."""
        r = redis.Redis.from_url(self.redis.url)
        try:
            if peer == "c":
                return int(r.xlen(KOPF_STREAM))
            return count_outcomes(r, Keys("kube-dlq", CLUSTER))
        finally:
            r.close()

    def measure(self, peer: str, profile: Path | None = None, spy: Path | None = None) -> Result:
        _http(self.url + "/bench/reset", "POST")
        with redis.Redis.from_url(self.redis.url) as r:
            r.flushall()
        watched = ("jobs",) if peer == "c" else ("jobs", "pods", "events", "nodes")
        with (self.workdir / f"{PEERS[peer][0]}.log").open("wb") as log:
            # Only (a) and (d) say when they are done; the others' output goes to the log, so
            # a full pipe nobody reads cannot stall them.
            out = subprocess.PIPE if peer in ("a", "d") else log
            proc = subprocess.Popen(self.argv(peer, profile), cwd=REPO, stdout=out, stderr=log)
        try:
            self._wait(lambda: self._watching(watched), proc, "its watches")
            time.sleep(QUIET_S)
            sampler = _spy(proc.pid, spy) if spy is not None else None
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            _http(self.url + "/bench/go", "POST")
            if peer in ("a", "d"):
                self._wait_line(proc)
            else:
                want = self.corpus["failed_jobs"]
                self._wait(lambda: self.outcomes(peer) >= want, proc, "outcomes", poll=0.02)
            cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
            if sampler is not None:
                sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                sampler.wait(timeout=60)
            outcomes = None
            if peer in ("b", "c"):
                time.sleep(QUIET_S)  # a consumer that writes too many shows it now
                outcomes = self.outcomes(peer)
        finally:
            _stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        # (c) watches Jobs only, but handles the same failures: every rate is per event of
        # the daemon's four streams, so all four are the cost of the same work.
        events = self.corpus["watched_events"]
        return Result(peer, PEERS[peer][1], events, cpu1 - cpu0, t1 - t0, outcomes)

    def _watching(self, resources: tuple[str, ...]) -> bool:
        watches = _http(self.url + "/bench/status")["watches"]
        return all(watches[r] >= 1 for r in resources)

    def _wait(self, ok: Any, proc: subprocess.Popen[bytes], what: str, poll: float = 0.05) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not ok():
            if proc.poll() is not None:
                raise SystemExit(f"consumer exited {proc.returncode} waiting for {what}")
            if time.monotonic() > deadline:
                raise SystemExit(f"consumer timed out waiting for {what} ({self.workdir})")
            time.sleep(poll)

    def _wait_line(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # "ready" first, then "done"
            if json.loads(line).get("done"):
                return
        raise SystemExit(f"consumer exited {proc.wait()} before it was done ({self.workdir})")


def count_outcomes(r: redis.Redis, keys: Keys) -> int:
    """kube-dlq's outcomes: dead letters in every queue plus retry tickets, each also
    counted by its exactly-once marker; -1 when the two counts disagree (a marker without
    its entry, or an entry twice), which makes the run invalid."""
    queues = [q.decode() if isinstance(q, bytes) else q for q in r.smembers(keys.queues)]
    letters = sum(int(r.xlen(keys.dlq(q))) for q in queues)
    tickets = int(r.zcard(keys.retry_due)) + int(r.zcard(keys.retry_inflight))
    markers = int(r.zcard(keys.outcome_index))
    return markers if letters + tickets == markers else -1


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ratios(results: dict[str, Result]) -> dict[str, float]:
    out = {}
    b = results.get("b")
    for other in ("a", "c", "d"):
        if b is not None and other in results:
            out[f"b/{other}"] = b.events_per_s / results[other].events_per_s
    return out


def table(results: dict[str, Result], rates: dict[str, float], corpus: dict[str, Any]) -> str:
    lines = [
        f"replayed: {corpus['watched_events']:,} watch events "
        f"({corpus['job_events']:,} of Jobs), {corpus['failed_jobs']:,} failed Jobs "
        f"(one per {corpus['watched_events'] / max(1, corpus['failed_jobs']):,.0f} events)",
        f"{'consumer':34} {'events/s':>10} {'CPU-s/10k':>10} {'CPU s':>7} {'wall s':>7} "
        f"{'outcomes':>9}",
    ]
    for key, r in results.items():
        wrote = "-" if r.outcomes is None else f"{r.outcomes:,}"
        lines.append(
            f"({key}) {r.label:30} {r.events_per_s:10,.0f} {r.cpu_per_10k:10.3f} "
            f"{r.cpu_s:7.2f} {r.wall_s:7.2f} {wrote:>9}"
        )
    goals = {"b/a": 0.8, "b/c": 5.0}
    for name, value in rates.items():
        goal = f"  (goal >= {goals[name]})" if name in goals else ""
        lines.append(f"ratio {name}: {value:.2f}{goal}")
    return "\n".join(lines)


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` from now until SIGINT, collapsed stacks to `out`: unlike cProfile
    it does not slow Python calls more than C ones, and it sees only the measured window."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--spy needs py-spy: .venv/bin/pip install -e '.[bench]'")
    argv = [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "400"]
    sampler = subprocess.Popen([*argv, "--nonblocking", "-o", str(out)], stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the stream is let go
    return sampler


def run(
    copies: int,
    only: str,
    *,
    timeout_s: float = 600.0,
    profile: Path | None = None,
    workdir: Path | None = None,
    rounds: int = 1,
    spy: Path | None = None,
    quiet_copies: int = 0,
) -> dict[str, Any]:
    """Measure each consumer of `only` against `copies` copies, `rounds` times interleaved
    (a, b, c, a, b, c, ...); the JSON document. Its results and ratios are each consumer's
    least-CPU round: on a shared VM a round can be slowed by a neighbour (or by a sibling
    hyperthread), never sped up, so the least disturbed round is the figure."""
    keep = workdir is not None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="kube-dlq-bench-"))
    peers = only.split(",")
    every: dict[str, list[Result]] = {peer: [] for peer in peers}
    try:
        with Run(copies, workdir, timeout_s, quiet_copies) as bench:
            for i in range(rounds):
                for peer in peers:
                    first_b = peer == "b" and i == 0
                    prof = profile if first_b else None
                    every[peer].append(bench.measure(peer, prof, spy if first_b else None))
            corpus = bench.corpus
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results = {peer: min(rs, key=lambda r: r.cpu_s) for peer, rs in every.items()}
    invalid = [
        f"({r.peer}) wrote {r.outcomes} outcomes for {corpus['failed_jobs']} failed Jobs"
        for rs in every.values()
        for r in rs
        if r.outcomes is not None and r.outcomes != corpus["failed_jobs"]
    ]
    return {
        "copies": copies,
        "quiet_copies": quiet_copies,
        "corpus": {k: v for k, v in corpus.items() if k != "port"},
        "results": {
            k: {**asdict(r), "events_per_s": r.events_per_s, "cpu_s_per_10k": r.cpu_per_10k}
            for k, r in results.items()
        },
        "ratios": ratios(results),
        "rounds": {peer: [round(r.cpu_per_10k, 4) for r in rs] for peer, rs in every.items()},
        "ratios_by_round": [
            ratios({peer: rs[i] for peer, rs in every.items()}) for i in range(rounds)
        ],
        "invalid": invalid,
        "machine": {"nproc": os.cpu_count(), "cpu": _cpu_model(), "python": sys.version.split()[0]},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


THRESHOLDS = REPO / "bench" / "thresholds.json"


def below_thresholds(doc: dict[str, Any], minimums: dict[str, float]) -> list[str]:
    """Each ratio of `doc` under its minimum (or missing), as a line to print."""
    out = []
    for name, minimum in minimums.items():
        value = doc["ratios"].get(name)
        if value is None:
            out.append(f"ratio {name} was not measured (minimum {minimum})")
        elif value < minimum:
            out.append(f"ratio {name} is {value:.2f}, under its minimum {minimum}")
    return out


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=100, help="copies of every scenario")
    parser.add_argument(
        "--quiet-copies",
        type=int,
        default=0,
        help="more copies of the scenarios where no Job fails, spread between the others: "
        "fewer failures per event (the captured corpus has one per 19)",
    )
    parser.add_argument("--only", default="a,b,c,d", help="consumers to run, e.g. a,b")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(tempfile.gettempdir(), "kube-dlq-throughput.json"),
        help="where the JSON document goes (default: in the temp dir, not the repository)",
    )
    parser.add_argument("--profile", type=Path, help="run (b) under cProfile, stats to FILE")
    parser.add_argument(
        "--spy", type=Path, help="sample (b)'s measured window with py-spy: collapsed stacks"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per consumer, seconds")
    parser.add_argument("--workdir", type=Path, help="keep logs and configs here")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="runs of every consumer, interleaved; each one's least-CPU run is reported",
    )
    parser.add_argument(
        "--check", choices=("full", "smoke"), help="fail below bench/thresholds.json's ratios"
    )
    args = parser.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    doc = run(
        args.copies,
        args.only,
        timeout_s=args.timeout,
        profile=args.profile,
        workdir=args.workdir,
        rounds=args.rounds,
        spy=args.spy,
        quiet_copies=args.quiet_copies,
    )
    results = {k: Result(**v) for k, v in ((k, _fields(v)) for k, v in doc["results"].items())}
    print(table(results, doc["ratios"], doc["corpus"]))
    if args.rounds > 1:
        for peer, figures in doc["rounds"].items():
            print(f"({peer}) CPU-s/10k by round: {' / '.join(f'{f:.3f}' for f in figures)}")
        for name in doc["ratios"]:
            by_round = " / ".join(f"{r[name]:.2f}" for r in doc["ratios_by_round"] if name in r)
            print(f"ratio {name} by round: {by_round}")
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"JSON: {args.json}")
    for line in doc["invalid"]:
        print(f"INVALID: {line}", file=sys.stderr)
    slow = []
    if args.check:
        minimums = json.loads(THRESHOLDS.read_text())[args.check]["min_ratios"]
        slow = below_thresholds(doc, minimums)
        for line in slow:
            print(f"REGRESSION: {line}", file=sys.stderr)
    sys.exit(1 if doc["invalid"] or slow else 0)


def _fields(v: dict[str, Any]) -> dict[str, Any]:
    return {k: v[k] for k in ("peer", "label", "events", "cpu_s", "wall_s", "outcomes")}


if __name__ == "__main__":
    main()
