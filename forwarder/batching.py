"""Size-or-time batching: one batcher per sink, up to ``request.concurrency`` batches in flight.

A batch closes at ``max_events``, at ``max_bytes`` of encoded payload, or ``timeout_secs``
after its first event, whichever comes first; on stop, open batches are flushed at once.
Events are acked to the buffer only once delivery has resolved every one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from forwarder.buffers.base import Batch, Buffer
from forwarder.events import Event

if TYPE_CHECKING:
    from forwarder.config import BatchConfig
    from forwarder.sinks.delivery import Delivery

# How often an idle batcher looks up from an empty buffer to notice a stop.
_IDLE_POLL_SECS = 0.25


class Batcher:
    """Reads a sink's buffer into batches and hands them to delivery.

    Arguments:
        buffer: the sink's buffer.
        delivery: the sink's shared delivery machinery.
        batch: size/time limits; the sink's hard limits cap them.
        concurrency: batches in flight at once.
    """

    def __init__(
        self, buffer: Buffer, delivery: Delivery, batch: BatchConfig, concurrency: int
    ) -> None:
        sink = delivery.sink
        self.buffer = buffer
        self.delivery = delivery
        self.max_events = min(batch.max_events, sink.max_batch_events or batch.max_events)
        self.max_bytes = min(batch.max_bytes, sink.max_batch_bytes or batch.max_bytes)
        self.timeout_secs = batch.timeout_secs
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._draining = False
        self._retiring = False
        self._log = structlog.get_logger().bind(component=sink.name)

    async def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(
                self._run(), name=f"batcher-{self.delivery.sink.name}"
            )

    async def drain(self) -> None:
        """Flush everything buffered and wait for it to be resolved (callers bound the wait)."""
        self._draining = True
        if self._runner is not None:
            await self._runner
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def retire(self) -> None:
        """Read no more; return once the batches in flight are resolved. For a sink whose
        successor reads the same buffer (reload)."""
        self._retiring = True
        if self._runner is not None:
            await self._runner
            self._runner = None
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def stop(self) -> None:
        """Cancel whatever is still running; unacked events stay in the buffer."""
        self._draining = True
        tasks = [t for t in (self._runner, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._runner = None
        self._inflight.clear()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def _run(self) -> None:
        while not self._retiring:
            await self._slots.acquire()
            parts = await self._collect()
            if not parts:
                self._slots.release()
                if self._draining and self.buffer.unread_events == 0:
                    return
                continue
            task = asyncio.create_task(self._deliver(parts))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _collect(self) -> list[Batch]:
        buffer = self.buffer
        wait = 0.0 if self._draining else _IDLE_POLL_SECS
        first = await buffer.read(self.max_events, self.max_bytes, wait)
        if first is None:
            return []
        parts = [first]
        count, nbytes = len(first.events), first.nbytes
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_secs
        while count < self.max_events and nbytes < self.max_bytes:
            remaining = 0.0 if self._draining else deadline - loop.time()
            if remaining <= 0 and buffer.unread_events == 0:
                break
            # Wait in short steps so a drain that starts meanwhile flushes this batch now,
            # not at its timeout.
            more = await buffer.read(
                self.max_events - count,
                self.max_bytes - nbytes,
                min(max(remaining, 0.0), _IDLE_POLL_SECS),
            )
            if more is None:
                if self._draining or loop.time() >= deadline:
                    break
                continue
            parts.append(more)
            count += len(more.events)
            nbytes += more.nbytes
        return parts

    async def _deliver(self, parts: list[Batch]) -> None:
        try:
            events: list[Event] = [e for part in parts for e in part.events]
            await self.delivery.deliver(events)
            for part in parts:
                self.buffer.ack(part)
        finally:
            self._slots.release()
