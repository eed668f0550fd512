"""What a source gets from the daemon, and what it must offer back."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from forwarder.events import Event, object_time

if TYPE_CHECKING:
    from forwarder.config import SourceConfig
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


def reuse_port() -> bool:
    """Whether listeners share their port with sibling worker processes (SO_REUSEPORT)."""
    import os

    return bool(os.environ.get("FORWARDER_WORKER"))


def decode_lines(
    lines: list[bytes], source: str, *, keep_objects: bool, wrap_invalid: bool
) -> tuple[list[Event], int]:
    """Events from NDJSON lines, and how many lines were not JSON objects.

    An invalid line is wrapped as ``{"message": <text>, "forwarder_parse_error": <why>}``
    when ``wrap_invalid``, so nothing a client sent is lost; otherwise it is left out.
    """
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
            kept = obj if keep_objects else None
            host = obj.get("host")
            events.append(
                Event(
                    line,
                    source,
                    now,
                    None,
                    kept,
                    object_time(obj),
                    host if type(host) is str and host else None,
                )
            )
            continue
        invalid += 1
        if wrap_invalid:
            text = line.decode("utf-8", "replace")
            wrapped = {"message": text, "forwarder_parse_error": why}
            events.append(
                Event(orjson.dumps(wrapped), source, now, None, wrapped if keep_objects else None)
            )
    return events, invalid
