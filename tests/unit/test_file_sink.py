"""file sink: JSON lines appended per batch, write errors kept and retried."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from forwarder.deadletter import DeadLetterStore
from forwarder.sinks.base import Verdict
from forwarder.sinks.delivery import Delivery
from forwarder.sinks.file import FileConfig, FileSink
from forwarder.telemetry.metrics import Metrics
from tests.helpers import event, events, sample, wait_for


def make(path: Path) -> FileSink:
    return FileSink("archive", FileConfig.model_validate({"type": "file", "path": str(path)}))


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


async def test_appends_one_line_per_event_across_batches(tmp_path: Path) -> None:
    """Each batch is appended; every event is one line holding its object; parents created."""
    path = tmp_path / "deep" / "dir" / "events.jsonl"
    sink = make(path)
    await sink.start()
    assert (await sink.send(events(2))).verdict is Verdict.OK
    assert (await sink.send([event({"x": "ünï"})])).verdict is Verdict.OK
    await sink.stop()
    assert lines(path) == [{"i": 0}, {"i": 1}, {"x": "ünï"}]
    assert path.read_bytes().endswith(b"\n")


async def test_keeps_existing_content(tmp_path: Path) -> None:
    """An existing file is appended to, never truncated."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"old":1}\n')
    await make(path).send(events(1))
    assert lines(path) == [{"old": 1}, {"i": 0}]


async def test_write_error_is_transient_and_retried(tmp_path: Path, metrics: Metrics) -> None:
    """A failed write marks the sink down and keeps the batch; it is written once the
    problem is fixed, exactly once."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    path = blocker / "events.jsonl"
    sink = make(path)
    answer = await sink.send(events(1))
    assert (answer.verdict, answer.reason) == (Verdict.DOWN, "write_error")
    config = FileConfig.model_validate(
        {
            "type": "file",
            "path": str(path),
            "request": {"retry_initial_backoff_secs": 0.01, "retry_max_backoff_secs": 0.02},
        }
    )
    sink = FileSink("archive", config)
    dead = DeadLetterStore(tmp_path / "dl", "archive", max_bytes=1 << 20, metrics=metrics)
    delivery = Delivery(sink, config.request, metrics, dead)
    task = asyncio.create_task(delivery.deliver(events(3)))
    await wait_for(lambda: sample(metrics.registry, "forwarder_sink_up", sink="archive") == 0)
    blocker.unlink()
    await asyncio.wait_for(task, 5)
    assert lines(path) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert sample(metrics.registry, "forwarder_sink_up", sink="archive") == 1
    reason = "write_error"
    assert sample(metrics.registry, "forwarder_retries_total", sink="archive", reason=reason) >= 1
