"""What a source gets from the daemon, and what it must offer back."""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
import structlog

from forwarder.events import Event, encode, object_time, parse_time

if TYPE_CHECKING:
    from forwarder.config import SourceConfig
    from forwarder.policy.view import ViewDecoder
    from forwarder.routing import Router
    from forwarder.telemetry.metrics import Metrics


@dataclass
class SourceContext:
    """A source's window on the daemon: where events go and where problems are counted.

    Arguments:
        name: the source's name in the config.
        router: places chunks of events into the target buffers.
        metrics: the process metrics.
    """

    name: str
    router: Router
    metrics: Metrics
    log: Any = field(default=None)

    def __post_init__(self) -> None:
        if self.log is None:
            self.log = structlog.get_logger().bind(component=self.name)

    def ingest_error(self, reason: str, count: int = 1) -> None:
        if count:
            self.metrics.ingest_errors.labels(self.name, reason).inc(count)

    def dropped(self, reason: str, count: int) -> None:
        if count:
            self.metrics.events_dropped.labels(self.name, reason).inc(count)


class Source(ABC):
    """A listener. ``start()`` binds (the daemon is ready once every source has);
    ``stop()`` stops accepting, finishes what it has read, and is idempotent."""

    def __init__(self, config: SourceConfig, ctx: SourceContext) -> None:
        self.config = config
        self.ctx = ctx

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @property
    @abstractmethod
    def bound(self) -> list[tuple[str, int]]:
        """(host, port) actually listened on, once started."""

    def status(self) -> dict[str, Any]:
        return {"type": self.config.type, "address": self.config.address}

    def adopt(self, sock: socket.socket) -> None:
        """Serve a connection the supervisor accepted for this source
        (:mod:`forwarder.handoff`); a source without connections closes it."""
        sock.close()


def reuse_port() -> bool:
    """Whether listeners share their port with sibling worker processes (SO_REUSEPORT)."""
    import os

    return bool(os.environ.get("FORWARDER_WORKER"))


class _Head(msgspec.Struct):
    """The only fields ingest needs from an event: its time and host."""

    timestamp: Any = None
    at_timestamp: Any = msgspec.field(default=None, name="@timestamp")
    time: Any = None
    host: Any = None


# Validates the whole line as JSON but builds only these fields: several times cheaper than
# parsing the object into a dict, which no one needs unless a policy reads it.
_decode_head = msgspec.json.Decoder(_Head).decode


def decode_lines(
    lines: list[bytes],
    source: str,
    *,
    keep_objects: bool,
    wrap_invalid: bool,
    view: ViewDecoder | None = None,
) -> tuple[list[Event], int]:
    """Events from NDJSON lines, and how many lines were not JSON objects.

    An invalid line (not JSON, not an object, not UTF-8) is wrapped as ``{"message": <text>,
    "forwarder_parse_error": <why>}`` when ``wrap_invalid``, so nothing a client sent is lost;
    otherwise it is left out. ``keep_objects`` (a policy will read them) gives each event
    its ``view`` when a decoder is given, else parses each into a dict. A view is valid for
    the policies in force when it was made: route the events before anything else runs.
    """
    if keep_objects:
        if view is not None:
            return _decode_views(lines, source, wrap_invalid, view.decode)
        return _decode_objects(lines, source, wrap_invalid)
    now = time.time()
    decode = _decode_head
    events: list[Event] = []
    append = events.append
    invalid = 0
    for line in lines:
        try:
            head = decode(line)
            # msgspec does not look inside strings it skips; UTF-8 is checked here, and
            # ASCII (most audit events) needs no decode to know.
            if not line.isascii():
                line.decode()
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            # (ValidationError, a subclass, means valid JSON that is not an object.)
            invalid += 1
            if wrap_invalid:
                why = (
                    "not_an_object" if isinstance(exc, msgspec.ValidationError) else "invalid_json"
                )
                append(_wrap(line, why, source, now, False))
            continue
        when = None
        for value in (head.timestamp, head.at_timestamp, head.time):
            if value is None:
                continue
            if type(value) is float:
                # Epoch seconds, or milliseconds past the year 33658 as seconds.
                when = value / 1000.0 if value > 1e12 else value
                break
            when = parse_time(value)
            if when is not None:
                break
        host = head.host
        append(
            Event(line, source, now, None, None, when, host if type(host) is str and host else None)
        )
    return events, invalid


def _decode_views(
    lines: list[bytes], source: str, wrap_invalid: bool, decode: Callable[[bytes], dict[str, Any]]
) -> tuple[list[Event], int]:
    now = time.time()
    events: list[Event] = []
    append = events.append
    invalid = 0
    for line in lines:
        try:
            view = decode(line)
            if not line.isascii():
                line.decode()
        except msgspec.ValidationError:
            # Not an object, or an object the view cannot hold: the full parse decides.
            parsed, bad = _decode_objects([line], source, wrap_invalid)
            events += parsed
            invalid += bad
            continue
        except (msgspec.DecodeError, UnicodeDecodeError):
            invalid += 1
            if wrap_invalid:
                append(_wrap(line, "invalid_json", source, now, True))
            continue
        host = view.get("host")
        append(
            Event(
                line,
                source,
                now,
                None,
                None,
                object_time(view),
                host if type(host) is str and host else None,
                view,
            )
        )
    return events, invalid


def _decode_objects(lines: list[bytes], source: str, wrap_invalid: bool) -> tuple[list[Event], int]:
    now = time.time()
    loads = orjson.loads
    events: list[Event] = []
    invalid = 0
    for line in lines:
        try:
            obj = loads(line)
        except orjson.JSONDecodeError:
            obj = None
            why = "invalid_json"
        else:
            why = "not_an_object"
        if type(obj) is dict:
            host = obj.get("host")
            events.append(
                Event(
                    line,
                    source,
                    now,
                    None,
                    obj,
                    object_time(obj),
                    host if type(host) is str and host else None,
                )
            )
            continue
        invalid += 1
        if wrap_invalid:
            events.append(_wrap(line, why, source, now, True))
    return events, invalid


def _wrap(line: bytes, why: str, source: str, now: float, keep_object: bool) -> Event:
    wrapped = {"message": line.decode("utf-8", "replace"), "forwarder_parse_error": why}
    return Event(encode(wrapped), source, now, None, wrapped if keep_object else None)
