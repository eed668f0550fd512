"""Summing worker expositions and status documents into the supervisor's one view."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest

from forwarder import __version__
from forwarder.buffers.memory import MemoryBuffer
from forwarder.telemetry.aggregate import merge_metrics, merge_status
from forwarder.telemetry.metrics import Metrics
from tests.helpers import metric, parse_metrics


def _worker(received: int, sent: int, durations: list[float], *, up: bool, ready: bool) -> str:
    """The exposition of one worker's real metrics after some traffic."""
    metrics = Metrics()
    metrics.events_received.labels("app_tcp").inc(received)
    metrics.events_sent.labels("splunk").inc(sent)
    metrics.retries.labels("splunk", "http_503").inc(sent // 10)
    for seconds in durations:
        metrics.request_duration.labels("splunk").observe(seconds)
        metrics.batch_size.labels("splunk").observe(100)
    metrics.sink_up.labels("splunk").set(1 if up else 0)
    metrics.ready.set(1 if ready else 0)
    metrics.connections_active.labels("app_tcp").set(received % 7)
    buffer = MemoryBuffer("splunk", max_events=1000, max_bytes=1 << 20)
    metrics.queues.watch("splunk", lambda: buffer)
    return generate_latest(metrics.registry).decode()


def test_counters_histograms_and_gauges_add_up() -> None:
    """Counters, histogram buckets/sums/counts, connections and queue capacity are sums."""
    a = _worker(300, 250, [0.02, 0.3], up=True, ready=True)
    b = _worker(500, 480, [0.3, 4.0, 20.0], up=True, ready=True)
    merged = parse_metrics(merge_metrics([a, b]).decode())
    one, two = parse_metrics(a), parse_metrics(b)
    assert metric(merged, "forwarder_events_received_total", source="app_tcp") == 800
    assert metric(merged, "forwarder_events_sent_total", sink="splunk") == 730
    assert metric(merged, "forwarder_retries_total", sink="splunk", reason="http_503") == 25 + 48
    assert metric(merged, "forwarder_request_duration_seconds_count", sink="splunk") == 5
    assert metric(merged, "forwarder_request_duration_seconds_sum", sink="splunk") == (
        pytest.approx(24.62)
    )
    for le in ("0.025", "0.5", "5.0", "30.0", "+Inf"):
        key = {"sink": "splunk", "le": le}
        assert metric(merged, "forwarder_request_duration_seconds_bucket", **key) == (
            metric(one, "forwarder_request_duration_seconds_bucket", **key)
            + metric(two, "forwarder_request_duration_seconds_bucket", **key)
        )
    assert metric(merged, "forwarder_batch_size_events_count", sink="splunk") == 5
    assert metric(merged, "forwarder_queue_capacity_events", sink="splunk") == 2000
    assert metric(merged, "forwarder_connections_active", source="app_tcp") == 300 % 7 + 500 % 7
    assert set(merged) == set(one) | set(two)


def test_up_and_ready_need_every_worker_and_build_info_stays_one() -> None:
    """sink_up and ready are the minimum over workers; build_info is 1, not the worker count."""
    merged = parse_metrics(
        merge_metrics(
            [
                _worker(1, 1, [], up=True, ready=True),
                _worker(1, 1, [], up=False, ready=True),
                _worker(1, 1, [], up=True, ready=False),
            ]
        ).decode()
    )
    assert metric(merged, "forwarder_sink_up", sink="splunk") == 0
    assert metric(merged, "forwarder_ready") == 0
    assert metric(merged, "forwarder_build_info", version=__version__) == 1
    both_up = parse_metrics(merge_metrics([_worker(1, 1, [], up=True, ready=True)] * 2).decode())
    assert metric(both_up, "forwarder_sink_up", sink="splunk") == 1
    assert metric(both_up, "forwarder_ready") == 1


def test_merged_text_keeps_types_and_help() -> None:
    """The merged exposition declares each family once with the worker's type and help."""
    text = merge_metrics([_worker(3, 3, [0.1], up=True, ready=True)] * 2).decode()
    lines = text.splitlines()
    assert lines.count("# TYPE forwarder_events_received_total counter") == 1
    assert "# TYPE forwarder_request_duration_seconds histogram" in lines
    assert "# TYPE forwarder_queue_depth_events gauge" in lines
    assert "# HELP forwarder_events_sent_total Events the destination accepted" in lines


def test_label_values_are_escaped_again() -> None:
    """Quotes, backslashes and newlines in label values survive the parse and re-render."""
    value = 'a "quoted" back\\slash\nnew line'
    texts = []
    for n in (2, 5):
        metrics = Metrics()
        metrics.events_received.labels(value).inc(n)
        metrics.ingest_errors.labels(value, "invalid").inc(1)
        texts.append(generate_latest(metrics.registry).decode())
    merged = merge_metrics(texts).decode()
    assert 'source="a \\"quoted\\" back\\\\slash\\nnew line"' in merged
    parsed = parse_metrics(merged)
    assert metric(parsed, "forwarder_events_received_total", source=value) == 7
    assert metric(parsed, "forwarder_ingest_errors_total", source=value, reason="invalid") == 2


def test_one_worker_text_passes_through_unchanged_in_value() -> None:
    """A single exposition merges to the same samples."""
    text = _worker(42, 40, [0.5], up=True, ready=True)
    assert parse_metrics(merge_metrics([text]).decode()) == parse_metrics(text)


def _status(pid: int, received: int, depth: int, *, up: bool, error: str | None) -> dict[str, Any]:
    return {
        "version": __version__,
        "state": "running",
        "pid": pid,
        "sources": {"app_tcp": {"type": "tcp", "connections": 2, "events_received": received}},
        "sinks": {
            "splunk": {
                "type": "splunk_hec",
                "up": up,
                "last_error": error,
                "queue_events": depth,
                "capacity_events": 1000,
                "events_sent": received - depth,
                "disk_error": None,
            }
        },
    }


def test_merge_status_sums_numbers_and_ands_flags() -> None:
    """Numbers add up, up must hold everywhere, the first error is kept, pid is not summed."""
    merged = merge_status(
        [
            _status(100, 500, 10, up=True, error=None),
            _status(200, 700, 30, up=False, error="http 503"),
        ]
    )
    assert merged["workers"] == 2
    assert merged["pid"] == 100
    assert merged["state"] == "running"
    assert merged["sources"]["app_tcp"] == {
        "type": "tcp",
        "connections": 4,
        "events_received": 1200,
    }
    sink = merged["sinks"]["splunk"]
    assert sink["up"] is False
    assert sink["last_error"] == "http 503"
    assert (sink["queue_events"], sink["capacity_events"], sink["events_sent"]) == (40, 2000, 1160)
    assert sink["disk_error"] is None


def test_merge_status_does_not_alias_its_inputs() -> None:
    """Merging leaves the worker documents as they were."""
    first = _status(1, 5, 1, up=True, error=None)
    second = _status(2, 6, 2, up=True, error=None)
    merge_status([first, second])
    assert first["sources"]["app_tcp"]["events_received"] == 5
    assert first["sinks"]["splunk"]["capacity_events"] == 1000
    assert merge_status([]) == {"workers": 0}
