"""Appending to segment files: one open fd for the current segment, rollover, fsync.

A failed write is undone (the file truncated back to its last good record) and the segment
is closed for good, so nothing is ever appended after bytes that recovery would misread.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from forwarder.buffers.disk.segment import Segment, segment_path
from forwarder.buffers.disk.state import fsync_dir


@dataclass(slots=True)
class SyncJob:
    """What one fsync pass covers: every chunk appended up to ``upto``."""

    retired: list[int]
    current: int | None
    directory: Path | None
    upto: int


class SegmentWriter:
    """Writes chunks of records; registers each new segment in ``segments``.

    Arguments:
        directory: the buffer's directory.
        segments: the buffer's id -> Segment map, which new segments join.
        segment_bytes: a segment rolls over before a chunk would take it past this size.
        next_id: id of the first segment this writer creates.
        syncs: True when fsyncs happen (fsync modes ``always``/``interval``): closed fds are
            then kept until their data is fsynced.
    """

    def __init__(
        self,
        directory: Path,
        segments: dict[int, Segment],
        *,
        segment_bytes: int,
        next_id: int,
        syncs: bool,
    ) -> None:
        self.directory = directory
        self.segments = segments
        self.segment_bytes = segment_bytes
        self.next_id = next_id
        self.current: Segment | None = None
        self.appended = 0  # chunks written
        self.synced = 0  # chunks known to be on stable storage
        self._syncs = syncs
        self._retired: list[int] = []
        self._dir_dirty = False

    def write(self, data: bytes) -> tuple[Segment, int]:
        """Write ``data`` in one call; return the segment and the offset it starts at.

        Raises OSError with the partial write undone and the segment closed."""
        segment = self.current
        if segment is None or (segment.size and segment.size + len(data) > self.segment_bytes):
            segment = self._roll()
        assert segment.fd is not None
        base = segment.size
        try:
            _write_all(segment.fd, data)
        except OSError as exc:
            try:
                os.ftruncate(segment.fd, base)
            except OSError as undo:
                # The torn tail stays on disk, past the segment's logical end: this process
                # never reads it and recovery skips it as damage.
                exc.add_note(f"truncating {segment.path} back to {base} failed: {undo}")
            self.close_current()
            raise
        segment.size = base + len(data)
        segment.spans[-1][1] = segment.size
        self.appended += 1
        return segment, base

    def close_current(self) -> None:
        """Stop writing to the current segment; the next write opens a new one."""
        segment = self.current
        self.current = None
        if segment is None or segment.fd is None:
            return
        fd, segment.fd = segment.fd, None
        if self._syncs:
            self._retired.append(fd)  # closed once its data is fsynced
        else:
            os.close(fd)

    def begin_sync(self) -> SyncJob | None:
        """The next fsync pass, or None when everything written is synced already."""
        if self.synced >= self.appended and not self._retired and not self._dir_dirty:
            return None
        current = self.current.fd if self.current is not None else None
        job = SyncJob(
            self._retired, current, self.directory if self._dir_dirty else None, self.appended
        )
        self._retired = []
        self._dir_dirty = False
        return job

    def end_sync(self, job: SyncJob, ok: bool) -> None:
        if ok:
            self.synced = max(self.synced, job.upto)
        elif job.directory is not None:
            self._dir_dirty = True

    def close(self) -> None:
        """Close every fd without syncing (the caller synced first, where it syncs)."""
        self.close_current()
        for fd in self._retired:
            os.close(fd)
        self._retired = []

    def _roll(self) -> Segment:
        path = segment_path(self.directory, self.next_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.close_current()
        segment = Segment(self.next_id, path, 0, [[0, 0]], fd=fd)
        self.segments[segment.id] = segment
        self.next_id += 1
        self._dir_dirty = True
        self.current = segment
        return segment


def run_sync(job: SyncJob) -> None:
    """Fsync what ``job`` covers and close the retired fds (runs in a worker thread)."""
    failure: OSError | None = None
    for fd in job.retired:
        try:
            os.fsync(fd)
        except OSError as exc:
            failure = failure or exc
        finally:
            os.close(fd)
    if job.current is not None:
        os.fsync(job.current)
    if job.directory is not None:
        fsync_dir(job.directory)
    if failure is not None:
        raise failure


def probe_write(directory: Path, nbytes: int = 64 * 1024) -> None:
    """Write and remove a small file: succeeds once the directory takes data again."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "probe.tmp"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, bytes(nbytes))
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def remove_files(paths: list[Path]) -> list[tuple[str, str]]:
    """Delete files; return (file, error) for each one that could not be deleted."""
    failures: list[tuple[str, str]] = []
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            failures.append((str(path), str(exc)))
    return failures


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        written = os.write(fd, view[done:])
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += written
