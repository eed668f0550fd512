"""The newest unread events, kept in memory as well as on disk, in the chunks they came in.

A reader that keeps up takes its batches from here and never reads the disk back. The tail is
bounded by bytes: past the bound its oldest chunks are dropped from memory (the records are on
disk, and a reader gets them from there). Whole chunks move in one step, so a batch costs a
few operations per chunk rather than per event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from forwarder.buffers.disk.state import Position
from forwarder.events import Event


class _Chunk:
    """One append: its events, each record's size, and where the first untaken one starts."""

    __slots__ = ("disk_left", "events", "first", "offset", "raw_left", "segment", "sizes")

    def __init__(self, events: list[Event], sizes: list[int], segment: int, offset: int) -> None:
        self.events = events
        self.sizes = sizes
        self.segment = segment
        self.offset = offset
        self.first = 0
        self.raw_left = sum(len(e.raw) for e in events)
        self.disk_left = sum(sizes)


class Tail:
    """Bounded by ``limit_bytes`` of records, except that the newest chunk always stays."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.events = 0
        self.nbytes = 0  # record bytes held
        self._chunks: deque[_Chunk] = deque()

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def add(self, events: list[Event], sizes: list[int], segment: int, offset: int) -> None:
        """Keep a chunk just written at ``offset`` of ``segment``; trim to the bound."""
        chunks = self._chunks
        # A copy: the caller may reuse its list.
        chunk = _Chunk(list(events), sizes, segment, offset)
        chunks.append(chunk)
        self.events += len(events)
        self.nbytes += chunk.disk_left
        while self.nbytes > self.limit_bytes and len(chunks) > 1:
            dropped = chunks.popleft()
            self.events -= len(dropped.events) - dropped.first
            self.nbytes -= dropped.disk_left

    def start(self) -> Position:
        """Where the oldest event held here starts on disk."""
        chunk = self._chunks[0]
        return Position(chunk.segment, chunk.offset)

    def take(self, max_events: int, max_bytes: int) -> tuple[list[Event], int, int, Position]:
        """Oldest first: at most ``max_events``, about ``max_bytes`` event bytes, at least one.

        Returns (events, event bytes, record bytes, position after the last one)."""
        chunks = self._chunks
        taken: list[Event] = []
        nbytes = disk = 0
        end = self.start()
        while chunks and len(taken) < max_events:
            chunk = chunks[0]
            rest = len(chunk.events) - chunk.first
            if rest <= max_events - len(taken) and nbytes + chunk.raw_left <= max_bytes:
                taken.extend(chunk.events[chunk.first :] if chunk.first else chunk.events)
                nbytes += chunk.raw_left
                disk += chunk.disk_left
                end = Position(chunk.segment, chunk.offset + chunk.disk_left)
                chunks.popleft()
                continue
            nbytes, disk = self._take_part(chunk, taken, nbytes, disk, max_events, max_bytes)
            end = Position(chunk.segment, chunk.offset)
            if chunk.first == len(chunk.events):
                chunks.popleft()
            break
        self.events -= len(taken)
        self.nbytes -= disk
        return taken, nbytes, disk, end

    @staticmethod
    def _take_part(
        chunk: _Chunk, taken: list[Event], nbytes: int, disk: int, max_events: int, max_bytes: int
    ) -> tuple[int, int]:
        index, events, sizes = chunk.first, chunk.events, chunk.sizes
        while index < len(events) and len(taken) < max_events:
            raw = len(events[index].raw)
            if taken and nbytes + raw > max_bytes:
                break
            taken.append(events[index])
            size = sizes[index]
            nbytes += raw
            disk += size
            chunk.offset += size
            chunk.raw_left -= raw
            chunk.disk_left -= size
            index += 1
        chunk.first = index
        return nbytes, disk

    def __iter__(self) -> Iterator[Event]:
        for chunk in self._chunks:
            yield from chunk.events[chunk.first :]
