"""``tcp`` source: newline-delimited JSON objects from many concurrent connections.

Each read is split into lines at once and placed as one chunk. When a ``block`` buffer is
full the connection stops reading (the kernel window closes on the sender) until the chunk is
placed; nothing is held beyond one chunk and one partial line per connection.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, Literal, Protocol, cast

from pydantic import Field

from forwarder.config import SourceConfig, TlsServerConfig
from forwarder.events import Event
from forwarder.handoff import serve
from forwarder.sources.base import Source, SourceContext, decode_lines, reuse_port
from forwarder.sources.lines import LineSplitter
from forwarder.sources.tls import reload_context, server_context
from forwarder.worker import handed


class TcpConfig(SourceConfig):
    type: Literal["tcp"] = "tcp"
    address: str = "0.0.0.0:5170"
    max_event_bytes: int = Field(1_048_576, gt=0)
    max_connections: int = Field(10_000, gt=0)
    idle_timeout_secs: float = Field(300.0, gt=0)
    on_invalid: Literal["wrap", "drop"] = "wrap"
    tls: TlsServerConfig | None = None


class Framer(Protocol):
    """Cuts one connection's byte stream into messages, holding a bounded partial one."""

    def feed(self, data: bytes) -> tuple[list[bytes], int]: ...

    def close(self) -> list[bytes]: ...

    @property
    def pending_bytes(self) -> int: ...


class TcpSource(Source):
    """Listens on ``address``; one :class:`_Connection` protocol per client.

    Subclasses with another framing or message format (``syslog``) override
    :meth:`framer` and :meth:`decode`; connection handling stays here.
    """

    config: TcpConfig

    def __init__(self, config: TcpConfig, ctx: SourceContext) -> None:
        super().__init__(config, ctx)
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Connections the supervisor handed over, until their TLS handshake is done.
        self._handshakes: set[asyncio.Task[None]] = set()
        self._handed = False
        self._ssl: ssl.SSLContext | None = None
        self._active = ctx.metrics.connections_active.labels(ctx.name)
        self._active.set(0)

    async def start(self) -> None:
        if self._server is not None or self._handed:
            return
        from forwarder.config import parse_address

        host, port = parse_address(self.config.address)
        self._ssl = server_context(self.config.tls)
        if handed(self.ctx.name):
            # The supervisor listens and hands each connection over (see adopt).
            self._handed = True
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),
            host,
            port,
            ssl=self._ssl,
            # A client that connects and never finishes the handshake is idle too.
            ssl_handshake_timeout=self.config.idle_timeout_secs if self._ssl else None,
            reuse_port=reuse_port(),
            reuse_address=True,
            backlog=1024,
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        self._handed = False
        if server is not None:
            server.close()
        for task in list(self._handshakes):
            task.cancel()
        for conn in list(self._conns):
            conn.finish()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def reload_tls(self) -> None:
        if self._ssl is not None and self.config.tls is not None:
            reload_context(self._ssl, self.config.tls)

    def adopt(self, sock: socket.socket) -> None:
        if not self._handed:
            sock.close()
            return
        serve(
            self._handshakes,
            lambda: _Connection(self),
            sock,
            ssl_context=self._ssl,
            handshake_timeout=self.config.idle_timeout_secs,
        )

    @property
    def bound(self) -> list[tuple[str, int]]:
        if self._handed:
            from forwarder.config import parse_address

            return [parse_address(self.config.address)]
        if self._server is None:
            return []
        return [s.getsockname()[:2] for s in self._server.sockets]

    def status(self) -> dict[str, Any]:
        return {**super().status(), "connections": len(self._conns)}

    def framer(self) -> Framer:
        """A new connection's framer: NDJSON lines up to ``max_event_bytes``."""
        return LineSplitter(self.config.max_event_bytes)

    def decode(self, lines: list[bytes]) -> list[Event]:
        """Events from one read's messages; invalid ones counted (and dropped if so set)."""
        wrap = self.config.on_invalid == "wrap"
        router = self.ctx.router
        events, invalid = decode_lines(
            lines,
            self.ctx.name,
            keep_objects=router.needs_objects,
            wrap_invalid=wrap,
            view=router.view,
        )
        if invalid:
            self.ctx.ingest_error("invalid_json", invalid)
            if not wrap:
                self.ctx.dropped("invalid", invalid)
        return events

    @property
    def pending_bytes(self) -> int:
        """Bytes held in partial messages across every open connection."""
        return sum(conn.splitter.pending_bytes for conn in self._conns)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Connection(asyncio.Protocol):
    def __init__(self, source: TcpSource) -> None:
        self.source = source
        self.ctx = source.ctx
        self.splitter = source.framer()
        self.transport: asyncio.Transport | None = None
        self.placing: asyncio.Task[None] | None = None
        self.closed = False
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        source = self.source
        if len(source._conns) >= source.config.max_connections:
            self.ctx.ingest_error("too_many_connections")
            self.transport.abort()
            self.closed = True
            return
        source._conns.add(self)
        source._active.set(len(source._conns))
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        self._arm_idle()
        lines, too_large = self.splitter.feed(data)
        if too_large:
            self.ctx.ingest_error("too_large", too_large)
        if lines:
            self._emit(lines)

    def eof_received(self) -> bool:
        self.finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish()

    def finish(self) -> None:
        """The stream ended (or the source stops): place the last partial line, close."""
        if self.closed:
            return
        self.closed = True
        if self.idle is not None:
            self.idle.cancel()
        last = self.splitter.close()
        if len(last) == 1 and len(last[0]) > self.source.config.max_event_bytes:
            self.ctx.ingest_error("too_large")
            last = []
        if last:
            self._emit(last)
        source = self.source
        source._conns.discard(self)
        source._active.set(len(source._conns))
        if self.placing is None and self.transport is not None:
            self.transport.close()

    def _emit(self, lines: list[bytes]) -> None:
        router = self.ctx.router
        events = self.source.decode(lines)
        if not events:
            return
        if self.placing is not None:
            # Still waiting for room for the previous chunk (only at close): queue behind it.
            previous = self.placing
            self.placing = asyncio.ensure_future(self._after(previous, events))
            self.source._track(self.placing)
            return
        plan = router.plan(self.ctx.name, events)
        if router.try_place(plan):
            return
        assert self.transport is not None
        if not self.closed:
            self.transport.pause_reading()
        self.placing = asyncio.ensure_future(self._place(plan))
        self.source._track(self.placing)

    async def _place(self, plan: Any) -> None:
        await self.ctx.router.place(plan)
        self.placing = None
        if self.transport is None:
            return
        if self.closed:
            self.transport.close()
        elif not self.transport.is_closing():
            self.transport.resume_reading()

    async def _after(self, previous: asyncio.Task[None], events: list[Event]) -> None:
        await previous
        # A reload while waiting may have brought policies reading fields these views lack.
        for event in events:
            event.view = None
        router = self.ctx.router
        await router.place(router.plan(self.ctx.name, events))
        if self.transport is not None:
            self.transport.close()

    def _arm_idle(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(self.source.config.idle_timeout_secs, self._idle_out)

    def _idle_out(self) -> None:
        if self.placing is not None:
            # Waiting on our own buffers is not the client's idleness.
            self._arm_idle()
            return
        self.ctx.ingest_error("idle_timeout")
        self.finish()
