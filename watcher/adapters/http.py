"""HTTP endpoints for the kubelet and Prometheus: /healthz, /readyz, /metrics.

/healthz answers as long as the event loop does (a wedged loop fails the liveness probe).
/readyz is ready once every watch has done its initial list and Redis answers a PING. Its
body also carries warnings that do not make the pod unready (Redis not durable, for one):
the first line is "ok" or "not ready: ...", each warning a line "warning: ..." after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from watcher.core.settings import ServerSettings
from watcher.kit.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Readiness:
    """What /readyz answers."""

    missing: Sequence[str] = ()
    """What is not ready yet: any makes /readyz answer 503."""
    warnings: Sequence[str] = ()
    """Said in the body whatever the status; never makes the pod unready."""


ReadinessCheck = Callable[[], Awaitable[Readiness]]


class HealthServer:
    def __init__(
        self, settings: ServerSettings, *, metrics: Metrics, readiness: ReadinessCheck
    ) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.host = settings.bind_address
        self.port = settings.port
        """The port listened on (the one chosen, once started, when settings say 0)."""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # any free port: find out which
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        state = await self.readiness()
        status = ("not ready: " + "; ".join(state.missing)) if state.missing else "ok"
        lines = [status, *(f"warning: {w}" for w in state.warnings)]
        return web.Response(status=503 if state.missing else 200, text="\n".join(lines) + "\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
