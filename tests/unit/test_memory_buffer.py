"""MemoryBuffer: bounded by events and bytes, space released on ack, depth read from the queue."""

from __future__ import annotations

import asyncio

from forwarder.buffers.memory import MemoryBuffer
from forwarder.telemetry.metrics import Metrics
from tests.helpers import event, events, sample


def test_bounded_by_events() -> None:
    """Once max_events are held, one more does not fit."""
    buf = MemoryBuffer("s", max_events=3, max_bytes=10_000)
    buf.append(events(3))
    assert not buf.has_room(1, 1)
    assert buf.depth_events == 3


def test_bounded_by_bytes() -> None:
    """Room is refused when the bytes would pass max_bytes, even with event slots free."""
    e = events(2)
    size = len(e[0].raw)
    buf = MemoryBuffer("s", max_events=100, max_bytes=size * 2)
    buf.append(e[:1])
    assert buf.has_room(1, size)
    assert not buf.has_room(1, size + 1)
    assert buf.depth_bytes == size


async def test_space_is_released_on_ack_not_on_read() -> None:
    """Reading a batch keeps its space held; acking it frees the space."""
    buf = MemoryBuffer("s", max_events=2, max_bytes=10_000)
    buf.append(events(2))
    batch = await buf.read(10, 10_000, 0)
    assert batch is not None and len(batch.events) == 2
    assert buf.unread_events == 0
    assert buf.depth_events == 2
    assert not buf.has_room(1, 1)
    buf.ack(batch)
    assert buf.depth_events == 0 and buf.depth_bytes == 0
    assert buf.has_room(2, 100)


async def test_ack_twice_releases_once() -> None:
    """A repeated ack of the same batch does not free space twice."""
    buf = MemoryBuffer("s", max_events=10, max_bytes=10_000)
    buf.append(events(2))
    first = await buf.read(1, 10_000, 0)
    assert first is not None
    buf.ack(first)
    buf.ack(first)
    assert buf.depth_events == 1


def test_empty_buffer_takes_an_oversized_chunk() -> None:
    """A chunk larger than both limits still fits an empty buffer, so it cannot wedge."""
    buf = MemoryBuffer("s", max_events=2, max_bytes=10)
    assert buf.has_room(50, 10_000)
    buf.append(events(50))
    assert buf.depth_events == 50
    assert not buf.has_room(1, 1)


async def test_read_respects_max_events_and_max_bytes() -> None:
    """A read returns at most max_events and stops before passing max_bytes (but takes one)."""
    buf = MemoryBuffer("s", max_events=100, max_bytes=100_000)
    big = event({"pad": "x" * 100})
    buf.append([big, *events(5)])
    one = await buf.read(10, 10, 0)
    assert one is not None and one.events == [big]
    three = await buf.read(3, 100_000, 0)
    assert three is not None and len(three.events) == 3


async def test_read_times_out_empty() -> None:
    """An empty buffer's read returns None after its timeout."""
    buf = MemoryBuffer("s", max_events=10, max_bytes=1000)
    assert await buf.read(10, 1000, 0.01) is None


async def test_read_wakes_on_append() -> None:
    """A waiting reader gets events appended after it started waiting."""
    buf = MemoryBuffer("s", max_events=10, max_bytes=1000)
    reader = asyncio.create_task(buf.read(10, 1000, None))
    await asyncio.sleep(0)
    buf.append(events(1))
    batch = await asyncio.wait_for(reader, 1)
    assert batch is not None and len(batch.events) == 1


async def test_wait_for_room_returns_after_ack() -> None:
    """A writer waiting for room is woken by an ack."""
    buf = MemoryBuffer("s", max_events=1, max_bytes=1000)
    buf.append(events(1))
    batch = await buf.read(1, 1000, 0)
    assert batch is not None
    waiter = asyncio.create_task(buf.wait_for_room(1, 10))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    buf.ack(batch)
    await asyncio.wait_for(waiter, 1)


async def test_unacked_is_in_flight_oldest_first_then_queued() -> None:
    """unacked() lists in-flight batches in read order, then unread events."""
    buf = MemoryBuffer("s", max_events=100, max_bytes=100_000)
    evs = events(6)
    buf.append(evs)
    b1 = await buf.read(2, 100_000, 0)
    b2 = await buf.read(2, 100_000, 0)
    assert b1 is not None and b2 is not None
    assert buf.unacked() == evs
    buf.ack(b1)
    assert buf.unacked() == evs[2:]


async def test_depth_gauges_read_the_buffer(metrics: Metrics) -> None:
    """The queue gauges report what the buffer holds at scrape time, in flight included."""
    buf = MemoryBuffer("out", max_events=50, max_bytes=5000)
    metrics.queues.watch("out", lambda: buf)
    evs = events(4)
    buf.append(evs)
    r = metrics.registry
    assert sample(r, "forwarder_queue_depth_events", sink="out") == 4
    assert sample(r, "forwarder_queue_depth_bytes", sink="out") == sum(len(e.raw) for e in evs)
    assert sample(r, "forwarder_queue_capacity_events", sink="out") == 50
    batch = await buf.read(3, 5000, 0)
    assert batch is not None
    assert sample(r, "forwarder_queue_depth_events", sink="out") == 4
    buf.ack(batch)
    assert sample(r, "forwarder_queue_depth_events", sink="out") == 1
