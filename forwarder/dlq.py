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
from typing import TextIO

import orjson

from forwarder.config import Config
from forwarder.deadletter import DeadLetterStore, read_records, record_event
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


def replay(config: Config, sink_name: str, out: TextIO, *, chunk: int = 500) -> int:
    if sink_name not in config.sinks:
        print(f"dlq replay: no sink named {sink_name!r} in the config", file=sys.stderr)
        return 2
    return asyncio.run(_replay(config, sink_name, out, chunk))


async def _replay(config: Config, name: str, out: TextIO, chunk: int) -> int:
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
    try:
        for start in range(0, total, chunk):
            events = [record_event(r) for r in records[start : start + chunk]]
            await delivery.deliver(events)
            done += len(events)
            progress.update(done)
    finally:
        await sink.stop()
        if done < total:
            # Interrupted: what was not attempted goes back as it was.
            store.restore(records[done:])
        for path in claimed:
            path.unlink(missing_ok=True)
        progress.finish()
    print(
        f"total {total} / delivered {delivery.delivered_events} / "
        f"rejected again {delivery.dead_lettered_events}",
        file=out,
    )
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
