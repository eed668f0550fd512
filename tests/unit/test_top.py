"""``forwarder top``: the rendered view of /api/status, and ``--once`` against a live daemon."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

from forwarder.top import Status, queue_bar, render
from tests.helpers import DaemonProcess, FakeCollector, run_cli


def _text(now: Status, before: Status | None = None, elapsed: float = 0.0) -> str:
    console = Console(file=io.StringIO(), width=160, record=True, color_system=None)
    console.print(render(now, before, elapsed))
    return console.export_text()


def _row(text: str, name: str) -> list[str]:
    """The cells of the table row that starts with ``name``."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in:\n{text}")


def _status(received: int, sent: int, depth: int, **sink: Any) -> Status:
    return {
        "version": "9.9.9",
        "state": "running",
        "workers": 2,
        "sources": {
            "app_tcp": {"type": "tcp", "connections": 3, "events_received": received},
            "app_http": {"type": "http", "events_received": 7},
        },
        "sinks": {
            "splunk": {
                "type": "splunk_hec",
                "up": True,
                "last_error": None,
                "queue_events": depth,
                "capacity_events": 1000,
                "events_sent": sent,
                "retries": 12345,
                "dead_letters": 4,
                "disk_error": None,
                **sink,
            }
        },
    }


def test_rates_are_the_difference_between_two_polls() -> None:
    """events/s per source and per sink: the totals' growth over the elapsed seconds."""
    text = _text(_status(5000, 4100, 0), _status(1000, 100, 0), 2.0)
    assert "forwarder 9.9.9  state running  workers 2" in text
    assert _row(text, "app_tcp") == ["app_tcp", "tcp", "2,000", "5,000", "3"]
    assert _row(text, "app_http") == ["app_http", "http", "0", "7", "-"]
    sink = _row(text, "splunk")
    assert sink[:4] == ["splunk", "splunk_hec", "up", "2,000"]
    assert sink[5:] == ["12,345", "4"]


def test_first_poll_has_no_rates() -> None:
    """Without a previous poll (or with no time between) a rate is '-', never a guess."""
    for before, elapsed in ((None, 1.0), (_status(0, 0, 0), 0.0)):
        text = _text(_status(5000, 4100, 0), before, elapsed)
        assert _row(text, "app_tcp")[2] == "-"
        assert _row(text, "splunk")[3] == "-"


def test_queue_bar_against_capacity() -> None:
    """The bar fills with the share of capacity; colour turns yellow past 50%, red past 80%."""
    half = queue_bar(600, 1000)
    assert half.plain == "[#######-----] 600/1,000 60%"
    assert {span.style for span in half.spans} == {"yellow"}
    assert queue_bar(900, 1000).spans[0].style == "red"
    assert queue_bar(100, 1000).plain == "[#-----------] 100/1,000 10%"
    assert queue_bar(100, 1000).spans[0].style == "green"
    assert queue_bar(0, 0).plain == "[------------] 0/0 0%"
    # Over capacity (spilled events re-queued past the limit) the bar stays its width.
    assert queue_bar(1500, 1000).plain == "[############] 1,500/1,000 150%"
    text = _text(_status(1, 1, 250))
    assert "[###---------] 250/1,000 25%" in text


def test_down_sink_and_its_error_are_shown() -> None:
    """A sink that is down says DOWN and its last error is printed under the tables."""
    text = _text(_status(1, 1, 0, up=False, last_error="http 503: Server is busy"))
    assert _row(text, "splunk")[2] == "DOWN"
    assert "splunk: http 503: Server is busy" in text
    disk = _text(_status(1, 1, 0, disk_error="No space left on device"))
    assert _row(disk, "splunk")[2] == "DISK ERROR"


async def _send_steadily(port: int, stop: asyncio.Event) -> int:
    """NDJSON on one connection, 50 events every 20 ms until told to stop; the count sent."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    while not stop.is_set():
        writer.write(b"".join(b'{"n":%d}\n' % (sent + i) for i in range(50)))
        await writer.drain()
        sent += 50
        await asyncio.sleep(0.02)
    writer.close()
    await writer.wait_closed()
    return sent


async def _status_of(daemon: DaemonProcess) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{daemon.admin_url}/api/status") as resp,
    ):
        value: dict[str, Any] = await resp.json()
    return value


async def test_once_shows_the_live_numbers(tmp_path: Path, collector: FakeCollector) -> None:
    """`top --once --url` prints sources, sinks, received totals, rates and the queue bar."""
    collector.script.stall()
    config = {
        "workers": 1,
        "shutdown_timeout_secs": 1,
        "sources": {
            "app_tcp": {"type": "tcp", "address": "127.0.0.1:0"},
            "app_http": {"type": "http", "address": "127.0.0.1:0"},
        },
        "sinks": {
            "webhook": {
                "type": "http",
                "endpoint": collector.endpoint,
                "buffer": {"max_events": 10_000},
                "batch": {"max_events": 100, "timeout_secs": 0.05},
                "request": {"concurrency": 1},
            }
        },
    }
    daemon = DaemonProcess(tmp_path, config)
    try:
        await daemon.start()
        _, writer = await asyncio.open_connection("127.0.0.1", daemon.port("app_tcp"))
        writer.write(b"".join(b'{"i":%d}\n' % i for i in range(1234)))
        await writer.drain()
        writer.close()
        http = f"http://127.0.0.1:{daemon.port('app_http')}/v1/events"
        async with aiohttp.ClientSession() as session:
            body = json.dumps([{"h": 1}, {"h": 2}, {"h": 3}])
            headers = {"Content-Type": "application/json"}
            async with session.post(http, data=body, headers=headers) as resp:
                assert resp.status < 300
        for _ in range(200):
            status = await _status_of(daemon)
            if status["sinks"]["webhook"]["queue_events"] == 1237:
                break
            await asyncio.sleep(0.02)
        stop = asyncio.Event()
        sender = asyncio.create_task(_send_steadily(daemon.port("app_tcp"), stop))
        await asyncio.sleep(0.2)
        code, out, err = await run_cli(
            "top", "--once", "--url", daemon.admin_url, "--interval", "1", env={"COLUMNS": "160"}
        )
        stop.set()
        streamed = await sender
    finally:
        await daemon.close()
    assert (code, err) == (0, ""), out
    assert "state running  workers 1" in out
    tcp = _row(out, "app_tcp")
    assert tcp[1] == "tcp"
    # About 2,500 events/s were sent during the one-second window.
    assert 500 <= int(tcp[2].replace(",", "")) <= 10_000, tcp
    assert 1234 < int(tcp[3].replace(",", "")) <= 1234 + streamed
    assert _row(out, "app_http")[1:4] == ["http", "0", "3"]
    sink = _row(out, "webhook")
    assert sink[1:4] == ["http", "up", "0"]
    depth, capacity = sink[4].split("] ")[1].split()[0].split("/")
    assert capacity == "10,000"
    assert 1237 < int(depth.replace(",", "")) <= 1237 + streamed
    assert sink[4].startswith("[#")


async def test_once_against_a_dead_url_fails_with_a_message() -> None:
    """Nothing listening: exit 1 and say which URL could not be read."""
    code, out, _ = await run_cli(
        "top", "--once", "--url", "http://127.0.0.1:9", "--interval", "0.1", env={"COLUMNS": "200"}
    )
    assert code == 1
    assert "cannot read http://127.0.0.1:9/api/status" in out
    assert "Connection refused" in out
