"""Admin API of a daemon run in-process: /metrics names and labels, /healthz, /readyz, status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from forwarder import __version__
from forwarder.config import load_text
from forwarder.daemon import Daemon
from forwarder.telemetry.metrics import Metrics
from tests.helpers import FakeCollector, metric, parse_metrics, wait_for

# DESIGN.md's metrics contract: family name -> (type, label names).
CONTRACT: dict[str, tuple[str, set[str]]] = {
    "forwarder_events_received": ("counter", {"source"}),
    "forwarder_events_sent": ("counter", {"sink"}),
    "forwarder_events_dropped": ("counter", {"component", "reason"}),
    "forwarder_batches": ("counter", {"sink", "outcome"}),
    "forwarder_queue_depth_events": ("gauge", {"sink"}),
    "forwarder_queue_depth_bytes": ("gauge", {"sink"}),
    "forwarder_queue_capacity_events": ("gauge", {"sink"}),
    "forwarder_dead_letter_events": ("counter", {"sink"}),
    "forwarder_retries": ("counter", {"sink", "reason"}),
    "forwarder_request_duration_seconds": ("histogram", {"sink"}),
    "forwarder_batch_size_events": ("histogram", {"sink"}),
    "forwarder_ingest_errors": ("counter", {"source", "reason"}),
    "forwarder_sink_up": ("gauge", {"sink"}),
    "forwarder_build_info": ("gauge", {"version"}),
}


def config_text(tmp_path: Path, endpoint: str) -> str:
    return f"""
data_dir: {tmp_path}
shutdown_timeout_secs: 5
admin: {{address: "127.0.0.1:0"}}
sources:
  t: {{type: tcp, address: "127.0.0.1:0", on_invalid: drop}}
sinks:
  hook:
    type: http
    endpoint: {endpoint}
    batch: {{max_events: 100, timeout_secs: 0.05}}
    buffer: {{max_events: 1000}}
    request: {{retry_initial_backoff_secs: 0.01, retry_max_backoff_secs: 0.02}}
"""


class Admin:
    def __init__(self, daemon: Daemon, client: aiohttp.ClientSession) -> None:
        self.daemon = daemon
        self.client = client

    @property
    def url(self) -> str:
        bound = self.daemon.admin.bound
        assert bound is not None
        return f"http://{bound[0]}:{bound[1]}"

    async def get(self, path: str) -> tuple[int, str]:
        async with self.client.get(self.url + path) as resp:
            return resp.status, await resp.text()

    def tcp_port(self) -> int:
        return self.daemon.topology.bound()["t"][0][1]


@pytest.fixture
async def admin(tmp_path: Path, metrics: Metrics, collector: FakeCollector) -> AsyncIterator[Admin]:
    daemon = Daemon(load_text(config_text(tmp_path, collector.endpoint)), metrics)
    async with aiohttp.ClientSession() as client:
        yield Admin(daemon, client)
        collector.script.clear()
        await daemon.stop()


async def test_metrics_follow_the_contract(
    admin: Admin, metrics: Metrics, collector: FakeCollector
) -> None:
    """After traffic with a bad line and a retry, /metrics has every contract metric with
    exactly its type and label names, and the values say what happened."""
    await admin.daemon.start()
    collector.script.respond(503, retry_after=0)
    _, writer = await asyncio.open_connection("127.0.0.1", admin.tcp_port())
    writer.write(b'{"a":1}\nbad\n{"a":2}\n')
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await collector.wait_until(lambda: len(collector.received) == 2)
    await wait_for(lambda: admin.daemon.topology.sinks["hook"].buffer.depth_events == 0)
    status, text = await admin.get("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in CONTRACT.items():
        assert name in families, f"{name} missing"
        family = families[name]
        assert family.type == kind, name
        assert family.samples, f"{name} has no series"
        for s in family.samples:
            assert set(s.labels) - {"le"} == labels, (name, s.labels)
    v = parse_metrics(text)
    assert metric(v, "forwarder_events_received_total", source="t") == 2
    assert metric(v, "forwarder_events_sent_total", sink="hook") == 2
    assert metric(v, "forwarder_events_dropped_total", component="t", reason="invalid") == 1
    assert metric(v, "forwarder_ingest_errors_total", source="t", reason="invalid_json") == 1
    assert metric(v, "forwarder_retries_total", sink="hook", reason="http_503") == 1
    assert metric(v, "forwarder_batches_total", sink="hook", outcome="retry") == 1
    assert metric(v, "forwarder_batches_total", sink="hook", outcome="success") == 1
    assert metric(v, "forwarder_batches_total", sink="hook", outcome="dead_letter") == 0
    assert metric(v, "forwarder_queue_capacity_events", sink="hook") == 1000
    assert metric(v, "forwarder_queue_depth_events", sink="hook") == 0
    assert metric(v, "forwarder_sink_up", sink="hook") == 1
    assert metric(v, "forwarder_request_duration_seconds_count", sink="hook") == 2
    assert metric(v, "forwarder_build_info", version=__version__) == 1


async def test_queue_depth_is_read_live(admin: Admin, collector: FakeCollector) -> None:
    """While the collector stalls, the depth gauge shows the events held."""
    await admin.daemon.start()
    collector.script.stall()
    _, writer = await asyncio.open_connection("127.0.0.1", admin.tcp_port())
    writer.write(b"".join(b'{"i":%d}\n' % i for i in range(7)))
    await writer.drain()
    await wait_for(lambda: collector.script.held == 1)
    _, text = await admin.get("/metrics")
    assert 'forwarder_queue_depth_events{sink="hook"} 7.0' in text
    writer.close()
    collector.script.release()


async def test_healthz(admin: Admin) -> None:
    """/healthz answers 200 while the process serves."""
    await admin.daemon.start()
    status, body = await admin.get("/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}


async def test_readyz_follows_the_state(admin: Admin, collector: FakeCollector) -> None:
    """/readyz is 503 while starting, 200 when running, 503 while draining."""
    daemon = admin.daemon
    # The admin listener comes up first at start; sources are not listening yet.
    await daemon.admin.start()
    status, body = await admin.get("/readyz")
    assert (status, json.loads(body)) == (503, {"ready": False, "reason": "starting"})
    await daemon.topology.start()
    daemon.state = "running"
    status, _ = await admin.get("/readyz")
    assert status == 200
    # A stalled collector keeps the drain going: the process is draining.
    collector.script.stall()
    _, writer = await asyncio.open_connection("127.0.0.1", admin.tcp_port())
    writer.write(b'{"a":1}\n')
    await writer.drain()
    writer.close()
    await wait_for(lambda: collector.script.held == 1)
    stopping = asyncio.create_task(daemon.stop())
    await wait_for(lambda: daemon.state == "stopping")
    status, body = await admin.get("/readyz")
    assert (status, json.loads(body)["ready"]) == (503, False)
    collector.script.release()
    await asyncio.wait_for(stopping, 5)
    assert collector.received == [{"a": 1}]


async def test_api_status(admin: Admin) -> None:
    """/api/status is a JSON snapshot of state, sources and sinks."""
    await admin.daemon.start()
    status, body = await admin.get("/api/status")
    assert status == 200
    doc: dict[str, Any] = json.loads(body)
    assert doc["state"] == "running"
    assert doc["version"] == __version__
    assert doc["sources"]["t"]["type"] == "tcp"
    hook = doc["sinks"]["hook"]
    assert hook["type"] == "http"
    assert hook["up"] is True
    assert hook["queue_events"] == 0
    assert hook["capacity_events"] == 1000
