"""Segment files: the on-disk record format and a scanner that survives damage.

A segment is a run of records, each ``magic | length | crc32(payload) | payload``, where the
payload is :meth:`Event.to_record`. The magic starts with 0xFF, a byte that never occurs in
UTF-8 (so never inside a payload): after a damaged record the scanner jumps from one magic
candidate to the next with ``bytes.find`` instead of trying every offset, and the CRC decides.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from forwarder.events import Event

MAGIC = b"\xff\xae"
HEADER = struct.Struct("<2sII")
HEADER_SIZE = HEADER.size
# A length field above this is damage, not an event (events are limited far below it).
MAX_PAYLOAD = 256 * 1024 * 1024
WINDOW = 1024 * 1024
SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")


def segment_path(directory: Path, segment_id: int) -> Path:
    return directory / f"{segment_id:020d}.seg"


def segment_id_of(path: Path) -> int | None:
    match = SEGMENT_NAME.match(path.name)
    return int(match.group(1)) if match else None


def encode(events: list[Event]) -> tuple[bytes, list[int]]:
    """The records for ``events`` as one buffer, and each record's size."""
    parts: list[bytes] = []
    sizes: list[int] = []
    pack = HEADER.pack
    crc32 = zlib.crc32
    for event in events:
        payload = event.to_record()
        parts.append(pack(MAGIC, len(payload), crc32(payload)))
        parts.append(payload)
        sizes.append(HEADER_SIZE + len(payload))
    return b"".join(parts), sizes


@dataclass(slots=True)
class Segment:
    """One segment file as the buffer knows it.

    ``size`` is the logical end: bytes past it (a failed write that could not be truncated)
    are never read in this process. ``spans`` are the [start, end) ranges holding intact
    records; a segment written by this process has one span, a recovered one may have gaps
    where damage was skipped. ``events`` counts records in the spans from where reading began.
    """

    id: int
    path: Path
    size: int
    spans: list[list[int]] = field(default_factory=list)
    events: int = 0
    fd: int | None = None  # open for writing only while this is the current segment

    @property
    def last_end(self) -> int:
        return self.spans[-1][1] if self.spans else 0


@dataclass(slots=True)
class Found:
    """What :func:`scan` reports: an intact record (``payload``) or a damaged run (None)."""

    offset: int
    size: int
    payload: bytes | None


def scan(fd: int, start: int, end: int, window: int = WINDOW) -> Iterator[Found]:
    """Walk ``[start, end)`` of an open file, yielding intact records and damaged runs.

    A torn header or payload, a bad length or a CRC mismatch starts a damaged run, which ends
    at the next offset holding a valid record (or at ``end``). Memory stays within one window
    plus the largest record.
    """
    buf = b""
    buf_off = start  # file offset of buf[0]
    pos = start
    bad_start: int | None = None
    while pos < end:
        rel = pos - buf_off
        if len(buf) - rel < HEADER_SIZE:
            buf, buf_off, rel = _refill(fd, buf, buf_off, pos, end, window, HEADER_SIZE)
            if len(buf) - rel < HEADER_SIZE:
                break  # fewer bytes than a header left: a torn tail
        magic, length, crc = HEADER.unpack_from(buf, rel)
        record_end = pos + HEADER_SIZE + length
        if magic == MAGIC and length <= MAX_PAYLOAD and record_end <= end:
            need = HEADER_SIZE + length
            if len(buf) - rel < need:
                buf, buf_off, rel = _refill(fd, buf, buf_off, pos, end, window, need)
            payload = buf[rel + HEADER_SIZE : rel + need]
            if len(payload) == length and zlib.crc32(payload) == crc:
                if bad_start is not None:
                    yield Found(bad_start, pos - bad_start, None)
                    bad_start = None
                yield Found(pos, need, payload)
                pos = record_end
                continue
        if bad_start is None:
            bad_start = pos
        found = buf.find(MAGIC, rel + 1)
        if found >= 0:
            pos = buf_off + found
            continue
        # No candidate in the window; keep its last byte, which may be half a magic.
        pos = max(pos + 1, buf_off + len(buf) - (len(MAGIC) - 1))
        if buf_off + len(buf) >= end:
            break
    if bad_start is None and pos < end:
        bad_start = pos
    if bad_start is not None:
        yield Found(bad_start, end - bad_start, None)


def _refill(
    fd: int, buf: bytes, buf_off: int, pos: int, end: int, window: int, need: int
) -> tuple[bytes, int, int]:
    """Keep ``buf`` from ``pos`` on and read until it holds ``need`` bytes (or hits ``end``)."""
    kept = buf[pos - buf_off :] if pos - buf_off < len(buf) else b""
    have_to = pos + len(kept)
    want = min(end - have_to, max(window, need - len(kept)))
    if want > 0:
        chunk = os.pread(fd, want, have_to)
        kept += chunk
    return kept, pos, 0


def decode(payload: bytes) -> Event | None:
    """The event in an intact record; None when the record does not hold one."""
    try:
        event = Event.from_record(payload)
    except (ValueError, KeyError, TypeError, AttributeError):
        # orjson errors are ValueErrors; the others are a record of the wrong shape.
        return None
    return event if event.raw[:1] == b"{" else None
