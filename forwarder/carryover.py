"""Events that outlive a process: memory buffers spilled at stop and re-queued at start, and
disk buffers left by former workers adopted into this one's.

Each step logs what it did and never fails a start or a stop: files that cannot be read,
written or removed stay where they are for the next start, and say so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import structlog

from forwarder.buffers.base import Buffer, BufferWriteError
from forwarder.buffers.memory import MemoryBuffer
from forwarder.buffers.spill import load_spill, remove_spill, write_spill
from forwarder.telemetry.metrics import Metrics

__all__ = ["adopt_disk_buffers", "remove_after_commit", "requeue_spill", "spill"]

log = structlog.get_logger()


def requeue_spill(buffer: Buffer, sink: str, directory: Path, metrics: Metrics) -> list[Path]:
    """Put the events spilled in ``directory`` back into ``buffer``, ahead of new ones.

    Returns the spill files to remove once ``buffer`` has made them durable (a disk buffer);
    files whose events are safe already (or were none) are removed here.
    """
    # A data_dir that cannot be read or written must not stop the start: the files stay
    # and the next start tries again.
    try:
        events, bad, paths = load_spill(directory)
    except OSError as exc:
        log.error(
            "cannot read spilled events; they stay for the next start",
            component=sink,
            directory=str(directory),
            error=str(exc),
        )
        return []
    if bad:
        metrics.events_dropped.labels(sink, "corrupt").inc(bad)
    if events:
        try:
            # Over the limits if need be: these were accepted already.
            buffer.append(events)
        except BufferWriteError as exc:
            log.error(
                "cannot re-queue spilled events; they stay for the next start",
                component=sink,
                events=len(events),
                error=str(exc),
            )
            return []
        log.info("re-queued spilled events", component=sink, events=len(events))
    if paths and events and not isinstance(buffer, MemoryBuffer):
        return paths
    _remove_spill(sink, paths)
    return []


async def remove_after_commit(buffer: Buffer, sink: str, paths: list[Path]) -> None:
    """Remove spill files once the buffer holding their events has made them durable."""
    try:
        await buffer.commit()
    except BufferWriteError as exc:
        log.error(
            "re-queued spilled events not durable; their files stay", component=sink, error=str(exc)
        )
        return
    _remove_spill(sink, paths)


def spill(buffer: Buffer, sink: str, directory: Path, metrics: Metrics) -> None:
    """Write what ``buffer`` still holds (delivered or not read yet) to a spill file."""
    events = buffer.unacked()
    if not events:
        return
    try:
        write_spill(directory, events)
    except OSError as exc:
        metrics.events_dropped.labels(sink, "spill_failed").inc(len(events))
        log.error(
            "cannot spill undelivered events; they are lost",
            component=sink,
            events=len(events),
            error=str(exc),
        )
        return
    log.warning(
        "spilled undelivered events; they go out after the next start",
        component=sink,
        events=len(events),
        directory=str(directory),
    )


async def adopt_disk_buffers(
    buffer: Buffer, sink: str, orphans: list[Path], metrics: Metrics
) -> None:
    """Disk buffers left by workers that no longer exist (``workers`` was lowered, or raised
    from one): their events move into ``buffer``, then their directories go."""
    from forwarder.buffers.disk import DiskBuffer

    for directory in orphans:
        if not directory.is_dir():
            continue
        old = DiskBuffer(
            sink,
            directory,
            max_events=1 << 62,
            max_bytes=1 << 62,
            on_corrupt=metrics.events_dropped.labels(sink, "corrupt").inc,
        )
        await old.start()
        moved = 0
        try:
            while (batch := await old.read(10_000, 64 << 20, 0)) is not None:
                buffer.append(batch.events)
                await buffer.commit()
                old.ack(batch)
                moved += len(batch.events)
        except BufferWriteError as exc:
            # Our own buffer cannot write (full disk): leave the rest where it is for the
            # next start rather than fail this one.
            await old.stop()
            log.error(
                "cannot adopt a disk buffer of a former worker now; it stays for the next start",
                component=sink,
                directory=str(directory),
                events=moved,
                error=str(exc),
            )
            continue
        await old.stop()
        shutil.rmtree(directory, ignore_errors=True)
        log.info(
            "adopted a disk buffer of a former worker",
            component=sink,
            directory=str(directory),
            events=moved,
        )


def _remove_spill(sink: str, paths: list[Path]) -> None:
    try:
        remove_spill(paths)
    except OSError as exc:
        # The events are queued again; left files would send them once more next start.
        log.warning(
            "cannot remove spill files; their events may be sent twice",
            component=sink,
            error=str(exc),
        )
