"""``forwarder dlq list|show|replay``: inspect dead letters and send them again.

Replay goes through the sink's own code path (encoding, retries, splitting, partial
acceptance). Files are first renamed aside so a running daemon's new dead letters never mix
with the ones being replayed; what is delivered is removed, what is rejected again is written
back as fresh dead letters with the new answer.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import orjson

from forwarder.config import Config
from forwarder.deadletter import DeadLetterStore, read_records, record_event
from forwarder.events import Event
from forwarder.sinks import SINKS
from forwarder.sinks.delivery import Delivery
from forwarder.telemetry.metrics import Metrics


def dead_letter_root(config: Config) -> Path:
    return config.settings.data_dir / "dead_letter"


def list_counts(config: Config, out: TextIO) -> int:
    root = dead_letter_root(config)
    counts: Counter[tuple[str, str]] = Counter()
    for sink_dir in sorted(p for p in root.glob("*") if p.is_dir()):
        for path in sorted(sink_dir.glob("*.jsonl")):
            for record in read_records(path):
                counts[(sink_dir.name, str(record.get("reason", "")))] += 1
    if not counts:
        print(f"no dead letters under {root}", file=out)
        return 0
    print(f"{'SINK':<20} {'REASON':<24} {'EVENTS':>8}", file=out)
    for (sink, reason), n in sorted(counts.items()):
        print(f"{sink:<20} {reason:<24} {n:>8}", file=out)
    return 0


def show(config: Config, sink: str, limit: int, out: TextIO) -> int:
    shown = 0
    for path in sorted((dead_letter_root(config) / sink).glob("*.jsonl")):
        for record in read_records(path):
            if shown >= limit:
                return 0
            out.write(orjson.dumps(record).decode() + "\n")
            shown += 1
    return 0


def replay(
    config: Config, sink_name: str, out: TextIO, *, chunk: int = 500, give_up_secs: float = 60.0
) -> int:
    """Send a sink's dead letters again; 0 when every one was settled, 1 when the destination
    settled no chunk for ``give_up_secs`` (0: never give up) and the rest were put back."""
    if sink_name not in config.sinks:
        print(f"dlq replay: no sink named {sink_name!r} in the config", file=sys.stderr)
        return 2
    return asyncio.run(_replay(config, sink_name, out, chunk, give_up_secs))


async def _replay(config: Config, name: str, out: TextIO, chunk: int, give_up_secs: float) -> int:
    sink_config = config.sinks[name]
    directory = dead_letter_root(config) / name
    claimed = []
    for path in sorted(directory.glob("*.jsonl")):
        aside = path.with_suffix(".replaying")
        path.rename(aside)
        claimed.append(aside)
    claimed += sorted(p for p in directory.glob("*.replaying") if p not in claimed)
    records = [r for path in claimed for r in read_records(path)]
    total = len(records)
    metrics = Metrics()
    store = DeadLetterStore(
        directory, name, max_bytes=sink_config.dead_letter.max_bytes, metrics=metrics
    )
    sink = SINKS[sink_config.type][1](name, sink_config)
    delivery = Delivery(sink, sink_config.request, metrics, store)
    progress = _Progress(total, out)
    await sink.start()
    done = 0
    # The chunk in flight: its records by event, and what of it is not settled yet.
    in_flight: dict[int, dict[str, Any]] = {}
    pending: list[list[Event]] = []
    gave_up = False
    try:
        for start in range(0, total, chunk):
            part = records[start : start + chunk]
            events = [record_event(r) for r in part]
            in_flight = {id(e): r for e, r in zip(events, part, strict=True)}
            pending = []
            try:
                async with asyncio.timeout(give_up_secs or None):
                    await delivery.deliver(events, pending)
            except TimeoutError:
                gave_up = True
                break
            done += len(part)
            in_flight = {}
            progress.update(done)
    finally:
        await sink.stop()
        # Interrupted or given up: what was not settled goes back as it was. Of the chunk in
        # flight, only its unsettled parts: what the destination took is not sent twice
        # (except the part whose answer never came).
        restored: list[dict[str, Any]] = [
            in_flight[id(e)] for part in pending for e in part if id(e) in in_flight
        ]
        restored += records[done + len(in_flight) :]
        store.restore(restored)
        for path in claimed:
            path.unlink(missing_ok=True)
        progress.finish()
    print(
        f"total {total} / delivered {delivery.delivered_events} / "
        f"rejected again {delivery.dead_lettered_events}",
        file=out,
    )
    if gave_up:
        print(
            f"dlq replay: gave up: {name} settled nothing for {give_up_secs:g} s "
            f"(last error: {delivery.last_error or 'none'}); "
            f"{len(restored)} events kept as dead letters",
            file=sys.stderr,
        )
        return 1
    return 0


class _Progress:
    """A one-line progress bar on a terminal; silent elsewhere."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total = total
        self.out = out
        self.tty = out.isatty()

    def update(self, done: int) -> None:
        if not self.tty or not self.total:
            return
        width = 40
        filled = width * done // self.total
        bar = "#" * filled + "-" * (width - filled)
        self.out.write(f"\r[{bar}] {done}/{self.total}")
        self.out.flush()

    def finish(self) -> None:
        if self.tty and self.total:
            self.out.write("\n")
