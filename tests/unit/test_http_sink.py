"""http sink: encodings, compression, headers and method on the wire; answer classification."""

from __future__ import annotations

import json
from email.utils import formatdate
from time import time
from typing import Any

import pytest

from forwarder.sinks.base import Verdict, classify_http, parse_retry_after
from forwarder.sinks.http import HttpCollectorSink, HttpConfig
from tests.fakes import Respond
from tests.helpers import FakeCollector, events


async def send(collector: FakeCollector, **config: Any) -> Any:
    cfg = HttpConfig.model_validate({"type": "http", "endpoint": collector.endpoint, **config})
    sink = HttpCollectorSink("hook", cfg)
    await sink.start()
    try:
        return await sink.send(events(3))
    finally:
        await sink.stop()


async def test_ndjson_body(collector: FakeCollector) -> None:
    """ndjson: one object per line, newline-terminated, as application/x-ndjson."""
    answer = await send(collector)
    assert answer.verdict is Verdict.OK
    seen = collector.requests[0]
    assert seen.method == "POST"
    assert seen.headers["Content-Type"] == "application/x-ndjson"
    assert seen.body == b'{"i":0}\n{"i":1}\n{"i":2}\n'


async def test_json_array_body(collector: FakeCollector) -> None:
    """json_array: one JSON array of the objects, as application/json."""
    await send(collector, encoding="json_array")
    seen = collector.requests[0]
    assert seen.headers["Content-Type"] == "application/json"
    assert json.loads(seen.body) == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_gzip_and_custom_headers(collector: FakeCollector) -> None:
    """compression: gzip sends a gzip body with Content-Encoding; configured headers go along."""
    await send(collector, compression="gzip", headers={"Authorization": "Bearer t0k"})
    seen = collector.requests[0]
    assert seen.headers["Content-Encoding"] == "gzip"
    assert seen.headers["Authorization"] == "Bearer t0k"
    assert seen.raw_size != len(seen.body)
    assert collector.received == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_put_method(collector: FakeCollector) -> None:
    """method: PUT sends a PUT."""
    answer = await send(collector, method="PUT")
    assert answer.verdict is Verdict.OK
    assert collector.requests[0].method == "PUT"


async def test_answer_is_classified_with_retry_after(collector: FakeCollector) -> None:
    """A 503 with Retry-After reads as RETRY carrying the seconds and the body."""
    collector.script.plan(Respond(503, {"busy": True}, retry_after=12))
    answer = await send(collector)
    assert answer.verdict is Verdict.RETRY
    assert (answer.status, answer.reason, answer.retry_after) == (503, "http_503", 12.0)
    assert json.loads(answer.body) == {"busy": True}


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.OK),
        (202, Verdict.OK),
        (204, Verdict.OK),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (413, Verdict.SPLIT),
        (400, Verdict.DOWN),
        (401, Verdict.DOWN),
        (403, Verdict.DOWN),
        (404, Verdict.DOWN),
    ],
)
def test_generic_status_classification(status: int, verdict: Verdict) -> None:
    """Generic HTTP: 2xx ok, 408/429/5xx retry, 413 split, other 4xx keeps data (down)."""
    answer = classify_http(status, "", None)
    assert answer.verdict is verdict
    assert answer.reason == f"http_{status}"


def test_retry_after_parsing() -> None:
    """Retry-After as seconds or an HTTP date; junk and absence give None."""
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    later = parse_retry_after(formatdate(time() + 60, usegmt=True))
    assert later is not None and 55 <= later <= 61
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
