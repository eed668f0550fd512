"""In-memory buffer: a deque of unread events plus a ledger of batches in flight."""

from __future__ import annotations

import asyncio
from collections import deque
from itertools import count

from forwarder.buffers.base import Batch, Buffer
from forwarder.events import Event


class MemoryBuffer(Buffer):
    """Bounded by ``max_events`` and ``max_bytes`` (event bytes as received)."""

    def __init__(self, name: str, *, max_events: int, max_bytes: int) -> None:
        super().__init__()
        self.name = name
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._queue: deque[Event] = deque()
        self._queued_bytes = 0
        self._inflight: dict[object, Batch] = {}
        self._inflight_events = 0
        self._inflight_bytes = 0
        self._ids = count()
        self._readable = asyncio.Event()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        # Wake anyone waiting so that they notice the stop instead of hanging.
        self._readable.set()
        self._room.set()

    # -- writer side ---------------------------------------------------------------------

    async def wait_for_room(self, events: int, nbytes: int, ticket: int | None = None) -> None:
        if self.admits(events, nbytes, ticket):
            return
        # Once full, wait for an eighth of the buffer to drain, not just for this chunk:
        # a writer woken per delivered batch pauses and resumes its socket for every few
        # hundred events, which costs more than the events themselves.
        await super().wait_for_room(
            events + self.max_events // 8, nbytes + self.max_bytes // 8, ticket
        )

    def append(self, events: list[Event]) -> None:
        if not events:
            return
        self._queue.extend(events)
        self._queued_bytes += sum(len(e.raw) for e in events)
        self._readable.set()

    async def commit(self) -> None:
        return None

    # -- reader side ---------------------------------------------------------------------

    async def read(self, max_events: int, max_bytes: int, timeout: float | None) -> Batch | None:
        if not self._queue:
            self._readable.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._readable.wait()
            except TimeoutError:
                return None
            if not self._queue:
                return None
        queue = self._queue
        popleft = queue.popleft
        count = min(max_events, len(queue))
        taken = [popleft() for _ in range(count)]
        sizes = [len(e.raw) for e in taken]
        nbytes = sum(sizes)
        if nbytes > max_bytes and count > 1:
            # Over the byte limit: give back the newest until it fits (at least one stays).
            while count > 1 and nbytes > max_bytes:
                count -= 1
                nbytes -= sizes[count]
            queue.extendleft(reversed(taken[count:]))
            del taken[count:]
        self._queued_bytes -= nbytes
        batch = Batch(taken, nbytes, next(self._ids))
        self._inflight[batch.token] = batch
        self._inflight_events += len(taken)
        self._inflight_bytes += nbytes
        return batch

    def ack(self, batch: Batch) -> None:
        if self._inflight.pop(batch.token, None) is None:
            return
        self._inflight_events -= len(batch.events)
        self._inflight_bytes -= batch.nbytes
        self._room.set()

    def unacked(self) -> list[Event]:
        held: list[Event] = []
        # Batches were issued in order and a dict keeps insertion order: oldest first.
        for batch in self._inflight.values():
            held.extend(batch.events)
        held.extend(self._queue)
        return held

    @property
    def depth_events(self) -> int:
        return len(self._queue) + self._inflight_events

    @property
    def depth_bytes(self) -> int:
        return self._queued_bytes + self._inflight_bytes

    @property
    def unread_events(self) -> int:
        return len(self._queue)
