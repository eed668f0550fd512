"""A sink's queue kept in segment files, so a crash or a restart loses nothing accepted.

Appends write to the page cache in one ``write()`` per chunk. Recent events also stay in a
bounded in-memory tail so a reader that keeps up never reads the disk back; an older backlog
is read from the files. Acks advance a delivered position over the contiguous prefix of acked
batches; it is saved in a state file, and fully delivered segments are deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import structlog

from forwarder.buffers.base import Batch, Buffer, BufferWriteError
from forwarder.buffers.disk.ledger import Ledger, delivered_segments, skip_gap
from forwarder.buffers.disk.reader import SegmentReader, SegmentView
from forwarder.buffers.disk.recovery import Recovered, recover
from forwarder.buffers.disk.segment import Segment, encode
from forwarder.buffers.disk.state import Position, StateError, read_state, write_state
from forwarder.buffers.disk.tail import Tail
from forwarder.buffers.disk.writer import SegmentWriter, probe_write, remove_files, run_sync
from forwarder.events import Event

FsyncMode = Literal["always", "interval", "never"]
MIB = 1024 * 1024
PROBE_INTERVAL_SECS = 1.0
# A read walks at most this many segments, so its snapshot stays small however deep the
# backlog is; a batch rarely spans more than two.
READ_VIEW_SEGMENTS = 8


class DiskBuffer(Buffer):
    """A bounded queue for one sink, kept in ``directory`` (``data_dir/buffers/<sink>/``).

    Arguments:
        name: the sink's name.
        directory: where segment files and the state file live; created at start.
        max_events: events held (unread and in flight).
        max_bytes: bytes held on disk, record headers and envelopes included.
        segment_bytes: a segment file's size before a new one starts; at most a quarter of
            ``max_bytes`` (1 MiB at least), since a partly delivered segment stays whole.
        fsync: ``always`` (commit returns once the data is on stable storage), ``interval``
            (fsync every ``fsync_interval_secs``), ``never`` (left to the kernel).
        fsync_interval_secs: seconds between fsyncs in ``interval`` mode; also the most the
            saved delivered position lags (the duplicates a crash can cause).
        on_corrupt: called with the number of damaged records skipped, once per file.
        log: structlog logger; ``component`` and ``sink`` are bound to it.
        tail_bytes: bytes of recent events also kept in memory for readers.
    """

    def __init__(
        self,
        name: str,
        directory: Path,
        *,
        max_events: int,
        max_bytes: int,
        segment_bytes: int = 64 * MIB,
        fsync: FsyncMode = "interval",
        fsync_interval_secs: float = 0.2,
        on_corrupt: Callable[[int], None] | None = None,
        log: structlog.typing.FilteringBoundLogger | None = None,
        tail_bytes: int = 8 * MIB,
    ) -> None:
        super().__init__()
        self.name = name
        self.directory = directory
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(max_bytes // 4, MIB))
        self.fsync = fsync
        self.fsync_interval_secs = fsync_interval_secs
        self.disk_error: str | None = None
        self._on_corrupt = on_corrupt or (lambda n: None)
        self._log = (log or structlog.get_logger()).bind(component="disk_buffer", sink=name)
        self._segments: dict[int, Segment] = {}
        self._writer = SegmentWriter(
            directory,
            self._segments,
            segment_bytes=self.segment_bytes,
            next_id=1,
            syncs=fsync != "never",
        )
        self._reader = SegmentReader()
        # Unread events: the newest are also in the tail; the older ones ("disk only") are
        # read back from _read_pos on.
        self._tail = Tail(tail_bytes)
        self._unread_events = 0
        self._unread_bytes = 0
        self._read_pos: Position | None = None
        self._ledger = Ledger()
        self._saved: Position | None = None  # the position in the state file
        self._recovered = False
        self._running = False
        self._stopped = False
        self._readable = asyncio.Event()
        self._state_dirty = asyncio.Event()
        self._stopping = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self._sync_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._probing = False
        self._state_failed = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._running or self._stopped:
            return
        self._running = True
        try:
            await self._recover()
            # A disk that filled up while we were down lets recovery read but fails the first
            # write: find out now, so readiness says so before a client is refused.
            await asyncio.to_thread(probe_write, self.directory)
        except OSError as exc:
            # A directory we cannot create or list is a disk problem like a full disk:
            # refuse appends, report it, and keep probing instead of refusing to start.
            self._fail(exc)
        self._spawn(self._state_loop())
        if self.fsync == "interval":
            self._spawn(self._sync_loop())

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        self._stopping.set()
        self._readable.set()
        self._room.set()
        self._state_dirty.set()
        # The loops notice _stopping and finish their current step; cancelling them in the
        # middle of a worker-thread fsync would let us close an fd the thread still uses.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._sync_lock:
            if self.fsync != "never":
                try:
                    await self._sync()
                except OSError as exc:
                    self._log.error("disk buffer final fsync failed", error=str(exc))
            self._writer.close()
        if self._recovered:
            await self._save_state()
        async with self._read_lock:
            self._reader.close()
        self._log.info("disk buffer stopped", events=self.depth_events, disk_bytes=self.disk_bytes)

    # -- writer side ---------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return self.disk_error is None

    def append(self, events: list[Event]) -> None:
        if not events:
            return
        if self.disk_error is not None:
            raise BufferWriteError(f"disk buffer {self.name}: {self.disk_error}")
        if not self._running:
            raise BufferWriteError(f"disk buffer {self.name} is not running")
        data, sizes = encode(events)
        try:
            segment, offset = self._writer.write(data)
        except OSError as exc:
            self._fail(exc)
            raise BufferWriteError(f"disk buffer {self.name}: {self.disk_error}") from exc
        if self._read_pos is None:
            self._read_pos = Position(segment.id, offset)
        self._tail.add(events, sizes, segment.id, offset)
        self._unread_events += len(events)
        self._unread_bytes += len(data)
        self._readable.set()

    async def commit(self) -> None:
        if self.fsync != "always":
            return
        target = self._writer.appended
        if self._writer.synced >= target:
            return
        async with self._sync_lock:
            if self._writer.synced >= target:
                return
            try:
                await self._sync()
            except OSError as exc:
                self._fail(exc)
                raise BufferWriteError(f"disk buffer {self.name}: {self.disk_error}") from exc

    # -- reader side ---------------------------------------------------------------------

    async def read(self, max_events: int, max_bytes: int, timeout: float | None) -> Batch | None:
        async with self._read_lock:
            if self._unread_events == 0 and not self._stopped:
                self._readable.clear()
                try:
                    async with asyncio.timeout(timeout):
                        await self._readable.wait()
                except TimeoutError:
                    return None
            if self._stopped or self._unread_events == 0:
                return None
            while self._unread_events > self._tail.events:
                batch = await self._read_disk(max_events, max_bytes)
                if batch is not None:
                    return batch
            if not self._tail:
                return None
            return self._issue(*self._tail.take(max_events, max_bytes))

    async def _read_disk(self, max_events: int, max_bytes: int) -> Batch | None:
        """The next batch of disk-only events; None when none was left (then the disk-only
        count is zero) or when this step only skipped files without intact records."""
        assert self._read_pos is not None
        start, limit = self._read_pos, self._read_limit()
        wanted = (s for s in self._segments.values() if start.segment <= s.id <= limit.segment)
        views = [_view(s) for s in islice(wanted, READ_VIEW_SEGMENTS)]
        window = min(4 * MIB, max(64 * 1024, 2 * max_bytes))
        result = await asyncio.to_thread(
            self._reader.read, views, start, limit, max_events, max_bytes, window
        )
        for path, damaged in result.damaged:
            self._log.warning("damaged records skipped", file=str(path), records=damaged)
            self._on_corrupt(damaged)
        for path, error in result.failed:
            self._log.error("segment unreadable, skipped", file=str(path), error=error)
            self._on_corrupt(1)
        self._read_pos = result.end
        disk_only = self._unread_events - self._tail.events
        taken = [event for event, _ in result.records]
        disk = sum(size for _, size in result.records)
        if result.reached and disk_only > len(taken):
            # The files held fewer intact records than were written: damage appeared while
            # we ran. The lost ones were counted above; stop holding room for them.
            self._unread_events -= disk_only - len(taken)
            self._unread_bytes = self._tail.nbytes + disk
            self._room.set()
        if not taken:
            return None
        return self._issue(taken, result.nbytes, disk, result.end)

    def _read_limit(self) -> Position:
        """Where disk reads stop: the first tail entry, else the end of the newest file."""
        if self._tail:
            return self._tail.start()
        newest = next(reversed(self._segments.values()))
        return Position(newest.id, newest.last_end)

    def _issue(self, events: list[Event], nbytes: int, disk: int, end: Position) -> Batch:
        self._unread_events -= len(events)
        self._unread_bytes -= disk
        self._read_pos = end
        return Batch(events, nbytes, self._ledger.issue(events, disk, end))

    def ack(self, batch: Batch) -> None:
        known, moved = self._ledger.ack(batch.token)
        if moved:
            self._state_dirty.set()
        if known:
            self._room.set()

    def unacked(self) -> list[Event]:
        """In-flight and unread events, oldest first; the disk-only part is read back here."""
        held = self._ledger.in_flight()
        disk_only = self._unread_events - self._tail.events
        if disk_only > 0 and self._read_pos is not None:
            views = [_view(s) for s in self._segments.values()]
            reader = SegmentReader()
            try:
                result = reader.read(
                    views, self._read_pos, self._read_limit(), disk_only, 1 << 62, 4 * MIB
                )
            finally:
                reader.close()
            held.extend(event for event, _ in result.records)
        held.extend(self._tail)
        return held

    # -- metrics -------------------------------------------------------------------------

    @property
    def depth_events(self) -> int:
        return self._unread_events + self._ledger.events

    @property
    def depth_bytes(self) -> int:
        return self._unread_bytes + self._ledger.nbytes

    @property
    def unread_events(self) -> int:
        return self._unread_events

    @property
    def disk_bytes(self) -> int:
        """Bytes of segment files on disk (delivered heads of partly sent files included)."""
        return sum(segment.size for segment in self._segments.values())

    # -- internals -----------------------------------------------------------------------

    async def _recover(self) -> None:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        try:
            saved = await asyncio.to_thread(read_state, self.directory)
        except StateError as exc:
            self._log.warning("state file unreadable, re-sending everything kept", error=str(exc))
            saved = None
        found = await asyncio.to_thread(recover, self.directory, saved)
        self._apply(found, saved)

    def _apply(self, found: Recovered, saved: Position | None) -> None:
        for path, damaged in found.damaged:
            self._log.warning("damaged records skipped", file=str(path), records=damaged)
            self._on_corrupt(damaged)
        for path, error in found.problems:
            self._log.error("file left unread", file=str(path), error=error)
        for segment in found.segments:
            self._segments[segment.id] = segment
        self._writer.next_id = found.next_id
        self._unread_events = found.events
        self._unread_bytes = found.nbytes
        if found.segments:
            first = found.segments[0]
            self._read_pos = Position(first.id, first.spans[0][0])
            self._readable.set()
        self._ledger.delivered = self._saved = saved
        self._recovered = True
        self._log.info(
            "disk buffer recovered",
            events=found.events,
            files=len(found.segments),
            removed=found.removed,
        )

    def _fail(self, exc: OSError) -> None:
        message = f"{exc.strerror or exc} ({exc.filename or self.directory})"
        if self.disk_error is None:
            notes = getattr(exc, "__notes__", None)
            self._log.error("disk buffer cannot write", error=message, notes=notes)
        self.disk_error = message
        if not self._probing and self._running:
            self._probing = True
            self._spawn(self._probe_loop())

    async def _probe_loop(self) -> None:
        """Retry writing every second so the buffer takes events again once space returns."""
        try:
            while self.disk_error is not None and not await self._sleep(PROBE_INTERVAL_SECS):
                try:
                    if not self._recovered:
                        await self._recover()
                    await asyncio.to_thread(probe_write, self.directory)
                except OSError as exc:
                    self.disk_error = f"{exc.strerror or exc} ({exc.filename or self.directory})"
                    continue
                self._log.info("disk buffer writable again")
                self.disk_error = None
                self._room.set()
        finally:
            self._probing = False

    async def _sync(self) -> None:
        """One fsync pass; the caller holds the sync lock."""
        job = self._writer.begin_sync()
        if job is None:
            return
        try:
            await asyncio.to_thread(run_sync, job)
        except OSError:
            self._writer.end_sync(job, ok=False)
            raise
        self._writer.end_sync(job, ok=True)

    async def _sync_loop(self) -> None:
        while not await self._sleep(self.fsync_interval_secs):
            async with self._sync_lock:
                try:
                    await self._sync()
                except OSError as exc:
                    self._fail(exc)

    async def _state_loop(self) -> None:
        while True:
            await self._state_dirty.wait()
            if self._stopped:
                return
            self._state_dirty.clear()
            await self._save_state()
            if await self._sleep(self.fsync_interval_secs):
                return

    async def _save_state(self) -> None:
        """Save the delivered position, then delete the files it has moved past."""
        position = self._ledger.delivered
        if position is None:
            return
        position = skip_gap(self._segments, position)
        if position != self._saved:
            try:
                await asyncio.to_thread(
                    write_state, self.directory, position, durable=self.fsync != "never"
                )
            except OSError as exc:
                if not self._state_failed:
                    self._log.warning("saving the delivered position failed", error=str(exc))
                self._state_failed = True
            else:
                self._saved = position
                self._state_failed = False
        # Deleting a delivered file is safe before its position is saved: recovery skips a
        # missing file, and on a full disk this is what frees space for the state file.
        done = delivered_segments(self._segments, position, self._writer.current)
        for segment in done:
            del self._segments[segment.id]
        if done:
            failures = await asyncio.to_thread(remove_files, [s.path for s in done])
            for path, error in failures:
                self._log.warning("could not delete a delivered segment", file=path, error=error)

    async def _sleep(self, secs: float) -> bool:
        """Sleep ``secs``; True (at once) when the buffer is stopping."""
        try:
            async with asyncio.timeout(secs):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _view(segment: Segment) -> SegmentView:
    return SegmentView(segment.id, segment.path, tuple((a, b) for a, b in segment.spans))
