"""The splunk_hec sink with shared delivery against a strict fake HEC: every answer, no loss.

Each test asserts which events the fake indexed (exactly once unless at-least-once requires a
duplicate), what sits in the dead-letter store, and what the metrics read.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from forwarder.events import Event
from forwarder.sinks.splunk_hec import SplunkHecConfig, SplunkHecSink
from tests.fakes import FakeHec, Respond
from tests.fakes.script import SeenRequest, json_response
from tests.helpers import SinkRig, events

TOKEN = "8c0f1ab0-5a39-4b5c-9a53-3f3f0d2f6c11"
SINK = "splunk"


def poisoned(event: Any) -> bool:
    return isinstance(event, dict) and bool(event.get("poison"))


class Rig(SinkRig):
    """A sink, its delivery and dead-letter store, wired as the topology wires them."""

    def __init__(self, fake: FakeHec, tmp_path: Path, **overrides: Any) -> None:
        settings: dict[str, Any] = {
            "endpoint": fake.url,
            "token": TOKEN,
            "ack_query_interval_secs": 0.05,
        }
        settings.update(overrides)
        super().__init__(SplunkHecConfig, SplunkHecSink, SINK, tmp_path, settings)
        self.fake = fake


@pytest.fixture
async def hec() -> AsyncIterator[FakeHec]:
    async with FakeHec(tokens=[TOKEN]) as fake:
        yield fake


@pytest.fixture
async def rig(hec: FakeHec, tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(hec, tmp_path)
    await r.sink.start()
    yield r
    await r.sink.stop()


def mixed(n: int, bad: set[int]) -> list[Event]:
    """Events ``{"i": i}``, with ``poison`` set on the indexes in ``bad``."""
    out = events(n)
    for i in bad:
        out[i] = Event(orjson.dumps({"i": i, "poison": True}), "test", time.time())
    return out


# --- success ----------------------------------------------------------------------------------


async def test_batch_delivered_once_with_hec_headers(rig: Rig, hec: FakeHec) -> None:
    """Code 0: every event indexed once, in order; Splunk auth, one GUID channel, gzip."""
    await rig.delivery.deliver(events(5))
    await rig.delivery.deliver(events(5, start=5))
    assert hec.events() == [{"i": i} for i in range(10)]
    channels = {r.headers["X-Splunk-Request-Channel"] for r in hec.requests}
    assert channels == {rig.sink.channel}
    assert uuid.UUID(rig.sink.channel)
    for request in hec.requests:
        assert request.path == "/services/collector/event"
        assert request.headers["Authorization"] == f"Splunk {TOKEN}"
        assert request.headers["Content-Encoding"] == "gzip"
        assert request.raw_size < len(request.body)
    assert rig.value("forwarder_events_sent_total") == 10
    assert rig.value("forwarder_batches_total", outcome="success") == 2
    assert rig.value("forwarder_request_duration_seconds_count") == 2
    assert rig.value("forwarder_sink_up") == 1
    assert rig.dead_letters() == []


async def test_two_sinks_use_different_channels(hec: FakeHec, tmp_path: Path) -> None:
    """The request channel is random per sink instance."""
    first, second = Rig(hec, tmp_path / "a"), Rig(hec, tmp_path / "b")
    assert first.sink.channel != second.sink.channel


async def test_compression_none_sends_plain_json(hec: FakeHec, tmp_path: Path) -> None:
    """compression: none sends the envelopes as they are, without Content-Encoding."""
    r = Rig(hec, tmp_path, compression="none")
    await r.sink.start()
    try:
        await r.delivery.deliver(events(3))
    finally:
        await r.sink.stop()
    assert "Content-Encoding" not in hec.requests[0].headers
    assert hec.events() == [{"i": i} for i in range(3)]


# --- bad events -------------------------------------------------------------------------------


async def test_invalid_event_number_delivers_the_rest(rig: Rig, hec: FakeHec) -> None:
    """400 + invalid-event-number k: before k kept, k dead-lettered with the answer, rest resent."""
    hec.poison = poisoned
    bad = {3, 4, 9}
    await rig.delivery.deliver(mixed(12, bad))
    assert hec.events() == [{"i": i} for i in range(12) if i not in bad]
    letters = rig.dead_letters()
    assert [r["event"] for r in letters] == [{"i": i, "poison": True} for i in sorted(bad)]
    for record in letters:
        assert record["sink"] == SINK
        assert record["status"] == 400
        assert record["reason"] == "hec_code_6"
        answer = json.loads(record["response"])
        assert answer["code"] == 6
        assert answer["text"] == "Invalid data format"
        assert "invalid-event-number" in answer
    assert rig.value("forwarder_dead_letter_events_total") == 3
    assert rig.value("forwarder_batches_total", outcome="dead_letter") == 3
    assert rig.value("forwarder_events_sent_total") == 9
    assert rig.value("forwarder_retries_total", reason="hec_code_6") == 0
    # Resending only the tail: 12 events need exactly 4 requests (3 rejections + 1 success).
    assert len(hec.requests) == 4


class _SilentHec(FakeHec):
    """A HEC (or proxy in front of one) that answers a bad batch 400 without naming the event."""

    async def _handle_events(self, request: web.Request, seen: SeenRequest) -> web.Response:
        _, failure = self._parse(seen.body)
        if failure is not None:
            return json_response(400, {"text": "Invalid data format", "code": 6})
        return await super()._handle_events(request, seen)


async def test_400_without_index_bisects_to_the_bad_events(tmp_path: Path) -> None:
    """A 400 that names no event: halve until the bad ones are alone, dead-letter only them."""
    async with _SilentHec(tokens=[TOKEN], poison=poisoned) as fake:
        r = Rig(fake, tmp_path)
        await r.sink.start()
        try:
            bad = {0, 7, 8, 30}
            await r.delivery.deliver(mixed(32, bad))
        finally:
            await r.sink.stop()
    assert sorted(e["i"] for e in fake.events()) == [i for i in range(32) if i not in bad]
    assert len(fake.events()) == 32 - len(bad)
    assert sorted(rec["event"]["i"] for rec in r.dead_letters()) == sorted(bad)
    assert {rec["reason"] for rec in r.dead_letters()} == {"hec_code_6"}
    assert r.value("forwarder_dead_letter_events_total") == 4
    assert r.value("forwarder_batches_total", outcome="split") > 0


async def test_413_splits_and_dead_letters_an_event_too_big_alone(tmp_path: Path) -> None:
    """413: halves are resent until they fit; one event over the limit alone is dead-lettered."""
    async with FakeHec(tokens=[TOKEN], max_body_bytes=2000) as fake:
        r = Rig(fake, tmp_path)
        await r.sink.start()
        try:
            batch = [Event(orjson.dumps({"i": i, "pad": "x" * 300}), "t", 1.0) for i in range(12)]
            batch[5] = Event(orjson.dumps({"i": 5, "pad": "y" * 3000}), "t", 1.0)
            await r.delivery.deliver(batch)
        finally:
            await r.sink.stop()
    assert sorted(e["i"] for e in fake.events()) == [i for i in range(12) if i != 5]
    assert len(fake.events()) == 11
    [letter] = r.dead_letters()
    assert (letter["event"]["i"], letter["status"], letter["reason"]) == (5, 413, "http_413")
    assert r.value("forwarder_batches_total", outcome="split") >= 3
    assert r.value("forwarder_dead_letter_events_total") == 1


# --- destination down -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (403, 1),
        (401, 2),
        (401, 3),
        (403, 4),
        (400, 7),
        (400, 10),
        (400, 11),
        (401, None),
        (404, None),
    ],
)
async def test_config_errors_keep_data_and_mark_the_sink_down(
    rig: Rig, hec: FakeHec, status: int, code: int | None
) -> None:
    """401/403/404 and codes 1-4, 7, 10, 11: no dead letters, sink down, retried until fixed."""
    body: Any = {"text": "refused", "code": code} if code is not None else "Not Found"
    hec.script.always(Respond(status, body))
    task = asyncio.create_task(rig.delivery.deliver(events(4)))
    await hec.wait_until(lambda: len(hec.requests) >= 3)
    assert rig.value("forwarder_sink_up") == 0
    assert rig.delivery.last_error is not None
    hec.script.always(None)
    await asyncio.wait_for(task, 5)
    assert hec.events() == [{"i": i} for i in range(4)]
    assert rig.dead_letters() == []
    assert rig.value("forwarder_sink_up") == 1
    reason = f"hec_code_{code}" if code is not None else f"http_{status}"
    assert rig.value("forwarder_retries_total", reason=reason) == len(hec.requests) - 1
    assert rig.value("forwarder_batches_total", outcome="retry") == len(hec.requests) - 1
    assert rig.value("forwarder_batches_total", outcome="success") == 1


async def test_wrong_token_waits_until_the_token_is_accepted(rig: Rig, hec: FakeHec) -> None:
    """The fake's own auth rule (403 code 4) holds the batch until the token becomes valid."""
    hec.tokens = {"00000000-0000-0000-0000-00000000beef"}
    task = asyncio.create_task(rig.delivery.deliver(events(3)))
    await hec.wait_until(lambda: len(hec.requests) >= 2)
    assert rig.value("forwarder_sink_up") == 0
    hec.tokens.add(TOKEN)
    await asyncio.wait_for(task, 5)
    assert hec.events() == [{"i": i} for i in range(3)]
    assert rig.value("forwarder_retries_total", reason="hec_code_4") >= 1
    assert rig.dead_letters() == []


async def test_incorrect_index_is_a_config_error_not_bad_data(hec: FakeHec, tmp_path: Path) -> None:
    """Code 7 from the fake's index rule keeps the data until the index is allowed."""
    hec.allowed_indexes = {"main"}
    r = Rig(hec, tmp_path, index="audit")
    await r.sink.start()
    try:
        task = asyncio.create_task(r.delivery.deliver(events(3)))
        await hec.wait_until(lambda: len(hec.requests) >= 2)
        assert r.value("forwarder_sink_up") == 0
        hec.allowed_indexes.add("audit")
        await asyncio.wait_for(task, 5)
    finally:
        await r.sink.stop()
    assert hec.events() == [{"i": i} for i in range(3)]
    assert r.dead_letters() == []


async def test_events_before_a_refused_index_are_not_sent_twice(
    hec: FakeHec, tmp_path: Path
) -> None:
    """Code 7 naming the third event: HEC indexed the first two, so only the third and the
    rest are kept (sink down) and sent again once the index is allowed; none arrives twice."""
    hec.allowed_indexes = {"main"}
    r = Rig(hec, tmp_path, index="main")
    batch = events(4)
    batch[2].meta = {"index": "audit"}
    await r.sink.start()
    try:
        task = asyncio.create_task(r.delivery.deliver(batch))
        await hec.wait_until(lambda: len(hec.requests) >= 3)
        assert r.value("forwarder_sink_up") == 0
        assert hec.events() == [{"i": 0}, {"i": 1}]
        hec.allowed_indexes.add("audit")
        await asyncio.wait_for(task, 5)
    finally:
        await r.sink.stop()
    assert hec.events() == [{"i": i} for i in range(4)]
    assert r.value("forwarder_events_sent_total") == 4
    assert r.dead_letters() == []


# --- transient --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (408, "http_408"),
        (429, "http_429"),
        (500, "hec_code_8"),
        (502, "http_502"),
        (503, "hec_code_9"),
    ],
)
async def test_transient_statuses_are_retried(
    rig: Rig, hec: FakeHec, status: int, reason: str
) -> None:
    """408, 429, 5xx and code 9 are retried without marking the sink down; nothing is lost."""
    hec.script.respond(status, times=3)
    await rig.delivery.deliver(events(6))
    assert hec.events() == [{"i": i} for i in range(6)]
    assert rig.value("forwarder_retries_total", reason=reason) == 3
    assert rig.value("forwarder_batches_total", outcome="retry") == 3
    assert rig.value("forwarder_sink_up") == 1
    assert rig.dead_letters() == []


async def test_connection_resets_are_retried(rig: Rig, hec: FakeHec) -> None:
    """A reset without an answer is retried; the events arrive once."""
    hec.script.reset(times=2)
    await rig.delivery.deliver(events(5))
    assert hec.events() == [{"i": i} for i in range(5)]
    assert rig.value("forwarder_retries_total", reason="connection") == 2


async def test_timeouts_are_retried(hec: FakeHec, tmp_path: Path) -> None:
    """A request unanswered within timeout_secs is retried; the abandoned one indexed nothing."""
    r = Rig(
        hec,
        tmp_path,
        request={"timeout_secs": 0.3, "retry_initial_backoff_secs": 0.01},
    )
    await r.sink.start()
    try:
        hec.script.hang(3)
        await r.delivery.deliver(events(4))
    finally:
        await r.sink.stop()
    assert hec.events() == [{"i": i} for i in range(4)]
    assert r.value("forwarder_retries_total", reason="timeout") == 1


async def test_retry_after_is_honoured(rig: Rig, hec: FakeHec) -> None:
    """A 503 with Retry-After: 1 delays the next attempt by about a second, not the backoff."""
    hec.script.respond(503, retry_after=1)
    start = time.monotonic()
    await rig.delivery.deliver(events(2))
    assert time.monotonic() - start >= 0.9
    assert hec.events() == [{"i": 0}, {"i": 1}]


async def test_retry_after_is_capped(hec: FakeHec, tmp_path: Path) -> None:
    """retry_after_max_secs bounds how long a Retry-After may hold the batch."""
    r = Rig(
        hec,
        tmp_path,
        request={"retry_initial_backoff_secs": 0.01, "retry_after_max_secs": 0.1},
    )
    await r.sink.start()
    try:
        hec.script.respond(429, retry_after=3600)
        await asyncio.wait_for(r.delivery.deliver(events(2)), 5)
    finally:
        await r.sink.stop()
    assert hec.events() == [{"i": 0}, {"i": 1}]


# --- indexer acknowledgements -----------------------------------------------------------------


async def test_acked_batch_counts_only_once_indexed(tmp_path: Path) -> None:
    """With acks on, delivery waits until /ack reports the batch's ackId true."""
    async with FakeHec(tokens=[TOKEN], acks=True, ack_delay_secs=None) as fake:
        r = Rig(fake, tmp_path, indexer_acknowledgements=True)
        await r.sink.start()
        try:
            task = asyncio.create_task(r.delivery.deliver(events(3)))
            await fake.wait_until(lambda: sum(q.path.endswith("/ack") for q in fake.requests) >= 2)
            assert not task.done()
            assert r.value("forwarder_events_sent_total") == 0
            fake.release_acks()
            await asyncio.wait_for(task, 5)
        finally:
            await r.sink.stop()
    assert fake.events() == [{"i": i} for i in range(3)]
    assert r.value("forwarder_events_sent_total") == 3
    assert r.value("forwarder_batches_total", outcome="success") == 1
    polls = [json.loads(q.body) for q in fake.requests if q.path.endswith("/ack")]
    assert all(poll == {"acks": [0]} for poll in polls)
    assert fake.unacked() == 0


async def test_ack_timeout_resends_and_counts_a_retry(tmp_path: Path) -> None:
    """An ackId still false after ack_timeout_secs: the batch is resent (a counted duplicate)."""
    async with FakeHec(tokens=[TOKEN], acks=True, ack_delay_secs=None) as fake:
        r = Rig(fake, tmp_path, indexer_acknowledgements=True, ack_timeout_secs=0.3)
        await r.sink.start()
        try:
            task = asyncio.create_task(r.delivery.deliver(events(2)))
            await fake.wait_until(lambda: len(fake.accepted) == 2)
            fake.ack_delay_secs = 0.0  # the resent batch's ack reads true
            await asyncio.wait_for(task, 5)
        finally:
            await r.sink.stop()
    # At-least-once: the first copy was indexed but never acknowledged, so it is sent again.
    assert fake.events() == [{"i": 0}, {"i": 1}] * 2
    assert r.value("forwarder_retries_total", reason="ack_timeout") == 1
    assert r.value("forwarder_events_sent_total") == 2


async def test_ack_disabled_code_14_treats_200_as_delivered(tmp_path: Path) -> None:
    """/ack answering code 14 means acks are off: the batch is delivered, /ack not polled again."""
    async with FakeHec(tokens=[TOKEN], acks=True, ack_delay_secs=None) as fake:
        fake.ack_script.always(Respond(400, {"text": "ACK is disabled", "code": 14}))
        r = Rig(fake, tmp_path, indexer_acknowledgements=True)
        await r.sink.start()
        try:
            await asyncio.wait_for(r.delivery.deliver(events(2)), 5)
            await asyncio.wait_for(r.delivery.deliver(events(2, start=2)), 5)
        finally:
            await r.sink.stop()
    assert fake.events() == [{"i": i} for i in range(4)]
    assert sum(q.path.endswith("/ack") for q in fake.requests) == 1
    assert r.value("forwarder_events_sent_total") == 4


async def test_concurrent_batches_share_one_ack_poll(tmp_path: Path) -> None:
    """Outstanding ackIds of concurrent batches are asked about in one /ack request."""
    async with FakeHec(tokens=[TOKEN], acks=True, ack_delay_secs=None) as fake:
        r = Rig(fake, tmp_path, indexer_acknowledgements=True)
        await r.sink.start()
        try:
            tasks = [asyncio.create_task(r.delivery.deliver(events(2, start=s))) for s in (0, 2, 4)]
            await fake.wait_until(lambda: fake.unacked() == 3)
            await fake.wait_until(
                lambda: any(
                    json.loads(q.body) == {"acks": [0, 1, 2]}
                    for q in fake.requests
                    if q.path.endswith("/ack")
                )
            )
            fake.release_acks()
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
        finally:
            await r.sink.stop()
    assert sorted(e["i"] for e in fake.events()) == list(range(6))
    assert r.value("forwarder_events_sent_total") == 6


# --- healthcheck ------------------------------------------------------------------------------


async def test_healthcheck_reports_healthy_and_unhealthy(rig: Rig, hec: FakeHec) -> None:
    """GET /services/collector/health: None when 200, else what HEC said; never raises."""
    assert await rig.sink.healthcheck() is None
    hec.health_script.respond(503, {"text": "HEC is unhealthy, queues are full", "code": 18})
    problem = await rig.sink.healthcheck()
    assert problem is not None and "503" in problem and "queues are full" in problem
    assert [q.path for q in hec.requests] == ["/services/collector/health"] * 2


async def test_healthcheck_on_an_unreachable_endpoint_reports(tmp_path: Path) -> None:
    """A closed port is reported as a problem, not raised."""
    async with FakeHec(tokens=[TOKEN]) as fake:
        pass  # stopped: its port now refuses connections
    r = Rig(fake, tmp_path)
    await r.sink.start()
    try:
        problem = await asyncio.wait_for(r.sink.healthcheck(), 5)
    finally:
        await r.sink.stop()
    assert problem is not None


# --- everything at once -----------------------------------------------------------------------


async def test_poison_and_random_503s_lose_nothing(tmp_path: Path) -> None:
    """1 in 100 events rejected, 30% of requests 503: all others arrive exactly once."""
    async with FakeHec(tokens=[TOKEN], poison=poisoned, seed=7) as fake:
        fake.script.fail_randomly(0.3)
        r = Rig(fake, tmp_path)
        await r.sink.start()
        try:
            bad = set(range(50, 3000, 100))
            batch = mixed(3000, bad)
            await asyncio.gather(
                *(r.delivery.deliver(batch[s : s + 250]) for s in range(0, 3000, 250))
            )
        finally:
            await r.sink.stop()
    got = [e["i"] for e in fake.events()]
    assert sorted(got) == [i for i in range(3000) if i not in bad]
    assert len(got) == len(set(got))
    assert sorted(rec["event"]["i"] for rec in r.dead_letters()) == sorted(bad)
    assert r.value("forwarder_dead_letter_events_total") == len(bad)
    assert r.value("forwarder_events_sent_total") == 3000 - len(bad)
    assert r.value("forwarder_retries_total", reason="hec_code_9") > 0
