"""The delivered position, kept in a small file replaced atomically.

The position is where the oldest undelivered record starts (segment id, byte offset). It lags
the truth by at most one save interval, which costs duplicates after a crash, never losses:
everything before it has been delivered, everything after it is sent again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import orjson

STATE_NAME = "state.json"
STATE_TMP = "state.json.tmp"


class Position(NamedTuple):
    segment: int
    offset: int


class StateError(ValueError):
    """The state file exists but does not hold a position."""


def read_state(directory: Path) -> Position | None:
    """The saved position; None when there is no state file. Raises StateError on garbage."""
    try:
        data = (directory / STATE_NAME).read_bytes()
    except FileNotFoundError:
        return None
    try:
        value = orjson.loads(data)
        segment, offset = value["segment"], value["offset"]
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise StateError(f"unreadable state file: {exc}") from exc
    if not (isinstance(segment, int) and isinstance(offset, int)) or segment < 0 or offset < 0:
        raise StateError(f"state file holds no valid position: {data[:80]!r}")
    return Position(segment, offset)


def write_state(directory: Path, position: Position, *, durable: bool) -> None:
    """Replace the state file: write a temporary file, fsync it, rename it over the old one.

    ``durable`` also fsyncs the directory, so the rename itself survives a power loss."""
    tmp = directory / STATE_TMP
    body = orjson.dumps({"version": 1, "segment": position.segment, "offset": position.offset})
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, body)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / STATE_NAME)
    if durable:
        fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    """Make created, renamed and deleted names in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
