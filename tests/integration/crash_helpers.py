"""Helpers for the crash, spill and full-disk tests: configs, an HTTP client that records what
the daemon acknowledged, admin reads, and a reader of segment record boundaries.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import DaemonProcess, FakeCollector

SINK = "siem"
SOURCE = "app_http"
REQUEST = {
    "concurrency": 2,
    "timeout_secs": 5,
    "retry_initial_backoff_secs": 0.05,
    "retry_max_backoff_secs": 0.2,
}
# The record header of a segment: magic, payload length, CRC-32 (docs/disk-buffer.md).
HEADER = struct.Struct("<2sII")
MAGIC = b"\xff\xae"


def forwarder_config(
    data_dir: Path,
    collector: FakeCollector,
    buffer: dict[str, Any],
    *,
    shutdown_timeout_secs: float = 5.0,
    queue_wait_secs: float = 0.5,
) -> dict[str, Any]:
    """One HTTP source into one ``http`` sink pointing at ``collector``, in one process."""
    return {
        "workers": 1,
        "data_dir": str(data_dir),
        "shutdown_timeout_secs": shutdown_timeout_secs,
        "sources": {
            SOURCE: {
                "type": "http",
                "address": "127.0.0.1:0",
                "queue_wait_secs": queue_wait_secs,
                "retry_after_secs": 1,
            }
        },
        "sinks": {
            SINK: {
                "type": "http",
                "endpoint": collector.endpoint,
                "buffer": buffer,
                "batch": {"max_events": 500, "timeout_secs": 0.1},
                "request": REQUEST,
            }
        },
    }


def ndjson(ids: Iterable[int], pad: str = "") -> bytes:
    return b"".join(
        json.dumps({"i": i, "pad": pad}, separators=(",", ":")).encode() + b"\n" for i in ids
    )


async def post_events(
    session: aiohttp.ClientSession, port: int, ids: Iterable[int], pad: str = ""
) -> int:
    """POST one NDJSON request to the daemon's HTTP source; the status code."""
    async with session.post(
        f"http://127.0.0.1:{port}/v1/events",
        data=ndjson(ids, pad),
        headers={"Content-Type": "application/x-ndjson"},
    ) as resp:
        await resp.read()
        return resp.status


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def readyz(daemon: DaemonProcess) -> tuple[int, dict[str, Any]]:
    return await get_json(f"{daemon.admin_url}/readyz")


async def sink_status(daemon: DaemonProcess) -> dict[str, Any]:
    _, body = await get_json(f"{daemon.admin_url}/api/status")
    status: dict[str, Any] = body["sinks"][SINK]
    return status


def received_ids(collector: FakeCollector) -> list[int]:
    return [int(obj["i"]) for obj in collector.received]


def logged(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    """The daemon's JSON log lines whose message is ``event`` or starts with ``event;``."""
    return [
        line
        for line in daemon.lines
        if line.get("event") == event or str(line.get("event")).startswith(f"{event};")
    ]


@dataclass
class Record:
    """One record of a segment file: where it starts, its size, and the event it holds."""

    offset: int
    size: int
    event: dict[str, Any]


@dataclass
class SegmentFile:
    path: Path
    records: list[Record] = field(default_factory=list)


def read_segments(directory: Path) -> list[SegmentFile]:
    """Every ``*.seg`` file in ``directory``, oldest first, split into records.

    Parsed here from the documented format rather than through the buffer's own reader, so a
    test that damages a file knows independently which records it hit.
    """
    files = []
    for path in sorted(directory.glob("*.seg")):
        data = path.read_bytes()
        segment = SegmentFile(path)
        pos = 0
        while pos + HEADER.size <= len(data):
            magic, length, _ = HEADER.unpack_from(data, pos)
            assert magic == MAGIC, f"{path}: no record at {pos}"
            payload = data[pos + HEADER.size : pos + HEADER.size + length]
            raw = payload[payload.index(b"\n") + 1 :]
            segment.records.append(Record(pos, HEADER.size + length, json.loads(raw)))
            pos += HEADER.size + length
        assert pos == len(data), f"{path}: {len(data) - pos} stray bytes at the end"
        files.append(segment)
    return files


async def wait_until(
    check: Any, *, timeout_secs: float, every_secs: float = 0.1, what: str = "condition"
) -> None:
    """Await ``check()`` (sync or async, truthy when done) until it holds or time runs out."""
    deadline = asyncio.get_running_loop().time() + timeout_secs
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_secs}s")
        await asyncio.sleep(every_secs)
