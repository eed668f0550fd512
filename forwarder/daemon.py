"""The process lifecycle: start in order, serve, stop on a signal under one deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from typing import Any

import structlog
from aiohttp import web

from forwarder import __version__
from forwarder.config import Config, ConfigError, load_default, load_file
from forwarder.handoff import Receiver
from forwarder.systemd import SystemdNotifier
from forwarder.telemetry.admin import AdminServer
from forwarder.telemetry.metrics import Metrics
from forwarder.topology import Topology
from forwarder.worker import handoff_channel, report_ready, worker_overrides

log = structlog.get_logger()


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


class Daemon:
    """Runs one config until SIGTERM/SIGINT.

    Arguments:
        config: the validated config.
        metrics: injected so tests can read them; a fresh set by default.
        instance: (index, count) when this process is one of several workers.
    """

    def __init__(
        self,
        config: Config,
        metrics: Metrics | None = None,
        instance: tuple[int, int] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.instance = instance
        self.topology = Topology(config, self.metrics, instance=instance)
        self.admin = AdminServer(
            config.settings.admin.address, self.metrics, self.status, self.readiness
        )
        self.admin.add_post("/api/reload", self._reload_endpoint)
        self.notifier = SystemdNotifier()
        self.state = "starting"
        self.last_reload: dict[str, Any] | None = None
        self._stop = asyncio.Event()
        self._interrupts = 0
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        # A worker's channel for the connections the supervisor accepts (forwarder.handoff).
        self._receiver: Receiver | None = None

    # -- views -------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if self.state != "running":
            return False, self.state
        # A disk buffer that cannot write takes nothing new (block or counted drop), so a
        # load balancer should send elsewhere until space returns.
        failing = [
            f"sink {name}: disk buffer cannot write: {error}"
            for name, rt in self.topology.sinks.items()
            if (error := getattr(rt.buffer, "disk_error", None)) is not None
        ]
        if failing:
            return False, "; ".join(failing)
        return True, self.state

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "state": self.state,
            "pid": os.getpid(),
            # The last reload's outcome: a rejected config's errors are read here.
            "reload": self.last_reload,
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
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            await self.start()
            await self._stop.wait()
            await self.stop()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 0

    def _on_sighup(self) -> None:
        task = asyncio.ensure_future(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file and apply it; an invalid file changes nothing."""
        async with self._reload_lock:
            if self.state != "running":
                return {"ok": False, "errors": [f"not running ({self.state})"]}
            self.notifier.reloading()
            try:
                new = self._read_config()
            except ConfigError as exc:
                self.last_reload = {"ok": False, "errors": exc.errors, "at": _now()}
                log.error(
                    "reload rejected; still running on the previous config", errors=exc.errors
                )
                self.notifier.ready(f"{self._status_line()}; last reload rejected")
                return self.last_reload
            summary = await self.topology.reload(new)
            self.config = self.topology.config
            self.last_reload = {"ok": True, "at": _now(), **summary}
            log.info("reloaded", **{k: v for k, v in summary.items() if v})
            # STATUS= too: the sinks may have changed, and the periodic line is seconds away.
            self.notifier.ready(self._status_line())
            return self.last_reload

    def _read_config(self) -> Config:
        config = load_file(self.config.path) if self.config.path else load_default()
        if self.instance is not None:
            # The supervisor's resolved ports and this worker's private admin port stand.
            config = worker_overrides(config)
        return config

    async def _reload_endpoint(self, request: web.Request) -> web.Response:
        result = await self.reload()
        return web.json_response(result, status=200 if result.get("ok") else 400)

    async def start(self) -> None:
        self.metrics.ready.set(0)
        await self.admin.start()
        await self.topology.start()
        self.state = "running"
        self.metrics.ready.set(1)
        if self.instance is not None:
            channel = handoff_channel()
            if channel is not None:
                self._receiver = Receiver(channel, self._adopt)
                self._receiver.start()
            report_ready(self.admin.bound)
        else:
            self._banner()
        await self.notifier.start()
        self.notifier.ready(self._status_line())
        self._spawn(self._status_loop())

    def _adopt(self, name: str, sock: socket.socket) -> None:
        source = self.topology.sources.get(name)
        if source is None:
            # Removed by a reload: the supervisor closes its port once the workers reloaded.
            sock.close()
            return
        source.adopt(sock)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _status_line(self) -> str:
        held = sum(rt.buffer.depth_events for rt in self.topology.sinks.values())
        down = [n for n, rt in self.topology.sinks.items() if not rt.delivery.up]
        line = f"{self.state}; {held} events buffered"
        return line + (f"; down: {', '.join(down)}" if down else "")

    async def _status_loop(self) -> None:
        """systemd's STATUS= line, so `systemctl status` shows live counts."""
        if not self.notifier.enabled:
            return
        while self.state == "running":
            self.notifier.status(self._status_line())
            await asyncio.sleep(5)

    async def stop(self) -> None:
        """Stop accepting, flush, wait for deliveries up to the deadline, then close."""
        if self.state in ("stopping", "stopped"):
            return
        self.state = "stopping"
        self.metrics.ready.set(0)
        self.notifier.stopping()
        for task in list(self._tasks):
            task.cancel()
        timeout = self.config.settings.shutdown_timeout_secs
        log.info("stopping", shutdown_timeout_secs=timeout)
        if self._receiver is not None:
            self._receiver.stop()
        await self.topology.stop_sources()
        drained = await self.topology.drain(timeout)
        left = await self.topology.stop_sinks()
        undelivered = {k: v for k, v in left.items() if v}
        if undelivered:
            log.error("stopped with undelivered events", undelivered=undelivered, drained=drained)
        await self.admin.stop()
        await self.notifier.stop()
        self.state = "stopped"
        log.info("stopped")

    def _banner(self) -> None:
        bound = self.topology.bound()
        banner(
            self.config, {n: [f"{h}:{p}" for h, p in b] for n, b in bound.items()}, self.admin.bound
        )


def banner(
    config: Config,
    addresses: dict[str, list[str]],
    admin: tuple[str, int] | None,
    **extra: Any,
) -> None:
    """The start-up lines: where to send events, where they land, where the metrics are."""
    sinks = {}
    for name, cfg in config.sinks.items():
        where = getattr(cfg, "endpoint", None) or getattr(cfg, "path", None)
        sinks[name] = f"{cfg.type} {where}" if where else cfg.type
    log.info(
        "forwarder ready",
        version=__version__,
        sources=addresses,
        sinks=sinks,
        admin=f"{admin[0]}:{admin[1]}" if admin else None,
        **extra,
    )
    for name, listening in addresses.items():
        kind = config.sources[name].type
        for address in listening:
            host, _, port = address.rpartition(":")
            hint = {
                "tcp": f'send NDJSON: echo \'{{"user":"alice"}}\' | nc -q1 {host} {port}',
                "http": f'POST JSON: curl -d \'{{"user":"alice"}}\' '
                f"-H 'Content-Type: application/json' http://{host}:{port}/v1/events",
                "syslog": f"syslog: logger -n {host} -P {port} --rfc5424 hello",
            }.get(kind, f"{kind} on {address}")
            log.info("listening", component=name, address=address, hint=hint)
    for name, where in sinks.items():
        log.info("delivering", component=name, to=where)
    if admin:
        log.info("admin", metrics=f"http://{admin[0]}:{admin[1]}/metrics")
