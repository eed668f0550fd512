"""Reading undelivered records back from segment files.

The buffer serves recent events from memory; this is the path for everything older (a backlog
larger than the in-memory tail, or what recovery found at start). A read walks a snapshot of
the segments, so appends can go on meanwhile: they only add past the snapshot's limit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from forwarder.buffers.disk.segment import Decoder, scan
from forwarder.buffers.disk.state import Position
from forwarder.events import Event


@dataclass(slots=True, frozen=True)
class SegmentView:
    """A segment as a read sees it: id, file, and [start, end) spans of intact records."""

    id: int
    path: Path
    spans: tuple[tuple[int, int], ...]


@dataclass(slots=True)
class ReadResult:
    """Events read (each with its record size), where the next read starts, and damage met.

    ``reached`` is True when the read got to its limit, so nothing readable is left before it.
    """

    end: Position
    records: list[tuple[Event, int]] = field(default_factory=list)
    nbytes: int = 0
    reached: bool = False
    damaged: list[tuple[Path, int]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


class SegmentReader:
    """Reads records in order across segments, keeping one read-only fd for the current one.

    Not thread-safe: the buffer runs one read at a time (under its read lock).
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._fd_path: Path | None = None
        self._decoder = Decoder()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._fd_path = None

    def read(
        self,
        views: list[SegmentView],
        start: Position,
        limit: Position,
        max_events: int,
        max_bytes: int,
        window: int,
    ) -> ReadResult:
        """Read from ``start`` up to (not including) ``limit``: at most ``max_events`` events
        and about ``max_bytes`` event bytes, always at least one when one is there."""
        result = ReadResult(end=start)
        for view in views:
            if view.id < start.segment or view.id > limit.segment:
                continue
            begin = start.offset if view.id == start.segment else 0
            end = limit.offset if view.id == limit.segment else _last_end(view)
            end = max(end, begin)  # never move the position backwards
            try:
                full = self._read_segment(view, begin, end, max_events, max_bytes, window, result)
            except OSError as exc:
                # An unreadable segment is skipped, reported, and counted by the caller
                # when the counts do not add up; waiting for it would wedge the sink.
                result.failed.append((view.path, str(exc)))
                result.end = Position(view.id, end)
                full = False
            if full:
                return result
            result.end = Position(view.id, end)
            if view.id == limit.segment:
                result.reached = True
                return result
        return result

    def _read_segment(
        self,
        view: SegmentView,
        begin: int,
        end: int,
        max_events: int,
        max_bytes: int,
        window: int,
        result: ReadResult,
    ) -> bool:
        """Add this segment's records in [begin, end) to ``result``; True once it is full."""
        fd = self._open(view.path)
        decode = self._decoder.decode
        records = result.records
        nbytes = result.nbytes
        position = -1  # end of the last record consumed here, if any
        damaged = 0
        try:
            for span_start, span_end in view.spans:
                low, high = max(span_start, begin), min(span_end, end)
                if low >= high:
                    continue
                for offset, size, payload in scan(fd, low, high, window):
                    event = decode(payload) if payload is not None else None
                    if event is None:
                        damaged += 1
                        position = offset + size
                        continue
                    raw = len(event.raw)
                    if records and (len(records) >= max_events or nbytes + raw > max_bytes):
                        return True
                    records.append((event, size))
                    nbytes += raw
                    position = offset + size
        finally:
            result.nbytes = nbytes
            if position >= 0:
                result.end = Position(view.id, position)
            if damaged:
                result.damaged.append((view.path, damaged))
        return False

    def _open(self, path: Path) -> int:
        if self._fd_path != path:
            self.close()
            self._fd = os.open(path, os.O_RDONLY)
            self._fd_path = path
        assert self._fd is not None
        return self._fd


def _last_end(view: SegmentView) -> int:
    return view.spans[-1][1] if view.spans else 0
