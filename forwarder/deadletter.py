"""The dead-letter store: events a destination rejected on their own merit, with its answer.

``data_dir/dead_letter/<sink>/*.jsonl``, one JSON record per line: the event and its envelope,
the sink, when, the HTTP status, the destination's answer and the reason. Bounded by
``max_bytes``; beyond it events are counted as dropped (``dead_letter_full``), logged once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog

from forwarder.events import Event, encode
from forwarder.telemetry.metrics import Metrics


class DeadLetterStore:
    """Append-only JSON-lines files for one sink.

    Arguments:
        directory: ``data_dir/dead_letter/<sink>``; created on first write.
        sink: the sink's name.
        max_bytes: bound on the total size of the sink's dead-letter files.
    """

    def __init__(self, directory: Path, sink: str, *, max_bytes: int, metrics: Metrics) -> None:
        self.directory = directory
        self.sink = sink
        self.max_bytes = max_bytes
        self._metrics = metrics
        self._file: Path | None = None
        self._used: int | None = None
        self._full_logged = False
        self._log = structlog.get_logger().bind(component=sink)

    def write(self, events: list[Event], *, reason: str, status: int | None, response: str) -> None:
        """Store events; never raises (a store that cannot write counts the loss)."""
        if not events:
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        head: dict[str, Any] = {
            "sink": self.sink,
            "time": now,
            "status": status,
            "response": response,
        }
        lines = []
        for event in events:
            record = dict(head, reason=reason, source=event.source, received=event.received)
            if event.time is not None:
                # The event's own time, found at ingest; "time" is when it was dead-lettered.
                record["event_time"] = event.time
            if event.meta:
                record["meta"] = event.meta
            lines.append(orjson.dumps(record)[:-1] + b',"event":' + event.raw + b"}\n")
        data = b"".join(lines)
        try:
            if self.used_bytes() + len(data) > self.max_bytes:
                self._drop(len(events), "dead_letter_full", "dead-letter store is full")
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            if self._file is None:
                stamp = time.strftime("%Y%m%dT%H%M%S")
                self._file = self.directory / f"{stamp}-{os.getpid()}.jsonl"
            with self._file.open("ab") as fh:
                fh.write(data)
        except OSError as exc:
            self._drop(len(events), "dead_letter_error", f"cannot write dead letters: {exc}")
            return
        self._used = self.used_bytes() + len(data)
        self._metrics.dead_letter_events.labels(self.sink).inc(len(events))

    def restore(self, records: list[dict[str, Any]]) -> None:
        """Put records back unchanged (a replay that was interrupted)."""
        if not records:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-restored.jsonl"
        with path.open("ab") as fh:
            fh.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
        self._used = None

    def used_bytes(self) -> int:
        if self._used is None:
            self._used = sum(p.stat().st_size for p in self.files())
        return self._used

    def files(self) -> list[Path]:
        try:
            return sorted(self.directory.glob("*.jsonl"))
        except OSError:
            return []

    def _drop(self, count: int, reason: str, message: str) -> None:
        self._metrics.events_dropped.labels(self.sink, reason).inc(count)
        if not self._full_logged:
            self._full_logged = True
            self._log.error(message, directory=str(self.directory), max_bytes=self.max_bytes)


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of one dead-letter file; unreadable lines are skipped."""
    with path.open("rb") as fh:
        for line in fh:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and "event" in record:
                yield record


def record_event(record: dict[str, Any]) -> Event:
    return Event(
        encode(record["event"]),
        str(record.get("source", "")),
        float(record.get("received", 0.0)),
        record.get("meta"),
        None,
        record.get("event_time"),
    )
