"""``workers: 2`` end to end: a supervisor and two worker processes sharing the ingest ports.

Every event arrives exactly once and the supervisor's /metrics is the sum of what the workers
did; a worker killed is started again while the service keeps accepting; SIGTERM stops the
set cleanly; a supervisor killed takes its workers with it; and lowering ``workers`` hands
the buffered events of a worker that no longer exists to the one that remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import DaemonProcess, FakeCollector, metric
from tests.integration.test_e2e_reload import Reloader

TCP_EVENTS = 20_000
HTTP_EVENTS = 2_000
CONNECTIONS = 16
CAPACITY = 30_000
RESTARTING = "worker exited; starting it again"
# Three interpreters start at once; on a busy 2-core machine that can take a while.
STARTUP_SECS = 60
FAST_RETRY = {"retry_initial_backoff_secs": 0.05, "retry_max_backoff_secs": 0.2}


def config(endpoint: str, workers: int = 2, **sink: Any) -> dict[str, Any]:
    return {
        "workers": workers,
        "shutdown_timeout_secs": 2,
        "sources": {
            "app_tcp": {"type": "tcp", "address": "127.0.0.1:0"},
            "app_http": {"type": "http", "address": "127.0.0.1:0"},
        },
        "sinks": {
            "webhook": {
                "type": "http",
                "endpoint": endpoint,
                "batch": {"max_events": 500, "timeout_secs": 0.05},
                "buffer": {"max_events": CAPACITY},
                "request": {"concurrency": 4, **FAST_RETRY},
                **sink,
            }
        },
    }


def children(pid: int) -> list[int]:
    """Live pids whose parent is ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            state, parent = stat
            if parent == pid and state != "Z":
                found.append(int(entry.name))
    return found


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def running(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


async def until(predicate: Any, timeout_secs: float, what: str) -> None:
    """Poll ``predicate`` (process state has no event to wait on) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout_secs
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def send_tcp(port: int, start: int, count: int, connections: int) -> None:
    """``count`` events numbered from ``start``, spread over ``connections`` connections."""

    async def one(offset: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        ids = range(start + offset, start + count, connections)
        writer.write(b"".join(b'{"id":%d,"via":"tcp"}\n' % i for i in ids))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(one(offset) for offset in range(connections)))


async def send_http(port: int, start: int, count: int) -> None:
    """``count`` events numbered from ``start`` in arrays of 100; every answer must be 200."""
    url = f"http://127.0.0.1:{port}/v1/events"
    # A fresh connection per request, so the kernel spreads them over both workers.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for first in range(start, start + count, 100):
            body = json.dumps([{"id": i, "via": "http"} for i in range(first, first + 100)])
            headers = {"Content-Type": "application/json"}
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()


async def get_json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        value: dict[str, Any] = await resp.json()
    return value


def ids_of(collector: FakeCollector) -> list[int]:
    return [int(obj["id"]) for obj in collector.received]


async def test_every_event_once_and_metrics_summed(
    tmp_path: Path, collector: FakeCollector
) -> None:
    """20,000 events over 16 TCP connections plus HTTP: exactly once, /metrics is the sum."""
    daemon = DaemonProcess(tmp_path, config(collector.endpoint))
    try:
        await daemon.start(timeout_secs=STARTUP_SECS)
        assert len(children(daemon.pid)) == 2
        await asyncio.gather(
            send_tcp(daemon.port("app_tcp"), 0, TCP_EVENTS, CONNECTIONS),
            send_http(daemon.port("app_http"), TCP_EVENTS, HTTP_EVENTS),
        )
        total = TCP_EVENTS + HTTP_EVENTS
        await collector.wait_until(lambda: len(collector.received) >= total, timeout_secs=60)
        samples: dict[str, float] = {}
        for _ in range(100):
            samples = await daemon.metrics()
            if metric(samples, "forwarder_events_sent_total", sink="webhook") == total:
                break
            await asyncio.sleep(0.05)
        status = await get_json(f"{daemon.admin_url}/api/status")
        assert await daemon.terminate() == 0
    finally:
        await daemon.close()
    got = ids_of(collector)
    assert sorted(got) == list(range(total))

    assert metric(samples, "forwarder_events_received_total", source="app_tcp") == TCP_EVENTS
    assert metric(samples, "forwarder_events_received_total", source="app_http") == HTTP_EVENTS
    assert metric(samples, "forwarder_events_sent_total", sink="webhook") == total
    requests = len(collector.requests)
    assert metric(samples, "forwarder_batches_total", sink="webhook", outcome="success") == requests
    assert metric(samples, "forwarder_batch_size_events_sum", sink="webhook") == total
    assert metric(samples, "forwarder_batch_size_events_count", sink="webhook") == requests
    assert metric(samples, "forwarder_request_duration_seconds_count", sink="webhook") == requests
    assert (
        metric(samples, "forwarder_request_duration_seconds_bucket", sink="webhook", le="+Inf")
        == requests
    )
    # Each worker holds half of the configured limit: the sum is what the user wrote.
    assert metric(samples, "forwarder_queue_capacity_events", sink="webhook") == CAPACITY
    assert metric(samples, "forwarder_queue_depth_events", sink="webhook") == 0
    assert metric(samples, "forwarder_sink_up", sink="webhook") == 1
    assert metric(samples, "forwarder_ready") == 1
    assert sum(v for k, v in samples.items() if k.startswith("forwarder_build_info{")) == 1

    assert status["workers"] == 2
    assert status["state"] == "running"
    assert status["sources"]["app_tcp"]["events_received"] == TCP_EVENTS
    assert status["sinks"]["webhook"]["capacity_events"] == CAPACITY
    assert status["sinks"]["webhook"]["events_sent"] == total


def established(pid: int, port: int) -> int:
    """How many established TCP connections to local ``port`` the process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


async def test_connections_are_shared_evenly_over_the_workers(
    tmp_path: Path, collector: FakeCollector
) -> None:
    """Eight long-lived clients on two workers: four each (the kernel's port hash, which
    shared them before, split eight clients 4-4 only about one time in four), and the
    supervisor itself keeps none."""
    daemon = DaemonProcess(tmp_path, config(collector.endpoint))
    writers: list[asyncio.StreamWriter] = []
    try:
        await daemon.start(timeout_secs=STARTUP_SECS)
        port = daemon.port("app_tcp")
        for i in range(8):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b'{"id":%d}\n' % i)
            await writer.drain()
            writers.append(writer)
        await collector.wait_until(lambda: len(collector.received) >= 8, timeout_secs=30)
        pids = children(daemon.pid)
        assert sorted(established(pid, port) for pid in pids) == [4, 4]
        assert established(daemon.pid, port) == 0
        for writer in writers:
            writer.close()
        assert await daemon.terminate() == 0
    finally:
        await daemon.close()
    assert sorted(ids_of(collector)) == list(range(8))


async def test_killed_worker_restarts_and_sigterm_leaves_no_process(
    tmp_path: Path, collector: FakeCollector
) -> None:
    """SIGKILL of a worker: a new one starts, ingest goes on; SIGTERM then ends every process."""
    daemon = DaemonProcess(tmp_path, config(collector.endpoint))
    try:
        await daemon.start(timeout_secs=STARTUP_SECS)
        port = daemon.port("app_tcp")
        first = children(daemon.pid)
        assert len(first) == 2
        victim, survivor = first
        os.kill(victim, signal.SIGKILL)
        # Once the supervisor has reaped it, it hands every connection to the survivor (until
        # then a connection handed to the dying process could be lost with it).
        await until(
            lambda: any(line.get("event") == RESTARTING for line in daemon.lines),
            10,
            "the supervisor did not notice the killed worker",
        )
        await send_tcp(port, 0, 1000, 8)
        await until(lambda: len(children(daemon.pid)) == 2, 15, "no worker started again")
        now = children(daemon.pid)
        assert survivor in now and victim not in now
        for _ in range(200):
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{daemon.admin_url}/readyz") as resp,
            ):
                if resp.status == 200:
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("supervisor never ready again")
        await send_tcp(port, 1000, 1000, 8)
        await collector.wait_until(lambda: len(collector.received) >= 2000, timeout_secs=30)
        assert (await get_json(f"{daemon.admin_url}/api/status"))["workers"] == 2
        everyone = [daemon.pid, *now]
        assert await daemon.terminate() == 0
    finally:
        await daemon.close()
    assert sorted(ids_of(collector)) == list(range(2000))
    assert not [pid for pid in everyone if running(pid)]
    (restart,) = [line for line in daemon.lines if line.get("event") == RESTARTING]
    assert restart["code"] == -signal.SIGKILL


async def test_killed_supervisor_takes_its_workers_and_fewer_workers_adopt_their_buffers(
    tmp_path: Path, collector: FakeCollector
) -> None:
    """SIGKILL of the supervisor (no chance to pass anything on) ends its workers anyway;
    restarted with workers 2 -> 1, the lone process delivers what their disk buffers held."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/ingest"
    disk = {"type": "disk", "max_events": CAPACITY}
    count = 4000
    first = DaemonProcess(tmp_path, config(dead, buffer=disk))
    try:
        await first.start(timeout_secs=STARTUP_SECS)
        await send_tcp(first.port("app_tcp"), 0, count, CONNECTIONS)
        url = f"{first.admin_url}/api/status"
        for _ in range(200):
            if (await get_json(url))["sinks"]["webhook"]["queue_events"] == count:
                break
            await asyncio.sleep(0.05)
        workers = children(first.pid)
        assert len(workers) == 2
        first.signal(signal.SIGKILL)
        await until(
            lambda: not any(running(pid) for pid in workers), 20, "workers outlived the supervisor"
        )
        # Nothing listens on the shared port any more.
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", first.port("app_tcp"))) != 0
    finally:
        await first.close()
    buffers = tmp_path / "data" / "buffers"
    assert sorted(p.name for p in buffers.iterdir()) == ["webhook.w0", "webhook.w1"]

    second = DaemonProcess(tmp_path, config(collector.endpoint, workers=1, buffer=disk))
    try:
        await second.start(timeout_secs=STARTUP_SECS)
        await collector.wait_until(lambda: len(collector.received) >= count, timeout_secs=30)
        await asyncio.sleep(0.3)
        assert await second.terminate() == 0
    finally:
        await second.close()
    assert sorted(ids_of(collector)) == list(range(count))
    adopted = [line for line in second.lines if line.get("event", "").startswith("adopted")]
    assert sorted(Path(line["directory"]).name for line in adopted) == [
        "webhook.w0",
        "webhook.w1",
    ]
    assert sum(line["events"] for line in adopted) == count
    assert sorted(p.name for p in buffers.iterdir()) == ["webhook"]


async def test_a_source_removed_by_reload_closes_its_port_and_reopens_when_back(
    tmp_path: Path, collector: FakeCollector
) -> None:
    """The supervisor holds the TCP ports: a reload that removes a source closes its port
    (clients are refused, as with one process), one that brings it back listens again."""
    full = config(collector.endpoint)
    daemon = DaemonProcess(tmp_path, full)
    reloader = Reloader(daemon, 2)
    try:
        await daemon.start(timeout_secs=STARTUP_SECS)
        port = daemon.port("app_tcp")
        await send_tcp(port, 0, 10, 2)
        await collector.wait_until(lambda: len(collector.received) >= 10, timeout_secs=30)

        without = {**full, "sources": {"app_http": full["sources"]["app_http"]}}
        reloader.write({**daemon.config, **without})
        status, body = await reloader.by_post()
        assert status == 200, body
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0

        reloader.write(daemon.config)
        status, body = await reloader.by_post()
        assert status == 200, body
        await send_tcp(port, 10, 10, 2)
        await collector.wait_until(lambda: len(collector.received) >= 20, timeout_secs=30)
        assert await daemon.terminate() == 0
    finally:
        await daemon.close()
    assert sorted(ids_of(collector)) == list(range(20))
