"""``syslog`` source: RFC 5424 and RFC 3164 messages over TCP (RFC 6587 framing) or UDP.

Each message becomes one event object (see :mod:`forwarder.sources.syslog_parse` for its
keys). Over TCP the framing, octet counting or LF, is detected per connection by
:class:`~forwarder.sources.framing.SyslogFramer`, and connection handling (backpressure,
``max_connections``, idle timeout, TLS) is the ``tcp`` source's. Over UDP a datagram is one
message; UDP has no way to make a sender wait, so when a ``block`` buffer is full the
datagrams of that moment are dropped and counted (``reason="queue_full"``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from pydantic import model_validator

from forwarder.config import parse_address
from forwarder.events import Event, encode, object_time
from forwarder.sources.base import SourceContext, reuse_port
from forwarder.sources.framing import SyslogFramer
from forwarder.sources.syslog_parse import parse_syslog
from forwarder.sources.tcp import Framer, TcpConfig, TcpSource

# Datagrams read in one event-loop pass are placed as one chunk; this bounds the chunk when
# the loop is busy and datagrams keep coming.
_UDP_CHUNK = 1000


class SyslogConfig(TcpConfig):
    """A ``tcp`` listener's keys plus ``mode``. ``on_invalid: wrap`` keeps a message that is
    neither RFC as ``{"message": ..., "syslog_parse_error": ...}``; ``drop`` drops it. Both
    count it in ``forwarder_ingest_errors_total{reason="invalid_syslog"}``."""

    # A syslog source is a tcp listener with its own framing: same keys, its own tag.
    type: Literal["syslog"] = "syslog"  # type: ignore[assignment]
    address: str = "0.0.0.0:5514"
    mode: Literal["tcp", "udp"] = "tcp"

    @model_validator(mode="after")
    def _tls_needs_tcp(self) -> SyslogConfig:
        if self.mode == "udp" and self.tls is not None:
            raise ValueError("tls needs mode: tcp (syslog over UDP has no TLS)")
        return self


class SyslogSource(TcpSource):
    """Listens on ``address`` with ``mode`` TCP (``tcp`` source machinery) or UDP."""

    config: SyslogConfig

    def __init__(self, config: SyslogConfig, ctx: SourceContext) -> None:
        super().__init__(config, ctx)
        self._udp: asyncio.DatagramTransport | None = None
        self._datagrams: _Datagrams | None = None

    async def start(self) -> None:
        if self.config.mode == "tcp":
            await super().start()
            return
        if self._udp is not None:
            return
        host, port = parse_address(self.config.address)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(host, port), reuse_port=reuse_port()
        )
        self._udp, self._datagrams = transport, protocol

    async def stop(self) -> None:
        await super().stop()
        udp, self._udp = self._udp, None
        if udp is not None:
            udp.close()
        if self._datagrams is not None:
            self._datagrams.flush()
            self._datagrams = None

    @property
    def bound(self) -> list[tuple[str, int]]:
        if self.config.mode == "tcp":
            return super().bound
        if self._udp is None:
            return []
        host, port = self._udp.get_extra_info("sockname")[:2]
        return [(str(host), int(port))]

    def framer(self) -> Framer:
        return SyslogFramer(self.config.max_event_bytes)

    def decode(self, lines: list[bytes]) -> list[Event]:
        now = time.time()
        name = self.ctx.name
        keep = self.ctx.router.needs_objects
        wrap = self.config.on_invalid == "wrap"
        events: list[Event] = []
        invalid = 0
        for line in lines:
            obj, ok = parse_syslog(line, received=now)
            if not ok:
                invalid += 1
                if not wrap:
                    continue
            kept = obj if keep else None
            # The sender's HOSTNAME is the event's host (a HEC sink's envelope uses it).
            host = obj.get("hostname")
            events.append(Event(encode(obj), name, now, None, kept, object_time(obj), host))
        if invalid:
            self.ctx.ingest_error("invalid_syslog", invalid)
            if not wrap:
                self.ctx.dropped("invalid", invalid)
        return events


class _Datagrams(asyncio.DatagramProtocol):
    """Collects the datagrams of one event-loop pass and places them as one chunk."""

    def __init__(self, source: SyslogSource) -> None:
        self.source = source
        self.pending: list[bytes] = []
        self.too_large = 0
        self.scheduled: asyncio.Handle | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) > self.source.config.max_event_bytes:
            self.too_large += 1
        elif data:
            self.pending.append(data)
        if len(self.pending) >= _UDP_CHUNK:
            self.flush()
        elif self.scheduled is None:
            self.scheduled = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self.scheduled is not None:
            self.scheduled.cancel()
            self.scheduled = None
        ctx = self.source.ctx
        if self.too_large:
            ctx.ingest_error("too_large", self.too_large)
            ctx.dropped("too_large", self.too_large)
            self.too_large = 0
        messages, self.pending = self.pending, []
        events = self.source.decode(messages) if messages else []
        if not events:
            return
        plan = ctx.router.plan(ctx.name, events)
        if not ctx.router.try_place(plan):
            ctx.ingest_error("busy")
            ctx.dropped("queue_full", len(events))
