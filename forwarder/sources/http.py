"""``http`` source: ``POST /v1/events`` (and, in :mod:`forwarder.sources.hec`, the
HEC-compatible routes on the same listener).

A 2xx means every accepted event is in every target buffer, committed. When buffers stay full
for ``queue_wait_secs`` the answer is 503 with ``Retry-After`` and nothing is kept.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import ssl
import time
import zlib
from collections.abc import Callable
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import Field, SecretStr

from forwarder.config import SourceConfig, TlsServerConfig, parse_address
from forwarder.events import Event, encode, object_time
from forwarder.handoff import serve
from forwarder.sources.base import Source, SourceContext, reuse_port
from forwarder.sources.tls import reload_context, server_context
from forwarder.worker import handed

_JSON_TYPES = {"application/json", "text/json"}
_NDJSON_TYPES = {
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonlines",
    "application/x-jsonlines",
    "application/json-seq",
    "text/plain",
}


class HttpConfig(SourceConfig):
    type: Literal["http"] = "http"
    address: str = "0.0.0.0:8088"
    auth_tokens: list[SecretStr] = []
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_event_bytes: int = Field(1_048_576, gt=0)
    queue_wait_secs: float = Field(5.0, ge=0)
    retry_after_secs: int = Field(5, ge=1)
    max_connections: int = Field(10_000, gt=0)
    idle_timeout_secs: float = Field(75.0, gt=0)
    acknowledgements: bool = False
    tls: TlsServerConfig | None = None
    secret_keys = ("auth_tokens",)


class HttpSource(Source):
    """An aiohttp application on ``address``."""

    config: HttpConfig

    def __init__(self, config: HttpConfig, ctx: SourceContext) -> None:
        super().__init__(config, ctx)
        self._runner: web.AppRunner | None = None
        self._site: _LimitedSite | None = None
        self._ssl: ssl.SSLContext | None = None
        self._tokens = [t.get_secret_value().encode() for t in config.auth_tokens]
        self.app = web.Application(client_max_size=config.max_body_bytes)
        self.app.router.add_post("/v1/events", self._events)
        self._add_routes(self.app)

    def _add_routes(self, app: web.Application) -> None:
        """The HEC-compatible routes share this listener."""
        # Imported here: the HEC module builds on this one (BodyError, accept, read_body).
        from forwarder.sources.hec import HecRoutes

        HecRoutes(self).add_to(app)

    async def start(self) -> None:
        if self._runner is not None:
            return
        host, port = parse_address(self.config.address)
        self._ssl = server_context(self.config.tls)
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.config.idle_timeout_secs,
            # read_body inflates gzip itself, bounded by max_body_bytes; aiohttp's own
            # decompression would inflate unbounded, then read_body would gunzip twice
            # (400) and other encodings would get 400 instead of 415.
            auto_decompress=False,
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        self.ctx.metrics.connections_active.labels(self.ctx.name).set_function(
            lambda: len(server.connections)
        )
        self._site = _LimitedSite(
            self._runner,
            host,
            port,
            ssl_context=self._ssl,
            max_connections=self.config.max_connections,
            handshake_timeout_secs=self.config.idle_timeout_secs,
            on_refused=lambda: self.ctx.ingest_error("too_many_connections"),
            handed=handed(self.ctx.name),
        )
        await self._site.start()

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            # Stops accepting, lets requests in progress finish (their events get placed).
            await runner.cleanup()

    def reload_tls(self) -> None:
        if self._ssl is not None and self.config.tls is not None:
            reload_context(self._ssl, self.config.tls)

    def adopt(self, sock: socket.socket) -> None:
        if self._site is None or self._runner is None:
            sock.close()
            return
        self._site.adopt(sock)

    @property
    def bound(self) -> list[tuple[str, int]]:
        if self._runner is None:
            return []
        if self._site is not None and self._site.handed:
            return [parse_address(self.config.address)]
        return [(str(a[0]), int(a[1])) for a in self._runner.addresses]

    # -- helpers shared with the HEC routes ------------------------------------------------

    def check_token(self, presented: str | None) -> bool:
        """Constant-time comparison against every configured token."""
        if presented is None:
            return False
        value = presented.encode()
        ok = False
        for token in self._tokens:
            ok |= hmac.compare_digest(value, token)
        return ok

    @staticmethod
    def presented_token(request: web.Request) -> tuple[str | None, bool]:
        """(token, well-formed) from ``Authorization: Bearer t`` or ``Splunk t``."""
        header = request.headers.get("Authorization")
        if header is None:
            return None, True
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() not in ("bearer", "splunk") or not token.strip():
            return None, False
        return token.strip(), True

    async def read_body(self, request: web.Request) -> bytes:
        """The body, gunzipped; raises :class:`BodyError` for size and encoding."""
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(self.config.max_body_bytes) from None
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding != "gzip":
            raise BodyError(415, f"unsupported Content-Encoding {encoding!r}; use gzip")
        try:
            # Bounded decompression: a gzip bomb cannot exceed max_body_bytes.
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = inflater.decompress(body, self.config.max_body_bytes + 1)
        except zlib.error:
            raise BodyError(400, "body is not valid gzip") from None
        if len(out) > self.config.max_body_bytes or inflater.unconsumed_tail:
            raise _too_large(self.config.max_body_bytes)
        return out

    async def accept(self, events: list[Event]) -> bool:
        """Place events in every target buffer; False when buffers stayed full or could not
        make them durable (the client is answered 503 and retries)."""
        router = self.ctx.router
        plan = router.plan(self.ctx.name, events)
        if router.try_place(plan):
            return await router.commit(plan)
        return await router.place(plan, self.config.queue_wait_secs)

    # -- POST /v1/events -------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.Response:
        if self._tokens:
            token, _ = self.presented_token(request)
            if token is None:
                self.ctx.ingest_error("unauthorized")
                return _json(401, {"error": "missing or malformed Authorization header"})
            if not self.check_token(token):
                self.ctx.ingest_error("forbidden")
                return _json(403, {"error": "invalid token"})
        try:
            body = await self.read_body(request)
        except BodyError as exc:
            self.ctx.ingest_error(exc.reason)
            return _json(exc.status, {"error": exc.message})
        ctype = request.content_type.lower()
        if ctype in _JSON_TYPES:
            items, errors = _parse_json(body)
        elif ctype in _NDJSON_TYPES:
            items, errors = _parse_ndjson(body)
        else:
            self.ctx.ingest_error("unsupported_type")
            return _json(
                415,
                {
                    "error": f"unsupported Content-Type {ctype!r}; use "
                    "application/json or application/x-ndjson"
                },
            )
        total = len(items) + len(errors)
        limit = self.config.max_event_bytes
        good: list[tuple[int, bytes, dict[str, Any]]] = []
        for index, raw, obj in items:
            if len(raw) > limit:
                errors.append({"index": index, "error": f"event larger than {limit} bytes"})
            else:
                good.append((index, raw, obj))
        errors.sort(key=lambda e: e["index"])
        atomic = request.query.get("atomic", "").lower() in ("1", "true", "yes")
        if errors:
            self.ctx.ingest_error("invalid_event", len(errors))
        if total and (not good or (atomic and errors)):
            return _json(
                400,
                {
                    "total": total,
                    "accepted": 0,
                    "rejected": total if atomic else len(errors),
                    "errors": errors,
                },
            )
        if good:
            keep = self.ctx.router.needs_objects
            now = time.time()
            name = self.ctx.name
            events = [
                Event(raw, name, now, None, obj if keep else None, object_time(obj))
                for _, raw, obj in good
            ]
            if not await self.accept(events):
                self.ctx.ingest_error("busy")
                return _json(
                    503,
                    {"error": "buffers are full; retry later"},
                    {"Retry-After": str(self.config.retry_after_secs)},
                )
        return _json(
            200, {"total": total, "accepted": len(good), "rejected": len(errors), "errors": errors}
        )


def _parse_json(
    body: bytes,
) -> tuple[list[tuple[int, bytes, dict[str, Any]]], list[dict[str, Any]]]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [], [{"index": 0, "error": f"invalid JSON: {exc}"}]
    values = value if isinstance(value, list) else [value]
    items, errors = [], []
    for i, item in enumerate(values):
        if isinstance(item, dict):
            # Re-encoded here because a body array gives no per-object bytes to keep.
            items.append((i, encode(item), item))
        else:
            errors.append({"index": i, "error": f"not a JSON object ({type(item).__name__})"})
    return items, errors


def _parse_ndjson(
    body: bytes,
) -> tuple[list[tuple[int, bytes, dict[str, Any]]], list[dict[str, Any]]]:
    items, errors = [], []
    index = 0
    for line in body.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append({"index": index, "error": f"invalid JSON: {exc}"})
        else:
            if isinstance(item, dict):
                items.append((index, line, item))
            else:
                errors.append(
                    {"index": index, "error": f"not a JSON object ({type(item).__name__})"}
                )
        index += 1
    return items, errors


class _LimitedSite(web.BaseSite):
    """A TCP listener for the runner that refuses connections past ``max_connections``.

    aiohttp's TCPSite has no such limit; this one wraps the runner's protocol factory and
    answers an excess connection by closing it at once, before any byte is read.
    """

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        handshake_timeout_secs: float,
        on_refused: Any,
        handed: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=1024)
        self._host = host
        self._port = port
        self._limit = max_connections
        self._handshake_timeout = handshake_timeout_secs
        self._on_refused = on_refused
        # The supervisor listens and hands each connection over (see adopt): no server here.
        self._handed = handed
        self._protocol: Callable[[], asyncio.BaseProtocol] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def handed(self) -> bool:
        return self._handed

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        # A burst of accepts creates many protocols before any of them registers with the
        # server, so the ones created but not yet registered are counted too. The transport
        # schedules its connection_made right after the factory returns; two hops of the
        # loop later it is registered.
        accepting = 0

        def settle() -> None:
            nonlocal accepting
            accepting -= 1

        def protocol() -> asyncio.BaseProtocol:
            nonlocal accepting
            if len(server.connections) + accepting >= self._limit:
                self._on_refused()
                return _Refused()
            accepting += 1
            loop.call_soon(loop.call_soon, settle)
            return server()

        self._protocol = protocol
        if self._handed:
            return
        self._server = await loop.create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            # A client that connects and never finishes the handshake is idle too.
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=reuse_port(),
        )

    async def stop(self) -> None:
        self._protocol = None
        for task in list(self._handshakes):
            task.cancel()
        await super().stop()

    def adopt(self, sock: socket.socket) -> None:
        """Serve a connection the supervisor accepted (:mod:`forwarder.handoff`)."""
        if self._protocol is None:
            sock.close()
            return
        serve(
            self._handshakes,
            self._protocol,
            sock,
            ssl_context=self._ssl_context,
            handshake_timeout=self._handshake_timeout,
        )


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


class BodyError(Exception):
    """A body that cannot be read as sent: its status and the message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = {413: "too_large", 415: "unsupported_encoding"}.get(status, "bad_request")


def _too_large(limit: int) -> BodyError:
    return BodyError(413, f"body larger than max_body_bytes ({limit})")
