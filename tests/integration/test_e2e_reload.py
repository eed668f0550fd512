"""Reload under load, against the real daemon (one process, then a supervisor and 2 workers).

A steady stream of uniquely numbered events goes in over one long-lived TCP connection and
over HTTP while the test rewrites the config and reloads it, by SIGHUP and by
``POST /api/reload``, again and again: a sink's batch size changes (with its destination
stalled, so the old batcher has requests in flight and the new one must take the rest), a
sink is added and removed, a source's ``max_event_bytes`` changes, and invalid configs come
in between. Afterwards every event written over TCP and every event of an acknowledged HTTP
request arrived exactly once at each sink that existed throughout.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.helpers import DaemonProcess, FakeCollector

_RELOAD_EVENTS = ("reloaded", "reload rejected; still running on the previous config")


def free_port() -> int:
    """A port nothing listens on right now (the config needs fixed ports: a changed source
    binds again, and with port 0 it would move)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Load:
    """Steady traffic: NDJSON over one TCP connection, 10-event JSON arrays over HTTP.

    Arguments:
        tcp_port, http_port: where the ``steady`` (tcp) and ``app_http`` sources listen.
    """

    def __init__(self, tcp_port: int, http_port: int) -> None:
        self.tcp_port = tcp_port
        self.http_url = f"http://127.0.0.1:{http_port}/v1/events"
        self.tcp_sent: list[str] = []
        self.http_sent: list[str] = []
        self.http_acked: list[str] = []
        self.http_failed = 0
        self.stop = asyncio.Event()

    async def tcp(self) -> None:
        """Write 20 events every 5 ms; a reset by the daemon fails the test."""
        _, writer = await asyncio.open_connection("127.0.0.1", self.tcp_port)
        n = 0
        try:
            while not self.stop.is_set():
                ids = [f"t{n + i}" for i in range(20)]
                writer.write(b"".join(b'{"id":"%s","via":"tcp"}\n' % i.encode() for i in ids))
                await writer.drain()
                self.tcp_sent.extend(ids)
                n += 20
                await asyncio.sleep(0.005)
        finally:
            writer.close()
        await writer.wait_closed()

    async def http(self) -> None:
        """POST 10 events at a time; those of a 200 answer are acknowledged, others not."""
        n = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while not self.stop.is_set():
                ids = [f"h{n + i}" for i in range(10)]
                n += 10
                self.http_sent.extend(ids)
                body = json.dumps([{"id": i, "via": "http"} for i in ids])
                try:
                    async with session.post(
                        self.http_url, data=body, headers={"Content-Type": "application/json"}
                    ) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    self.http_acked.extend(ids)
                else:
                    self.http_failed += 1
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.005)


class Reloader:
    """Rewrites the daemon's config file and reloads it by SIGHUP or ``POST /api/reload``."""

    def __init__(self, daemon: DaemonProcess, workers: int) -> None:
        self.daemon = daemon
        self.workers = workers

    def write(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        self.daemon.config_path.write_text(text)

    def _reload_lines(self) -> int:
        return sum(1 for line in self.daemon.lines if line.get("event") in _RELOAD_EVENTS)

    async def by_signal(self, *, valid: bool) -> None:
        """SIGHUP; returns once every process logged the outcome (one line if rejected)."""
        before = self._reload_lines()
        self.daemon.signal(signal.SIGHUP)
        expected = before + (self.workers if valid else 1)
        # A deadline, not a count of sleeps: on a loaded machine each sleep runs long.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            if self._reload_lines() >= expected:
                return
            await asyncio.sleep(0.01)
        recent = [(line.get("event"), line.get("worker")) for line in self.daemon.lines[-30:]]
        raise AssertionError(
            f"no reload logged by every process: {recent} {self.daemon.stderr.decode()[-2000:]}"
        )

    async def by_post(self) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.daemon.admin_url}/api/reload") as resp,
        ):
            body: dict[str, Any] = await resp.json()
            return resp.status, body

    async def status(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.daemon.admin_url}/api/status") as resp,
        ):
            value: dict[str, Any] = await resp.json()
        return value


def summaries(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each process's reload summary: the supervisor nests its workers' answers."""
    parts: list[dict[str, Any]] = result.get("workers", [result])
    return parts


def received_ids(objects: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(obj["id"]) for obj in objects)


def file_ids(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(json.loads(line)["id"] for line in path.read_text().splitlines() if line)


async def post_big(url: str) -> int:
    """One event of about 3 KB; the status code of the answer."""
    body = json.dumps({"id": "big", "pad": "x" * 3000})
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp,
    ):
        return resp.status


@pytest.mark.parametrize("workers", [1, 2])
async def test_reloads_under_load_lose_and_duplicate_nothing(
    tmp_path: Path, collector: FakeCollector, workers: int
) -> None:
    """Repeated reloads (both ways, valid and not) under TCP and HTTP load: exactly once."""
    tcp_port, http_port = free_port(), free_port()
    archive = tmp_path / "archive.jsonl"
    fast = {"retry_initial_backoff_secs": 0.05, "retry_max_backoff_secs": 0.2}
    base: dict[str, Any] = {
        "workers": workers,
        "shutdown_timeout_secs": 10,
        "data_dir": str(tmp_path / "data"),
        "admin": {"address": "127.0.0.1:0"},
        "log": {"level": "info", "format": "json"},
        "sources": {
            "steady": {"type": "tcp", "address": f"127.0.0.1:{tcp_port}"},
            "app_http": {"type": "http", "address": f"127.0.0.1:{http_port}"},
        },
        "sinks": {
            "main": {
                "type": "http",
                "endpoint": collector.endpoint,
                "batch": {"max_events": 50, "timeout_secs": 0.05},
                "request": {"concurrency": 2, **fast},
            },
            "archive": {"type": "file", "path": str(archive), "batch": {"timeout_secs": 0.05}},
        },
    }
    async with FakeCollector() as extra_collector:
        extra = {
            "type": "http",
            "endpoint": extra_collector.endpoint,
            "inputs": ["steady"],
            "batch": {"max_events": 20, "timeout_secs": 0.05},
            "request": fast,
        }
        daemon = DaemonProcess(tmp_path, base)
        reloader = Reloader(daemon, workers)
        senders: list[asyncio.Task[None]] = []
        idle: asyncio.StreamWriter | None = None
        try:
            await daemon.start()
            # Opened before any reload, silent until the end: it must still be served.
            _, idle = await asyncio.open_connection("127.0.0.1", tcp_port)
            load = Load(tcp_port, http_port)
            senders += [asyncio.create_task(load.tcp()), asyncio.create_task(load.http())]
            await asyncio.sleep(0.3)

            # 1. A changed sink (batch size) while its destination holds every request.
            collector.script.stall()
            await asyncio.sleep(0.3)
            assert collector.script.held > 0
            smaller = yaml.safe_load(yaml.safe_dump(base))
            smaller["sinks"]["main"]["batch"]["max_events"] = 7
            reloader.write(smaller)
            await reloader.by_signal(valid=True)
            await asyncio.sleep(0.2)
            collector.script.release()
            await asyncio.sleep(0.3)

            # 2. A sink added.
            added = yaml.safe_load(yaml.safe_dump(smaller))
            added["sinks"]["extra"] = extra
            reloader.write(added)
            code, result = await reloader.by_post()
            assert code == 200 and result["ok"], result
            for part in summaries(result):
                assert part["sinks"]["added"] == ["extra"]
                assert sorted(part["sinks"]["unchanged"]) == ["archive", "main"]
                assert sorted(part["sources"]["unchanged"]) == ["app_http", "steady"]
            await asyncio.sleep(0.3)
            assert await post_big(load.http_url) == 200

            # 3. Invalid (and without "extra"): rejected, the old config stays in force.
            invalid = yaml.safe_load(yaml.safe_dump(smaller))
            invalid["sinks"]["main"]["batch"]["max_events"] = 0
            reloader.write(invalid)
            await reloader.by_signal(valid=False)
            status = await reloader.status()
            assert status["reload"]["ok"] is False
            assert any("sinks.main.batch.max_events" in e for e in status["reload"]["errors"])
            assert set(status["sinks"]) == {"main", "archive", "extra"}
            await asyncio.sleep(0.2)

            # 4. A changed source: app_http takes events up to 2,000 bytes only.
            narrow = yaml.safe_load(yaml.safe_dump(added))
            narrow["sources"]["app_http"]["max_event_bytes"] = 2000
            reloader.write(narrow)
            code, result = await reloader.by_post()
            assert code == 200 and result["ok"], result
            for part in summaries(result):
                assert part["sources"]["changed"] == ["app_http"]
                assert part["sources"]["unchanged"] == ["steady"]
            assert await post_big(load.http_url) == 400
            await asyncio.sleep(0.3)

            # 5. The added sink removed.
            reloader.write(narrow | {"sinks": smaller["sinks"]})
            await reloader.by_signal(valid=True)
            await asyncio.sleep(0.3)

            # 6. Not YAML at all, by POST: 400 with the error, nothing changes.
            reloader.write("sources: [unclosed\n")
            code, result = await reloader.by_post()
            assert code == 400 and result["ok"] is False and result["errors"], result
            status = await reloader.status()
            assert status["reload"]["ok"] is False
            assert set(status["sinks"]) == {"main", "archive"}

            # 7. Back to the first config, by SIGHUP.
            reloader.write(base)
            await reloader.by_signal(valid=True)
            await asyncio.sleep(0.3)
            status = await reloader.status()
            assert status["reload"]["ok"] is True

            idle.write(b"".join(b'{"id":"idle%d"}\n' % i for i in range(100)))
            await idle.drain()
            idle.close()
            await idle.wait_closed()
            load.stop.set()
            await asyncio.gather(*senders)

            idle_ids = {f"idle{i}" for i in range(100)}
            expected = set(load.tcp_sent) | set(load.http_acked) | idle_ids | {"big"}
            possible = expected | set(load.http_sent)

            def settled() -> bool:
                return expected <= set(received_ids(collector.received)) and expected <= set(
                    file_ids(archive)
                )

            for _ in range(600):
                if settled():
                    break
                await asyncio.sleep(0.05)
            assert await daemon.terminate() == 0
        finally:
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
            if idle is not None:
                idle.close()
            # Held requests would keep the collector's shutdown waiting.
            collector.script.release()
            await daemon.close()

        print(
            f"\nworkers {workers}: {len(load.tcp_sent)} tcp, {len(load.http_acked)} http acked, "
            f"{load.http_failed} http requests failed, {len(collector.requests)} requests to main"
        )
        assert len(load.tcp_sent) > 2000 and len(load.http_acked) > 200
        for name, got in (
            ("main", received_ids(collector.received)),
            ("archive", file_ids(archive)),
        ):
            missing = expected - set(got)
            assert not missing, (name, len(missing), sorted(missing)[:10])
            assert set(got) <= possible, name
            duplicated = {i: n for i, n in got.items() if n > 1}
            assert not duplicated, (name, list(duplicated.items())[:10])
        # The sink that existed for a while got only events of its input, each at most once.
        extra_ids = received_ids(extra_collector.received)
        assert extra_ids, "the added sink delivered nothing"
        assert set(extra_ids) <= set(load.tcp_sent)
        assert max(extra_ids.values()) == 1
        # Batches of at most 7 went out while that config held.
        assert any(0 < r.accepted <= 7 for r in collector.requests if r.accepted)


async def test_status_names_no_reload_before_the_first(tmp_path: Path) -> None:
    """A daemon that has not reloaded says so: /api/status 'reload' is null."""
    config = {
        "workers": 1,
        "sources": {"t": {"type": "tcp", "address": "127.0.0.1:0"}},
        "sinks": {"f": {"type": "file", "path": str(tmp_path / "out.jsonl")}},
    }
    daemon = DaemonProcess(tmp_path, config)
    try:
        await daemon.start()
        status = await Reloader(daemon, 1).status()
        assert "reload" in status and status["reload"] is None
        assert await daemon.terminate() == 0
    finally:
        await daemon.close()
