"""The fake SIEMs follow the vendor rules of PROTOCOLS.md and play their scripts."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes import FakeDatadog, FakeHec, Hang, Reset, Respond

TOKEN = "11111111-2222-3333-4444-555555555555"
DD_KEY = "abcdefabcdefabcdefabcdefabcdef00"
AUTH = {"Authorization": f"Splunk {TOKEN}"}


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def hec() -> AsyncIterator[FakeHec]:
    async with FakeHec(tokens=[TOKEN]) as fake:
        yield fake


@pytest.fixture
async def dd() -> AsyncIterator[FakeDatadog]:
    async with FakeDatadog(api_keys=[DD_KEY]) as fake:
        yield fake


def envelopes(*events: Any, **extra: Any) -> bytes:
    return b"\n".join(json.dumps({"event": event, **extra}).encode() for event in events)


async def post(
    client: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    timeout_secs: float = 10.0,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with client.post(
        url,
        data=body,
        headers=AUTH if headers is None else headers,
        timeout=aiohttp.ClientTimeout(total=timeout_secs),
    ) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None), response


# --- Splunk HEC -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/services/collector", "/services/collector/event", "/services/collector/event/1.0"]
)
async def test_hec_accepts_concatenated_objects_on_every_event_route(
    hec: FakeHec, client: aiohttp.ClientSession, path: str
) -> None:
    """Objects back to back, with or without whitespace between, are indexed whole and in order."""
    first = {"time": 1733300000.123, "host": "h1", "index": "audit", "event": {"n": 1}}
    second = {"time": 1733300001, "sourcetype": "_json", "event": "two"}
    body = json.dumps(first).encode() + json.dumps(second).encode() + b"\n \r\n"
    status, answer, _ = await post(client, hec.url + path, body)
    assert (status, answer) == (200, {"text": "Success", "code": 0})
    assert hec.accepted == [first, second]
    assert hec.events() == [{"n": 1}, "two"]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, 2),
        ({"Authorization": ""}, 401, 2),
        ({"Authorization": f"Bearer {TOKEN}"}, 401, 3),
        ({"Authorization": "Splunk"}, 401, 3),
        ({"Authorization": "Splunk 99999999-2222-3333-4444-555555555555"}, 403, 4),
    ],
)
async def test_hec_refuses_bad_authorization(
    hec: FakeHec, client: aiohttp.ClientSession, headers: dict[str, str], status: int, code: int
) -> None:
    """Missing token is 401/2, malformed header 401/3, unknown token 403/4; nothing is indexed."""
    got, answer, _ = await post(
        client, hec.url + "/services/collector/event", envelopes(1), headers
    )
    assert (got, answer["code"]) == (status, code)
    assert hec.accepted == []


async def test_hec_accepts_gzip_and_records_wire_size(
    hec: FakeHec, client: aiohttp.ClientSession
) -> None:
    """A gzip body is decompressed; the record keeps both the wire size and the plain body."""
    body = envelopes(*[{"user": "alice", "action": "login"}] * 200)
    packed = gzip.compress(body)
    headers = {**AUTH, "Content-Encoding": "gzip"}
    status, _, _ = await post(client, hec.url + "/services/collector/event", packed, headers)
    assert status == 200
    assert len(hec.accepted) == 200
    assert (hec.requests[0].raw_size, hec.requests[0].body) == (len(packed), body)
    assert hec.requests[0].headers["Content-Encoding"] == "gzip"


async def test_hec_refuses_other_encodings(hec: FakeHec, client: aiohttp.ClientSession) -> None:
    """Deflate is not HEC's: 415 and nothing indexed."""
    headers = {**AUTH, "Content-Encoding": "deflate"}
    status, _, _ = await post(
        client, hec.url + "/services/collector", zlib.compress(envelopes(1)), headers
    )
    assert status == 415
    assert hec.accepted == []


@pytest.mark.parametrize("body", [b"", b" \n\t\r\n"])
async def test_hec_empty_body_is_no_data(
    hec: FakeHec, client: aiohttp.ClientSession, body: bytes
) -> None:
    """An empty or blank body answers 400 code 5."""
    status, answer, _ = await post(client, hec.url + "/services/collector", body)
    assert (status, answer) == (400, {"text": "No data", "code": 5})


BAD_OBJECTS = [
    (b'{"event": "x"', 6),
    (b"[1, 2]", 6),
    (b'"just a string"', 6),
    (b'{"host": "h1"}', 12),
    (b'{"event": ""}', 13),
    (b'{"event": {}}', 13),
    (b'{"event": null}', 13),
    (b'{"event": {"poison": true}}', 6),
    (b'{"event": "x", "fields": {"a": {"b": 1}}}', 15),
    (b'{"event": "x", "fields": {"a": [{"b": 1}]}}', 15),
    (b'{"event": "x", "fields": ["a"]}', 15),
    (b'{"event": "x", "index": "main"}', 7),
    (b'{"event": "x", "time": "1733300000"}', 6),
    (b'{"event": "x", "time": 1.7333E9}', 6),
    (b'{"event": "x", "time": true}', 6),
]


@pytest.mark.parametrize(("bad", "code"), BAD_OBJECTS)
async def test_hec_indexes_objects_before_the_first_bad_one(
    client: aiohttp.ClientSession, bad: bytes, code: int
) -> None:
    """Objects 0..k-1 are indexed, k and after are not; the 400 names k and the reason code."""
    async with FakeHec(
        tokens=[TOKEN],
        allowed_indexes=["audit"],
        poison=lambda ev: isinstance(ev, dict) and ev.get("poison"),
    ) as hec:
        good = envelopes({"n": 0}, {"n": 1}, index="audit", time=1733300000.5)
        body = good + b"\n" + bad + b"\n" + envelopes({"n": 3})
        status, answer, _ = await post(client, hec.url + "/services/collector/event", body)
        assert status == 400
        assert answer["code"] == code
        assert answer["invalid-event-number"] == 2
        assert hec.events() == [{"n": 0}, {"n": 1}]
        assert hec.requests[0].accepted == 2


async def test_hec_poison_rejects_one_in_n(client: aiohttp.ClientSession) -> None:
    """With a poison predicate the fake refuses exactly the marked event, wherever it sits."""
    async with FakeHec(tokens=[TOKEN], poison=lambda ev: ev["n"] % 10 == 7) as hec:
        body = envelopes(*[{"n": n} for n in range(30)])
        status, answer, _ = await post(client, hec.url + "/services/collector/event", body)
        assert (status, answer["code"], answer["invalid-event-number"]) == (400, 6, 7)
        assert [ev["n"] for ev in hec.events()] == list(range(7))


async def test_hec_acks_require_a_guid_channel(client: aiohttp.ClientSession) -> None:
    """With acks on, a missing channel is 400 code 10 and a non-GUID one 400 code 11."""
    async with FakeHec(tokens=[TOKEN], acks=True) as hec:
        url = hec.url + "/services/collector/event"
        status, answer, _ = await post(client, url, envelopes(1))
        assert (status, answer["code"]) == (400, 10)
        headers = {**AUTH, "X-Splunk-Request-Channel": "not-a-guid"}
        status, answer, _ = await post(client, url, envelopes(1), headers)
        assert (status, answer["code"]) == (400, 11)
        assert hec.accepted == []


async def test_hec_ack_flow(client: aiohttp.ClientSession) -> None:
    """Ack ids count from 0 per channel, read true once indexed, and are then forgotten."""
    async with FakeHec(tokens=[TOKEN], acks=True) as hec:
        url = hec.url + "/services/collector/event"
        one = {**AUTH, "X-Splunk-Request-Channel": str(uuid.uuid4())}
        two = {**AUTH, "X-Splunk-Request-Channel": str(uuid.uuid4())}
        ids = [
            (await post(client, url, envelopes(n), h))[1]["ackId"]
            for n, h in enumerate([one, one, two])
        ]
        assert ids == [0, 1, 0]
        poll = json.dumps({"acks": [0, 1, 5]}).encode()
        ack_url = hec.url + "/services/collector/ack"
        status, answer, _ = await post(client, ack_url, poll, one)
        assert (status, answer) == (200, {"acks": {"0": True, "1": True, "5": False}})
        _, answer, _ = await post(client, ack_url, poll, one)
        assert answer == {"acks": {"0": False, "1": False, "5": False}}
        assert hec.unacked() == 1


async def test_hec_ack_delay_and_never(client: aiohttp.ClientSession) -> None:
    """An ack turns true only after ack_delay_secs; with None it stays false until released."""
    async with FakeHec(tokens=[TOKEN], acks=True, ack_delay_secs=0.3) as hec:
        headers = {**AUTH, "X-Splunk-Request-Channel": str(uuid.uuid4())}
        url, ack_url = hec.url + "/services/collector", hec.url + "/services/collector/ack"
        await post(client, url, envelopes(1), headers)
        hec.ack_delay_secs = None
        await post(client, url, envelopes(2), headers)
        poll = json.dumps({"acks": [0, 1]}).encode()
        assert (await post(client, ack_url, poll, headers))[1]["acks"] == {"0": False, "1": False}
        await asyncio.sleep(0.4)
        assert (await post(client, ack_url, poll, headers))[1]["acks"] == {"0": True, "1": False}
        hec.release_acks()
        assert (await post(client, ack_url, poll, headers))[1]["acks"] == {"0": False, "1": True}


async def test_hec_acks_off(hec: FakeHec, client: aiohttp.ClientSession) -> None:
    """With acks off, success carries no ackId and /ack answers 400 code 14."""
    status, answer, _ = await post(client, hec.url + "/services/collector", envelopes(1))
    assert (status, answer) == (200, {"text": "Success", "code": 0})
    poll = json.dumps({"acks": [0]}).encode()
    status, answer, _ = await post(client, hec.url + "/services/collector/ack", poll)
    assert (status, answer["code"]) == (400, 14)


async def test_hec_health_and_its_script(hec: FakeHec, client: aiohttp.ClientSession) -> None:
    """/health answers code 17, and its own script can make it fail without touching events."""
    url = hec.url + "/services/collector/health"
    async with client.get(url) as response:
        assert (response.status, await response.json()) == (
            200,
            {"text": "HEC is healthy", "code": 17},
        )
    hec.health_script.respond(503, {"text": "HEC is unhealthy, queues are full", "code": 18})
    async with client.get(url) as response:
        assert (response.status, (await response.json())["code"]) == (503, 18)
    status, _, _ = await post(client, hec.url + "/services/collector", envelopes(1))
    assert status == 200


async def test_hec_max_body_bytes(client: aiohttp.ClientSession) -> None:
    """A body above max_body_bytes after decompression is 413 and nothing is indexed."""
    async with FakeHec(tokens=[TOKEN], max_body_bytes=1000) as hec:
        body = envelopes(*["x" * 50] * 30)
        headers = {**AUTH, "Content-Encoding": "gzip"}
        packed = gzip.compress(body)
        assert len(packed) < 1000 < len(body)
        status, _, _ = await post(client, hec.url + "/services/collector", packed, headers)
        assert status == 413
        assert hec.accepted == []


# --- Scripting (shared by both fakes) ---------------------------------------------------------


async def test_planned_status_with_retry_after_then_normal(
    hec: FakeHec, client: aiohttp.ClientSession
) -> None:
    """A planned 503 carries Retry-After and HEC's busy body, indexes nothing, and is used once."""
    hec.script.respond(503, retry_after=7)
    url = hec.url + "/services/collector/event"
    headers = {**AUTH, "Content-Encoding": "gzip"}
    status, answer, response = await post(client, url, gzip.compress(envelopes(1)), headers)
    assert (status, answer, response.headers["Retry-After"]) == (
        503,
        {"text": "Server is busy", "code": 9},
        "7",
    )
    assert hec.accepted == []
    status, _, response = await post(client, url, envelopes(1))
    assert status == 200
    assert "Retry-After" not in response.headers
    assert [seen.status for seen in hec.requests] == [503, 200]
    assert hec.requests[0].body == envelopes(1)


@pytest.mark.parametrize("status", [429, 500, 401, 403, 404, 413])
async def test_planned_statuses_take_precedence_over_vendor_rules(
    hec: FakeHec, client: aiohttp.ClientSession, status: int
) -> None:
    """A planned status is answered even to a valid request, with the given body."""
    hec.script.plan(Respond(status, {"text": "scripted", "code": 99}))
    got, answer, _ = await post(client, hec.url + "/services/collector", envelopes(1))
    assert (got, answer) == (status, {"text": "scripted", "code": 99})
    assert hec.accepted == []


async def test_reset_closes_without_an_answer(hec: FakeHec, client: aiohttp.ClientSession) -> None:
    """A reset fails the client's request with a connection error and indexes nothing."""
    hec.script.plan(Reset())
    url = hec.url + "/services/collector"
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(client, url, envelopes(1))
    assert hec.accepted == []
    assert (hec.requests[0].status, hec.requests[0].done) == (None, True)
    assert (await post(client, url, envelopes(2)))[0] == 200
    assert hec.events() == [2]


async def test_hang_outlived_by_the_client_indexes_nothing(
    hec: FakeHec, client: aiohttp.ClientSession
) -> None:
    """A client that times out during a hang gets nothing indexed once the hang ends."""
    hec.script.hang(0.5)
    with pytest.raises(TimeoutError):
        await post(client, hec.url + "/services/collector", envelopes(1), timeout_secs=0.1)
    await hec.wait_until(lambda: hec.requests[0].done)
    assert (hec.requests[0].status, hec.accepted) == (None, [])


async def test_hang_shorter_than_the_timeout_is_a_slow_success(
    hec: FakeHec, client: aiohttp.ClientSession
) -> None:
    """A client that waits out the hang gets the normal answer."""
    hec.script.plan(Hang(0.2))
    status, _, _ = await post(client, hec.url + "/services/collector", envelopes(1))
    assert (status, hec.events()) == (200, [1])


async def test_always_rule_until_cleared(hec: FakeHec, client: aiohttp.ClientSession) -> None:
    """An always-on rule answers every request; planned steps come first; None turns it off."""
    hec.script.always(Respond(500))
    hec.script.respond(404)
    url = hec.url + "/services/collector"
    statuses = [(await post(client, url, envelopes(n)))[0] for n in range(3)]
    assert statuses == [404, 500, 500]
    hec.script.always(None)
    assert (await post(client, url, envelopes(3)))[0] == 200
    assert hec.events() == [3]


async def random_statuses(client: aiohttp.ClientSession, seed: int) -> list[int]:
    async with FakeHec(tokens=[TOKEN], seed=seed) as hec:
        hec.script.fail_randomly(0.3, Respond(503, retry_after=1))
        url = hec.url + "/services/collector"
        statuses = [(await post(client, url, envelopes(n)))[0] for n in range(200)]
        assert len(hec.accepted) == statuses.count(200)
        return statuses


async def test_random_failures_follow_the_rate_and_the_seed(
    client: aiohttp.ClientSession,
) -> None:
    """About 30% of requests fail, and the same seed fails the same requests."""
    first = await random_statuses(client, seed=42)
    assert set(first) == {200, 503}
    assert 30 <= first.count(503) <= 90
    assert await random_statuses(client, seed=42) == first
    assert await random_statuses(client, seed=43) != first


async def test_stall_holds_requests_until_released(
    hec: FakeHec, client: aiohttp.ClientSession
) -> None:
    """While stalled, requests are recorded but unanswered; release lets them all through."""
    hec.script.stall()
    url = hec.url + "/services/collector"
    sends = [asyncio.create_task(post(client, url, envelopes(n))) for n in range(3)]
    await hec.wait_until(lambda: hec.script.held == 3)
    assert len(hec.requests) == 3
    assert not any(send.done() for send in sends)
    assert hec.accepted == []
    hec.script.release()
    assert [status for status, _, _ in await asyncio.gather(*sends)] == [200, 200, 200]
    assert sorted(hec.events()) == [0, 1, 2]


async def test_stop_is_idempotent_and_frees_held_requests(
    client: aiohttp.ClientSession,
) -> None:
    """stop() works without start(), twice, and does not wait for a stalled request."""
    hec = FakeHec(tokens=[TOKEN])
    await hec.stop()
    await hec.start()
    hec.script.stall()
    send = asyncio.create_task(post(client, hec.url + "/services/collector", envelopes(1)))
    await hec.wait_until(lambda: hec.script.held == 1)
    async with asyncio.timeout(3):
        await hec.stop()
    await hec.stop()
    # Released at stop, the request either got its answer or lost its connection.
    try:
        status, _, _ = await send
    except aiohttp.ClientConnectionError:
        status = 0
    assert status in (0, 200)


async def test_restart_keeps_the_port_and_the_records(client: aiohttp.ClientSession) -> None:
    """Between stop and start the port refuses connections; after start it serves again."""
    async with FakeHec(tokens=[TOKEN]) as hec:
        url = hec.url + "/services/collector"
        assert (await post(client, url, envelopes(1)))[0] == 200
        await hec.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(client, url, envelopes(2))
        await hec.start()
        assert hec.url + "/services/collector" == url
        assert (await post(client, url, envelopes(3)))[0] == 200
        assert hec.events() == [1, 3]


# --- Datadog Logs -----------------------------------------------------------------------------

DD_AUTH = {"DD-API-KEY": DD_KEY, "Content-Type": "application/json"}


def logs(count: int, **extra: Any) -> bytes:
    return json.dumps(
        [{"message": f"m{n}", "ddsource": "forwarder", **extra} for n in range(count)]
    ).encode()


async def test_datadog_accepts_an_array_of_logs(
    dd: FakeDatadog, client: aiohttp.ClientSession
) -> None:
    """A JSON array of objects answers 202 {} and every object is recorded in order."""
    status, answer, _ = await post(client, dd.url + "/api/v2/logs", logs(3), DD_AUTH)
    assert (status, answer) == (202, {})
    assert dd.messages() == ["m0", "m1", "m2"]
    assert dd.accepted[0] == {"message": "m0", "ddsource": "forwarder"}


@pytest.mark.parametrize(
    ("headers", "status"), [({}, 401), ({"DD-API-KEY": ""}, 401), ({"DD-API-KEY": "nope"}, 403)]
)
async def test_datadog_refuses_bad_keys(
    dd: FakeDatadog, client: aiohttp.ClientSession, headers: dict[str, str], status: int
) -> None:
    """A missing key is 401, an unknown one 403; nothing is recorded."""
    got, _, _ = await post(client, dd.url + "/api/v2/logs", logs(1), headers)
    assert (got, dd.accepted) == (status, [])


@pytest.mark.parametrize(
    ("encoding", "pack", "status"),
    [("gzip", gzip.compress, 202), ("deflate", zlib.compress, 202), ("br", bytes, 415)],
)
async def test_datadog_encodings(
    dd: FakeDatadog, client: aiohttp.ClientSession, encoding: str, pack: Any, status: int
) -> None:
    """gzip and deflate bodies are decompressed; other encodings are 415."""
    headers = {**DD_AUTH, "Content-Encoding": encoding}
    got, _, _ = await post(client, dd.url + "/api/v2/logs", pack(logs(2)), headers)
    assert got == status
    assert len(dd.accepted) == (2 if status == 202 else 0)


@pytest.mark.parametrize(
    "body", [b"", b"{", b'{"message": "x"}', b"[]", b'[{"message": "x"}, "y"]', b"[1]"]
)
async def test_datadog_refuses_what_is_not_an_array_of_objects(
    dd: FakeDatadog, client: aiohttp.ClientSession, body: bytes
) -> None:
    """Not JSON, not an array, empty, or an entry that is not an object: 400, nothing kept."""
    status, answer, _ = await post(client, dd.url + "/api/v2/logs", body, DD_AUTH)
    assert (status, dd.accepted) == (400, [])
    assert "errors" in answer


async def test_datadog_entry_limit(dd: FakeDatadog, client: aiohttp.ClientSession) -> None:
    """1000 entries are accepted, 1001 are 413."""
    url = dd.url + "/api/v2/logs"
    assert (await post(client, url, logs(1001), DD_AUTH))[0] == 413
    assert dd.accepted == []
    assert (await post(client, url, logs(1000), DD_AUTH))[0] == 202
    assert len(dd.accepted) == 1000


async def test_datadog_size_limit_is_uncompressed(
    dd: FakeDatadog, client: aiohttp.ClientSession
) -> None:
    """A body over 5 MB uncompressed is 413 even when its gzip is small; a big log is counted."""
    url = dd.url + "/api/v2/logs"
    headers = {**DD_AUTH, "Content-Encoding": "gzip"}
    big = logs(5, padding="x" * 1_000_000)
    assert len(big) > 5_000_000
    assert (await post(client, url, gzip.compress(big), headers))[0] == 413
    assert dd.accepted == []
    fits = logs(2, padding="x" * 1_000_000)
    assert (await post(client, url, gzip.compress(fits), headers))[0] == 202
    assert (len(dd.accepted), dd.oversized) == (2, 2)


async def test_datadog_poison_refuses_the_whole_request(client: aiohttp.ClientSession) -> None:
    """One poisoned log makes the whole request 400; without it the rest is accepted."""
    async with FakeDatadog(api_keys=[DD_KEY], poison=lambda log: log["message"] == "m3") as dd:
        url = dd.url + "/api/v2/logs"
        assert (await post(client, url, logs(5), DD_AUTH))[0] == 400
        assert dd.accepted == []
        assert (await post(client, url, logs(3), DD_AUTH))[0] == 202
        assert dd.messages() == ["m0", "m1", "m2"]


async def test_datadog_script(dd: FakeDatadog, client: aiohttp.ClientSession) -> None:
    """Datadog's script plays 429 with Retry-After, a reset, then normal handling."""
    dd.script.respond(429, retry_after="2")
    dd.script.reset()
    url = dd.url + "/api/v2/logs"
    status, answer, response = await post(client, url, logs(1), DD_AUTH)
    assert (status, answer, response.headers["Retry-After"]) == (
        429,
        {"errors": ["Too Many Requests"]},
        "2",
    )
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(client, url, logs(1), DD_AUTH)
    assert (await post(client, url, logs(1), DD_AUTH))[0] == 202
    assert [seen.status for seen in dd.requests] == [429, None, 202]
