"""What every buffer offers to the router (writer side) and the batcher (reader side).

A buffer holds a sink's events from the moment routing accepts them until the sink has
resolved them (delivered or dead-lettered). Space is released on :meth:`Buffer.ack`, not on
read, so ``max_events``/``max_bytes`` bound everything the sink holds, in flight included, and
the depth gauges report exactly that.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field

from forwarder.events import Event


class BufferWriteError(Exception):
    """A buffer could not store a chunk (a disk buffer's disk is full or failing); nothing
    of the chunk was kept."""


@dataclass(slots=True)
class Batch:
    """Events read together; ``token`` is what the buffer needs to ack them."""

    events: list[Event]
    nbytes: int
    token: object = field(default=None)


class Buffer(ABC):
    """A bounded queue of events for one sink.

    Writers call :meth:`admits` / :meth:`wait_for_room`, then :meth:`append` (synchronous, so
    a check-and-append across several buffers is atomic on the event loop), then
    :meth:`commit` where durability matters (an HTTP answer). Readers call :meth:`read` and
    later :meth:`ack` with the batch.

    Writers that wait for room stand in line, first come first served: while anyone waits,
    room goes to the first in line only, so a large chunk waiting for space is not overtaken
    forever by small ones that came after it. Places in line are tickets from one counter
    (the router's), so a writer waiting on several buffers has the same rank in each and no
    two writers can each hold the other up.
    """

    name: str
    max_events: int
    max_bytes: int

    def __init__(self) -> None:
        self._line: deque[int] = deque()
        # Set when room may have come: events were acked, the disk came back, the first in
        # line left. Waiters look again.
        self._room = asyncio.Event()
        self._room.set()

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    def has_room(self, events: int, nbytes: int) -> bool:
        """True when ``events``/``nbytes`` fit. An empty buffer takes any one chunk, so a
        chunk larger than the limits cannot wedge its writer."""
        if not self.writable:
            return False
        held = self.depth_events
        if held == 0:
            return True
        return held + events <= self.max_events and self.depth_bytes + nbytes <= self.max_bytes

    def admits(self, events: int, nbytes: int, ticket: int | None = None) -> bool:
        """:meth:`has_room`, for the writer holding ``ticket`` (None: one not in line): when
        writers wait, only the first in line gets room."""
        line = self._line
        if line and line[0] != ticket:
            return False
        return self.has_room(events, nbytes)

    def join_line(self, ticket: int) -> None:
        """Stand in line; tickets must come in increasing order."""
        if ticket not in self._line:
            self._line.append(ticket)

    def leave_line(self, ticket: int) -> None:
        """Leave the line (placed, given up or cancelled); the next in line looks again."""
        try:
            self._line.remove(ticket)
        except ValueError:
            return
        self._room.set()

    @property
    def waiting_writers(self) -> int:
        """Writers in line for room."""
        return len(self._line)

    @property
    def writable(self) -> bool:
        """False while the buffer cannot store anything (a disk buffer's disk error)."""
        return True

    async def wait_for_room(self, events: int, nbytes: int, ticket: int | None = None) -> None:
        """Return once :meth:`admits` is true (callers wrap this in a timeout)."""
        while not self.admits(events, nbytes, ticket):
            self._room.clear()
            await self._room.wait()

    @abstractmethod
    def append(self, events: list[Event]) -> None:
        """Add events. The caller has checked for room (or accepts the overshoot).
        Raises :class:`BufferWriteError` when they cannot be stored."""

    @abstractmethod
    async def commit(self) -> None:
        """Return once appended events are as durable as the buffer promises; raises
        :class:`BufferWriteError` when they cannot be made so."""

    @abstractmethod
    async def read(self, max_events: int, max_bytes: int, timeout: float | None) -> Batch | None:
        """Wait up to ``timeout`` (None: forever) for unread events; return at most
        ``max_events`` events / about ``max_bytes`` bytes (always at least one), or None."""

    @abstractmethod
    def ack(self, batch: Batch) -> None:
        """The sink is done with these events; release their space."""

    @abstractmethod
    def unacked(self) -> list[Event]:
        """Everything held and not acked, oldest first (for spilling at stop)."""

    @property
    @abstractmethod
    def depth_events(self) -> int:
        """Events held, unread and in flight."""

    @property
    @abstractmethod
    def depth_bytes(self) -> int: ...

    @property
    @abstractmethod
    def unread_events(self) -> int: ...
