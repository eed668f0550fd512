"""Topology.reload in process: what is kept, what is rebuilt, and where buffered events go."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import yaml

from forwarder.buffers.spill import load_spill
from forwarder.config import Config, load_text
from forwarder.telemetry.metrics import Metrics
from forwarder.topology import Topology
from tests.helpers import FakeCollector, events, wait_for


def make_config(tmp_path: Path, sinks: dict[str, Any], **source: Any) -> Config:
    raw = {
        "data_dir": str(tmp_path / "data"),
        "shutdown_timeout_secs": 0.5,
        "sources": {
            "steady": {"type": "tcp", "address": "127.0.0.1:0"},
            "other": {"type": "tcp", "address": "127.0.0.1:0", **source},
        },
        "sinks": sinks,
    }
    return load_text(yaml.safe_dump(raw))


def http_sink(endpoint: str, max_events: int = 50, **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "endpoint": endpoint,
        "batch": {"max_events": max_events, "timeout_secs": 0.02},
        "request": {"retry_initial_backoff_secs": 0.05, "retry_max_backoff_secs": 0.1},
        **extra,
    }


async def test_changed_sink_keeps_its_buffer_and_the_successor_sends_the_rest(
    tmp_path: Path, collector: FakeCollector
) -> None:
    """Batch size changed while requests hang: same buffer, old batcher retires, no loss."""
    topology = Topology(make_config(tmp_path, {"main": http_sink(collector.endpoint)}), Metrics())
    await topology.start()
    try:
        collector.script.stall()
        old = topology.sinks["main"]
        old.buffer.append(events(1000))
        await wait_for(lambda: collector.script.held > 0)
        steady = topology.sources["steady"]
        summary = await topology.reload(
            make_config(tmp_path, {"main": http_sink(collector.endpoint, max_events=7)})
        )
        assert summary["sinks"]["changed"] == ["main"]
        assert sorted(summary["sources"]["unchanged"]) == ["other", "steady"]
        assert topology.sources["steady"] is steady
        new = topology.sinks["main"]
        assert new is not old and new.buffer is old.buffer
        assert new.batcher.max_events == 7
        collector.script.release()
        await wait_for(lambda: len(collector.received) >= 1000, timeout_secs=10)
        await wait_for(lambda: new.buffer.depth_events == 0)
        assert sorted(e["i"] for e in collector.received) == list(range(1000))
        assert any(0 < r.accepted <= 7 for r in collector.requests)
    finally:
        await topology.stop_sources()
        await topology.stop_sinks()


async def test_changed_source_is_rebuilt_and_an_unchanged_connection_stays(
    tmp_path: Path, collector: FakeCollector
) -> None:
    """A connection to an unchanged source keeps working; the changed source is a new one."""
    config = make_config(tmp_path, {"main": http_sink(collector.endpoint)})
    topology = Topology(config, Metrics())
    await topology.start()
    try:
        port = topology.sources["steady"].bound[0][1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'{"n":1}\n')
        await writer.drain()
        other = topology.sources["other"]
        changed = make_config(tmp_path, {"main": http_sink(collector.endpoint)}, max_event_bytes=99)
        summary = await topology.reload(changed)
        assert summary["sources"]["changed"] == ["other"]
        assert topology.sources["other"] is not other
        writer.write(b'{"n":2}\n')
        await writer.drain()
        await wait_for(lambda: len(collector.received) >= 2)
        assert collector.received == [{"n": 1}, {"n": 2}]
        writer.close()
    finally:
        await topology.stop_sources()
        await topology.stop_sinks()


async def test_removed_sink_spills_what_it_cannot_deliver(tmp_path: Path) -> None:
    """A sink removed while its destination is down: its events are spilled, none dropped."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/ingest"
    archive = {"type": "file", "path": str(tmp_path / "out.jsonl")}
    topology = Topology(
        make_config(tmp_path, {"gone": http_sink(dead), "archive": archive}), Metrics()
    )
    await topology.start()
    try:
        topology.sinks["gone"].buffer.append(events(300))
        summary = await topology.reload(make_config(tmp_path, {"archive": archive}))
        assert summary["sinks"]["removed"] == ["gone"]
        assert "gone" not in topology.sinks and "gone" not in topology.status()["sinks"]
        spill = tmp_path / "data" / "spill" / "gone"
        await wait_for(lambda: spill.is_dir() and any(spill.iterdir()), timeout_secs=10)
        spilled, bad, _ = load_spill(spill)
        assert bad == 0
        assert sorted(e.parsed()["i"] for e in spilled) == list(range(300))
    finally:
        await topology.stop_sources()
        await topology.stop_sinks()


async def test_buffer_type_change_needs_a_restart(tmp_path: Path, collector: FakeCollector) -> None:
    """memory -> disk cannot move a live queue: the old type stays and the summary says so."""
    topology = Topology(make_config(tmp_path, {"main": http_sink(collector.endpoint)}), Metrics())
    await topology.start()
    try:
        disk = http_sink(collector.endpoint, buffer={"type": "disk", "max_events": 500})
        summary = await topology.reload(make_config(tmp_path, {"main": disk}))
        assert summary["restart_needed"] == ["sinks.main.buffer.type"]
        main = topology.sinks["main"]
        assert main.config.buffer.type == "memory"
        assert main.buffer.max_events == 500
    finally:
        await topology.stop_sources()
        await topology.stop_sinks()


async def test_stop_while_a_removed_sink_drains_spills_its_events(tmp_path: Path) -> None:
    """A stop that cuts a removed sink's drain short still spills what it held."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/ingest"
    archive = {"type": "file", "path": str(tmp_path / "out.jsonl")}
    config = make_config(tmp_path, {"gone": http_sink(dead), "archive": archive})
    topology = Topology(config, Metrics())
    await topology.start()
    topology.sinks["gone"].buffer.append(events(200))
    await topology.reload(make_config(tmp_path, {"archive": archive}))
    await topology.stop_sources()
    left = await topology.stop_sinks()
    assert left["gone"] == 200
    spilled, bad, _ = load_spill(tmp_path / "data" / "spill" / "gone")
    assert (bad, sorted(e.parsed()["i"] for e in spilled)) == (0, list(range(200)))
