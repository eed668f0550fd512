"""Every registered component: stop without start is safe; start, stop, stop is idempotent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from forwarder.batching import Batcher
from forwarder.buffers.memory import MemoryBuffer
from forwarder.config import BatchConfig, RequestConfig, load_text
from forwarder.daemon import Daemon
from forwarder.deadletter import DeadLetterStore
from forwarder.routing import Router
from forwarder.sinks import SINKS
from forwarder.sinks.delivery import Delivery
from forwarder.sources import SOURCES
from forwarder.sources.base import SourceContext
from forwarder.telemetry.metrics import Metrics

# The least config each registered type needs, on 127.0.0.1 only. A new component type
# fails here until it is given one, so none escapes this test.
SOURCE_CONFIGS: dict[str, list[dict[str, Any]]] = {
    "tcp": [{}],
    "http": [{}],
    "syslog": [{"mode": "tcp"}, {"mode": "udp"}],
}
SINK_CONFIGS: dict[str, dict[str, Any]] = {
    "file": {"path": "{tmp}/out.jsonl"},
    "http": {"endpoint": "http://127.0.0.1:9/ingest"},
    "splunk_hec": {
        "endpoint": "http://127.0.0.1:9",
        "token": "11111111-2222-3333-4444-555555555555",
    },
    "datadog_logs": {"endpoint": "http://127.0.0.1:9/api/v2/logs", "api_key": "k" * 32},
}

SOURCE_CASES = [
    pytest.param(kind, extra, id=f"{kind}-{i}")
    for kind in sorted(SOURCES)
    for i, extra in enumerate(SOURCE_CONFIGS.get(kind, [{"missing": True}]))
]


def test_every_registered_component_has_a_lifecycle_case() -> None:
    """The cases below cover the whole registries."""
    assert set(SOURCE_CONFIGS) == set(SOURCES)
    assert set(SINK_CONFIGS) == set(SINKS)


@pytest.mark.parametrize(("kind", "extra"), SOURCE_CASES)
async def test_source_lifecycle(kind: str, extra: dict[str, Any], metrics: Metrics) -> None:
    """A source: stop before start, then start (binds), stop, stop again."""
    config_class, factory = SOURCES[kind]
    config = config_class.model_validate({"type": kind, "address": "127.0.0.1:0", **extra})
    source = factory(config, SourceContext("src", Router(metrics), metrics))
    await source.stop()
    await source.start()
    bound = source.bound
    assert bound and all(host == "127.0.0.1" and port > 0 for host, port in bound)
    await source.stop()
    await source.stop()
    assert source.bound == []


@pytest.mark.parametrize("kind", sorted(SINKS))
async def test_sink_lifecycle(kind: str, tmp_path: Path, metrics: Metrics) -> None:
    """A sink with its buffer, delivery and batcher: stop before start; start, stop, stop."""
    config_class, factory = SINKS[kind]
    body = {k: str(v).replace("{tmp}", str(tmp_path)) for k, v in SINK_CONFIGS[kind].items()}
    config = config_class.model_validate({"type": kind, **body})
    sink = factory("out", config)
    buffer = MemoryBuffer("out", max_events=10, max_bytes=1000)
    dead = DeadLetterStore(tmp_path / "dl", "out", max_bytes=1000, metrics=metrics)
    delivery = Delivery(sink, RequestConfig(), metrics, dead)
    batcher = Batcher(buffer, delivery, BatchConfig(), 2)
    for component in (batcher, sink, buffer):
        await component.stop()
    await buffer.start()
    await sink.start()
    await batcher.start()
    for _ in range(2):
        await batcher.stop()
        await sink.stop()
        await buffer.stop()


async def test_daemon_lifecycle(tmp_path: Path, metrics: Metrics) -> None:
    """The daemon: stop before start, then start, stop, stop again."""
    config = load_text(
        f"""
data_dir: {tmp_path}
shutdown_timeout_secs: 2
admin: {{address: "127.0.0.1:0"}}
sources:
  t: {{type: tcp, address: "127.0.0.1:0"}}
  h: {{type: http, address: "127.0.0.1:0"}}
sinks:
  f: {{type: file, path: {tmp_path}/out.jsonl}}
"""
    )
    daemon = Daemon(config, metrics)
    await daemon.stop()
    daemon = Daemon(config, metrics=Metrics())
    await daemon.start()
    assert daemon.state == "running"
    await daemon.stop()
    await daemon.stop()
    assert daemon.state == "stopped"
