"""Every metric forwarder exports, defined once on an injected registry.

Counters are bumped once per chunk or batch, never per event. Queue gauges are not counters
kept beside the queue: a collector reads the buffers at scrape time, so the gauge can never
drift from the truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from forwarder import __version__

# The *_created series double the exposition size and no dashboard or alert reads them.
disable_created_metrics()

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class QueueView(Protocol):
    """What the gauge collector reads from a sink's buffer."""

    @property
    def depth_events(self) -> int: ...
    @property
    def depth_bytes(self) -> int: ...

    max_events: int
    max_bytes: int


class Metrics:
    """The process's metrics. Tests build one per test on a fresh registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_received = Counter(
            "forwarder_events_received", "Events accepted from clients", ["source"], registry=r
        )
        self.events_sent = Counter(
            "forwarder_events_sent", "Events the destination accepted", ["sink"], registry=r
        )
        self.events_dropped = Counter(
            "forwarder_events_dropped",
            "Events dropped, by component and reason",
            ["component", "reason"],
            registry=r,
        )
        self.batches = Counter(
            "forwarder_batches", "Requests by outcome", ["sink", "outcome"], registry=r
        )
        self.dead_letter_events = Counter(
            "forwarder_dead_letter_events",
            "Events written to the dead-letter store",
            ["sink"],
            registry=r,
        )
        self.retries = Counter(
            "forwarder_retries", "Requests retried, by reason", ["sink", "reason"], registry=r
        )
        self.request_duration = Histogram(
            "forwarder_request_duration_seconds",
            "Time from sending a request to reading its answer",
            ["sink"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "forwarder_batch_size_events",
            "Events per request sent",
            ["sink"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.ingest_errors = Counter(
            "forwarder_ingest_errors",
            "Input that could not be taken as sent, by reason",
            ["source", "reason"],
            registry=r,
        )
        self.sink_up = Gauge(
            "forwarder_sink_up", "1 while the destination accepts requests", ["sink"], registry=r
        )
        self.connections_active = Gauge(
            "forwarder_connections_active", "Open client connections", ["source"], registry=r
        )
        self.ready = Gauge(
            "forwarder_ready",
            "1 while every source listens and the process is not draining",
            registry=r,
        )
        self.build_info = Gauge(
            "forwarder_build_info", "Always 1; the version is the label", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        self.queues = _QueueCollector()
        r.register(self.queues)


class _QueueCollector(Collector):
    """Reads depth and capacity from the live buffers at scrape time."""

    def __init__(self) -> None:
        self._views: dict[str, Callable[[], QueueView]] = {}
        self._disk: dict[str, Callable[[], tuple[int, bool]]] = {}

    def watch(self, sink: str, view: Callable[[], QueueView]) -> None:
        self._views[sink] = view

    def watch_disk(self, sink: str, view: Callable[[], tuple[int, bool]]) -> None:
        """``view`` returns (bytes on disk, disk in error)."""
        self._disk[sink] = view

    def forget(self, sink: str) -> None:
        self._views.pop(sink, None)
        self._disk.pop(sink, None)

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "forwarder_queue_depth_events",
            "Events held for a sink (queued + in flight)",
            labels=["sink"],
        )
        depth_bytes = GaugeMetricFamily(
            "forwarder_queue_depth_bytes", "Bytes held for a sink", labels=["sink"]
        )
        cap = GaugeMetricFamily(
            "forwarder_queue_capacity_events", "Events a sink's buffer may hold", labels=["sink"]
        )
        cap_bytes = GaugeMetricFamily(
            "forwarder_queue_capacity_bytes", "Bytes a sink's buffer may hold", labels=["sink"]
        )
        for sink, get in self._views.items():
            q = get()
            depth.add_metric([sink], q.depth_events)
            depth_bytes.add_metric([sink], q.depth_bytes)
            cap.add_metric([sink], q.max_events)
            cap_bytes.add_metric([sink], q.max_bytes)
        families: list[Metric] = [depth, depth_bytes, cap, cap_bytes]
        if self._disk:
            disk = GaugeMetricFamily(
                "forwarder_buffer_disk_bytes", "Bytes of a disk buffer's files", labels=["sink"]
            )
            err = GaugeMetricFamily(
                "forwarder_disk_error", "1 while a disk buffer cannot write", labels=["sink"]
            )
            for sink, get_disk in self._disk.items():
                nbytes, failing = get_disk()
                disk.add_metric([sink], nbytes)
                err.add_metric([sink], 1 if failing else 0)
            families += [disk, err]
        yield from families

    def describe(self) -> Iterable[Metric]:
        return []
