"""A strict fake Datadog Logs intake v2 (PROTOCOLS.md section 3).

Rules it enforces, in order:
- ``DD-API-KEY`` header: missing -> 401, unknown key -> 403.
- Content-Encoding gzip, deflate or none (anything else 415).
- At most ``max_body_bytes`` uncompressed (5 MB) -> else 413.
- The body is a non-empty JSON array of objects -> else 400.
- At most ``max_entries`` (1000) objects -> else 413. Datadog documents the limit but not
  the status; 413 asks the sender to split, which is the right reaction either way.
- Any object matching ``poison`` -> 400 for the whole request, as the intake refuses a
  payload without saying which log was bad.
- Success: 202 ``{}``; each log object is recorded in ``accepted``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from aiohttp import web

from tests.fakes.script import BodyError, FakeServer, SeenRequest, decode_body, json_response

__all__ = ["FakeDatadog"]

MAX_BODY_BYTES = 5_000_000
MAX_ENTRIES = 1000
MAX_LOG_BYTES = 1_000_000


def _error(status: int, detail: str | None = None) -> web.Response:
    return json_response(status, {"errors": [detail or HTTPStatus(status).phrase]})


class FakeDatadog(FakeServer):
    """Fake Datadog Logs intake on 127.0.0.1, route ``POST /api/v2/logs``.

    Arguments:
        api_keys: accepted ``DD-API-KEY`` values.
        max_body_bytes: largest uncompressed body, bytes (413 above).
        max_entries: most log objects per request (413 above).
        poison: predicate on a log object; truthy for any object refuses the whole request (400).
        seed: seed for the script's random failures.

    Script: ``script``. Records: ``accepted`` (log objects, in order), ``requests`` (every
    request), ``oversized`` (how many accepted logs were above 1 MB, which Datadog truncates).
    """

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = ("0123456789abcdef0123456789abcdef",),
        max_body_bytes: int = MAX_BODY_BYTES,
        max_entries: int = MAX_ENTRIES,
        poison: Callable[[dict[str, Any]], object] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.api_keys = set(api_keys)
        self.max_body_bytes = max_body_bytes
        self.max_entries = max_entries
        self.poison = poison
        self.script = self._new_script(seed)
        self.accepted: list[dict[str, Any]] = []
        self.oversized = 0

    def messages(self) -> list[Any]:
        """The ``message`` values of the accepted logs, in order (None where absent)."""
        return [log.get("message") for log in self.accepted]

    def _routes(self) -> list[web.RouteDef]:
        return [web.post("/api/v2/logs", self._post_logs)]

    def _default_body(self, status: int) -> Any:
        return {} if status == 202 else {"errors": [HTTPStatus(status).phrase]}

    async def _post_logs(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.script, self._handle_logs)

    async def _handle_logs(self, request: web.Request, seen: SeenRequest) -> web.Response:
        key = request.headers.get("DD-API-KEY")
        if not key:
            return _error(401)
        if key not in self.api_keys:
            return _error(403)
        try:
            body = decode_body(
                await request.read(),  # cached by aiohttp since _serve read it
                request.headers.get("Content-Encoding", ""),
                allowed=("gzip", "deflate"),
                limit=self.max_body_bytes,
            )
        except BodyError as error:
            return _error(error.status)
        try:
            logs = json.loads(body)
        except ValueError:
            return _error(400, "body is not JSON")
        if not isinstance(logs, list) or not logs:
            return _error(400, "body must be a non-empty JSON array")
        if not all(isinstance(log, dict) for log in logs):
            return _error(400, "every array entry must be a JSON object")
        if len(logs) > self.max_entries:
            return _error(413, f"more than {self.max_entries} entries")
        if self.poison is not None and any(self.poison(log) for log in logs):
            return _error(400)
        self.oversized += sum(len(json.dumps(log)) > MAX_LOG_BYTES for log in logs)
        self.accepted.extend(logs)
        seen.accepted = len(logs)
        return json_response(202, {})
