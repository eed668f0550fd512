"""A strict fake Splunk HTTP Event Collector (PROTOCOLS.md section 1).

Rules it enforces, in the order Splunk applies them:
- ``Authorization: Splunk <token>``: missing -> 401 code 2, malformed -> 401 code 3,
  unknown token -> 403 code 4.
- Content-Encoding gzip or none (anything else 415); over ``max_body_bytes`` -> 413.
- With indexer acks on: ``X-Splunk-Request-Channel`` (or ``?channel=``) must be a GUID:
  missing -> 400 code 10, not a GUID -> 400 code 11.
- Empty body -> 400 code 5. Otherwise JSON objects back to back, each checked in turn:
  not JSON (or not an object) -> 6, no ``event`` -> 12, blank event -> 13, poison -> 6,
  ``fields`` not flat -> 15, ``index`` not allowed -> 7, ``time`` not a plain number -> 6.
  Objects before the first bad one are indexed; it and the rest are not; the 400 carries
  ``invalid-event-number``.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from tests.fakes.script import BodyError, FakeServer, SeenRequest, decode_body, json_response

__all__ = ["FakeHec"]

_TEXT = {
    0: "Success",
    2: "Token is required",
    3: "Invalid authorization",
    4: "Invalid token",
    5: "No data",
    6: "Invalid data format",
    7: "Incorrect index",
    8: "Internal server error",
    9: "Server is busy",
    10: "Data channel is missing",
    11: "Invalid data channel",
    12: "Event field is required",
    13: "Event field cannot be blank",
    14: "ACK is disabled",
    15: "Error in handling indexed fields",
}
_STATUS_CODE = {400: 6, 401: 3, 403: 4, 500: 8, 503: 9}
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_NO_LIMIT = 1 << 30


class _ExponentFloat(float):
    """A JSON number written with an exponent (``1.7e9``), which HEC refuses for ``time``."""


def _parse_float(text: str) -> float:
    return _ExponentFloat(text) if "e" in text or "E" in text else float(text)


def _hec(status: int, code: int, **extra: Any) -> web.Response:
    return json_response(status, {"text": _TEXT[code], "code": code, **extra})


def _skip_space(text: str, position: int) -> int:
    match = _JSON_SPACE.match(text, position)
    return match.end() if match else position


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _flat(fields: Any) -> bool:
    if not isinstance(fields, dict):
        return False
    for value in fields.values():
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, dict | list) for item in items):
            return False
    return True


class FakeHec(FakeServer):
    """Fake Splunk HEC on 127.0.0.1.

    Arguments:
        tokens: accepted HEC tokens.
        acks: indexer acknowledgement on (success answers carry ``ackId``).
        ack_delay_secs: seconds after which an ``ackId`` reads true on /ack; None: never
            (until :meth:`release_acks`). Can be changed between requests.
        allowed_indexes: indexes the token may write to; None allows any.
        max_body_bytes: largest decompressed body accepted, bytes (413 above); None: no limit.
        poison: predicate on an object's ``event`` value (a dict or a str: check the type);
            truthy makes that object fail with code 6, as Splunk does for one it cannot parse.
        seed: seed for the scripts' random failures.

    Scripts: ``script`` for the event routes, ``ack_script`` for /ack, ``health_script`` for
    /health. Records: ``accepted`` (whole envelopes, in order), ``requests`` (every request).
    """

    def __init__(
        self,
        *,
        tokens: Iterable[str] = ("00000000-0000-0000-0000-000000000001",),
        acks: bool = False,
        ack_delay_secs: float | None = 0.0,
        allowed_indexes: Iterable[str] | None = None,
        max_body_bytes: int | None = None,
        poison: Callable[[Any], object] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.tokens = set(tokens)
        self.acks = acks
        self.ack_delay_secs = ack_delay_secs
        self.allowed_indexes = None if allowed_indexes is None else set(allowed_indexes)
        self.max_body_bytes = max_body_bytes
        self.poison = poison
        self.script = self._new_script(seed)
        self.ack_script = self._new_script(seed + 1)
        self.health_script = self._new_script(seed + 2)
        self.accepted: list[dict[str, Any]] = []
        self._next_ack: dict[str, int] = {}
        # channel -> ack id -> loop time at which it reads true (inf: never).
        self._acks_due: dict[str, dict[int, float]] = {}

    def events(self) -> list[Any]:
        """The ``event`` values accepted so far, in order."""
        return [envelope["event"] for envelope in self.accepted]

    def unacked(self) -> int:
        """Ack ids issued and not yet reported true."""
        return sum(len(due) for due in self._acks_due.values())

    def release_acks(self) -> None:
        """Make every outstanding ack id read true on its next poll."""
        for due in self._acks_due.values():
            for ack_id in due:
                due[ack_id] = 0.0

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/services/collector", self._post_events),
            web.post("/services/collector/event", self._post_events),
            web.post("/services/collector/event/1.0", self._post_events),
            web.post("/services/collector/ack", self._post_ack),
            web.get("/services/collector/health", self._get_health),
        ]

    def _default_body(self, status: int) -> Any:
        if status in _STATUS_CODE:
            return {"text": _TEXT[_STATUS_CODE[status]], "code": _STATUS_CODE[status]}
        return super()._default_body(status)

    async def _post_events(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.script, self._handle_events)

    async def _post_ack(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.ack_script, self._handle_ack)

    async def _get_health(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.health_script, self._handle_health)

    async def _handle_health(self, request: web.Request, seen: SeenRequest) -> web.Response:
        return json_response(200, {"text": "HEC is healthy", "code": 17})

    def _refuse_auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization")
        if not header:
            return _hec(401, 2)
        scheme, _, token = header.partition(" ")
        if scheme != "Splunk" or not token.strip():
            return _hec(401, 3)
        if token.strip() not in self.tokens:
            return _hec(403, 4)
        return None

    def _channel(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        channel = request.headers.get("X-Splunk-Request-Channel") or request.query.get("channel")
        if not channel:
            return None, _hec(400, 10)
        if not _is_guid(channel):
            return None, _hec(400, 11)
        return channel, None

    async def _read(self, request: web.Request) -> bytes | web.Response:
        try:
            return decode_body(
                await request.read(),  # cached by aiohttp since _serve read it
                request.headers.get("Content-Encoding", ""),
                allowed=("gzip",),
                limit=self.max_body_bytes if self.max_body_bytes is not None else _NO_LIMIT,
            )
        except BodyError as error:
            if error.status == 400:
                return _hec(400, 6)
            # Splunk's 413/415 bodies are undocumented: a plain reason phrase, no HEC code.
            return json_response(error.status, self._default_body(error.status))

    async def _handle_events(self, request: web.Request, seen: SeenRequest) -> web.Response:
        refusal = self._refuse_auth(request)
        if refusal is not None:
            return refusal
        body = await self._read(request)
        if isinstance(body, web.Response):
            return body
        channel = None
        if self.acks:
            channel, refusal = self._channel(request)
            if refusal is not None:
                return refusal
        if not body.strip():
            return _hec(400, 5)
        good, failure = self._parse(body)
        self.accepted.extend(good)
        seen.accepted = len(good)
        if failure is not None:
            return _hec(400, failure, **{"invalid-event-number": len(good)})
        if channel is None:
            return _hec(200, 0)
        ack_id = self._next_ack.get(channel, 0)
        self._next_ack[channel] = ack_id + 1
        delay = self.ack_delay_secs
        due_at = float("inf") if delay is None else asyncio.get_running_loop().time() + delay
        self._acks_due.setdefault(channel, {})[ack_id] = due_at
        return _hec(200, 0, ackId=ack_id)

    def _parse(self, body: bytes) -> tuple[list[dict[str, Any]], int | None]:
        """The objects before the first bad one, and the bad one's HEC code (None: all good)."""
        good: list[dict[str, Any]] = []
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return good, 6
        decoder = json.JSONDecoder(parse_float=_parse_float)
        position = _skip_space(text, 0)
        while position < len(text):
            try:
                envelope, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError:
                return good, 6
            code = self._check(envelope)
            if code is not None:
                return good, code
            good.append(envelope)
            position = _skip_space(text, position)
        return good, None

    def _check(self, envelope: Any) -> int | None:
        """The HEC code for one bad object, or None if Splunk would index it."""
        if not isinstance(envelope, dict):
            return 6
        if "event" not in envelope:
            return 12
        event = envelope["event"]
        if event is None or event == "" or event == {}:
            return 13
        if self.poison is not None and self.poison(event):
            return 6
        if "fields" in envelope and not _flat(envelope["fields"]):
            return 15
        if "index" in envelope and not self._may_write(envelope["index"]):
            return 7
        if "time" in envelope:
            time = envelope["time"]
            if isinstance(time, bool | _ExponentFloat) or not isinstance(time, int | float):
                return 6
        return None

    def _may_write(self, index: Any) -> bool:
        allowed = self.allowed_indexes
        return allowed is None or (isinstance(index, str) and index in allowed)

    async def _handle_ack(self, request: web.Request, seen: SeenRequest) -> web.Response:
        refusal = self._refuse_auth(request)
        if refusal is not None:
            return refusal
        body = await self._read(request)
        if isinstance(body, web.Response):
            return body
        if not self.acks:
            return _hec(400, 14)
        channel, refusal = self._channel(request)
        if refusal is not None:
            return refusal
        assert channel is not None
        try:
            ids = json.loads(body)["acks"]
        except (ValueError, TypeError, KeyError):
            return _hec(400, 6)
        if not isinstance(ids, list) or not all(type(ack_id) is int for ack_id in ids):
            return _hec(400, 6)
        now = asyncio.get_running_loop().time()
        due = self._acks_due.get(channel, {})
        answer: dict[str, bool] = {}
        for ack_id in ids:
            answer[str(ack_id)] = ack_id in due and due[ack_id] <= now
        # Splunk forgets an id once it has reported it true; a later poll reads false.
        for ack_id, done in answer.items():
            if done:
                del due[int(ack_id)]
        return json_response(200, {"acks": answer})
