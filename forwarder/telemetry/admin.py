"""The admin listener: ``/metrics``, ``/healthz``, ``/readyz``, ``/api/status``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from forwarder.config import parse_address
from forwarder.telemetry.metrics import Metrics


class AdminServer:
    """Serves the process's metrics and state.

    Arguments:
        address: ``host:port`` to listen on.
        metrics: the metrics to expose.
        status: returns the ``/api/status`` document (or an awaitable of it).
        ready: returns (ready, reason) for ``/readyz``.
        render_metrics: replaces the registry's exposition (the supervisor sums workers').
    """

    def __init__(
        self,
        address: str,
        metrics: Metrics,
        status: Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]],
        ready: Callable[[], tuple[bool, str] | Awaitable[tuple[bool, str]]],
        render_metrics: Callable[[], Awaitable[bytes]] | None = None,
    ) -> None:
        self.address = address
        self.metrics = metrics
        self._status = status
        self._ready = ready
        self._render = render_metrics
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/api/status", self._api_status)

    def add_post(self, path: str, handler: Callable[[web.Request], Any]) -> None:
        self.app.router.add_post(path, handler)

    async def start(self) -> None:
        if self._runner is not None:
            return
        host, port = parse_address(self.address)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, reuse_address=True).start()

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def bound(self) -> tuple[str, int] | None:
        if self._runner is None or not self._runner.addresses:
            return None
        host, port = self._runner.addresses[0][:2]
        return host, port

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._render is not None:
            body = await self._render()
        else:
            body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        result = self._ready()
        if inspect.isawaitable(result):
            result = await result
        ok, reason = result
        return web.json_response({"ready": ok, "reason": reason}, status=200 if ok else 503)

    async def _api_status(self, request: web.Request) -> web.Response:
        status = self._status()
        if inspect.isawaitable(status):
            status = await status
        return web.Response(body=orjson.dumps(status), content_type="application/json")
