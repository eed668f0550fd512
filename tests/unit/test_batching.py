"""Batcher: size-or-time batches, flush on drain, the concurrency limit, ack after delivery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from forwarder.batching import Batcher
from forwarder.buffers.memory import MemoryBuffer
from forwarder.config import BatchConfig
from forwarder.deadletter import DeadLetterStore
from forwarder.sinks.delivery import Delivery
from forwarder.sinks.http import HttpCollectorSink, HttpConfig
from forwarder.telemetry.metrics import Metrics
from tests.helpers import FakeCollector, events, wait_for


class Rig:
    """A buffer, an http sink on the collector, and the batcher between them."""

    def __init__(
        self,
        tmp_path: Path,
        metrics: Metrics,
        endpoint: str,
        *,
        concurrency: int = 1,
        **batch: Any,
    ) -> None:
        config = HttpConfig.model_validate(
            {
                "type": "http",
                "endpoint": endpoint,
                "request": {"concurrency": concurrency, "retry_initial_backoff_secs": 0.01},
            }
        )
        self.sink = HttpCollectorSink("out", config)
        self.buffer = MemoryBuffer("out", max_events=10_000, max_bytes=1 << 24)
        dead = DeadLetterStore(tmp_path / "dl", "out", max_bytes=1 << 20, metrics=metrics)
        delivery = Delivery(self.sink, config.request, metrics, dead)
        self.batcher = Batcher(
            self.buffer, delivery, BatchConfig.model_validate(batch), concurrency
        )

    async def start(self) -> None:
        await self.sink.start()
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        await self.sink.stop()


@pytest.fixture
async def rigs(tmp_path: Path, metrics: Metrics, collector: FakeCollector) -> AsyncIterator[Any]:
    made: list[Rig] = []

    async def make(**kwargs: Any) -> Rig:
        rig = Rig(tmp_path, metrics, collector.endpoint, **kwargs)
        await rig.start()
        made.append(rig)
        return rig

    yield make
    collector.script.clear()
    for rig in made:
        await rig.stop()


def sizes(collector: FakeCollector) -> list[int]:
    return [r.accepted for r in collector.requests]


async def test_flush_at_max_events(rigs: Any, collector: FakeCollector) -> None:
    """A batch closes as soon as it holds max_events, long before its timeout."""
    rig = await rigs(max_events=5, timeout_secs=30)
    rig.buffer.append(events(12))
    await collector.wait_until(lambda: len(collector.received) >= 10)
    assert sizes(collector) == [5, 5]
    # The last two wait in an open batch for its timeout, still held.
    await wait_for(lambda: rig.buffer.depth_events == 2)
    await asyncio.sleep(0.1)
    assert len(collector.requests) == 2


async def test_flush_at_max_bytes(rigs: Any, collector: FakeCollector) -> None:
    """A batch closes before it would pass max_bytes."""
    evs = events(9)
    size = len(evs[0].raw)
    rig = await rigs(max_events=1000, max_bytes=size * 3, timeout_secs=30)
    rig.buffer.append(evs)
    await collector.wait_until(lambda: len(collector.received) == 9)
    assert sizes(collector) == [3, 3, 3]


async def test_flush_at_timeout_after_first_event(rigs: Any, collector: FakeCollector) -> None:
    """A partial batch is sent timeout_secs after its first event, not before."""
    rig = await rigs(max_events=1000, timeout_secs=0.3)
    start = time.monotonic()
    rig.buffer.append(events(1))
    await asyncio.sleep(0.1)
    rig.buffer.append(events(2, start=1))
    await collector.wait_until(lambda: len(collector.received) == 3, timeout_secs=3)
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 3.0
    assert sizes(collector) == [3]


async def test_drain_flushes_open_batches_at_once(rigs: Any, collector: FakeCollector) -> None:
    """drain() sends what is buffered without waiting for the batch timeout."""
    rig = await rigs(max_events=4, timeout_secs=60)
    rig.buffer.append(events(6))
    await collector.wait_until(lambda: len(collector.received) >= 4)
    # The last two sit in an open batch that waits for more until its timeout.
    await wait_for(lambda: rig.buffer.depth_events == 2 and rig.buffer.unread_events == 0)
    await asyncio.sleep(0.05)
    start = time.monotonic()
    await asyncio.wait_for(rig.batcher.drain(), 10)
    # The batch timeout is 60 s: anything near it means the drain did not flush.
    assert time.monotonic() - start < 5.0
    assert collector.received == [{"i": i} for i in range(6)]
    assert rig.buffer.depth_events == 0


async def test_concurrency_limit_is_honoured(rigs: Any, collector: FakeCollector) -> None:
    """No more than request.concurrency requests are open at the destination at once."""
    collector.script.stall()
    rig = await rigs(max_events=1, timeout_secs=0.01, concurrency=3)
    rig.buffer.append(events(10))
    await wait_for(lambda: collector.script.held == 3)
    await asyncio.sleep(0.1)
    assert collector.script.held == 3
    assert rig.batcher.in_flight == 3
    collector.script.release()
    await collector.wait_until(lambda: len(collector.received) == 10)
    assert collector.max_in_flight == 3
    assert sorted(o["i"] for o in collector.received) == list(range(10))


async def test_events_are_acked_only_after_delivery(rigs: Any, collector: FakeCollector) -> None:
    """Buffer space stays held while a batch is in flight and is freed once it is delivered."""
    collector.script.stall()
    rig = await rigs(max_events=10, timeout_secs=0.01)
    rig.buffer.append(events(4))
    await wait_for(lambda: collector.script.held == 1)
    assert rig.buffer.unread_events == 0
    assert rig.buffer.depth_events == 4
    collector.script.release()
    await wait_for(lambda: rig.buffer.depth_events == 0)
    assert len(collector.received) == 4


async def test_stop_leaves_undelivered_events_in_the_buffer(
    rigs: Any, collector: FakeCollector
) -> None:
    """stop() cancels in-flight work; the events stay held for spilling."""
    collector.script.stall()
    rig = await rigs(max_events=2, timeout_secs=0.01)
    evs = events(5)
    rig.buffer.append(evs)
    await wait_for(lambda: collector.script.held == 1)
    await rig.batcher.stop()
    assert rig.buffer.unacked() == evs
    collector.script.release()
