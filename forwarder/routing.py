"""Routing: from a source's chunk of events to every target buffer, applying ``when_full``.

The global policy runs once per chunk, then each sink whose ``inputs`` include the source
gets the events (restricted by policy routes, transformed by its own rules). Placement is
all-or-nothing across ``block`` buffers, so an HTTP client that gets a 503 knows none of its
events was kept, and one that gets a 2xx knows all were. A chunk that has to wait for room
takes a ticket and stands in line at each of its ``block`` buffers: room then goes to chunks
in the order they started waiting, and chunks arriving meanwhile queue behind them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING

from forwarder.buffers.base import Buffer, BufferWriteError
from forwarder.events import Event
from forwarder.policy.view import ViewDecoder, decoder_for

if TYPE_CHECKING:
    from forwarder.policy.engine import Policy
    from forwarder.telemetry.metrics import Metrics


@dataclass(slots=True)
class Target:
    """A sink's buffer as seen from routing."""

    sink: str
    buffer: Buffer
    when_full: str  # "block" | "drop_newest"
    policy: Policy | None = None


@dataclass(slots=True)
class Plan:
    """What one chunk puts into which buffer, computed once so a wait never repeats policy."""

    source: str
    count: int
    parts: list[tuple[Target, list[Event], int]] = field(default_factory=list)
    stored: list[Target] = field(default_factory=list)
    # Once it had to wait: its place in line, and the buffers whose line it stands in.
    ticket: int | None = None
    lines: list[Buffer] = field(default_factory=list)


class Router:
    """Knows, per source, its targets; places chunks of events into them."""

    def __init__(self, metrics: Metrics, policy: Policy | None = None) -> None:
        self.metrics = metrics
        self.policy = policy
        self.targets: dict[str, list[Target]] = {}
        # Plain totals beside the metrics, for /api/status and `forwarder top`.
        self.received: dict[str, int] = {}
        self._tickets = count()
        self._keep_objects = False
        # How sources that can should decode events for the policies: views of the fields
        # they read, or None for whole objects (no policy, or one changing every event).
        self.view: ViewDecoder | None = None
        self._policies_changed()

    @property
    def needs_objects(self) -> bool:
        """Whether sources should keep the parsed object on events (policy reads it)."""
        return self._keep_objects

    def _policies(self) -> list[Policy]:
        policies = [t.policy for ts in self.targets.values() for t in ts if t.policy is not None]
        return policies if self.policy is None else [self.policy, *policies]

    def add_target(self, source: str, target: Target) -> None:
        self.targets.setdefault(source, []).append(target)
        self._policies_changed()

    def set_routes(self, targets: dict[str, list[Target]], policy: Policy | None) -> None:
        """Replace every route at once (start-up and reload)."""
        self.targets = targets
        self.policy = policy
        self._policies_changed()

    def _policies_changed(self) -> None:
        policies = self._policies()
        self._keep_objects = bool(policies)
        self.view = decoder_for(policies)

    def plan(self, source: str, events: list[Event]) -> Plan:
        # Received means taken from the client, whatever the policy then drops.
        received = len(events)
        routes: list[frozenset[str] | None] | None = None
        if self.policy is not None:
            outcome = self.policy.apply(events)
            for rule, n in outcome.dropped.items():
                self.metrics.events_dropped.labels(f"policy:{rule}", "policy").inc(n)
            events = outcome.kept
            if any(r is not None for r in outcome.routes):
                routes = outcome.routes
        plan = Plan(source, received)
        for target in self.targets.get(source, ()):
            mine = events
            if routes is not None:
                mine = [
                    e for e, r in zip(events, routes, strict=True) if r is None or target.sink in r
                ]
            if target.policy is not None and mine:
                outcome = target.policy.apply_copy(mine)
                for rule, n in outcome.dropped.items():
                    self.metrics.events_dropped.labels(
                        f"{target.sink}:policy:{rule}", "policy"
                    ).inc(n)
                mine = outcome.kept
            if mine:
                plan.parts.append((target, mine, sum(len(e.raw) for e in mine)))
        return plan

    def try_place(self, plan: Plan) -> bool:
        """Place without waiting; False when a ``block`` buffer is full or cannot write.

        Parts that were stored are taken off the plan, so a retry places only the rest and
        no sink gets a chunk twice."""
        for target, events, nbytes in plan.parts:
            if target.when_full == "block" and not target.buffer.admits(
                len(events), nbytes, plan.ticket
            ):
                return False
        remaining: list[tuple[Target, list[Event], int]] = []
        for part in plan.parts:
            target, events, nbytes = part
            buffer = target.buffer
            if target.when_full == "drop_newest" and not buffer.has_room(len(events), nbytes):
                events = self._fit(buffer, events)
            try:
                buffer.append(events)
            except BufferWriteError:
                if target.when_full == "block":
                    remaining.append(part)
                else:
                    self.metrics.events_dropped.labels(buffer.name, "disk_error").inc(len(events))
                continue
            plan.stored.append(target)
            if self._keep_objects:
                # Parsed objects and views were for policy; in a buffer they would cost
                # several times the event's bytes.
                for event in events:
                    event.obj = None
                    event.view = None
        plan.parts = remaining
        if remaining:
            return False
        self._done(plan)
        return True

    async def place(self, plan: Plan, wait_secs: float | None = None) -> bool:
        """Wait up to ``wait_secs`` (None: forever) for room, place, and make it durable.

        Returns False when room did not come in time or the events could not be made
        durable; what was stored stays stored (a client's retry may duplicate it)."""
        try:
            async with asyncio.timeout(wait_secs):
                while not self.try_place(plan):
                    self._join_lines(plan)
                    for target, events, nbytes in plan.parts:
                        if target.when_full == "block":
                            await target.buffer.wait_for_room(len(events), nbytes, plan.ticket)
        except TimeoutError:
            return False
        finally:
            if plan.ticket is not None:
                for buffer in plan.lines:
                    buffer.leave_line(plan.ticket)
        return await self.commit(plan)

    def _join_lines(self, plan: Plan) -> None:
        if plan.ticket is None:
            plan.ticket = next(self._tickets)
        for target, _, _ in plan.parts:
            if target.when_full == "block" and target.buffer not in plan.lines:
                target.buffer.join_line(plan.ticket)
                plan.lines.append(target.buffer)

    async def commit(self, plan: Plan) -> bool:
        """Make the plan's stored events durable; False when a buffer could not."""
        ok = True
        for target in plan.stored:
            try:
                await target.buffer.commit()
            except BufferWriteError:
                ok = False
        return ok

    def _done(self, plan: Plan) -> None:
        self.metrics.events_received.labels(plan.source).inc(plan.count)
        self.received[plan.source] = self.received.get(plan.source, 0) + plan.count

    def _fit(self, buffer: Buffer, events: list[Event]) -> list[Event]:
        """The longest prefix that fits; the rest is counted as dropped."""
        room_events = max(0, buffer.max_events - buffer.depth_events)
        room_bytes = max(0, buffer.max_bytes - buffer.depth_bytes)
        kept: list[Event] = []
        for event in events[:room_events]:
            room_bytes -= len(event.raw)
            if room_bytes < 0:
                break
            kept.append(event)
        dropped = len(events) - len(kept)
        if dropped:
            self.metrics.events_dropped.labels(buffer.name, "queue_full").inc(dropped)
        return kept
