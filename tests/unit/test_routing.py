"""Routing: fan-out by ``inputs``, all-or-nothing ``block``, counted ``drop_newest``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from forwarder.buffers.base import Buffer
from forwarder.buffers.memory import MemoryBuffer
from forwarder.config import build
from forwarder.routing import Router, Target
from forwarder.telemetry.metrics import Metrics
from forwarder.topology import Topology
from tests.helpers import events, sample


def _target(sink: str, when_full: str, max_events: int = 10) -> Target:
    return Target(sink, MemoryBuffer(sink, max_events=max_events, max_bytes=1 << 20), when_full)


def test_fan_out_follows_inputs(tmp_path: Path, metrics: Metrics) -> None:
    """Each sink gets the events of the sources in its ``inputs`` (every source by default)."""
    config = build(
        {
            "data_dir": str(tmp_path),
            "admin": {"address": "127.0.0.1:0"},
            "sources": {
                "a": {"type": "tcp", "address": "127.0.0.1:0"},
                "b": {"type": "tcp", "address": "127.0.0.1:0"},
            },
            "sinks": {
                "only_a": {"type": "file", "path": str(tmp_path / "a"), "inputs": ["a"]},
                "only_b": {"type": "file", "path": str(tmp_path / "b"), "inputs": ["b"]},
                "all": {"type": "file", "path": str(tmp_path / "all")},
            },
        }
    )
    topo = Topology(config, metrics)
    router = topo.router
    assert router.try_place(router.plan("a", events(2, "a")))
    assert router.try_place(router.plan("b", events(3, "b")))
    depth = {name: rt.buffer.depth_events for name, rt in topo.sinks.items()}
    assert depth == {"only_a": 2, "only_b": 3, "all": 5}
    assert sample(metrics.registry, "forwarder_events_received_total", source="a") == 2
    assert sample(metrics.registry, "forwarder_events_received_total", source="b") == 3


def test_block_is_all_or_nothing(metrics: Metrics) -> None:
    """When one block buffer is full, no buffer gets any of the chunk."""
    router = Router(metrics)
    roomy, full = _target("roomy", "block"), _target("full", "block", max_events=2)
    router.add_target("src", roomy)
    router.add_target("src", full)
    full.buffer.append(events(2))
    assert not router.try_place(router.plan("src", events(1)))
    assert roomy.buffer.depth_events == 0
    assert full.buffer.depth_events == 2
    assert sample(metrics.registry, "forwarder_events_received_total", source="src") == 0


async def test_place_times_out_with_nothing_placed(metrics: Metrics) -> None:
    """place() gives up after wait_secs, placing nothing anywhere."""
    router = Router(metrics)
    roomy, full = _target("roomy", "block"), _target("full", "block", max_events=1)
    router.add_target("src", roomy)
    router.add_target("src", full)
    full.buffer.append(events(1))
    assert not await router.place(router.plan("src", events(3)), wait_secs=0.05)
    assert roomy.buffer.depth_events == 0


async def test_place_completes_when_room_frees(metrics: Metrics) -> None:
    """A blocked place() goes through once the full buffer's batch is acked."""
    router = Router(metrics)
    full = _target("full", "block", max_events=1)
    router.add_target("src", full)
    full.buffer.append(events(1))
    placing = asyncio.create_task(router.place(router.plan("src", events(1, start=1))))
    await asyncio.sleep(0.02)
    assert not placing.done()
    batch = await full.buffer.read(1, 1 << 20, 0)
    assert batch is not None
    full.buffer.ack(batch)
    assert await asyncio.wait_for(placing, 1)
    assert full.buffer.depth_events == 1


async def test_drop_newest_counts_and_never_slows_other_sinks(metrics: Metrics) -> None:
    """A full drop_newest buffer drops the overflow (counted as queue_full) while the other
    sinks get the whole chunk without waiting."""
    router = Router(metrics)
    dropper = _target("dropper", "drop_newest", max_events=3)
    blocker = _target("blocker", "block", max_events=100)
    router.add_target("src", dropper)
    router.add_target("src", blocker)
    dropper.buffer.append(events(1))
    placed = await asyncio.wait_for(router.place(router.plan("src", events(5))), 0.5)
    assert placed
    assert dropper.buffer.depth_events == 3
    assert blocker.buffer.depth_events == 5
    dropped = sample(
        metrics.registry, "forwarder_events_dropped_total", component="dropper", reason="queue_full"
    )
    assert dropped == 3
    assert router.try_place(router.plan("src", events(4)))
    dropped = sample(
        metrics.registry, "forwarder_events_dropped_total", component="dropper", reason="queue_full"
    )
    assert dropped == 7
    assert blocker.buffer.depth_events == 9


def test_drop_newest_keeps_within_bytes(metrics: Metrics) -> None:
    """drop_newest keeps only the prefix that fits the byte limit."""
    router = Router(metrics)
    evs = events(5)
    size = len(evs[0].raw)
    dropper = Target("d", MemoryBuffer("d", max_events=100, max_bytes=size * 3), "drop_newest")
    router.add_target("src", dropper)
    dropper.buffer.append(evs[:1])
    assert router.try_place(router.plan("src", evs[1:]))
    assert dropper.buffer.depth_events == 3
    assert dropper.buffer.unacked() == evs[:3]
    dropped = sample(
        metrics.registry, "forwarder_events_dropped_total", component="d", reason="queue_full"
    )
    assert dropped == 2


def test_source_without_targets_counts_received(metrics: Metrics) -> None:
    """Events from a source no sink reads are still counted as received (and go nowhere)."""
    router = Router(metrics)
    assert router.try_place(router.plan("lonely", events(2)))
    assert sample(metrics.registry, "forwarder_events_received_total", source="lonely") == 2


def _full_sink(metrics: Metrics, max_events: int) -> tuple[Router, Buffer]:
    """A router whose source ``src`` feeds one block sink, its buffer full."""
    router = Router(metrics)
    target = _target("siem", "block", max_events=max_events)
    router.add_target("src", target)
    target.buffer.append(events(max_events))
    return router, target.buffer


async def _drain(buffer: Buffer, count: int) -> None:
    batch = await buffer.read(count, 1 << 30, 0)
    assert batch is not None and len(batch.events) == count
    buffer.ack(batch)


async def test_waiting_chunk_is_not_overtaken_by_later_small_ones(metrics: Metrics) -> None:
    """A large chunk waiting for room (as a TCP read does) gets it before small chunks that
    arrive after it (HTTP requests, datagrams), though each of those would fit sooner; they
    queue behind it and go in order once it is placed."""
    router, buffer = _full_sink(metrics, 80)
    big = asyncio.create_task(router.place(router.plan("src", events(40, start=100))))
    await asyncio.sleep(0)
    assert buffer.waiting_writers == 1
    await _drain(buffer, 20)
    # Room for 20 now: a 1-event chunk would fit, but the big one waits first.
    assert not router.try_place(router.plan("src", events(1, start=200)))
    later = [
        asyncio.create_task(router.place(router.plan("src", events(1, start=300 + i))))
        for i in range(3)
    ]
    await asyncio.sleep(0.01)
    assert not big.done() and not any(t.done() for t in later)
    assert buffer.waiting_writers == 4
    await _drain(buffer, 40)
    assert await asyncio.wait_for(big, 1)
    assert all(await asyncio.wait_for(asyncio.gather(*later), 1))
    ids = [orjson.loads(e.raw)["i"] for e in buffer.unacked()]
    assert ids[-43:] == [*range(100, 140), 300, 301, 302]
    assert buffer.waiting_writers == 0


async def test_chunks_waiting_on_the_same_buffers_in_opposite_order_both_go(
    metrics: Metrics,
) -> None:
    """Two sources route to the same two full buffers, listed in opposite orders: both
    waiting chunks are placed once room comes (one line order for every buffer, no
    chunk holding up the other)."""
    router = Router(metrics)
    a, b = _target("a", "block", max_events=8), _target("b", "block", max_events=8)
    router.add_target("s1", a)
    router.add_target("s1", b)
    router.add_target("s2", b)
    router.add_target("s2", a)
    for target in (a, b):
        target.buffer.append(events(8))
    first = asyncio.create_task(router.place(router.plan("s1", events(2, start=10))))
    second = asyncio.create_task(router.place(router.plan("s2", events(2, start=20))))
    await asyncio.sleep(0.01)
    for target in (b, a):
        await _drain(target.buffer, 8)
    assert await asyncio.wait_for(asyncio.gather(first, second), 1) == [True, True]
    assert a.buffer.depth_events == b.buffer.depth_events == 4


async def test_a_chunk_that_gives_up_leaves_the_line(metrics: Metrics) -> None:
    """A place() that times out (an HTTP 503) or is cancelled (a closed connection) stops
    holding up the chunks behind it."""
    router, buffer = _full_sink(metrics, 8)
    assert not await router.place(router.plan("src", events(8, start=10)), wait_secs=0.02)
    cancelled = asyncio.create_task(router.place(router.plan("src", events(8, start=20))))
    await asyncio.sleep(0)
    assert buffer.waiting_writers == 1
    cancelled.cancel()
    await asyncio.sleep(0)
    assert buffer.waiting_writers == 0
    await _drain(buffer, 4)
    assert router.try_place(router.plan("src", events(1, start=30)))
