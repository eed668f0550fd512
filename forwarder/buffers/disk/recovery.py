"""Start-up recovery: find every intact undelivered record, skip and count the damage.

Runs in a worker thread before the buffer takes appends. It never raises for a bad file: a
file it cannot read or parse is reported and left behind, and what it cannot vouch for is
skipped, so the daemon neither crash-loops nor wedges on one bad byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from forwarder.buffers.disk.segment import Decoder, Segment, scan, segment_id_of
from forwarder.buffers.disk.state import STATE_TMP, Position


@dataclass(slots=True)
class Recovered:
    """What start-up found.

    ``segments`` hold the intact undelivered records (ascending ids, closed for writing);
    ``events``/``nbytes`` count them (record bytes, headers included); ``damaged`` lists
    (file, damaged records or runs) per file; ``problems`` lists (file, error) for files that
    could not be read or removed; ``next_id`` is the id for the first new segment.
    """

    segments: list[Segment] = field(default_factory=list)
    events: int = 0
    nbytes: int = 0
    damaged: list[tuple[Path, int]] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)
    removed: int = 0
    next_id: int = 1


def recover(directory: Path, delivered: Position | None) -> Recovered:
    """Scan ``directory`` from ``delivered`` (None: from the oldest segment)."""
    found = Recovered()
    try:
        (directory / STATE_TMP).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        found.problems.append((directory / STATE_TMP, str(exc)))
    ids: list[tuple[int, Path]] = []
    for path in directory.iterdir():
        segment_id = segment_id_of(path)
        if segment_id is not None:
            ids.append((segment_id, path))
    ids.sort()
    highest = max([i for i, _ in ids] + [delivered.segment if delivered else 0])
    found.next_id = highest + 1
    for segment_id, path in ids:
        if delivered is not None and segment_id < delivered.segment:
            _remove(path, found)  # delivered before the last stop
            continue
        start = delivered.offset if delivered and segment_id == delivered.segment else 0
        try:
            segment, damaged = _scan_file(segment_id, path, start)
        except OSError as exc:
            found.problems.append((path, str(exc)))
            continue
        if damaged:
            found.damaged.append((path, damaged))
        if not segment.spans:
            _remove(path, found)
            continue
        found.segments.append(segment)
        found.events += segment.events
        found.nbytes += sum(end - begin for begin, end in segment.spans)
    return found


def _scan_file(segment_id: int, path: Path, start: int) -> tuple[Segment, int]:
    """The segment's intact records from ``start`` on, and how many damaged runs it has."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        segment = Segment(segment_id, path, size)
        damaged = 0
        span: list[int] | None = None
        decode = Decoder().decode
        for offset, length, payload in scan(fd, min(start, size), size):
            # A record that frames and checks but does not decode is damage too; either way
            # the span of intact records breaks here.
            if payload is None or decode(payload) is None:
                damaged += 1
                continue
            if span is not None and span[1] == offset:
                span[1] += length
            else:
                span = [offset, offset + length]
                segment.spans.append(span)
            segment.events += 1
        return segment, damaged
    finally:
        os.close(fd)


def _remove(path: Path, found: Recovered) -> None:
    try:
        path.unlink()
        found.removed += 1
    except FileNotFoundError:
        pass
    except OSError as exc:
        found.problems.append((path, str(exc)))
