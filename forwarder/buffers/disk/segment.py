"""Segment files: the on-disk record format and a scanner that survives damage.

A segment is a run of records, each ``magic | length | crc32(payload) | payload``. The payload
is the envelope as compact JSON (``source``, ``received``, ``meta``), a newline, then the
event's bytes as received. Keeping the event bytes apart from the envelope means reading a
record back parses only the small envelope, never the event; compact JSON has no raw newline,
so the first newline always ends the envelope.

The magic starts with 0xFF, a byte that never occurs in UTF-8 (so never in a payload): after
a damaged record the scanner jumps from one magic candidate to the next with ``bytes.find``
instead of trying every offset, and the CRC decides.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

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
    add_part = parts.append
    add_size = sizes.append
    pack = HEADER.pack
    crc32 = zlib.crc32
    dumps = orjson.dumps
    # Events of one chunk usually share source and receive time: encode that envelope (and
    # its share of the CRC) once.
    last: tuple[str, float] | None = None
    head = b""
    head_crc = 0
    for event in events:
        if event.meta:
            last = None
            envelope = {"source": event.source, "received": event.received, "meta": event.meta}
            head = dumps(envelope) + b"\n"
            head_crc = crc32(head)
        elif last is None or last[0] != event.source or last[1] != event.received:
            last = (event.source, event.received)
            head = dumps({"source": event.source, "received": event.received}) + b"\n"
            head_crc = crc32(head)
        raw = event.raw
        length = len(head) + len(raw)
        add_part(pack(MAGIC, length, crc32(raw, head_crc)))
        add_part(head)
        add_part(raw)
        add_size(HEADER_SIZE + length)
    return b"".join(parts), sizes


class Decoder:
    """Turns intact payloads back into events, parsing a repeated envelope only once."""

    __slots__ = ("_head", "_received", "_source")

    def __init__(self) -> None:
        self._head = b""
        self._source = ""
        self._received = 0.0

    def decode(self, payload: bytes) -> Event | None:
        """The event in a payload; None when the payload does not hold one."""
        cut = payload.find(b"\n")
        raw = payload[cut + 1 :]
        if cut < 0 or raw[:1] != b"{":
            return None
        head = payload[:cut]
        if head == self._head:
            return Event(raw, self._source, self._received)
        try:
            envelope = orjson.loads(head)
            source, received = envelope["source"], float(envelope["received"])
            meta = envelope.get("meta")
        except (ValueError, KeyError, TypeError, AttributeError):
            # orjson errors are ValueErrors; the others are an envelope of the wrong shape.
            return None
        if not isinstance(source, str) or not (meta is None or isinstance(meta, dict)):
            return None
        if meta is None:
            # Only meta-less envelopes are reused: events must not share a mutable dict.
            self._head, self._source, self._received = head, source, received
        return Event(raw, source, received, meta)


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


# What scan() reports: (offset, size, payload) for an intact record, payload None for a
# damaged run. A plain tuple: this is the per-record hot path of every disk read.
Found = tuple[int, int, bytes | None]


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
                    yield (bad_start, pos - bad_start, None)
                    bad_start = None
                yield (pos, need, payload)
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
        yield (bad_start, end - bad_start, None)


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
