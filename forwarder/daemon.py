"""The process lifecycle: start in order, serve, stop on a signal under one deadline."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import structlog

from forwarder import __version__
from forwarder.config import Config
from forwarder.telemetry.admin import AdminServer
from forwarder.telemetry.metrics import Metrics
from forwarder.topology import Topology

log = structlog.get_logger()


class Daemon:
    """Runs one config until SIGTERM/SIGINT.

    Arguments:
        config: the validated config.
        metrics: injected so tests can read them; a fresh set by default.
    """

    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.topology = Topology(config, self.metrics)
        self.admin = AdminServer(
            config.settings.admin.address, self.metrics, self.status, self.readiness
        )
        self.state = "starting"
        self._stop = asyncio.Event()
        self._interrupts = 0

    # -- views -------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        return self.state == "running", self.state

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "state": self.state,
            "pid": os.getpid(),
            **self.topology.status(),
        }

    # -- lifecycle -----------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def _on_sigint(self) -> None:
        self._interrupts += 1
        if self._interrupts > 1:
            # A second Ctrl-C means "now": skip the drain.
            log.warning("second interrupt; exiting without draining")
            os._exit(1)
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        try:
            await self.start()
            await self._stop.wait()
            await self.stop()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            loop.remove_signal_handler(signal.SIGINT)
        return 0

    async def start(self) -> None:
        self.metrics.ready.set(0)
        await self.admin.start()
        await self.topology.start()
        self.state = "running"
        self.metrics.ready.set(1)
        self._banner()

    async def stop(self) -> None:
        """Stop accepting, flush, wait for deliveries up to the deadline, then close."""
        if self.state in ("stopping", "stopped"):
            return
        self.state = "stopping"
        self.metrics.ready.set(0)
        timeout = self.config.settings.shutdown_timeout_secs
        log.info("stopping", shutdown_timeout_secs=timeout)
        await self.topology.stop_sources()
        drained = await self.topology.drain(timeout)
        left = await self.topology.stop_sinks()
        undelivered = {k: v for k, v in left.items() if v}
        if undelivered:
            log.error("stopped with undelivered events", undelivered=undelivered, drained=drained)
        await self.admin.stop()
        self.state = "stopped"
        log.info("stopped")

    def _banner(self) -> None:
        admin = self.admin.bound
        addresses = {
            name: [f"{h}:{p}" for h, p in bound] for name, bound in self.topology.bound().items()
        }
        sinks = {}
        for name, rt in self.topology.sinks.items():
            where = getattr(rt.config, "path", None) or getattr(rt.config, "endpoint", None)
            sinks[name] = f"{rt.config.type} {where}" if where else rt.config.type
        log.info(
            "forwarder ready",
            version=__version__,
            sources=addresses,
            sinks=sinks,
            admin=f"{admin[0]}:{admin[1]}" if admin else None,
        )
        for name, source in self.topology.sources.items():
            for host, port in source.bound:
                kind = source.config.type
                hint = {
                    "tcp": f'send NDJSON: echo \'{{"user":"alice"}}\' | nc -q1 {host} {port}',
                    "http": f'POST JSON: curl -d \'{{"user":"alice"}}\' '
                    f"-H 'Content-Type: application/json' http://{host}:{port}/v1/events",
                }.get(kind, f"{kind} on {host}:{port}")
                log.info("listening", component=name, address=f"{host}:{port}", hint=hint)
        for name, where in sinks.items():
            log.info("delivering", component=name, to=where)
        if admin:
            log.info("admin", metrics=f"http://{admin[0]}:{admin[1]}/metrics")
