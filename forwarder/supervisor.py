"""``workers: N``: N worker processes share the ingest ports, one supervisor faces the world.

Each worker is a full pipeline (its own sources, buffers and sinks). The supervisor listens on
the TCP-based ingest ports and hands each connection to the next ready worker
(:mod:`forwarder.handoff`), so the connections, and the cores, are shared evenly; UDP ports are
shared with ``SO_REUSEPORT``. The supervisor owns the admin port (metrics and status summed
over the workers), systemd notifications and the signals: SIGTERM/SIGINT and SIGHUP are passed
on, and a worker that dies is started again.

A worker's disk buffers and spill files live under its own name (``<sink>.w<i>``) so two
processes never share a file; see :func:`forwarder.wiring.instance_dirs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from forwarder import __version__
from forwarder.config import Config, ConfigError, format_address, load_file, parse_address
from forwarder.daemon import banner
from forwarder.handoff import Listener, channel_pair
from forwarder.systemd import SystemdNotifier
from forwarder.telemetry.admin import AdminServer
from forwarder.telemetry.aggregate import merge_metrics, merge_status
from forwarder.telemetry.metrics import Metrics
from forwarder.worker import (
    ADDRESSES_ENV,
    HANDED_ENV,
    HANDOFF_FD_ENV,
    PARENT_ENV,
    WORKER_ENV,
    WORKER_FD_ENV,
)

log = structlog.get_logger()

_RESTART_BACKOFF_SECS = (0.5, 1, 2, 5, 10)


class Worker:
    """One worker process, started again if it dies while the supervisor runs."""

    def __init__(
        self,
        index: int,
        count: int,
        config: Config,
        addresses: dict[str, str],
        shutting_down: asyncio.Event,
        handed: list[str] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.index = index
        self.shutting_down = shutting_down
        self.count = count
        self.config = config
        self.addresses = addresses
        # Sources whose connections the supervisor accepts and hands over this worker's channel.
        self.handed = handed or []
        self.on_ready = on_ready
        self.channel: socket.socket | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.admin: str | None = None
        self.ready = asyncio.Event()
        self.stopping = False
        self.restarts = 0
        # Exit code of a first start that never got ready (a port in use, say).
        self.start_failed: int | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        read_fd, write_fd = os.pipe()
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        }
        env[WORKER_ENV] = f"{self.index}/{self.count}"
        env[WORKER_FD_ENV] = str(write_fd)
        env[ADDRESSES_ENV] = orjson.dumps(self.addresses).decode()
        env[PARENT_ENV] = str(os.getpid())
        fds = [write_fd]
        theirs = None
        if self.handed:
            self.close_channel()
            self.channel, theirs = channel_pair()
            env[HANDOFF_FD_ENV] = str(theirs.fileno())
            env[HANDED_ENV] = orjson.dumps(self.handed).decode()
            fds.append(theirs.fileno())
        args = [sys.executable, "-m", "forwarder.cli", "run"]
        if self.config.path is not None:
            args += ["-c", str(self.config.path)]
        self.ready.clear()
        try:
            self.proc = await asyncio.create_subprocess_exec(*args, env=env, pass_fds=fds)
        finally:
            os.close(write_fd)
            if theirs is not None:
                theirs.close()
        self._watch = asyncio.create_task(self._watch_process(read_fd))

    async def _watch_process(self, read_fd: int) -> None:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0)
        )
        try:
            line = await reader.readline()
            if line:
                info = orjson.loads(line)
                self.admin = info["admin"]
                self.ready.set()
                if self.on_ready is not None:
                    self.on_ready()
        finally:
            transport.close()
        code = await self.proc.wait()
        self.ready.clear()
        self.admin = None
        self.close_channel()
        # A signal to the whole process group (Ctrl-C, `timeout`) reaches workers first.
        if self.stopping or self.shutting_down.is_set():
            return
        if not line and self.restarts == 0:
            # Restarting cannot fix a start-up error: the supervisor stops and exits with it.
            self.start_failed = code or 1
            self.ready.set()
            return
        delay = _RESTART_BACKOFF_SECS[min(self.restarts, len(_RESTART_BACKOFF_SECS) - 1)]
        self.restarts += 1
        log.error(
            "worker exited; starting it again", worker=self.index, code=code, after_secs=delay
        )
        await asyncio.sleep(delay)
        if not (self.stopping or self.shutting_down.is_set()):
            await self.start()

    def close_channel(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.close()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def stop(self, timeout: float) -> int:
        self.stopping = True
        self.close_channel()
        proc = self.proc
        if proc is None:
            return 0
        self.signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                code = await proc.wait()
        except TimeoutError:
            log.error("worker did not stop in time; killing it", worker=self.index)
            proc.kill()
            code = await proc.wait()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        return code


class Supervisor:
    """Runs ``count`` workers for one config.

    Arguments:
        config: the validated config.
        count: number of worker processes (2 or more).
    """

    def __init__(self, config: Config, count: int) -> None:
        self.config = config
        self.count = count
        self.state = "starting"
        self.notifier = SystemdNotifier()
        self.metrics = Metrics()
        self.admin = AdminServer(
            config.settings.admin.address,
            self.metrics,
            self._status,
            self._readiness,
            render_metrics=self._metrics,
        )
        self.admin.add_post("/api/reload", self._reload_endpoint)
        self.listeners: dict[str, Listener] = {}
        self.addresses = self._listen()
        self._stop = asyncio.Event()
        # Fixed for the workers' lifetime: a worker takes these sources' connections from its
        # channel and listens for the others (sources a reload adds) itself.
        self.handed = list(self.listeners)
        self.workers = [
            Worker(i, count, config, self.addresses, self._stop, self.handed, self._accept)
            for i in range(count)
        ]
        self._interrupts = 0
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.last_reload: dict[str, Any] | None = None

    def _listen(self) -> dict[str, str]:
        """Listen on every TCP-based source's port, and pick real ports for UDP ``:0``
        addresses so every worker binds the same one."""
        addresses = {}
        try:
            for name, source in self.config.sources.items():
                if getattr(source, "mode", "tcp") == "udp":
                    addresses[name] = self._udp_port(source.address)
                    continue
                listener = Listener(name, source.address, self._channels)
                self.listeners[name] = listener
                addresses[name] = listener.address
        except OSError:
            self._close_listeners()
            raise
        return addresses

    @staticmethod
    def _udp_port(address: str) -> str:
        host, port = parse_address(address)
        if port != 0:
            return address
        # A UDP socket in the SO_REUSEPORT group gets its share of datagrams, and this one
        # never reads: it only learns a free port, then lets the workers have it.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        return format_address(host, port)

    def _channels(self) -> list[socket.socket]:
        """The channels of the workers that take connections now."""
        return [
            w.channel
            for w in self.workers
            if w.channel is not None and w.ready.is_set() and not w.stopping
        ]

    def _accept(self) -> None:
        """Accept on every listener, once running: at start, and whenever a worker becomes
        ready (a listener pauses while no worker is ready; the first one back resumes it)."""
        if self.state == "running":
            for listener in self.listeners.values():
                listener.start()

    def _close_listeners(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()

    def _follow_sources(self, new: Config) -> None:
        """A handed source that a reload removes closes its port, as a single process would;
        one brought back listens again on its old address."""
        for name in self.handed:
            if name not in new.sources:
                if name in self.listeners:
                    self.listeners.pop(name).close()
                continue
            if name in self.listeners:
                continue
            try:
                listener = Listener(name, self.addresses[name], self._channels)
            except OSError as exc:
                log.error("cannot listen again", component=name, error=str(exc))
                continue
            self.listeners[name] = listener
            listener.start()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            await self.admin.start()
            for worker in self.workers:
                await worker.start()
            await asyncio.gather(*(w.ready.wait() for w in self.workers))
            failed = [w.start_failed for w in self.workers if w.start_failed is not None]
            if failed:
                log.error("a worker could not start; stopping", exit_code=failed[0])
                return failed[0]
            self.state = "running"
            self._accept()
            await self.notifier.start()
            self.notifier.ready(f"running; {self.count} workers")
            banner(
                self.config,
                {name: [address] for name, address in self.addresses.items()},
                self.admin.bound,
                workers=self.count,
                pids=[w.proc.pid for w in self.workers if w.proc],
            )
            await self._stop.wait()
        finally:
            self.state = "stopping"
            self.notifier.stopping()
            # Accept nothing more: connections still in the backlog are refused, as a
            # stopping single process refuses them.
            self._close_listeners()
            timeout = self.config.settings.shutdown_timeout_secs + 5
            codes = await asyncio.gather(*(w.stop(timeout) for w in self.workers))
            await self.admin.stop()
            await self._session.close()
            await self.notifier.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("stopped", worker_exit_codes=codes)
        return 0 if all(c == 0 for c in codes) else 1

    def _on_sigint(self) -> None:
        self._interrupts += 1
        if self._interrupts > 1:
            for worker in self.workers:
                worker.signal(signal.SIGKILL)
            os._exit(1)
        self._stop.set()

    def _on_sighup(self) -> None:
        task = asyncio.ensure_future(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> dict[str, Any]:
        """Check the new config here (one error report, not N), then let each worker reload."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                new = load_file(self.config.path) if self.config.path else self.config
            except ConfigError as exc:
                self.last_reload = {"ok": False, "errors": exc.errors}
                log.error(
                    "reload rejected; still running on the previous config", errors=exc.errors
                )
                self.notifier.ready()
                return self.last_reload
            restart = []
            if new.worker_count != self.count:
                restart.append("workers")
            answers = await asyncio.gather(
                *(self._ask(w, "POST", "/api/reload") for w in self.workers)
            )
            ok = all(a.get("ok") for a in answers)
            if ok:
                self.config = new
                self._follow_sources(new)
            self.last_reload = {"ok": ok, "restart_needed": restart, "workers": answers}
            self.notifier.ready()
            return self.last_reload

    # -- admin views ---------------------------------------------------------------------

    async def _readiness(self) -> tuple[bool, str]:
        """Ready when every worker is: a worker's own /readyz also covers its disk buffers."""
        if self.state != "running":
            return False, self.state
        if not all(w.ready.is_set() for w in self.workers):
            return False, "worker restarting"
        answers = await asyncio.gather(*(self._ask(w, "GET", "/readyz") for w in self.workers))
        for worker, answer in zip(self.workers, answers, strict=True):
            if not answer.get("ready"):
                return False, f"worker {worker.index}: {answer.get('reason', 'no answer')}"
        return True, "running"

    async def _status(self) -> dict[str, Any]:
        parts = await asyncio.gather(*(self._ask(w, "GET", "/api/status") for w in self.workers))
        merged = merge_status([p for p in parts if p])
        merged.update(
            version=__version__, state=self.state, pid=os.getpid(), reload=self.last_reload
        )
        return merged

    async def _metrics(self) -> bytes:
        texts = await asyncio.gather(*(self._ask_text(w, "/metrics") for w in self.workers))
        return merge_metrics([t for t in texts if t])

    async def _reload_endpoint(self, request: web.Request) -> web.Response:
        result = await self.reload()
        return web.json_response(result, status=200 if result.get("ok") else 400)

    async def _ask_text(self, worker: Worker, path: str) -> str:
        if worker.admin is None or self._session is None:
            return ""
        try:
            async with self._session.get(f"http://{worker.admin}{path}") as resp:
                return await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return ""

    async def _ask(self, worker: Worker, method: str, path: str) -> dict[str, Any]:
        if worker.admin is None or self._session is None:
            return {}
        try:
            async with self._session.request(method, f"http://{worker.admin}{path}") as resp:
                value = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return {}
        return value if isinstance(value, dict) else {}
