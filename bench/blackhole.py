"""A receiver with Splunk HEC and Datadog Logs semantics that only counts what arrives.

It answers like the real thing (HEC ``{"text":"Success","code":0}``, Datadog ``202 {}``,
any other POST path ``200 {}``) and keeps no events: it finds ids with one bytes-regex pass
over each decompressed body instead of parsing JSON, so its own ceiling stays well above
the systems it measures (the benchmark prints that ceiling).

``GET /stats`` returns the counters as JSON; ``POST /reset`` zeroes them. Run it in its own
process so it does not share a core's GIL with the load generator:

    python -m bench.blackhole --port 0 [--latency]

prints ``{"port": P, "pid": N}`` on one stdout line once it listens, and serves until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
import zlib
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

__all__ = ["Blackhole", "BlackholeProcess", "BlackholeStats", "main"]

# The event id, tried in turn: as the first key of an object (the generator puts it there,
# and it survives HEC and syslog-ng embedding), anywhere in an object, or inside an escaped
# JSON string (a Datadog "message"). Python's re scans for a pattern's first character, and
# "{" is ten times rarer than '"' in JSON: the first pattern costs half the second.
_ID_PATTERNS = (
    re.compile(rb'\{"id":"([^"]+)"'),
    re.compile(rb'"id": ?"([^"]+)"'),
    re.compile(rb'\\"id\\": ?\\"([^"\\]+)'),
)
_SENT_NS = re.compile(rb'"sent_ns": ?(\d+)')
_SENT_NS_ESCAPED = re.compile(rb'\\"sent_ns\\": ?(\d+)')
_HEC_OK = '{"text":"Success","code":0}'
_HEC_HEALTH = '{"text":"HEC is healthy","code":17}'
_DATADOG_PATH = "/api/v2/logs"
_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BlackholeStats:
    """Counters since start or the last reset.

    Arguments:
        requests: POST requests with a body.
        events: ids seen, duplicates included.
        unique: distinct ids seen.
        duplicates: ``events - unique``.
        wire_bytes: request body bytes as sent (compressed when gzip).
        body_bytes: request body bytes after decompression.
        first_arrival: epoch seconds when the first body was read, or 0.
        last_arrival: epoch seconds when the last body was read, or 0.
        bad_requests: bodies that could not be decompressed.
        latency_samples: events that carried ``sent_ns`` (latency mode only).
        latency_p50_ms: median send-to-arrival time, milliseconds, or None.
        latency_p99_ms: 99th percentile, milliseconds, or None.
        latency_max_ms: largest, milliseconds, or None.
    """

    requests: int
    events: int
    unique: int
    duplicates: int
    wire_bytes: int
    body_bytes: int
    first_arrival: float
    last_arrival: float
    bad_requests: int
    latency_samples: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None


def _find_ids(body: bytes) -> list[bytes]:
    for pattern in _ID_PATTERNS:
        ids = pattern.findall(body)
        if ids:
            return ids
    return []


def _sent_times(body: bytes) -> list[bytes]:
    return _SENT_NS.findall(body) or _SENT_NS_ESCAPED.findall(body)


def _percentile(ordered: list[int], fraction: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in milliseconds."""
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[rank] / 1e6


class Blackhole:
    """The counting receiver as an aiohttp application on 127.0.0.1.

    Arguments:
        port: TCP port to listen on; 0 picks a free one (read ``port`` after ``start``).
        latency: also record arrival minus ``sent_ns`` for every event that carries it.
    """

    def __init__(self, *, port: int = 0, latency: bool = False) -> None:
        self._requested_port = port
        self._latency_enabled = latency
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        self._ids: set[bytes] = set()
        self._events = 0
        self._requests = 0
        self._wire_bytes = 0
        self._body_bytes = 0
        self._first = 0.0
        self._last = 0.0
        self._bad = 0
        self._latencies = array("q")

    async def start(self) -> None:
        app = web.Application(client_max_size=256 << 20)
        app.router.add_get("/stats", self._on_stats)
        app.router.add_post("/reset", self._on_reset)
        app.router.add_get("/services/collector/health", self._on_health)
        app.router.add_get("/services/collector/health/1.0", self._on_health)
        app.router.add_post("/{path:.*}", self._on_post)
        # auto_decompress off: the body is counted as it crossed the wire, then inflated here.
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._requested_port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stats(self) -> BlackholeStats:
        ordered = sorted(self._latencies) if self._latencies else []
        unique = len(self._ids)
        return BlackholeStats(
            requests=self._requests,
            events=self._events,
            unique=unique,
            duplicates=self._events - unique,
            wire_bytes=self._wire_bytes,
            body_bytes=self._body_bytes,
            first_arrival=self._first,
            last_arrival=self._last,
            bad_requests=self._bad,
            latency_samples=len(ordered),
            latency_p50_ms=_percentile(ordered, 0.50) if ordered else None,
            latency_p99_ms=_percentile(ordered, 0.99) if ordered else None,
            latency_max_ms=ordered[-1] / 1e6 if ordered else None,
        )

    def count(self, wire: bytes, gzipped: bool) -> bool:
        """Count one request body; False when it could not be decompressed."""
        now_ns = time.time_ns()
        self._requests += 1
        self._wire_bytes += len(wire)
        try:
            # wbits 47: gzip or zlib header, detected; what mature senders emit either way.
            body = zlib.decompress(wire, 47) if gzipped else wire
        except zlib.error:
            self._bad += 1
            return False
        self._body_bytes += len(body)
        ids = _find_ids(body)
        if ids:
            self._events += len(ids)
            self._ids.update(ids)
            now = now_ns / 1e9
            if not self._first:
                self._first = now
            self._last = now
        if self._latency_enabled:
            self._latencies.extend(now_ns - int(sent) for sent in _sent_times(body))
        return True

    async def _on_post(self, request: web.Request) -> web.Response:
        wire = await request.read()
        gzipped = request.headers.get("Content-Encoding", "").lower() in ("gzip", "deflate")
        if not self.count(wire, gzipped):
            return web.json_response({"text": "Invalid data format", "code": 6}, status=400)
        if request.path == _DATADOG_PATH:
            return web.json_response({}, status=202)
        if request.path.startswith("/services/collector"):
            return web.Response(text=_HEC_OK, content_type="application/json")
        return web.json_response({})

    async def _on_health(self, request: web.Request) -> web.Response:
        return web.Response(text=_HEC_HEALTH, content_type="application/json")

    async def _on_stats(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.stats()))

    async def _on_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({})


class BlackholeProcess:
    """The blackhole in its own process (``python -m bench.blackhole``), read over HTTP.

    Arguments:
        latency: record send-to-arrival latencies of events that carry ``sent_ns``.
    """

    def __init__(self, *, latency: bool = False) -> None:
        self.latency = latency
        self.port = 0
        self.pid = 0
        self._process: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        argv = [sys.executable, "-m", "bench.blackhole", "--port", "0"]
        if self.latency:
            argv.append("--latency")
        self._process = await asyncio.create_subprocess_exec(
            *argv, cwd=_REPO_ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
        )
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), 30)
        if not line:
            raise RuntimeError(f"blackhole exited with {await self._process.wait()}")
        hello = json.loads(line)
        self.port, self.pid = int(hello["port"]), int(hello["pid"])
        self._session = aiohttp.ClientSession()

    async def stats(self) -> BlackholeStats:
        assert self._session is not None, "start() first"
        async with self._session.get(f"http://127.0.0.1:{self.port}/stats") as response:
            return BlackholeStats(**await response.json())

    async def wait_for(self, unique: int, *, idle_timeout_secs: float) -> BlackholeStats:
        """Poll until ``unique`` distinct ids arrived, or none arrived for
        ``idle_timeout_secs`` seconds (the rest are lost)."""
        loop = asyncio.get_running_loop()
        stats = await self.stats()
        idle_since, seen = loop.time(), stats.events
        while stats.unique < unique and loop.time() - idle_since < idle_timeout_secs:
            await asyncio.sleep(0.1)
            stats = await self.stats()
            if stats.events != seen:
                idle_since, seen = loop.time(), stats.events
        return stats

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await process.wait()


async def _serve(port: int, latency: bool) -> None:
    blackhole = Blackhole(port=port, latency=latency)
    await blackhole.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(json.dumps({"port": blackhole.port, "pid": os.getpid()}), flush=True)
    await stop.wait()
    await blackhole.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.blackhole", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any)")
    parser.add_argument("--latency", action="store_true", help="record sent_ns latencies")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args.port, args.latency))
    else:
        uvloop.run(_serve(args.port, args.latency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
