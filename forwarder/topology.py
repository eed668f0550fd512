"""Wiring: the runtime components built from a config, started and stopped in order.

Start: sinks (healthcheck logged, never blocking), then batchers, then sources (bind last).
Stop: sources, then batchers drain under the shutdown deadline, then sinks. What is still
undelivered at the deadline stays in its buffer: a disk buffer keeps it, a memory buffer's
events are spilled to ``data_dir/spill/<sink>/`` and delivered after the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from forwarder.batching import Batcher
from forwarder.buffers.base import Buffer
from forwarder.buffers.memory import MemoryBuffer
from forwarder.config import Config, SinkConfig
from forwarder.deadletter import DeadLetterStore
from forwarder.routing import Router, Target
from forwarder.sinks import SINKS
from forwarder.sinks.base import Sink
from forwarder.sinks.delivery import Delivery
from forwarder.sources import SOURCES
from forwarder.sources.base import Source, SourceContext
from forwarder.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from forwarder.policy.config import PolicyRuleConfig
    from forwarder.policy.engine import Policy

log = structlog.get_logger()


@dataclass
class SinkRuntime:
    """Everything that belongs to one sink."""

    name: str
    config: SinkConfig
    sink: Sink
    buffer: Buffer
    delivery: Delivery
    batcher: Batcher


class Topology:
    """Sources, router and sinks of one config.

    Arguments:
        config: the validated config.
        metrics: the process metrics (fresh registry per test).
    """

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        settings = config.settings
        hash_key = settings.policy_hash_key.encode() if settings.policy_hash_key else None
        self.router = Router(metrics, compile_policy(settings.policy, hash_key))
        self.sinks: dict[str, SinkRuntime] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.sources: dict[str, Source] = {}
        for name, sink_config in config.sinks.items():
            runtime = self._build_sink(name, sink_config, hash_key)
            self.sinks[name] = runtime
            sink_policy = compile_policy(sink_config.policy, hash_key)
            target = Target(name, runtime.buffer, sink_config.buffer.when_full, sink_policy)
            for source in config.sink_inputs(name):
                self.router.add_target(source, target)
        for name, source_config in config.sources.items():
            ctx = SourceContext(name, self.router, metrics)
            factory = SOURCES[source_config.type][1]
            self.sources[name] = factory(source_config, ctx)
            metrics.events_received.labels(name)

    def _build_sink(self, name: str, cfg: SinkConfig, hash_key: bytes | None) -> SinkRuntime:
        data_dir = self.config.settings.data_dir
        sink = SINKS[cfg.type][1](name, cfg)
        buffer = make_buffer(name, cfg, data_dir, self.metrics)
        dead = DeadLetterStore(
            data_dir / "dead_letter" / name,
            name,
            max_bytes=cfg.dead_letter.max_bytes,
            metrics=self.metrics,
        )
        delivery = Delivery(sink, cfg.request, self.metrics, dead)
        batcher = Batcher(buffer, delivery, cfg.batch, cfg.request.concurrency)
        self.metrics.queues.watch(name, lambda: buffer)
        self.metrics.events_sent.labels(name)
        for outcome in ("success", "retry", "split", "dead_letter"):
            self.metrics.batches.labels(name, outcome)
        self.metrics.dead_letter_events.labels(name)
        return SinkRuntime(name, cfg, sink, buffer, delivery, batcher)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        for rt in self.sinks.values():
            await rt.buffer.start()
            await rt.sink.start()
        for rt in self.sinks.values():
            task = asyncio.create_task(self._healthcheck(rt))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        for rt in self.sinks.values():
            await rt.batcher.start()
        for source in self.sources.values():
            await source.start()

    async def _healthcheck(self, rt: SinkRuntime) -> None:
        problem = await rt.sink.healthcheck()
        if problem is None:
            log.info("sink healthcheck passed", component=rt.name)
        else:
            log.warning(
                "sink healthcheck failed; will keep trying on delivery",
                component=rt.name,
                problem=problem,
            )

    async def stop_sources(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.sources.values()))

    async def drain(self, timeout: float) -> bool:
        """Deliver what is buffered, for at most ``timeout`` seconds; True if all went."""
        tasks = [asyncio.create_task(rt.batcher.drain()) for rt in self.sinks.values()]
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for rt in self.sinks.values():
            await rt.batcher.stop()
        return not pending

    async def stop_sinks(self) -> dict[str, int]:
        """Stop sinks and buffers; returns events left undelivered per sink."""
        left: dict[str, int] = {}
        for rt in self.sinks.values():
            left[rt.name] = rt.buffer.depth_events
            await rt.sink.stop()
            await rt.buffer.stop()
        return left

    # -- views -----------------------------------------------------------------------------

    def bound(self) -> dict[str, list[tuple[str, int]]]:
        return {name: source.bound for name, source in self.sources.items()}

    def status(self) -> dict[str, Any]:
        sources = {name: s.status() for name, s in self.sources.items()}
        sinks = {}
        for name, rt in self.sinks.items():
            sinks[name] = {
                "type": rt.config.type,
                "up": rt.delivery.up,
                "last_error": rt.delivery.last_error,
                "queue_events": rt.buffer.depth_events,
                "queue_bytes": rt.buffer.depth_bytes,
                "capacity_events": rt.buffer.max_events,
                "capacity_bytes": rt.buffer.max_bytes,
                "in_flight_batches": rt.batcher.in_flight,
                "buffer": rt.config.buffer.type,
            }
        return {"sources": sources, "sinks": sinks}


def compile_policy(rules: list[PolicyRuleConfig], hash_key: bytes | None) -> Policy | None:
    if not rules:
        return None
    # Imported on use: a config without rules never loads the policy engine.
    from forwarder.policy.engine import Policy

    return Policy.compile(rules, hash_key=hash_key)


def make_buffer(name: str, cfg: SinkConfig, data_dir: Any, metrics: Metrics) -> Buffer:
    b = cfg.buffer
    return MemoryBuffer(name, max_events=b.max_events, max_bytes=b.max_bytes)
