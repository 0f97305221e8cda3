"""The control plane's own account of a run: client-side throttling in the controller-manager
and the scheduler, queues that grow, requests the apiserver queued or rejected.

bench/latency.py scrapes each component's /metrics (admin token; the controller-manager and
the scheduler authorize it through the apiserver) before and after the load and every few
seconds in between, and reports the differences:

* ``throttle_wait_s`` per client component: seconds its requests waited in client-go's own
  rate limiter (``rest_client_rate_limiter_duration_seconds_sum``), and ``requests``: how many
  it sent. Seconds of waiting per second of run mean that QPS limit is the bottleneck.
* ``max_job_queue`` (controller-manager ``workqueue_depth{name="job"}``) and
  ``max_pending_pods`` (scheduler ``scheduler_pending_pods``): a backlog that builds up
  (sampled every few seconds).
* ``apf_rejected`` over the run, ``max_inflight`` and ``max_apf_inqueue`` at its end, from
  the apiserver (scraped only at the start and the end: rendering its /metrics is work the
  apiserver does on the run's CPU).
* ``writes`` per resource (POST, PUT, PATCH, DELETE ``apiserver_request_total``): what one
  failing Job costs the apiserver.

Everything here is best effort: a component that does not answer gives empty numbers, never
an exception, so a metrics change does not fail a benchmark run.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from devtools.devcluster.state import ClusterState

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "create", "update", "patch", "delete"}


def parse(text: str, prefix: str = "") -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample line of the Prometheus text format (only the
    lines starting with `prefix`: the apiserver's text is megabytes, and the loader that
    parses it shares its event loop with the creates)."""
    for line in text.splitlines():
        if not line.startswith(prefix) or not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        yield m.group(1), dict(_LABEL.findall(m.group(3) or "")), value


def total(text: str, metric: str, /, **match: str) -> float:
    """The sum of every sample of `metric` whose labels include `match`."""
    return sum(
        v
        for n, labels, v in parse(text, metric)
        if n == metric and all(labels.get(k) == want for k, want in match.items())
    )


def writes_by_resource(text: str) -> dict[str, float]:
    """apiserver_request_total of the write verbs, per resource[/subresource] and verb."""
    out: dict[str, float] = {}
    for n, labels, v in parse(text, "apiserver_request_total{"):
        if n != "apiserver_request_total" or labels.get("verb") not in WRITE_VERBS:
            continue
        res = labels.get("resource", "?")
        if labels.get("subresource"):
            res += "/" + labels["subresource"]
        key = f"{labels['verb']} {res}"
        out[key] = out.get(key, 0.0) + v
    return out


def secure_port(pid: int) -> int | None:
    """The --secure-port a component was started with (its command line in /proc)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for arg in argv:
        if arg.startswith(b"--secure-port="):
            with contextlib.suppress(ValueError):
                return int(arg.split(b"=", 1)[1])
    return None


@dataclass
class Snapshot:
    texts: dict[str, str] = field(default_factory=dict)


@dataclass
class ControlPlaneMetrics:
    """Scrapes the components of one cluster; `sample()` during the run, `report()` at the end."""

    state: ClusterState
    urls: dict[str, str] = field(default_factory=dict)
    first: Snapshot = field(default_factory=Snapshot)
    maxima: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.urls["kube-apiserver"] = f"{self.state.api_url}/metrics"
        for comp in self.state.components:
            if comp.name in ("kube-controller-manager", "kube-scheduler"):
                port = secure_port(comp.pid)
                if port is not None:
                    self.urls[comp.name] = f"https://127.0.0.1:{port}/metrics"

    async def _scrape(self, *, apiserver: bool = True) -> Snapshot:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed serving certs made at start
        headers = {"Authorization": f"Bearer {self.state.admin_token}"}
        snap = Snapshot()
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            for name, url in self.urls.items():
                if name == "kube-apiserver" and not apiserver:
                    continue
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(url, ssl=ctx) as resp:
                        if resp.status == 200:
                            snap.texts[name] = await resp.text()
        return snap

    async def start(self) -> None:
        self.first = await self._scrape()

    async def sample(self, *, apiserver: bool = False) -> Snapshot:
        """Note the gauges' maxima. The apiserver's /metrics is left out unless asked for:
        rendering it costs the apiserver itself CPU the run needs."""
        snap = await self._scrape(apiserver=apiserver)
        kcm = snap.texts.get("kube-controller-manager", "")
        api = snap.texts.get("kube-apiserver", "")
        gauges = {
            "max_job_queue": total(kcm, "workqueue_depth", name="job"),
            "max_pending_pods": total(
                snap.texts.get("kube-scheduler", ""), "scheduler_pending_pods"
            ),
            "max_inflight": total(api, "apiserver_current_inflight_requests"),
            "max_apf_inqueue": total(api, "apiserver_flowcontrol_current_inqueue_requests"),
        }
        for k, v in gauges.items():
            self.maxima[k] = max(self.maxima.get(k, 0.0), v)
        return snap

    async def sample_every(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.sample()

    async def report(self, jobs: int) -> dict[str, Any]:
        last = await self.sample(apiserver=True)
        out: dict[str, Any] = {k: round(v) for k, v in self.maxima.items()}
        for comp in ("kube-controller-manager", "kube-scheduler"):
            a, b = self.first.texts.get(comp, ""), last.texts.get(comp, "")
            if not b:
                continue
            out[comp] = {
                "throttle_wait_s": round(
                    total(b, "rest_client_rate_limiter_duration_seconds_sum")
                    - total(a, "rest_client_rate_limiter_duration_seconds_sum"),
                    1,
                ),
                "requests": round(
                    total(b, "rest_client_requests_total") - total(a, "rest_client_requests_total")
                ),
            }
        api_a = self.first.texts.get("kube-apiserver", "")
        api_b = last.texts.get("kube-apiserver", "")
        if api_b:
            out["apf_rejected"] = round(
                total(api_b, "apiserver_flowcontrol_rejected_requests_total")
                - total(api_a, "apiserver_flowcontrol_rejected_requests_total")
            )
            before = writes_by_resource(api_a)
            delta = {k: v - before.get(k, 0.0) for k, v in writes_by_resource(api_b).items()}
            out["writes_per_job"] = _per_job(delta, jobs)
        return out


def _per_job(delta: Mapping[str, float], jobs: int) -> dict[str, float]:
    if jobs <= 0:
        return {}
    kept = {k: round(v / jobs, 2) for k, v in sorted(delta.items(), key=lambda kv: -kv[1])}
    return {k: v for k, v in kept.items() if v >= 0.05}
