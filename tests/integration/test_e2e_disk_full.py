"""A data_dir that cannot be written, with real processes: a tiny tmpfs that fills up, and a
read-only mount. The daemon stays up, reports the condition on /readyz, /api/status and
/metrics, refuses ingest with 503 instead of acknowledging what it cannot keep, and resumes
when space (or write access) returns.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import DaemonProcess, FakeCollector, metric, run_cli
from tests.integration.crash_helpers import (
    SINK,
    SOURCE,
    forwarder_config,
    post_events,
    readyz,
    received_ids,
    sink_status,
    wait_until,
)

PAD = "x" * 400  # ~0.5 KB events: a few MiB fill quickly


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} not permitted: {result.stderr.strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def tiny_fs(path: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs at ``path``, unmounted afterwards."""
    path.mkdir(parents=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


def fill(path: Path) -> Path:
    """A ballast file taking every free byte of ``path``'s filesystem."""
    ballast = path / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        # Smaller and smaller writes take the last partial blocks too.
        for size in (65536, 4096, 1):
            block = b"\0" * size
            with contextlib.suppress(OSError):
                while os.write(fd, block):
                    pass
        with pytest.raises(OSError) as full:
            os.write(fd, b"\0")
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return ballast


async def send_until_refused(
    session: aiohttp.ClientSession, daemon: DaemonProcess, first: int, acked: set[int]
) -> int:
    """POST requests of 100 until one is refused; returns the next unused id."""
    for start in range(first, first + 1_000_000, 100):
        ids = range(start, start + 100)
        status = await post_events(session, daemon.port(SOURCE), ids, PAD)
        if status != 200:
            assert status == 503
            return start + 100
        acked.update(ids)
    raise AssertionError("the disk never filled up")


async def send_all(
    session: aiohttp.ClientSession, daemon: DaemonProcess, first: int, count: int, acked: set[int]
) -> None:
    for start in range(first, first + count, 100):
        ids = range(start, start + 100)
        assert await post_events(session, daemon.port(SOURCE), ids, PAD) == 200
        acked.update(ids)


async def assert_disk_error(daemon: DaemonProcess, reason: str) -> None:
    """Every view reports the disk error, and the process still serves."""
    status, body = await readyz(daemon)
    assert status == 503 and not body["ready"]
    assert f"sink {SINK}" in body["reason"] and reason in body["reason"], body
    assert reason in (await sink_status(daemon))["disk_error"]
    samples = await daemon.metrics()
    assert metric(samples, "forwarder_disk_error", sink=SINK) == 1
    assert daemon.proc is not None and daemon.proc.returncode is None


async def healthy(daemon: DaemonProcess) -> bool:
    status, _ = await readyz(daemon)
    samples = await daemon.metrics()
    return status == 200 and metric(samples, "forwarder_disk_error", sink=SINK) == 0


async def resume_and_deliver(
    session: aiohttp.ClientSession,
    daemon: DaemonProcess,
    collector: FakeCollector,
    first: int,
    count: int,
    acked: set[int],
    *,
    ready_secs: float,
    deliver_secs: float,
) -> None:
    """Once the disk takes data again: ready, ``count`` more events accepted, every
    acknowledged event delivered, and a clean exit."""
    await wait_until(lambda: healthy(daemon), timeout_secs=ready_secs, what="ready again")
    await send_all(session, daemon, first, count, acked)
    await wait_until(
        lambda: acked <= set(received_ids(collector)),
        timeout_secs=deliver_secs,
        what="every acknowledged event delivered",
    )
    assert await daemon.terminate() == 0


def segment_bytes_on_disk(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "buffers" / SINK).glob("*.seg"))


async def test_full_disk_refuses_ingest_and_recovers_when_space_is_freed(tmp_path: Path) -> None:
    """A ballast file fills the tmpfs under data_dir: ingest gets 503, /readyz and the metric
    show the disk error, the process stays up; deleting the ballast brings it back, and every
    acknowledged event is delivered."""
    async with FakeCollector() as collector, aiohttp.ClientSession() as session:
        with tiny_fs(tmp_path / "data", "4m") as data_dir:
            config = forwarder_config(data_dir, collector, {"type": "disk"})
            daemon = await DaemonProcess(tmp_path, config).start()
            try:
                acked: set[int] = set()
                await send_all(session, daemon, 0, 500, acked)
                ballast = fill(data_dir)
                first = await send_until_refused(session, daemon, 500, acked)
                await assert_disk_error(daemon, "No space left on device")
                ballast.unlink()
                await resume_and_deliver(
                    session, daemon, collector, first, 1000, acked, ready_secs=10, deliver_secs=15
                )
            finally:
                await daemon.close()


async def test_full_disk_with_drop_newest_counts_what_it_drops(tmp_path: Path) -> None:
    """when_full: drop_newest on a full disk: ingest is still answered 200, what cannot be
    stored is counted in forwarder_events_dropped_total{reason="disk_error"}, the process
    stays up, and once space returns every event not counted as dropped is delivered."""
    buffer = {"type": "disk", "when_full": "drop_newest"}
    async with FakeCollector() as collector, aiohttp.ClientSession() as session:
        with tiny_fs(tmp_path / "data", "4m") as data_dir:
            config = forwarder_config(data_dir, collector, buffer)
            daemon = await DaemonProcess(tmp_path, config).start()
            try:
                acked: set[int] = set()
                await send_all(session, daemon, 0, 500, acked)
                ballast = fill(data_dir)
                await send_all(session, daemon, 500, 1000, acked)
                await assert_disk_error(daemon, "No space left on device")
                samples = await daemon.metrics()
                dropped = metric(
                    samples, "forwarder_events_dropped_total", component=SINK, reason="disk_error"
                )
                # A write may still fit in the last page the segment file already has.
                assert 900 <= dropped <= 1000
                ballast.unlink()
                await wait_until(lambda: healthy(daemon), timeout_secs=10, what="ready again")
                await send_all(session, daemon, 1500, 1000, acked)
                await wait_until(
                    lambda: len(collector.received) + dropped >= 2500,
                    timeout_secs=15,
                    what="every event not dropped delivered",
                )
                assert await daemon.terminate() == 0
            finally:
                await daemon.close()
    delivered = received_ids(collector)
    assert len(delivered) == len(set(delivered)) == 2500 - dropped
    assert set(range(500)) | set(range(1500, 2500)) <= set(delivered)


async def test_stalled_sink_fills_the_disk_and_delivery_frees_it(tmp_path: Path) -> None:
    """A stalled SIEM lets the disk buffer fill a 3 MiB tmpfs: ingest gets 503 and
    forwarder_buffer_disk_bytes matches the segment files; once the SIEM answers, delivered
    segments are deleted, the error clears by itself and ingest resumes, losing nothing."""
    buffer = {"type": "disk", "segment_bytes": 256 * 1024, "max_bytes": 1 << 30}
    async with FakeCollector() as collector, aiohttp.ClientSession() as session:
        collector.script.stall()
        with tiny_fs(tmp_path / "data", "3m") as data_dir:
            config = forwarder_config(data_dir, collector, buffer)
            daemon = await DaemonProcess(tmp_path, config).start()
            try:
                acked: set[int] = set()
                first = await send_until_refused(session, daemon, 0, acked)
                await assert_disk_error(daemon, "No space left on device")
                samples = await daemon.metrics()
                on_disk = segment_bytes_on_disk(data_dir)
                assert metric(samples, "forwarder_buffer_disk_bytes", sink=SINK) == on_disk
                assert on_disk > 2 * 1024 * 1024
                assert metric(samples, "forwarder_queue_depth_events", sink=SINK) == len(acked)
                collector.script.release()
                await resume_and_deliver(
                    session, daemon, collector, first, 1000, acked, ready_secs=20, deliver_secs=20
                )
            finally:
                await daemon.close()


async def test_read_only_data_dir_is_warned_about_and_survived(tmp_path: Path) -> None:
    """data_dir on a read-only bind mount: check-config warns; the daemon starts anyway, is
    not ready and refuses ingest with 503; remounted read-write, it becomes ready and
    delivers."""
    source = tmp_path / "rw"
    data_dir = tmp_path / "data"
    source.mkdir()
    data_dir.mkdir()
    _mount("--bind", str(source), str(data_dir))
    try:
        _mount("-o", "remount,ro,bind", str(data_dir))
        async with FakeCollector() as collector, aiohttp.ClientSession() as session:
            config = forwarder_config(data_dir, collector, {"type": "disk"})
            daemon = DaemonProcess(tmp_path, config)
            code, out, err = await run_cli("check-config", "-c", str(daemon.config_path))
            assert code == 0 and "config OK" in out
            assert f"warning: data_dir: {data_dir} is not writable" in err, err
            await daemon.start()
            try:
                await assert_disk_error(daemon, "Read-only file system")
                status = await post_events(session, daemon.port(SOURCE), range(100), PAD)
                assert status == 503
                _mount("-o", "remount,rw,bind", str(data_dir))
                await wait_until(lambda: healthy(daemon), timeout_secs=10, what="ready again")
                acked: set[int] = set()
                await send_all(session, daemon, 100, 500, acked)
                await wait_until(
                    lambda: acked == set(received_ids(collector)),
                    timeout_secs=15,
                    what="every acknowledged event delivered",
                )
                assert await daemon.terminate() == 0
            finally:
                await daemon.close()
        code, _, err = await run_cli("check-config", "-c", str(daemon.config_path))
        assert code == 0 and "warning" not in err, err
    finally:
        _umount(data_dir)


async def test_data_dir_blocked_by_a_file(tmp_path: Path) -> None:
    """data_dir under a plain file: check-config warns it cannot be created; the daemon
    starts, reports the disk error and stays up."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory\n")
    data_dir = blocker / "data"
    async with FakeCollector() as collector:
        config: dict[str, Any] = forwarder_config(data_dir, collector, {"type": "disk"})
        daemon = DaemonProcess(tmp_path, config)
        code, _, err = await run_cli("check-config", "-c", str(daemon.config_path))
        assert code == 0
        assert f"warning: data_dir: {data_dir} cannot be created: {blocker}" in err, err
        await daemon.start()
        try:
            await assert_disk_error(daemon, "Not a directory")
        finally:
            await daemon.close()
    assert blocker.read_text() == "not a directory\n"


async def test_restart_on_a_full_disk_is_not_ready_before_any_write(tmp_path: Path) -> None:
    """The disk fills up while the daemon is down: the restarted daemon reports the disk
    error before any client sends (it probes at start), refuses ingest, and becomes ready and
    delivers once space returns; what it held before the stop is delivered too."""
    async with FakeCollector() as collector, aiohttp.ClientSession() as session:
        with tiny_fs(tmp_path / "data", "4m") as data_dir:
            config = forwarder_config(data_dir, collector, {"type": "disk"})
            daemon = await DaemonProcess(tmp_path, config).start()
            acked: set[int] = set()
            try:
                collector.script.stall()
                await send_all(session, daemon, 0, 300, acked)
                assert await daemon.terminate() == 0
            finally:
                await daemon.close()
            collector.script.release()
            ballast = fill(data_dir)
            daemon = await DaemonProcess(tmp_path, config).start()
            try:
                await assert_disk_error(daemon, "No space left on device")
                assert await post_events(session, daemon.port(SOURCE), range(300, 400), PAD) == 503
                ballast.unlink()
                await resume_and_deliver(
                    session, daemon, collector, 400, 300, acked, ready_secs=10, deliver_secs=15
                )
            finally:
                await daemon.close()
