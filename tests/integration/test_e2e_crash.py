"""Crash safety of the disk buffer with real processes: SIGKILL at random moments while a client
sends and a slow SIEM receives, and segment files damaged between runs.

The SIGKILL test prints the duplicates it measured (``pytest -rP`` or ``-s`` shows the line;
it is also a ``crash_report`` property in JUnit XML). ``CRASH_SEED`` replays other kill times.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.script import Hang
from tests.helpers import DaemonProcess, FakeCollector, metric
from tests.integration.crash_helpers import (
    SINK,
    SOURCE,
    forwarder_config,
    logged,
    post_events,
    read_segments,
    received_ids,
    sink_status,
    wait_until,
)

TOTAL = 100_000
PER_REQUEST = 100
SENDERS = 4
KILLS = 5
SEED = int(os.environ.get("CRASH_SEED", "20240611"))
DISK = {"type": "disk", "fsync": "interval", "fsync_interval_secs": 0.2}


class Restarting:
    """The daemon under test, replaced by a new process after each kill.

    Senders wait on ``up`` while it is down, so no request goes to a dead port.
    """

    def __init__(self, tmp_path: Path, config: dict[str, Any]) -> None:
        self.tmp_path = tmp_path
        self.config = config
        self.daemon: DaemonProcess | None = None
        self.up = asyncio.Event()
        self.starts = 0

    async def start(self) -> DaemonProcess:
        self.daemon = await DaemonProcess(self.tmp_path, self.config).start()
        self.starts += 1
        self.up.set()
        return self.daemon

    async def kill(self) -> int:
        """SIGKILL the daemon; returns the events its buffer held just before."""
        assert self.daemon is not None
        held = metric(await self.daemon.metrics(), "forwarder_queue_depth_events", sink=SINK)
        self.up.clear()
        self.daemon.signal(signal.SIGKILL)
        assert await self.daemon.wait() == -signal.SIGKILL
        return int(held)

    def recovered(self) -> int:
        """Events the current process found in the buffer's files at start."""
        assert self.daemon is not None
        return sum(line["events"] for line in logged(self.daemon, "disk buffer recovered"))

    async def port(self) -> int:
        await self.up.wait()
        assert self.daemon is not None
        return self.daemon.port(SOURCE)


async def sender(
    target: Restarting, requests: asyncio.Queue[int], acked: set[int], attempts: Counter[str]
) -> None:
    """Send requests until the queue is empty; retry each until it is answered 2xx."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not requests.empty():
            first = requests.get_nowait() * PER_REQUEST
            ids = range(first, first + PER_REQUEST)
            while True:
                port = await target.port()
                try:
                    status = await post_events(session, port, ids)
                except (aiohttp.ClientError, TimeoutError):
                    attempts["failed"] += 1
                    await asyncio.sleep(0.02)
                    continue
                if status == 200:
                    acked.update(ids)
                    attempts["acked"] += 1
                    break
                attempts[f"status {status}"] += 1
                await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_sigkill_at_random_moments_loses_nothing_acknowledged(
    tmp_path: Path, record_property: Any
) -> None:
    """100,000 events in requests of 100 while the daemon is SIGKILLed 5 times at random
    moments: every acknowledged event reaches the SIEM; duplicates are counted and reported."""
    rng = random.Random(SEED)
    async with FakeCollector() as collector:
        # A slow SIEM: a backlog builds in the disk buffer, so kills hit undelivered data.
        collector.script.always(Hang(0.05))
        config = forwarder_config(tmp_path / "data", collector, DISK)
        target = Restarting(tmp_path, config)
        await target.start()
        requests: asyncio.Queue[int] = asyncio.Queue()
        for n in range(TOTAL // PER_REQUEST):
            requests.put_nowait(n)
        acked: set[int] = set()
        attempts: Counter[str] = Counter()
        senders = [
            asyncio.create_task(sender(target, requests, acked, attempts)) for _ in range(SENDERS)
        ]
        kills_while_sending = 0
        held_at_kill: list[int] = []
        recovered: list[int] = []
        try:
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                kills_while_sending += not all(task.done() for task in senders)
                held_at_kill.append(await target.kill())
                await target.start()
                recovered.append(target.recovered())
            await asyncio.wait_for(asyncio.gather(*senders), 60)
            assert len(acked) == TOTAL
            await wait_until(
                lambda: acked <= set(received_ids(collector)),
                timeout_secs=60,
                what="every acknowledged event delivered",
            )
            daemon = target.daemon
            assert daemon is not None
            await wait_until(
                lambda: _queue_empty(daemon), timeout_secs=10, what="an empty disk buffer"
            )
            samples = await daemon.metrics()
            assert metric(samples, "forwarder_disk_error", sink=SINK) == 0
            assert (await sink_status(daemon))["disk_error"] is None
            assert await daemon.terminate() == 0
        finally:
            for task in senders:
                task.cancel()
            if target.daemon is not None:
                await target.daemon.close()
    counts = Counter(received_ids(collector))
    duplicates = sum(counts.values()) - len(counts)
    assert set(counts) == set(range(TOTAL))
    # The kills hit a buffer holding undelivered events, and restarts found them on disk.
    assert sum(held_at_kill) > 0 and sum(recovered) > 0, (held_at_kill, recovered)
    report = (
        f"SIGKILL x{KILLS} ({kills_while_sending} while sending), seed {SEED}: "
        f"held at kill {held_at_kill}, recovered at start {recovered}; "
        f"{TOTAL} acknowledged, {len(counts)} distinct delivered, {duplicates} duplicates "
        f"({100 * duplicates / TOTAL:.2f}%); client attempts {dict(attempts)}"
    )
    record_property("crash_report", report)
    print(report)


async def _queue_empty(daemon: DaemonProcess) -> bool:
    samples = await daemon.metrics()
    return metric(samples, "forwarder_queue_depth_events", sink=SINK) == 0


async def test_damaged_segments_are_skipped_counted_and_the_rest_delivered(
    tmp_path: Path,
) -> None:
    """After a SIGKILL one segment gets a flipped byte mid-record, one is cut mid-record and one
    gets garbage appended: the daemon starts, delivers every intact record once, and counts
    each damaged run in forwarder_events_dropped_total{reason="corrupt"}, logged once a file."""
    data_dir = tmp_path / "data"
    buffer_dir = data_dir / "buffers" / SINK
    async with FakeCollector() as down:
        # A SIEM that never answers: everything stays in the buffer.
        down.script.stall()
        # Small segments, so one run leaves several files to damage in different ways.
        config = forwarder_config(data_dir, down, {**DISK, "segment_bytes": 8192})
        daemon = await DaemonProcess(tmp_path, config).start()
        try:
            async with aiohttp.ClientSession() as session:
                for first in range(0, 400, 10):
                    ids = range(first, first + 10)
                    assert await post_events(session, daemon.port(SOURCE), ids) == 200
        finally:
            # SIGKILL: whatever the buffer holds is only in its files.
            await daemon.close()
        down.script.shutdown()
    segments = read_segments(buffer_dir)
    assert sum(len(s.records) for s in segments) == 400
    assert len(segments) >= 3 and all(len(s.records) >= 20 for s in segments[:3])
    flipped, cut, garbage = segments[:3]
    # Flip a byte in the middle of a record's payload.
    lost_flip = flipped.records[len(flipped.records) // 2]
    _flip(flipped.path, lost_flip.offset + lost_flip.size // 2)
    # Cut the last record in half: a torn write.
    lost_cut = cut.records[-1]
    os.truncate(cut.path, lost_cut.offset + lost_cut.size // 2)
    # Garbage after the last record, including a false magic.
    with garbage.path.open("ab") as f:
        f.write(b"\xff\xae\x10\x00\x00\x00garbage that frames nothing" * 3)
    lost = {lost_flip.event["i"], lost_cut.event["i"]}
    expected = {r.event["i"] for s in segments for r in s.records} - lost

    intact_bytes = sum(r.size for s in segments for r in s.records) - lost_flip.size - lost_cut.size

    async with FakeCollector() as collector:
        # Held at first, so the gauges can be read before anything is delivered.
        collector.script.stall()
        daemon = await DaemonProcess(tmp_path, forwarder_config(data_dir, collector, DISK)).start()
        try:
            held = await daemon.metrics()
            files = sum(path.stat().st_size for path in buffer_dir.glob("*.seg"))
            collector.script.release()
            await wait_until(
                lambda: len(collector.received) >= len(expected),
                timeout_secs=15,
                what="intact records delivered",
            )
            await wait_until(
                lambda: _queue_empty(daemon), timeout_secs=10, what="an empty disk buffer"
            )
            samples = await daemon.metrics()
            status = await sink_status(daemon)
        finally:
            await daemon.close()
    # What recovery found is what the gauges report: intact records, and the real files.
    assert metric(held, "forwarder_queue_depth_events", sink=SINK) == len(expected)
    assert metric(held, "forwarder_queue_depth_bytes", sink=SINK) == intact_bytes
    assert metric(held, "forwarder_buffer_disk_bytes", sink=SINK) == files
    delivered = received_ids(collector)
    assert sorted(delivered) == sorted(expected)
    assert metric(samples, "forwarder_events_dropped_total", component=SINK, reason="corrupt") == 3
    warned = logged(daemon, "damaged records skipped")
    assert sorted((w["file"], w["records"]) for w in warned) == [
        (str(s.path), 1) for s in (flipped, cut, garbage)
    ]
    assert status["disk_error"] is None and status["queue_events"] == 0


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x55]))
