"""Shared delivery against a real HTTP collector: retries, Retry-After, down/up, 413 splitting."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from forwarder.deadletter import DeadLetterStore, read_records
from forwarder.sinks.delivery import Delivery
from forwarder.sinks.http import HttpCollectorSink, HttpConfig
from forwarder.telemetry.metrics import Metrics
from tests.fakes import Hang, Reset, Respond
from tests.fakes.script import Step
from tests.helpers import FakeCollector, event, events, sample

FAST = {
    "retry_initial_backoff_secs": 0.01,
    "retry_max_backoff_secs": 0.02,
    "retry_after_max_secs": 5,
    "timeout_secs": 2,
}


class Rig:
    """A started http sink, its delivery and dead-letter store."""

    def __init__(self, tmp_path: Path, metrics: Metrics, endpoint: str, **request: Any) -> None:
        config = HttpConfig.model_validate(
            {"type": "http", "endpoint": endpoint, "request": {**FAST, **request}}
        )
        self.sink = HttpCollectorSink("out", config)
        self.dead = DeadLetterStore(
            tmp_path / "dead_letter" / "out", "out", max_bytes=1 << 20, metrics=metrics
        )
        self.delivery = Delivery(self.sink, config.request, metrics, self.dead)
        self.registry = metrics.registry

    def value(self, name: str, **labels: str) -> float:
        return sample(self.registry, name, sink="out", **labels)

    def dead_letters(self) -> list[dict[str, Any]]:
        return [r for path in self.dead.files() for r in read_records(path)]


@pytest.fixture
async def rig(tmp_path: Path, metrics: Metrics, collector: FakeCollector) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path, metrics, collector.endpoint)
    await rig.sink.start()
    yield rig
    await rig.sink.stop()


def objects(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"i": i} for i in range(start, start + n)]


async def test_success_counts_sent_and_batches(rig: Rig, collector: FakeCollector) -> None:
    """A 200 delivers every event once; sent, success, duration and batch size are counted."""
    await rig.delivery.deliver(events(5))
    assert collector.received == objects(5)
    assert rig.value("forwarder_events_sent_total") == 5
    assert rig.value("forwarder_batches_total", outcome="success") == 1
    assert rig.value("forwarder_request_duration_seconds_count") == 1
    assert rig.value("forwarder_batch_size_events_sum") == 5
    assert rig.value("forwarder_sink_up") == 1


async def test_retry_after_is_honoured(rig: Rig, collector: FakeCollector) -> None:
    """A 503 with Retry-After waits about what was asked before the retry, then delivers."""
    collector.script.respond(503, retry_after=0.4)
    start = time.monotonic()
    await rig.delivery.deliver(events(3))
    elapsed = time.monotonic() - start
    assert 0.4 <= elapsed < 2.0
    assert collector.received == objects(3)
    assert rig.value("forwarder_retries_total", reason="http_503") == 1
    assert rig.value("forwarder_batches_total", outcome="retry") == 1
    assert rig.value("forwarder_batches_total", outcome="success") == 1


async def test_retry_after_is_capped(
    tmp_path: Path, metrics: Metrics, collector: FakeCollector
) -> None:
    """A Retry-After longer than retry_after_max_secs waits only the cap."""
    rig = Rig(tmp_path, metrics, collector.endpoint, retry_after_max_secs=0.1)
    await rig.sink.start()
    try:
        collector.script.respond(503, retry_after=3600)
        start = time.monotonic()
        await rig.delivery.deliver(events(2))
        assert time.monotonic() - start < 2.0
    finally:
        await rig.sink.stop()
    assert collector.received == objects(2)


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        ([Respond(429)] * 2, "http_429"),
        ([Respond(500)] * 3, "http_500"),
        ([Respond(502), Respond(408)], None),
        ([Reset()] * 2, "connection"),
        ([Hang(5.0)], "timeout"),
    ],
    ids=["429", "500", "502-408", "reset", "timeout"],
)
async def test_transient_failures_retry_until_success_without_loss_or_duplicate(
    tmp_path: Path,
    metrics: Metrics,
    collector: FakeCollector,
    steps: list[Step],
    reason: str | None,
) -> None:
    """429, 5xx, 408, resets and timeouts are retried until the batch is accepted, once."""
    rig = Rig(tmp_path, metrics, collector.endpoint, timeout_secs=0.2)
    await rig.sink.start()
    collector.script.plan(*steps)
    try:
        await rig.delivery.deliver(events(4))
    finally:
        await rig.sink.stop()
    assert collector.received == objects(4)
    assert len(collector.requests) == len(steps) + 1
    assert rig.value("forwarder_batches_total", outcome="retry") == len(steps)
    if reason is not None:
        assert rig.value("forwarder_retries_total", reason=reason) == len(steps)
    assert rig.dead_letters() == []
    assert rig.value("forwarder_sink_up") == 1


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_config_errors_keep_data_and_mark_the_sink_down_then_up(
    rig: Rig, collector: FakeCollector, status: int
) -> None:
    """401/403/404 keep the batch and retry; sink_up reads 0 meanwhile and 1 after recovery."""
    collector.script.always(Respond(status))
    task = asyncio.create_task(rig.delivery.deliver(events(3)))
    await collector.wait_until(lambda: len(collector.requests) >= 3)
    assert rig.value("forwarder_sink_up") == 0
    assert not rig.delivery.up
    assert rig.delivery.last_error is not None and f"http_{status}" in rig.delivery.last_error
    collector.script.always(None)
    await asyncio.wait_for(task, 5)
    assert rig.value("forwarder_sink_up") == 1
    assert rig.delivery.up
    assert collector.received == objects(3)
    assert rig.dead_letters() == []
    assert rig.value("forwarder_retries_total", reason=f"http_{status}") >= 2


async def test_413_splits_down_to_single_events_and_dead_letters_the_too_large_one(
    tmp_path: Path, metrics: Metrics
) -> None:
    """413 halves the batch until pieces fit; a single event still refused is dead-lettered
    with the answer that refused it, and every other event arrives exactly once."""
    async with FakeCollector(max_body_bytes=60) as collector:
        rig = Rig(tmp_path, metrics, collector.endpoint)
        await rig.sink.start()
        batch = [*events(3), event({"big": "x" * 100}), *events(4, start=3)]
        try:
            await rig.delivery.deliver(batch)
        finally:
            await rig.sink.stop()
    assert sorted(collector.received, key=lambda o: o["i"]) == objects(7)
    assert len(collector.received) == 7
    dead = rig.dead_letters()
    assert len(dead) == 1
    assert dead[0]["event"] == {"big": "x" * 100}
    assert dead[0]["status"] == 413 and dead[0]["reason"] == "http_413"
    assert json.loads(dead[0]["response"]) == {"error": "too large"}
    assert rig.value("forwarder_dead_letter_events_total") == 1
    assert rig.value("forwarder_batches_total", outcome="dead_letter") == 1
    assert rig.value("forwarder_batches_total", outcome="split") >= 3
    assert rig.value("forwarder_events_sent_total") == 7
    assert rig.value("forwarder_retries_total", reason="http_413") == 0
