"""The event as it travels from a source to the sinks.

An event keeps the bytes it arrived with (one JSON object, no trailing newline) so that a
sink whose encoding only wraps the object never re-serialises it. ``obj`` is the parsed
object while the event is still in the ingest path (policy needs it); routing clears it
before the event enters a buffer, because a parsed dict costs several times its bytes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["Event", "decode_object", "encode", "parse_object"]


class Event:
    """One audit event.

    Arguments:
        raw: the JSON object's bytes, UTF-8, without a newline.
        source: name of the source that received it.
        received: wall-clock receive time, epoch seconds.
        meta: envelope metadata that travels beside the object (HEC ``time``, ``host``,
            ``source``, ``sourcetype``, ``index``, ``fields``), or None.
        obj: the parsed object while on the ingest path, else None.
        time: the event's own time (epoch seconds) when it carries one; see
            :func:`object_time`. Found at ingest, where the object is parsed anyway.
        host: the event's own top-level ``host`` string, found at ingest likewise.
        view: while on the ingest path, when policies read only some fields: a dict of just
            those top-level fields (see :mod:`forwarder.policy.view`), else None.
    """

    __slots__ = ("host", "meta", "obj", "raw", "received", "source", "time", "view")

    def __init__(
        self,
        raw: bytes,
        source: str,
        received: float,
        meta: dict[str, Any] | None = None,
        obj: dict[str, Any] | None = None,
        time: float | None = None,
        host: str | None = None,
        view: dict[str, Any] | None = None,
    ) -> None:
        self.raw = raw
        self.source = source
        self.received = received
        self.meta = meta
        self.obj = obj
        self.time = time
        self.host = host
        self.view = view

    @property
    def timestamp(self) -> float:
        """The event's own time, else when it was received (epoch seconds)."""
        return self.received if self.time is None else self.time

    def parsed(self) -> dict[str, Any]:
        """The event as a dict: the ingest-time object, or a fresh parse of ``raw``."""
        if self.obj is not None:
            return self.obj
        return parse_object(self.raw)

    def replace_object(self, obj: dict[str, Any], *, envelope: bool = True) -> None:
        """Swap in a changed object; the stored bytes, time and host follow it (a policy
        that redacts ``host`` must not see it sent in an envelope). ``envelope=False``: the
        change left :data:`ENVELOPE_FIELDS` alone, so time and host stand."""
        self.obj = obj
        self.view = None  # it showed the object as it was
        self.raw = encode(obj)
        if not envelope:
            return
        if not (self.meta and self.meta.get("time") is not None):
            self.time = object_time(obj)
        host = obj.get("host")
        self.host = host if type(host) is str and host else None

    def to_record(self) -> bytes:
        """One line for spill files and the dead-letter store: the event and its envelope."""
        record: dict[str, Any] = {"source": self.source, "received": self.received}
        if self.time is not None:
            record["time"] = self.time
        if self.host is not None:
            record["host"] = self.host
        if self.meta:
            record["meta"] = self.meta
        # The raw bytes are a JSON object already; splice them in rather than re-encoding.
        head = orjson.dumps(record)
        return head[:-1] + b',"event":' + self.raw + b"}"

    @classmethod
    def from_record(cls, line: bytes) -> Event:
        """Inverse of :meth:`to_record`."""
        record = orjson.loads(line)
        return cls(
            encode(record["event"]),
            record.get("source", ""),
            float(record.get("received", 0.0)),
            record.get("meta"),
            None,
            record.get("time"),
            record.get("host"),
        )

    def __repr__(self) -> str:
        return f"Event(source={self.source!r}, raw={self.raw[:60]!r})"


TIME_FIELDS = ("timestamp", "@timestamp", "time")
# The top-level fields an event's envelope (its time and host) is read from.
ENVELOPE_FIELDS = frozenset((*TIME_FIELDS, "host"))
_MISSING = object()


def object_time(obj: dict[str, Any], fields: tuple[str, ...] = TIME_FIELDS) -> float | None:
    """Epoch seconds from the first of ``fields`` the object has: RFC 3339 strings, and epoch
    seconds or milliseconds as numbers (or numeric strings). None when there is none usable."""
    for name in fields:
        value = obj.get(name)
        if value is None:
            continue
        if type(value) is float:
            # Epoch seconds, the common case, without a call (ms past the year 33658 as s).
            return value / 1000.0 if value > 1e12 else value
        parsed = parse_time(value)
        if parsed is not None:
            return parsed
    return None


# Epoch seconds of RFC 3339 strings seen lately: events of a burst often share theirs, and a
# dict lookup costs a twentieth of a parse.
_TIMES: dict[str, float | None] = {}


def parse_time(value: Any) -> float | None:
    """Epoch seconds from an RFC 3339 string or an epoch s/ms number; None if neither."""
    if isinstance(value, str):
        cached = _TIMES.get(value, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        text = value.strip()
        if len(text) >= 19 and text[4] == "-" and text[10] in "Tt ":
            if len(_TIMES) >= 4096:
                _TIMES.clear()
            seconds = _TIMES[value] = _rfc3339(text)
            return seconds
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        # Epoch milliseconds are past the year 33658 when read as seconds: no ambiguity.
        return number / 1000.0 if number > 1e12 else number
    return None


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _rfc3339(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        # Nanosecond fractions (Go, Java) are valid RFC 3339 that datetime cannot hold.
        try:
            moment = datetime.fromisoformat(_FRACTION.sub(r"\1", text, count=1))
        except ValueError:
            return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC).timestamp()
    return moment.timestamp()


def hec_seconds(value: Any) -> float | None:
    """A HEC envelope's ``time``: epoch seconds as a number or numeric string, else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def decode_object(line: bytes) -> dict[str, Any] | None:
    """Parse one JSON object; None when the bytes are not a JSON object."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_object(raw: bytes) -> dict[str, Any]:
    """An event's bytes as a dict, whatever ingest accepted."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Bytes ingest accepted but orjson will not read (a number out of float range):
        # the event still travels, as text, rather than wedge a sink that re-encodes.
        return {
            "message": raw.decode("utf-8", "replace"),
            "forwarder_parse_error": "invalid_json",
        }
    return value if isinstance(value, dict) else {"message": value}


def encode(value: Any) -> bytes:
    """JSON bytes to keep (an event's ``raw``): an exact-size copy. orjson hands back its
    working buffer, which holds about 4 KiB whatever the length; kept per buffered event,
    that slack was most of the process's memory."""
    return memoryview(orjson.dumps(value)).tobytes()
