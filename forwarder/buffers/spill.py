"""Spill files: what a memory buffer still holds at a graceful stop, kept for the next start.

One file per stop, ``<directory>/<timestamp>-<pid>.jsonl`` (``directory`` is
``data_dir/spill/<sink>/``), one :meth:`Event.to_record` line per event. A file is written
under a temporary name, fsynced and renamed, so a complete name means a complete file; a
temporary file left by a crash mid-spill is still read, since it may hold the only copy.
Loading does not delete: the caller removes the files once the events are in a buffer, so a
crash in between re-delivers rather than loses.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from forwarder.buffers.disk.state import fsync_dir
from forwarder.events import Event

__all__ = ["load_spill", "remove_spill", "write_spill"]

SUFFIX = ".jsonl"
TMP_SUFFIX = ".jsonl.tmp"


def write_spill(directory: Path, events: list[Event]) -> int:
    """Write ``events`` to a new spill file in ``directory``; return how many were written.

    Blocking (it fsyncs): call it from a worker thread when the event loop is still serving.
    """
    if not events:
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    # Nanoseconds and the pid keep two stops in one second (or two processes) apart.
    name = f"{stamp}.{time.time_ns() % 1_000_000_000:09d}-{os.getpid()}"
    final = directory / (name + SUFFIX)
    tmp = directory / (name + TMP_SUFFIX)
    body = b"".join(event.to_record() + b"\n" for event in events)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(directory)
    return len(events)


def load_spill(directory: Path) -> tuple[list[Event], int, list[Path]]:
    """Every event in ``directory``'s spill files, oldest file first.

    Returns (events, unreadable lines skipped, files read). A missing directory is empty.
    """
    try:
        paths = sorted(
            p for p in directory.iterdir() if p.name.endswith((SUFFIX, TMP_SUFFIX)) and p.is_file()
        )
    except FileNotFoundError:
        return [], 0, []
    events: list[Event] = []
    bad = 0
    for path in paths:
        for line in path.read_bytes().split(b"\n"):
            if not line.strip():
                continue
            event = _decode(line)
            if event is None:
                # A torn last line (a crash mid-spill) or a damaged one: count it, keep going.
                bad += 1
            else:
                events.append(event)
    return events, bad, paths


def _decode(line: bytes) -> Event | None:
    try:
        event = Event.from_record(line)
    except (ValueError, KeyError, TypeError, AttributeError):
        # orjson errors are ValueErrors; the others are a record of the wrong shape.
        return None
    return event if event.raw[:1] == b"{" else None


def remove_spill(paths: Iterable[Path]) -> None:
    """Delete spill files whose events are safely in a buffer again."""
    directories: set[Path] = set()
    for path in paths:
        path.unlink(missing_ok=True)
        directories.add(path.parent)
    for directory in directories:
        fsync_dir(directory)
