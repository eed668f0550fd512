"""Shared test helpers: a generic HTTP collector fake, a real daemon process, metric readers.

Everything listens on 127.0.0.1 with kernel-chosen ports, so tests run in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from forwarder.events import Event
from tests.fakes.script import FakeServer, SeenRequest, json_response

REPO = Path(__file__).resolve().parent.parent


def event(obj: dict[str, Any], source: str = "test") -> Event:
    """An event as a source would build it (compact JSON bytes)."""
    return Event(json.dumps(obj, separators=(",", ":")).encode(), source, time.time())


def events(n: int, source: str = "test", start: int = 0) -> list[Event]:
    return [event({"i": i}, source) for i in range(start, start + n)]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value, 0.0 when the series does not exist."""
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def wait_for(
    predicate: Callable[[], bool], *, timeout_secs: float = 5.0, every_secs: float = 0.01
) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout_secs``."""
    deadline = time.monotonic() + timeout_secs
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_secs}s")
        await asyncio.sleep(every_secs)


class FakeCollector(FakeServer):
    """A generic HTTP collector for the ``http`` sink: ``POST /ingest`` (or ``PUT``).

    Arguments:
        max_body_bytes: bodies larger than this are answered 413 (None: no limit).

    Script it through ``script`` (``respond(503, retry_after=1)``, ``reset()``, ``hang(s)``,
    ``stall()``/``release()``). Records: ``received`` (objects of every answered-2xx request,
    in order), ``requests`` (every request), ``max_in_flight`` (most requests open at once).
    """

    def __init__(self, *, max_body_bytes: int | None = None) -> None:
        super().__init__()
        self.max_body_bytes = max_body_bytes
        self.script = self._new_script(0)
        self.received: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def endpoint(self) -> str:
        return f"{self.url}/ingest"

    def _routes(self) -> list[web.RouteDef]:
        return [web.post("/ingest", self._post), web.put("/ingest", self._post)]

    async def _post(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._serve(request, self.script, self._handle)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: web.Request, seen: SeenRequest) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        seen.body = body
        if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
            return json_response(413, {"error": "too large"})
        if request.content_type == "application/x-ndjson":
            objs = [json.loads(line) for line in body.split(b"\n") if line]
        else:
            objs = json.loads(body)
        self.received.extend(objs)
        seen.accepted = len(objs)
        return json_response(200, {"ok": True})


class DaemonProcess:
    """``forwarder run -c`` as a real subprocess with its config written under ``tmp_path``.

    Arguments:
        tmp_path: where the config (and, unless given, ``data_dir``) goes.
        config: the config as a dict; addresses should use port 0.
    """

    def __init__(self, tmp_path: Path, config: dict[str, Any]) -> None:
        config = dict(config)
        config.setdefault("data_dir", str(tmp_path / "data"))
        config.setdefault("admin", {"address": "127.0.0.1:0"})
        config.setdefault("log", {"level": "info", "format": "json"})
        self.config = config
        self.config_path = tmp_path / "forwarder.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self.stderr = b""
        self.ready: dict[str, Any] | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()

    async def start(self, *, timeout_secs: float = 20.0) -> DaemonProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("FORWARDER_CONFIG", None)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "forwarder.cli",
            "run",
            "-c",
            str(self.config_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(self.config_path.parent),
            env=env,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read_stdout(self.proc.stdout)),
            asyncio.create_task(self._read_stderr(self.proc.stderr)),
        ]
        waiter = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self.proc.wait())
        done, _ = await asyncio.wait(
            {waiter, exited}, timeout=timeout_secs, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if waiter not in done:
            exited.cancel()
            raise AssertionError(
                f"daemon not ready (exit {self.proc.returncode}): {self.stderr.decode()[-2000:]}"
            )
        exited.cancel()
        return self

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            self.lines.append(record)
            if record.get("event") == "forwarder ready":
                self.ready = record
                self._ready.set()

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.stderr += chunk

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def address(self, source: str) -> tuple[str, int]:
        """(host, port) a source actually bound."""
        assert self.ready is not None
        host, _, port = self.ready["sources"][source][0].rpartition(":")
        return host, int(port)

    def port(self, source: str) -> int:
        return self.address(source)[1]

    @property
    def admin_url(self) -> str:
        assert self.ready is not None
        return f"http://{self.ready['admin']}"

    async def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics`` as ``name{label="v",...}`` -> value (labels sorted)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.admin_url}/metrics") as resp,
        ):
            text = await resp.text()
        return parse_metrics(text)

    def rss_kib(self) -> int:
        """Resident set size from ``/proc/<pid>/status``."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, *, timeout_secs: float = 30.0) -> int:
        """The exit code (after the output readers have finished)."""
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout_secs)
        await asyncio.gather(*self._readers, return_exceptions=True)
        return code

    async def terminate(self, *, timeout_secs: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        return await self.wait(timeout_secs=timeout_secs)

    async def close(self) -> None:
        """Kill the process if it is still running (test teardown)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """One value from :func:`parse_metrics` output; 0.0 when absent."""
    key = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return samples.get(f"{name}{{{key}}}", 0.0)


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``python -m forwarder.cli ARGS``: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "forwarder.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class SinkRig:
    """A sink, its delivery and dead-letter store, wired as the topology wires them, with
    fast retries so failure tests stay quick."""

    def __init__(
        self,
        config_class: type[Any],
        sink_class: type[Any],
        name: str,
        tmp_path: Path,
        settings: dict[str, Any],
    ) -> None:
        from forwarder.deadletter import DeadLetterStore
        from forwarder.sinks.delivery import Delivery
        from forwarder.telemetry.metrics import Metrics

        settings = {
            "request": {
                "timeout_secs": 5,
                "retry_initial_backoff_secs": 0.01,
                "retry_max_backoff_secs": 0.05,
            },
            **settings,
        }
        self.name = name
        self.config = config_class.model_validate(settings)
        self.metrics = Metrics()
        self.sink = sink_class(name, self.config)
        self.store = DeadLetterStore(
            tmp_path / "dead_letter" / name, name, max_bytes=1 << 30, metrics=self.metrics
        )
        self.delivery = Delivery(self.sink, self.config.request, self.metrics, self.store)

    def value(self, name: str, **labels: str) -> float:
        return sample(self.metrics.registry, name, sink=self.name, **labels)

    def dead_letters(self) -> list[dict[str, Any]]:
        from forwarder.deadletter import read_records

        return [r for path in self.store.files() for r in read_records(path)]
