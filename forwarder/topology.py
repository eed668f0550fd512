"""Wiring: the runtime components built from a config, started, stopped and reloaded.

Start: sinks (healthcheck logged, never blocking), spilled events re-queued, batchers, then
sources (bind last). Stop: sources, then batchers drain under the shutdown deadline, then
sinks. What is still undelivered at the deadline stays in its buffer: a disk buffer keeps it,
a memory buffer's events are spilled to ``data_dir/spill/<sink>/`` and re-queued at the next
start.

Reload applies a new config in place: unchanged sources keep their connections, unchanged
sinks keep everything; a changed sink keeps its buffer (limits updated) and gets a new sink
and batcher, while the old batcher finishes only the requests it has in flight. No event is
moved, so none is lost or sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from forwarder.batching import Batcher
from forwarder.buffers.base import Buffer
from forwarder.buffers.memory import MemoryBuffer
from forwarder.carryover import adopt_disk_buffers, remove_after_commit, requeue_spill, spill
from forwarder.config import Config, SinkConfig, SourceConfig
from forwarder.deadletter import DeadLetterStore
from forwarder.routing import Router, Target
from forwarder.sinks import SINKS
from forwarder.sinks.delivery import Delivery
from forwarder.sources import SOURCES
from forwarder.sources.base import Source, SourceContext
from forwarder.telemetry.metrics import Metrics
from forwarder.wiring import compile_policy, instance_dirs, make_buffer

if TYPE_CHECKING:
    from forwarder.sinks.base import Sink

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
        instance: (index, count) of this worker process, or None when it is the only one.
    """

    def __init__(
        self, config: Config, metrics: Metrics, instance: tuple[int, int] | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.instance = instance
        self.router = Router(metrics)
        self._background: set[asyncio.Task[None]] = set()
        # Sinks a reload replaced (False) or removed (True) that are still finishing.
        self._leaving: list[tuple[SinkRuntime, bool]] = []
        self.sinks = {name: self._build_sink(name, cfg) for name, cfg in config.sinks.items()}
        self.sources = {name: self._build_source(name, cfg) for name, cfg in config.sources.items()}
        self._route(config)

    # -- building ----------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.config.settings.data_dir

    def _build_source(self, name: str, cfg: SourceConfig) -> Source:
        ctx = SourceContext(name, self.router, self.metrics)
        self.metrics.events_received.labels(name)
        return SOURCES[cfg.type][1](cfg, ctx)

    def _build_sink(self, name: str, cfg: SinkConfig, buffer: Buffer | None = None) -> SinkRuntime:
        sink = SINKS[cfg.type][1](name, cfg)
        if buffer is None:
            own, _ = instance_dirs(self.data_dir / "buffers", name, self.instance)
            buffer = make_buffer(name, cfg, own, self.metrics)
        dead = DeadLetterStore(
            self.data_dir / "dead_letter" / name,
            name,
            max_bytes=cfg.dead_letter.max_bytes,
            metrics=self.metrics,
        )
        delivery = Delivery(sink, cfg.request, self.metrics, dead)
        batcher = Batcher(buffer, delivery, cfg.batch, cfg.request.concurrency)
        held = buffer
        self.metrics.queues.watch(name, lambda: held)
        self.metrics.events_sent.labels(name)
        for outcome in ("success", "retry", "split", "dead_letter"):
            self.metrics.batches.labels(name, outcome)
        self.metrics.dead_letter_events.labels(name)
        return SinkRuntime(name, cfg, sink, buffer, delivery, batcher)

    def _route(self, config: Config) -> None:
        """Point the router at the current sinks; one assignment, so no chunk sees half."""
        settings = config.settings
        key = settings.policy_hash_key.encode() if settings.policy_hash_key else None
        targets: dict[str, list[Target]] = {}
        for name, rt in self.sinks.items():
            cfg = rt.config
            target = Target(name, rt.buffer, cfg.buffer.when_full, compile_policy(cfg.policy, key))
            for source in config.sink_inputs(name):
                targets.setdefault(source, []).append(target)
        self.router.set_routes(targets, compile_policy(settings.policy, key))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        for rt in self.sinks.values():
            await self._start_sink(rt)
        for source in self.sources.values():
            await source.start()

    async def _start_sink(self, rt: SinkRuntime) -> None:
        await rt.buffer.start()
        await rt.sink.start()
        self._spawn(self._healthcheck(rt))
        own, orphans = instance_dirs(self.data_dir / "spill", rt.name, self.instance)
        for directory in [own, *orphans]:
            paths = requeue_spill(rt.buffer, rt.name, directory, self.metrics)
            if paths:
                self._spawn(remove_after_commit(rt.buffer, rt.name, paths))
        _, orphans = instance_dirs(self.data_dir / "buffers", rt.name, self.instance)
        await adopt_disk_buffers(rt.buffer, rt.name, orphans, self.metrics)
        await rt.batcher.start()

    async def _healthcheck(self, rt: SinkRuntime) -> None:
        problem = await rt.sink.healthcheck()
        if problem is not None:
            log.warning(
                "sink healthcheck failed; delivery will keep trying",
                component=rt.name,
                problem=problem,
            )

    async def stop_sources(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.sources.values()))

    async def drain(self, timeout: float) -> bool:
        """Deliver what is buffered, for at most ``timeout`` seconds; True if all went."""
        return await _drain([rt.batcher for rt in self.sinks.values()], timeout)

    async def stop_sinks(self) -> dict[str, int]:
        """Spill what memory buffers still hold, stop sinks and buffers; returns the events
        left undelivered per sink (kept on disk either way)."""
        left: dict[str, int] = {}
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A reload's leftovers cut short by the stop: close their sessions, and spill what a
        # removed sink still holds rather than forget it.
        for rt, removed in self._leaving:
            if removed:
                left[rt.name] = rt.buffer.depth_events
                await self._close_sink(rt)
            else:
                await rt.batcher.stop()
                await rt.sink.stop()
        self._leaving.clear()
        for rt in self.sinks.values():
            left[rt.name] = rt.buffer.depth_events
            await self._close_sink(rt)
        return left

    async def _close_sink(self, rt: SinkRuntime) -> None:
        await rt.batcher.stop()
        if isinstance(rt.buffer, MemoryBuffer):
            directory, _ = instance_dirs(self.data_dir / "spill", rt.name, self.instance)
            spill(rt.buffer, rt.name, directory, self.metrics)
        await rt.sink.stop()
        await rt.buffer.stop()

    # -- reload --------------------------------------------------------------------------

    async def reload(self, new: Config) -> dict[str, Any]:
        """Apply ``new`` in place; returns what changed and what needs a restart."""
        old = self.config
        summary: dict[str, Any] = {
            "sources": _diff(old.sources, new.sources),
            "sinks": _diff(old.sinks, new.sinks),
            "restart_needed": [],
        }
        restart: list[str] = summary["restart_needed"]
        if new.settings.data_dir != old.settings.data_dir:
            restart.append("data_dir")
        if new.settings.admin != old.settings.admin:
            restart.append("admin.address")
        self.config = Config(
            old.settings.model_copy(
                update={
                    k: getattr(new.settings, k)
                    for k in ("shutdown_timeout_secs", "log", "policy", "policy_hash_key")
                }
            ),
            new.sources,
            new.sinks,
            new.path,
        )
        sinks = summary["sinks"]
        retired: list[SinkRuntime] = []
        for name in sinks["added"]:
            rt = self._build_sink(name, new.sinks[name])
            await self._start_sink(rt)
            self.sinks[name] = rt
        for name in sinks["changed"]:
            old_rt = self.sinks[name]
            cfg = new.sinks[name]
            buffer = old_rt.buffer
            if cfg.buffer.type != old_rt.config.buffer.type:
                restart.append(f"sinks.{name}.buffer.type")
                cfg = cfg.model_copy(
                    update={
                        "buffer": old_rt.config.buffer.model_copy(
                            update={
                                "max_events": cfg.buffer.max_events,
                                "max_bytes": cfg.buffer.max_bytes,
                                "when_full": cfg.buffer.when_full,
                            }
                        )
                    }
                )
            buffer.max_events = cfg.buffer.max_events
            buffer.max_bytes = cfg.buffer.max_bytes
            rt = self._build_sink(name, cfg, buffer)
            # Totals continue across the reload (status readers compute rates from them).
            for total in ("delivered_events", "dead_lettered_events", "retries"):
                setattr(rt.delivery, total, getattr(old_rt.delivery, total))
            await rt.sink.start()
            await rt.batcher.start()
            self.sinks[name] = rt
            retired.append(old_rt)
        removed = [self.sinks.pop(name) for name in sinks["removed"]]
        self._route(self.config)
        for rt in retired:
            self._leaving.append((rt, False))
            self._spawn(self._retire(rt))
        for rt in removed:
            self.metrics.queues.forget(rt.name)
            self._leaving.append((rt, True))
            self._spawn(self._remove(rt))
        await self._reload_sources(summary["sources"], new)
        return summary

    async def _reload_sources(self, diff: dict[str, list[str]], new: Config) -> None:
        for name in diff["removed"] + diff["changed"]:
            await self.sources.pop(name).stop()
        for name in diff["changed"] + diff["added"]:
            source = self._build_source(name, new.sources[name])
            await source.start()
            self.sources[name] = source
        for name in diff["unchanged"]:
            reload_tls = getattr(self.sources[name], "reload_tls", None)
            if reload_tls is not None:
                try:
                    reload_tls()
                except (OSError, ValueError) as exc:
                    log.error(
                        "cannot reload TLS files; keeping the old ones",
                        component=name,
                        error=str(exc),
                    )

    async def _retire(self, rt: SinkRuntime) -> None:
        """The old batcher of a changed sink: finish what is in flight, then close."""
        await rt.batcher.retire()
        await rt.sink.stop()
        self._leaving.remove((rt, False))

    async def _remove(self, rt: SinkRuntime) -> None:
        """A sink no longer in the config: deliver what it holds, spill the rest."""
        await _drain([rt.batcher], self.config.settings.shutdown_timeout_secs)
        await self._close_sink(rt)
        self._leaving.remove((rt, True))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- views -----------------------------------------------------------------------------

    def bound(self) -> dict[str, list[tuple[str, int]]]:
        return {name: source.bound for name, source in self.sources.items()}

    def status(self) -> dict[str, Any]:
        sources = {
            name: {**s.status(), "events_received": self.router.received.get(name, 0)}
            for name, s in self.sources.items()
        }
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
                "disk_error": getattr(rt.buffer, "disk_error", None),
                "events_sent": rt.delivery.delivered_events,
                "dead_letters": rt.delivery.dead_lettered_events,
                "retries": rt.delivery.retries,
            }
        return {"sources": sources, "sinks": sinks}


async def _drain(batchers: list[Batcher], timeout: float) -> bool:
    tasks = [asyncio.create_task(b.drain()) for b in batchers]
    if not tasks:
        return True
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for batcher in batchers:
        await batcher.stop()
    return not pending


def _diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[str]]:
    return {
        "added": [n for n in new if n not in old],
        "removed": [n for n in old if n not in new],
        "changed": [n for n in new if n in old and new[n] != old[n]],
        "unchanged": [n for n in new if n in old and new[n] == old[n]],
    }


__all__ = ["SinkRuntime", "Topology"]
