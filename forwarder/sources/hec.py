"""Splunk HEC-compatible routes on the ``http`` source, so Splunk logging libraries, agents
and Docker's ``splunk`` log driver can point at forwarder unchanged (PROTOCOLS.md section 2).

Routes under ``/services/collector``: ``""``, ``/event``, ``/event/1.0`` (JSON envelopes back
to back), ``/raw``, ``/raw/1.0`` (one event per line), ``/health``, ``/health/1.0``, ``/ack``.

What becomes of an envelope ``{"time":..,"host":..,"source":..,"sourcetype":..,"index":..,
"fields":{..},"event":..}``:
- the event's bytes are the ``event`` value re-encoded once: an object as it is, any other
  value (a log line string, usually) as ``{"message": value}``, because every event is one
  JSON object whatever the sink;
- the envelope keys that were present go to :attr:`Event.meta`, so a ``splunk_hec`` sink
  forwards them as they came (its config only fills what is missing);
- :attr:`Event.time` is the envelope ``time`` when there is one, else the event's own.

Answers are Splunk's ``{"text": .., "code": N}``. Objects are taken in order; at the first
bad one the objects before it are accepted and the answer is a 400 with its code and
``invalid-event-number``, as Splunk does. With ``acknowledgements: true`` a channel is
required and success answers carry ``ackId`` (see :mod:`forwarder.sources.acks`).
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from forwarder.events import Event, hec_seconds, object_time
from forwarder.sources.acks import AckLedger
from forwarder.sources.hec_body import TEXT_META, envelopes, raw_lines
from forwarder.sources.http import BodyError

if TYPE_CHECKING:
    from forwarder.sources.http import HttpSource

PREFIX = "/services/collector"
EVENT_PATHS = (PREFIX, f"{PREFIX}/event", f"{PREFIX}/event/1.0")
RAW_PATHS = (f"{PREFIX}/raw", f"{PREFIX}/raw/1.0")
HEALTH_PATHS = (f"{PREFIX}/health", f"{PREFIX}/health/1.0")
ACK_PATH = f"{PREFIX}/ack"

TEXT = {
    0: "Success",
    2: "Token is required",
    3: "Invalid authorization",
    4: "Invalid token",
    5: "No data",
    6: "Invalid data format",
    9: "Server is busy",
    10: "Data channel is missing",
    11: "Invalid data channel",
    12: "Event field is required",
    13: "Event field cannot be blank",
    14: "ACK is disabled",
    15: "Error in handling indexed fields",
    16: "Query string authorization is not enabled",
    17: "HEC is healthy",
    18: "HEC is unhealthy, queues are full",
}
_STATUS = {0: 200, 2: 401, 3: 401, 4: 403, 9: 503, 17: 200, 18: 503}
_REASON = {2: "unauthorized", 3: "unauthorized", 4: "forbidden", 16: "unauthorized"}


def answer(code: int, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    body = {"text": TEXT[code], "code": code, **extra}
    return web.Response(
        status=_STATUS.get(code, 400),
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


class HecRoutes:
    """The HEC routes of one ``http`` source.

    Arguments:
        source: the listener; its ``auth_tokens``, ``max_event_bytes``,
            ``acknowledgements`` and ``accept()`` are used.
    """

    def __init__(self, source: HttpSource) -> None:
        self.source = source
        self.ctx = source.ctx
        self.acks = AckLedger() if source.config.acknowledgements else None

    def add_to(self, app: web.Application) -> None:
        for path in EVENT_PATHS:
            app.router.add_post(path, self._event)
            # Docker's splunk log driver checks the URL with OPTIONS before it starts.
            app.router.add_route("OPTIONS", path, self._options)
        for path in RAW_PATHS:
            app.router.add_post(path, self._raw)
            app.router.add_route("OPTIONS", path, self._options)
        for path in HEALTH_PATHS:
            app.router.add_get(path, self._health)
        app.router.add_post(ACK_PATH, self._ack)

    # -- routes ------------------------------------------------------------------------

    async def _event(self, request: web.Request) -> web.Response:
        refused, channel, body = await self._admit(request)
        if refused is not None:
            return refused
        parsed = envelopes(body, self.source.config.max_event_bytes)
        if not parsed.items and parsed.error is None:
            return self._fail(5, "no_data")
        now = time.time()
        name = self.ctx.name
        keep = self.ctx.router.needs_objects
        events = [
            Event(
                raw,
                name,
                now,
                meta,
                payload if keep else None,
                _when(meta, payload),
                _host(payload),
            )
            for raw, payload, meta in parsed.items
        ]
        return await self._finish(events, channel, parsed.error)

    async def _raw(self, request: web.Request) -> web.Response:
        refused, channel, body = await self._admit(request)
        if refused is not None:
            return refused
        lines, too_large = raw_lines(body, self.source.config.max_event_bytes)
        if too_large:
            self.ctx.ingest_error("too_large", too_large)
            self.ctx.dropped("too_large", too_large)
        if not lines:
            return self._fail(5, "no_data")
        query = request.query
        meta: dict[str, Any] = {k: query[k] for k in TEXT_META if query.get(k)}
        stamp = hec_seconds(query.get("time"))
        if stamp is not None:
            meta["time"] = stamp
        now = time.time()
        name = self.ctx.name
        keep = self.ctx.router.needs_objects
        shared = meta or None
        events = [
            Event(
                raw,
                name,
                now,
                shared,
                payload if keep else None,
                _when(meta, payload),
                _host(payload),
            )
            for raw, payload in lines
        ]
        return await self._finish(events, channel, None)

    async def _options(self, request: web.Request) -> web.Response:
        return web.Response(status=200, headers={"Allow": "OPTIONS, POST"})

    async def _health(self, request: web.Request) -> web.Response:
        for target in self.ctx.router.targets.get(self.ctx.name, ()):
            if target.when_full == "block" and not target.buffer.admits(1, 1):
                return answer(18)
        return answer(17)

    async def _ack(self, request: web.Request) -> web.Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        if self.acks is None:
            return self._fail(14, "ack_disabled")
        channel, refused = self._channel(request)
        if refused is not None:
            return refused
        assert channel is not None
        try:
            body = orjson.loads(await self.source.read_body(request))
            ids = body["acks"]
            if not isinstance(ids, list) or not all(type(i) is int for i in ids):
                raise TypeError
        except (BodyError, orjson.JSONDecodeError, TypeError, KeyError):
            return self._fail(6, "bad_request")
        return web.json_response({"acks": self.acks.query(channel, ids)}, dumps=_dumps)

    # -- shared steps ------------------------------------------------------------------

    async def _admit(self, request: web.Request) -> tuple[web.Response | None, str | None, bytes]:
        """Auth, channel, body: (refusal or None, channel, body)."""
        refused = self._authorize(request)
        if refused is not None:
            return refused, None, b""
        channel, refused = self._channel(request)
        if refused is not None:
            return refused, None, b""
        try:
            body = await self.source.read_body(request)
        except BodyError as exc:
            self.ctx.ingest_error(exc.reason)
            refusal = web.Response(
                status=exc.status,
                body=orjson.dumps({"text": exc.message, "code": 6}),
                content_type="application/json",
            )
            return refusal, None, b""
        return None, channel, body

    async def _finish(
        self, events: list[Event], channel: str | None, error: tuple[int, int] | None
    ) -> web.Response:
        if events and not await self.source.accept(events):
            self.ctx.ingest_error("busy")
            retry = str(self.source.config.retry_after_secs)
            return answer(9, {"Retry-After": retry})
        if error is not None:
            code, index = error
            self.ctx.ingest_error("invalid_event")
            return answer(code, None, **{"invalid-event-number": index})
        if self.acks is not None and channel is not None:
            return answer(0, None, ackId=self.acks.issue(channel))
        return answer(0)

    def _authorize(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization")
        if header is None:
            if "token" in request.query:
                return self._fail(16, "unauthorized")
            return self._fail(2, "unauthorized") if self.source._tokens else None
        if not self.source._tokens:
            return None
        token = _token(header)
        if token is None:
            return self._fail(3, "unauthorized")
        if not self.source.check_token(token):
            return self._fail(4, "forbidden")
        return None

    def _channel(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        """The request channel; required (and a GUID) only with acknowledgements on."""
        channel = request.headers.get("X-Splunk-Request-Channel") or request.query.get("channel")
        if self.acks is None:
            return channel, None
        if not channel:
            return None, self._fail(10, "bad_channel")
        try:
            uuid.UUID(channel)
        except ValueError:
            return None, self._fail(11, "bad_channel")
        return channel, None

    def _fail(self, code: int, reason: str) -> web.Response:
        self.ctx.ingest_error(_REASON.get(code, reason))
        return answer(code)


def _token(header: str) -> str | None:
    """The token from ``Splunk t``, ``Bearer t`` or HTTP Basic (the password is the token, as
    Splunk accepts it); None when the header is malformed."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if not value:
        return None
    scheme = scheme.lower()
    if scheme in ("splunk", "bearer"):
        return value
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


def _when(meta: dict[str, Any] | None, payload: dict[str, Any]) -> float | None:
    if meta:
        stamp = hec_seconds(meta.get("time"))
        if stamp is not None:
            return stamp
    return object_time(payload)


def _host(payload: dict[str, Any]) -> str | None:
    """The event's own top-level ``host``: a sink falls back on it when no envelope says."""
    host = payload.get("host")
    return host if type(host) is str and host else None


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
