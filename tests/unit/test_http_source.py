"""http source (POST /v1/events) over real HTTP: bodies, modes, answers, auth, limits, 503."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from forwarder.buffers.memory import MemoryBuffer
from forwarder.routing import Router, Target
from forwarder.sources.base import SourceContext
from forwarder.sources.http import HttpConfig, HttpSource
from forwarder.telemetry.metrics import Metrics
from tests.helpers import events, sample

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


class Ingest:
    """A started http source named ``src`` feeding buffers, and a client for it."""

    def __init__(self, source: HttpSource, buffers: list[MemoryBuffer], client: Any) -> None:
        self.source = source
        self.buffers = buffers
        self.client: aiohttp.ClientSession = client
        host, port = source.bound[0]
        self.url = f"http://{host}:{port}/v1/events"

    async def post(
        self, body: bytes, headers: dict[str, str], query: str = ""
    ) -> tuple[int, dict[str, Any], Any]:
        async with self.client.post(self.url + query, data=body, headers=headers) as resp:
            return resp.status, await resp.json(), resp.headers

    def held(self, i: int = 0) -> list[dict[str, Any]]:
        return [json.loads(e.raw) for e in self.buffers[i].unacked()]


@pytest.fixture
async def make(metrics: Metrics) -> AsyncIterator[Any]:
    started: list[HttpSource] = []
    client = aiohttp.ClientSession()

    async def build(*, max_events: tuple[int, ...] = (100_000,), **config: Any) -> Ingest:
        router = Router(metrics)
        buffers = []
        for i, cap in enumerate(max_events):
            buffer = MemoryBuffer(f"out{i}", max_events=cap, max_bytes=1 << 30)
            router.add_target("src", Target(f"out{i}", buffer, "block"))
            buffers.append(buffer)
        cfg = HttpConfig.model_validate({"type": "http", "address": "127.0.0.1:0", **config})
        source = HttpSource(cfg, SourceContext("src", router, metrics))
        await source.start()
        started.append(source)
        return Ingest(source, buffers, client)

    yield build
    await client.close()
    for source in started:
        await source.stop()


def errors_metric(metrics: Metrics, reason: str) -> float:
    return sample(metrics.registry, "forwarder_ingest_errors_total", source="src", reason=reason)


async def test_single_object(make: Any, metrics: Metrics) -> None:
    """One JSON object is one event; the answer counts it."""
    ingest = await make()
    status, body, _ = await ingest.post(b'{"user":"alice"}', JSON)
    assert (status, body) == (200, {"total": 1, "accepted": 1, "rejected": 0, "errors": []})
    assert ingest.held() == [{"user": "alice"}]
    assert sample(metrics.registry, "forwarder_events_received_total", source="src") == 1


async def test_array_of_objects(make: Any) -> None:
    """A JSON array gives one event per object, in order."""
    ingest = await make()
    status, body, _ = await ingest.post(b'[{"a":1},{"a":2},{"a":3}]', JSON)
    assert status == 200 and body["accepted"] == 3
    assert ingest.held() == [{"a": 1}, {"a": 2}, {"a": 3}]


async def test_ndjson_body_keeps_the_sent_bytes(make: Any) -> None:
    """NDJSON gives one event per line, blank lines and CRLF tolerated, bytes kept as sent."""
    ingest = await make()
    status, body, _ = await ingest.post(b'{"a": 1}\r\n\n{"b":2}\n', NDJSON)
    assert status == 200 and body["total"] == 2
    assert [e.raw for e in ingest.buffers[0].unacked()] == [b'{"a": 1}', b'{"b":2}']


async def test_gzip_body(make: Any) -> None:
    """A gzip Content-Encoding is decompressed."""
    ingest = await make()
    headers = {**NDJSON, "Content-Encoding": "gzip"}
    status, body, _ = await ingest.post(gzip.compress(b'{"z":1}\n{"z":2}\n'), headers)
    assert status == 200 and body["accepted"] == 2
    assert ingest.held() == [{"z": 1}, {"z": 2}]


async def test_best_effort_accepts_valid_and_reports_invalid(make: Any, metrics: Metrics) -> None:
    """By default valid items are kept and each invalid one is reported by index."""
    ingest = await make()
    status, body, _ = await ingest.post(b'{"a":1}\nnope\n7\n{"a":2}\n', NDJSON)
    assert status == 200
    assert (body["total"], body["accepted"], body["rejected"]) == (4, 2, 2)
    assert [e["index"] for e in body["errors"]] == [1, 2]
    assert body["errors"][0]["error"].startswith("invalid JSON")
    assert body["errors"][1]["error"] == "not a JSON object (int)"
    assert ingest.held() == [{"a": 1}, {"a": 2}]
    assert errors_metric(metrics, "invalid_event") == 2


async def test_array_item_errors_name_their_index(make: Any) -> None:
    """In an array, a non-object item is reported at its index."""
    ingest = await make()
    status, body, _ = await ingest.post(b'[{"a":1},"x",{"a":2}]', JSON)
    assert status == 200
    assert body == {
        "total": 3,
        "accepted": 2,
        "rejected": 1,
        "errors": [{"index": 1, "error": "not a JSON object (str)"}],
    }


async def test_atomic_rejects_everything_on_one_error(make: Any) -> None:
    """?atomic=true with one bad item answers 400 and keeps nothing."""
    ingest = await make()
    status, body, _ = await ingest.post(b'{"a":1}\nnope\n{"a":2}\n', NDJSON, "?atomic=true")
    assert status == 400
    assert (body["total"], body["accepted"], body["rejected"]) == (3, 0, 3)
    assert [e["index"] for e in body["errors"]] == [1]
    assert ingest.held() == []


async def test_atomic_accepts_an_all_valid_request(make: Any) -> None:
    """?atomic=true with only valid items is accepted whole."""
    ingest = await make()
    status, body, _ = await ingest.post(b'[{"a":1},{"a":2}]', JSON, "?atomic=true")
    assert (status, body["accepted"]) == (200, 2)


async def test_nothing_valid_is_400(make: Any) -> None:
    """A body with no valid event answers 400 with the errors."""
    ingest = await make()
    status, body, _ = await ingest.post(b"not json at all", JSON)
    assert status == 400
    assert (body["total"], body["accepted"], body["rejected"]) == (1, 0, 1)
    assert ingest.held() == []


async def test_empty_array_is_200_with_nothing(make: Any) -> None:
    """An empty array is a valid request with zero events."""
    ingest = await make()
    status, body, _ = await ingest.post(b"[]", JSON)
    assert (status, body) == (200, {"total": 0, "accepted": 0, "rejected": 0, "errors": []})


async def test_event_over_max_event_bytes_is_rejected_by_index(make: Any) -> None:
    """An item larger than max_event_bytes is a per-item error; the rest are kept."""
    ingest = await make(max_event_bytes=50)
    big = json.dumps({"pad": "x" * 100})
    status, body, _ = await ingest.post(f'{{"a":1}}\n{big}\n'.encode(), NDJSON)
    assert status == 200 and body["rejected"] == 1
    assert body["errors"] == [{"index": 1, "error": "event larger than 50 bytes"}]


async def test_body_over_max_body_bytes_is_413(make: Any, metrics: Metrics) -> None:
    """A body larger than max_body_bytes answers 413 and keeps nothing."""
    ingest = await make(max_body_bytes=1000)
    body = b"".join(b'{"i":%d}\n' % i for i in range(500))
    status, _, _ = await ingest.post(body, NDJSON)
    assert status == 413
    assert ingest.held() == []


async def test_gzip_bomb_over_max_body_bytes_is_413(make: Any, metrics: Metrics) -> None:
    """A small gzip body that inflates past max_body_bytes answers 413."""
    ingest = await make(max_body_bytes=10_000)
    bomb = gzip.compress(b'{"a":"' + b"x" * 100_000 + b'"}')
    status, _, _ = await ingest.post(bomb, {**JSON, "Content-Encoding": "gzip"})
    assert status == 413
    assert errors_metric(metrics, "too_large") == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/xml"},
        {"Content-Type": "application/json", "Content-Encoding": "br"},
    ],
    ids=["type", "encoding"],
)
async def test_unsupported_type_or_encoding_is_415(make: Any, headers: dict[str, str]) -> None:
    """An unsupported Content-Type or Content-Encoding answers 415."""
    ingest = await make()
    status, body, _ = await ingest.post(b'{"a":1}', headers)
    assert status == 415 and "error" in body
    assert ingest.held() == []


@pytest.mark.parametrize(
    ("auth", "status"),
    [
        (None, 401),
        ("Basic abc", 401),
        ("Bearer wrong", 403),
        ("Bearer s3cret", 200),
        ("Splunk other", 200),
    ],
)
async def test_auth_tokens(make: Any, auth: str | None, status: int) -> None:
    """With auth_tokens: no or malformed header 401, unknown token 403, a known one 200."""
    ingest = await make(auth_tokens=["s3cret", "other"])
    headers = dict(JSON)
    if auth is not None:
        headers["Authorization"] = auth
    got, _, _ = await ingest.post(b'{"a":1}', headers)
    assert got == status
    assert len(ingest.held()) == (1 if status == 200 else 0)


async def test_full_buffers_answer_503_and_keep_nothing(make: Any, metrics: Metrics) -> None:
    """When a target stays full for queue_wait_secs the answer is 503 with Retry-After and
    no buffer keeps any event from the request."""
    ingest = await make(max_events=(1000, 2), queue_wait_secs=0.1, retry_after_secs=7)
    ingest.buffers[1].append(events(2))
    status, body, headers = await ingest.post(b'[{"a":1},{"a":2}]', JSON)
    assert status == 503
    assert headers["Retry-After"] == "7"
    assert "error" in body
    assert ingest.held(0) == []
    assert ingest.buffers[1].depth_events == 2
    assert errors_metric(metrics, "busy") == 1
    assert sample(metrics.registry, "forwarder_events_received_total", source="src") == 0


async def test_request_waits_for_room_within_queue_wait(make: Any) -> None:
    """A request that finds the buffer full succeeds if room frees within queue_wait_secs."""
    ingest = await make(max_events=(1,), queue_wait_secs=5)
    buffer = ingest.buffers[0]
    buffer.append(events(1))
    posting = asyncio.create_task(ingest.post(b'{"late":1}', JSON))
    await asyncio.sleep(0.1)
    assert not posting.done()
    batch = await buffer.read(10, 1 << 20, 0)
    assert batch is not None
    buffer.ack(batch)
    status, _, _ = await asyncio.wait_for(posting, 5)
    assert status == 200
    assert ingest.held() == [{"late": 1}]
