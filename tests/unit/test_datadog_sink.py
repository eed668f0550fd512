"""The datadog_logs sink with shared delivery against a strict fake intake: every answer, no loss.

Each test asserts which logs the fake accepted, what sits in the dead-letter store and what the
metrics read.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.batching import Batcher
from forwarder.buffers.memory import MemoryBuffer
from forwarder.config import BatchConfig, ConfigError, build
from forwarder.events import Event, object_time
from forwarder.sinks.datadog_logs import DatadogLogsConfig, DatadogLogsSink
from tests.fakes import FakeDatadog, Respond
from tests.helpers import SinkRig, events, wait_for

KEY = "5f2d0c8e9b7a41f3a6e2d1c0b9a8f7e6"
SINK = "datadog"
RECEIVED = 1_733_300_000.25


def poisoned(log: dict[str, Any]) -> bool:
    return bool(log.get("poison"))


class Rig(SinkRig):
    """A sink, its delivery and dead-letter store, wired as the topology wires them."""

    def __init__(self, fake: FakeDatadog, tmp_path: Path, **overrides: Any) -> None:
        settings: dict[str, Any] = {
            "endpoint": f"{fake.url}/api/v2/logs",
            "api_key": KEY,
        }
        settings.update(overrides)
        super().__init__(DatadogLogsConfig, DatadogLogsSink, SINK, tmp_path, settings)


@pytest.fixture
async def dd() -> AsyncIterator[FakeDatadog]:
    async with FakeDatadog(api_keys=[KEY]) as fake:
        yield fake


@pytest.fixture
async def rig(dd: FakeDatadog, tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(dd, tmp_path)
    await r.sink.start()
    yield r
    await r.sink.stop()


def ingested(obj: dict[str, Any]) -> Event:
    """An event as a source builds it: compact bytes, receive time, its own time if any."""
    return Event(orjson.dumps(obj), "tcp", RECEIVED, None, None, object_time(obj))


def mixed(n: int, bad: set[int]) -> list[Event]:
    out = events(n)
    for i in bad:
        out[i] = Event(orjson.dumps({"i": i, "poison": True}), "test", time.time())
    return out


def indexes(fake: FakeDatadog) -> list[int]:
    return [log["i"] for log in fake.accepted]


# --- encoding ---------------------------------------------------------------------------------


async def test_log_objects_keep_fields_and_add_reserved_attributes(
    dd: FakeDatadog, tmp_path: Path
) -> None:
    """Fields kept; ddsource, service, hostname, comma-joined ddtags, status, ms timestamp."""
    r = Rig(dd, tmp_path, source="forwarder", service="audit", tags=["env:prod", "team:sec"])
    await r.sink.start()
    try:
        await r.delivery.deliver(
            [
                ingested(
                    {"message": "login", "user": "alice", "severity": "warning", "timestamp": 5}
                ),
                ingested({"action": "delete", "level": "error", "host": "app-3"}),
            ]
        )
    finally:
        await r.sink.stop()
    first, second = dd.accepted
    assert first == {
        "message": "login",
        "user": "alice",
        "severity": "warning",
        "status": "warning",
        "ddsource": "forwarder",
        "service": "audit",
        "hostname": socket.gethostname(),
        "ddtags": "env:prod,team:sec",
        "timestamp": 5000,
    }
    assert second["message"] == json.dumps(
        {"action": "delete", "level": "error", "host": "app-3"}, separators=(",", ":")
    )
    assert (second["status"], second["hostname"]) == ("error", "app-3")
    assert second["timestamp"] == int(RECEIVED * 1000)
    [request] = dd.requests
    assert request.path == "/api/v2/logs"
    assert request.headers["DD-API-KEY"] == KEY
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.raw_size < len(request.body)


async def test_message_field_and_timestamp_field(dd: FakeDatadog, tmp_path: Path) -> None:
    """message_field picks the message; timestamp_field picks the time (RFC 3339 here)."""
    r = Rig(dd, tmp_path, message_field="msg", timestamp_field="at", hostname="fwd-1")
    await r.sink.start()
    try:
        await r.delivery.deliver(
            [
                ingested({"msg": "hello", "at": "2024-12-04T08:13:20.5Z", "timestamp": 7}),
                ingested({"other": 1, "host": "app"}),
            ]
        )
    finally:
        await r.sink.stop()
    first, second = dd.accepted
    assert (first["message"], first["timestamp"], first["hostname"]) == (
        "hello",
        1_733_300_000_500,
        "fwd-1",
    )
    assert second["message"] == '{"other":1,"host":"app"}'
    assert (second["timestamp"], second["hostname"]) == (int(RECEIVED * 1000), "fwd-1")


def test_site_maps_to_the_intake_and_endpoint_overrides() -> None:
    """site -> https://http-intake.logs.<site>/api/v2/logs; endpoint wins; unknown sites fail."""
    eu = DatadogLogsSink(SINK, DatadogLogsConfig(api_key=KEY, site="datadoghq.eu"))
    assert eu.url == "https://http-intake.logs.datadoghq.eu/api/v2/logs"
    default = DatadogLogsSink(SINK, DatadogLogsConfig(api_key=KEY))
    assert default.url == "https://http-intake.logs.datadoghq.com/api/v2/logs"
    proxy = DatadogLogsSink(
        SINK, DatadogLogsConfig(api_key=KEY, site="nowhere", endpoint="http://127.0.0.1:1/x")
    )
    assert proxy.url == "http://127.0.0.1:1/x"
    with pytest.raises(ConfigError) as caught:
        build({"sinks": {"dd": {"type": "datadog_logs", "api_key": KEY, "site": "nowhere"}}})
    assert any(line.startswith("sinks.dd.site:") for line in caught.value.errors)


async def test_batches_never_exceed_the_intake_limits(dd: FakeDatadog, tmp_path: Path) -> None:
    """Config asking for more than 1000 entries / 4,250,000 bytes is held to the intake's."""
    r = Rig(dd, tmp_path)
    buffer = MemoryBuffer(SINK, max_events=10_000, max_bytes=1 << 30)
    batch = BatchConfig(max_events=5000, max_bytes=50_000_000, timeout_secs=0.05)
    batcher = Batcher(buffer, r.delivery, batch, 2)
    pad = "p" * 2000
    await r.sink.start()
    await batcher.start()
    try:
        buffer.append([ingested({"i": i, "message": "m", "pad": pad}) for i in range(2500)])
        await wait_for(lambda: len(dd.accepted) == 2500, timeout_secs=20)
    finally:
        await batcher.stop()
        await r.sink.stop()
    assert indexes(dd) == list(range(2500))
    assert {q.status for q in dd.requests} == {202}
    assert all(len(json.loads(q.body)) <= 1000 for q in dd.requests)
    assert all(len(q.body) <= 4_250_000 for q in dd.requests)


async def test_encoded_size_counts_the_copied_message(dd: FakeDatadog, tmp_path: Path) -> None:
    """Logs without a message carry their JSON text twice; requests still stay under 4.25 MB."""
    r = Rig(dd, tmp_path)
    await r.sink.start()
    try:
        pad = "q" * 5000
        await r.delivery.deliver([ingested({"i": i, "pad": pad}) for i in range(800)])
    finally:
        await r.sink.stop()
    assert sorted(indexes(dd)) == list(range(800))
    assert len(dd.accepted) == 800
    assert all(len(q.body) <= 4_250_000 for q in dd.requests)
    assert 413 not in {q.status for q in dd.requests}


# --- too large --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        {"i": 1, "message": "m" * 1_000_001},
        # No message: the log carries the event's JSON text as its message, doubling its size.
        {"i": 1, "pad": "z" * 600_000},
    ],
    ids=["raw-over-1MB", "encoded-over-1MB"],
)
async def test_log_over_1mb_is_dead_lettered_not_truncated(
    rig: Rig, dd: FakeDatadog, obj: dict[str, Any]
) -> None:
    """An event whose encoded log exceeds 1,000,000 bytes goes to dead letters as too_large."""
    await rig.delivery.deliver([ingested({"i": 0}), ingested(obj), ingested({"i": 2})])
    assert indexes(dd) == [0, 2]
    assert dd.oversized == 0
    [letter] = rig.dead_letters()
    assert (letter["event"], letter["reason"], letter["status"]) == (obj, "too_large", None)
    assert rig.value("forwarder_dead_letter_events_total") == 1
    assert rig.value("forwarder_events_sent_total") == 2


async def test_a_log_just_under_1mb_is_sent(rig: Rig, dd: FakeDatadog) -> None:
    """The limit is not applied early: a 990 kB log with a message goes through."""
    obj = {"i": 0, "message": "m" * 990_000}
    await rig.delivery.deliver([ingested(obj)])
    assert indexes(dd) == [0]
    assert rig.dead_letters() == []


# --- answers ----------------------------------------------------------------------------------


async def test_202_is_delivered(rig: Rig, dd: FakeDatadog) -> None:
    """202: every log accepted once; one success batch."""
    await rig.delivery.deliver(events(7))
    assert indexes(dd) == list(range(7))
    assert rig.value("forwarder_batches_total", outcome="success") == 1
    assert rig.value("forwarder_events_sent_total") == 7
    assert rig.value("forwarder_request_duration_seconds_count") == 1


async def test_400_bisects_and_dead_letters_only_poison(dd: FakeDatadog, rig: Rig) -> None:
    """400 refuses the whole payload: bisect until each bad log is alone, dead-letter it."""
    dd.poison = poisoned
    bad = {0, 5, 6, 19}
    await rig.delivery.deliver(mixed(20, bad))
    assert sorted(indexes(dd)) == [i for i in range(20) if i not in bad]
    assert len(dd.accepted) == 20 - len(bad)
    letters = rig.dead_letters()
    assert sorted(r["event"]["i"] for r in letters) == sorted(bad)
    for record in letters:
        assert (record["sink"], record["status"], record["reason"]) == (SINK, 400, "http_400")
        assert json.loads(record["response"]) == {"errors": ["Bad Request"]}
        assert record["time"]
    assert rig.value("forwarder_dead_letter_events_total") == 4
    assert rig.value("forwarder_batches_total", outcome="split") > 0
    assert rig.value("forwarder_retries_total", reason="http_400") == 0


async def test_413_splits(tmp_path: Path) -> None:
    """413 (here: over the fake's entry limit) halves the batch until each half is accepted."""
    async with FakeDatadog(api_keys=[KEY], max_entries=3) as fake:
        r = Rig(fake, tmp_path)
        await r.sink.start()
        try:
            await r.delivery.deliver(events(10))
        finally:
            await r.sink.stop()
    assert sorted(indexes(fake)) == list(range(10))
    assert len(fake.accepted) == 10
    assert r.value("forwarder_batches_total", outcome="split") >= 3
    assert r.dead_letters() == []


@pytest.mark.parametrize("status", [401, 403])
async def test_key_problems_keep_data_and_mark_the_sink_down(
    rig: Rig, dd: FakeDatadog, status: int
) -> None:
    """401/403: nothing dead-lettered, sink down while refused, delivered once the key works."""
    dd.script.always(Respond(status))
    task = asyncio.create_task(rig.delivery.deliver(events(3)))
    await dd.wait_until(lambda: len(dd.requests) >= 3)
    assert rig.value("forwarder_sink_up") == 0
    dd.script.always(None)
    await asyncio.wait_for(task, 5)
    assert indexes(dd) == [0, 1, 2]
    assert rig.dead_letters() == []
    assert rig.value("forwarder_sink_up") == 1
    assert rig.value("forwarder_retries_total", reason=f"http_{status}") == len(dd.requests) - 1


async def test_unknown_key_by_the_intake_rule(dd: FakeDatadog, rig: Rig) -> None:
    """The fake's own key check (403) holds the data until the key is accepted."""
    dd.api_keys = {"someone-else"}
    task = asyncio.create_task(rig.delivery.deliver(events(2)))
    await dd.wait_until(lambda: len(dd.requests) >= 2)
    assert rig.value("forwarder_sink_up") == 0
    dd.api_keys.add(KEY)
    await asyncio.wait_for(task, 5)
    assert indexes(dd) == [0, 1]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
async def test_transient_statuses_are_retried(rig: Rig, dd: FakeDatadog, status: int) -> None:
    """408, 429, 5xx: retried with backoff; the sink stays up; nothing lost or doubled."""
    dd.script.respond(status, times=2)
    await rig.delivery.deliver(events(4))
    assert indexes(dd) == [0, 1, 2, 3]
    assert rig.value("forwarder_retries_total", reason=f"http_{status}") == 2
    assert rig.value("forwarder_sink_up") == 1


async def test_network_errors_are_retried(dd: FakeDatadog, tmp_path: Path) -> None:
    """Resets and timeouts are retried; the abandoned request accepted nothing."""
    r = Rig(dd, tmp_path, request={"timeout_secs": 0.3, "retry_initial_backoff_secs": 0.01})
    await r.sink.start()
    try:
        dd.script.reset()
        dd.script.hang(3)
        await r.delivery.deliver(events(3))
    finally:
        await r.sink.stop()
    assert indexes(dd) == [0, 1, 2]
    assert r.value("forwarder_retries_total", reason="connection") == 1
    assert r.value("forwarder_retries_total", reason="timeout") == 1


async def test_retry_after_is_honoured(rig: Rig, dd: FakeDatadog) -> None:
    """A 429 with Retry-After: 1 delays the next attempt by about a second."""
    dd.script.respond(429, retry_after=1)
    start = time.monotonic()
    await rig.delivery.deliver(events(2))
    assert time.monotonic() - start >= 0.9
    assert indexes(dd) == [0, 1]


async def test_poison_and_random_503s_lose_nothing(tmp_path: Path) -> None:
    """1 in 100 logs poison, 30% of requests 503: every other log arrives exactly once."""
    async with FakeDatadog(api_keys=[KEY], poison=poisoned, seed=11) as fake:
        fake.script.fail_randomly(0.3)
        r = Rig(fake, tmp_path)
        await r.sink.start()
        try:
            bad = set(range(25, 3000, 100))
            batch = mixed(3000, bad)
            await asyncio.gather(
                *(r.delivery.deliver(batch[s : s + 500]) for s in range(0, 3000, 500))
            )
        finally:
            await r.sink.stop()
    got = indexes(fake)
    assert sorted(got) == [i for i in range(3000) if i not in bad]
    assert len(got) == len(set(got))
    assert sorted(rec["event"]["i"] for rec in r.dead_letters()) == sorted(bad)
    assert r.value("forwarder_dead_letter_events_total") == len(bad)
    assert r.value("forwarder_events_sent_total") == 3000 - len(bad)
    assert r.value("forwarder_retries_total", reason="http_503") > 0
