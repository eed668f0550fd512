"""HEC-compatible ingest on the http source: routes, auth codes, stream parsing, partial
acceptance, busy answers, /raw, /health and ingest acknowledgements."""

from __future__ import annotations

import base64
import gzip
import uuid
from typing import Any

import aiohttp
import orjson
import pytest

from forwarder.sources.acks import AckLedger
from forwarder.sources.hec_body import envelopes
from forwarder.telemetry.metrics import Metrics
from tests.helpers import events as some_events
from tests.ingest_helpers import Wired

TOKEN = "5d6a2c9e-0000-4000-8000-000000000001"
SPLUNK = {"Authorization": f"Splunk {TOKEN}"}


def http(**extra: Any) -> dict[str, Any]:
    return {"type": "http", "address": "127.0.0.1:0", "auth_tokens": [TOKEN], **extra}


async def post(
    wired: Wired,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    url = f"http://127.0.0.1:{wired.port}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, data=body, headers=SPLUNK if headers is None else headers, params=params
        ) as resp,
    ):
        return resp.status, orjson.loads(await resp.read()), dict(resp.headers)


def lines(*objs: dict[str, Any], sep: bytes = b"\n") -> bytes:
    return sep.join(orjson.dumps(o) for o in objs)


@pytest.mark.parametrize(
    "path", ["/services/collector", "/services/collector/event", "/services/collector/event/1.0"]
)
@pytest.mark.parametrize("sep", [b"\n", b"", b" \r\n\t"], ids=["lines", "glued", "spaces"])
async def test_envelopes_keep_their_metadata(metrics: Metrics, path: str, sep: bytes) -> None:
    """Envelopes back to back, however separated: event bytes and envelope metadata kept."""
    first = {
        "time": 1733300000.125,
        "host": "web-1",
        "source": "app",
        "sourcetype": "audit:json",
        "index": "security",
        "fields": {"team": "sec", "tags": ["a", "b"]},
        "event": {"user": "alice", "action": "login"},
    }
    second = {"time": "1733300001", "event": "a plain log line"}
    async with Wired(http(), metrics) as wired:
        status, body, _ = await post(wired, path, lines(first, second, sep=sep))
        assert (status, body) == (200, {"text": "Success", "code": 0})
        assert wired.objects() == [
            {"user": "alice", "action": "login"},
            {"message": "a plain log line"},
        ]
        assert wired.metas() == [
            {k: v for k, v in first.items() if k != "event"},
            {"time": "1733300001"},
        ]
        assert [e.time for e in wired.buffer.unacked()] == [1733300000.125, 1733300001.0]


async def test_event_host_is_found_at_ingest(metrics: Metrics) -> None:
    """An event object's own ``host`` is kept beside it for sinks when no envelope says."""
    body = lines({"event": {"host": "from-event", "n": 1}}, {"event": "text"})
    async with Wired(http(), metrics) as wired:
        status, _, _ = await post(wired, "/services/collector", body)
        await post(wired, "/services/collector/raw", b'{"host":"raw-host"}\nplain')
        assert status == 200
        hosts = [e.host for e in wired.buffer.unacked()]
        assert hosts == ["from-event", None, "raw-host", None]


async def test_gzip_body(metrics: Metrics) -> None:
    """A gzip body (Content-Encoding: gzip) is accepted."""
    async with Wired(http(), metrics) as wired:
        body = gzip.compress(lines({"event": {"n": 1}}, {"event": {"n": 2}}))
        status, _, _ = await post(
            wired, "/services/collector", body, {**SPLUNK, "Content-Encoding": "gzip"}
        )
        assert status == 200
        assert wired.objects() == [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize(
    ("headers", "params", "status", "code"),
    [
        ({}, None, 401, 2),
        ({"Authorization": "Splunk"}, None, 401, 3),
        ({"Authorization": "Token abc"}, None, 401, 3),
        ({"Authorization": "Splunk wrong"}, None, 403, 4),
        ({}, {"token": TOKEN}, 400, 16),
    ],
    ids=["missing", "empty", "scheme", "unknown", "query"],
)
async def test_auth_refusals(
    metrics: Metrics,
    headers: dict[str, str],
    params: dict[str, str] | None,
    status: int,
    code: int,
) -> None:
    """Splunk's auth answers: 401 code 2 / 401 code 3 / 403 code 4 / 400 code 16, nothing kept."""
    async with Wired(http(), metrics) as wired:
        got, body, _ = await post(
            wired, "/services/collector/event", lines({"event": "x"}), headers, params
        )
        assert (got, body["code"]) == (status, code)
        assert wired.buffer.depth_events == 0


@pytest.mark.parametrize("scheme", ["Bearer", "Basic"])
async def test_other_auth_schemes(metrics: Metrics, scheme: str) -> None:
    """``Bearer <token>`` and HTTP Basic with the token as password are accepted."""
    value = TOKEN if scheme == "Bearer" else base64.b64encode(f"x:{TOKEN}".encode()).decode()
    async with Wired(http(), metrics) as wired:
        status, _, _ = await post(
            wired,
            "/services/collector",
            lines({"event": "x"}),
            {"Authorization": f"{scheme} {value}"},
        )
        assert status == 200


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (b'{"host":"h"}', 12),
        (b'{"event":""}', 13),
        (b'{"event":{}}', 13),
        (b'{"event":"x","fields":{"nested":{"a":1}}}', 15),
        (b'{"event":"x","time":"yesterday"}', 6),
        (b'{"event":"x","host":5}', 6),
        (b"[1,2]", 6),
        (b'{"event": "unterminated', 6),
    ],
    ids=["no-event", "blank", "empty-object", "nested-fields", "bad-time", "host", "array", "json"],
)
async def test_first_bad_object_is_reported_and_earlier_ones_kept(
    metrics: Metrics, bad: bytes, code: int
) -> None:
    """Objects before the first bad one are accepted; the 400 names its code and index."""
    body = b'{"event":{"n":0}}{"event":{"n":1}}\n' + bad + b'\n{"event":{"n":3}}'
    async with Wired(http(), metrics) as wired:
        status, answer, _ = await post(wired, "/services/collector", body)
        assert status == 400
        assert answer["code"] == code
        assert answer["invalid-event-number"] == 2
        assert wired.objects() == [{"n": 0}, {"n": 1}]
        reason = {"source": "src", "reason": "invalid_event"}
        assert wired.sample("forwarder_ingest_errors_total", **reason) == 1


async def test_empty_body_is_no_data(metrics: Metrics) -> None:
    """A body with no object answers 400 code 5."""
    async with Wired(http(), metrics) as wired:
        status, answer, _ = await post(wired, "/services/collector", b" \n ")
        assert (status, answer["code"]) == (400, 5)


async def test_busy_answers_503_code_9_with_retry_after(metrics: Metrics) -> None:
    """Full buffers: 503 code 9 with Retry-After, and nothing from the request is kept."""
    source = http(queue_wait_secs=0, retry_after_secs=7)
    async with Wired(source, metrics, max_events=1) as wired:
        wired.buffer.append(some_events(1))
        status, answer, headers = await post(wired, "/services/collector", lines({"event": "x"}))
        assert (status, answer) == (503, {"text": "Server is busy", "code": 9})
        assert headers["Retry-After"] == "7"
        assert wired.buffer.depth_events == 1
        health = await get(wired, "/services/collector/health")
        assert health == (503, {"text": "HEC is unhealthy, queues are full", "code": 18})


async def get(wired: Wired, path: str) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{wired.port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, orjson.loads(await resp.read())


@pytest.mark.parametrize("path", ["/services/collector/health", "/services/collector/health/1.0"])
async def test_health(metrics: Metrics, path: str) -> None:
    """/health answers 200 code 17 without a token while buffers have room."""
    async with Wired(http(), metrics) as wired:
        assert await get(wired, path) == (200, {"text": "HEC is healthy", "code": 17})


@pytest.mark.parametrize("path", ["/services/collector/raw", "/services/collector/raw/1.0"])
async def test_raw_lines_become_events(metrics: Metrics, path: str) -> None:
    """/raw: each non-blank line an event, JSON object lines kept, metadata from the query."""
    body = b'first line\r\n\n{"user":"bob"}\n[not an object]\n'
    params = {"host": "db-2", "sourcetype": "syslog", "index": "ops", "time": "1733300000.5"}
    async with Wired(http(), metrics) as wired:
        status, answer, _ = await post(wired, path, body, params=params)
        assert (status, answer["code"]) == (200, 0)
        assert wired.objects() == [
            {"message": "first line"},
            {"user": "bob"},
            {"message": "[not an object]"},
        ]
        meta = {"host": "db-2", "sourcetype": "syslog", "index": "ops", "time": 1733300000.5}
        assert wired.metas() == [meta, meta, meta]


async def test_options_answers_200(metrics: Metrics) -> None:
    """OPTIONS on the event route answers 200 (Docker's splunk driver checks the URL so)."""
    async with Wired(http(), metrics) as wired, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{wired.port}/services/collector/event/1.0"
        async with session.options(url) as resp:
            assert resp.status == 200


async def test_acknowledgements(metrics: Metrics) -> None:
    """With acks on: channel required, ackId per channel from 0, /ack true once then gone."""
    channel = str(uuid.uuid4())
    other = str(uuid.uuid4())
    body = lines({"event": {"n": 1}})
    async with Wired(http(acknowledgements=True), metrics) as wired:
        status, answer, _ = await post(wired, "/services/collector", body)
        assert (status, answer["code"]) == (400, 10)
        bad = {**SPLUNK, "X-Splunk-Request-Channel": "not-a-guid"}
        status, answer, _ = await post(wired, "/services/collector", body, bad)
        assert (status, answer["code"]) == (400, 11)
        with_channel = {**SPLUNK, "X-Splunk-Request-Channel": channel}
        ids = [(await post(wired, "/services/collector", body, with_channel))[1] for _ in range(2)]
        assert ids == [{"text": "Success", "code": 0, "ackId": i} for i in (0, 1)]
        _, by_query, _ = await post(
            wired, "/services/collector/raw", b"line", params={"channel": other}
        )
        assert by_query["ackId"] == 0
        assert wired.buffer.depth_events == 3
        query = orjson.dumps({"acks": [0, 1, 2]})
        _, acks, _ = await post(wired, "/services/collector/ack", query, with_channel)
        assert acks == {"acks": {"0": True, "1": True, "2": False}}
        _, again, _ = await post(wired, "/services/collector/ack", query, with_channel)
        assert again == {"acks": {"0": False, "1": False, "2": False}}


async def test_ack_when_disabled_is_code_14(metrics: Metrics) -> None:
    """/ack on a source without acknowledgements answers 400 code 14."""
    async with Wired(http(), metrics) as wired:
        headers = {**SPLUNK, "X-Splunk-Request-Channel": str(uuid.uuid4())}
        status, answer, _ = await post(wired, "/services/collector/ack", b'{"acks":[0]}', headers)
        assert (status, answer["code"]) == (400, 14)


def test_ack_ledger_is_bounded() -> None:
    """The ledger forgets the oldest ids and least recently used channels past its limits."""
    ledger = AckLedger(max_channels=2, max_ids_per_channel=3)
    ids = [ledger.issue("a") for _ in range(5)]
    assert ids == [0, 1, 2, 3, 4]
    assert ledger.query("a", ids) == {"0": False, "1": False, "2": True, "3": True, "4": True}
    ledger.issue("b")
    ledger.issue("c")
    assert ledger.channels == 2
    assert ledger.query("a", [5]) == {"5": False}


def test_stream_parser_matches_line_parser() -> None:
    """Glued envelopes and one per line parse to the same events."""
    objs = [{"event": {"i": i}, "host": f"h{i}"} for i in range(50)]
    glued = envelopes(lines(*objs, sep=b""), 1 << 20)
    per_line = envelopes(lines(*objs), 1 << 20)
    assert glued.error is per_line.error is None
    assert glued.items == per_line.items
    assert [item[2] for item in glued.items] == [{"host": f"h{i}"} for i in range(50)]


def test_event_over_the_size_limit_is_code_6() -> None:
    """An event larger than max_event_bytes is rejected at its index with code 6."""
    parsed = envelopes(lines({"event": "ok"}, {"event": "x" * 200}), 100)
    assert len(parsed.items) == 1
    assert parsed.error == (6, 1)
