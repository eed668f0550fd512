"""The policy stage end to end: a real daemon with TCP and HTTP in, Splunk HEC and Datadog
out, a global policy (drop, redact with patterns, route) and a sink's own hashing policy."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes import FakeDatadog, FakeHec
from tests.helpers import DaemonProcess, metric

TOKEN = "3ad77bb4-0d7a-4a36-b1c3-0f1e5d1c7e21"
DD_KEY = "ae2d8a571e03ac9c9eb76fac45af8e51"
HASH_KEY = "e2e-policy-key"
MASK = "[REDACTED]"
PER_SOURCE = 150
CARD = "4111 1111 1111 1111"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
REQUEST = {"timeout_secs": 5, "retry_initial_backoff_secs": 0.01, "retry_max_backoff_secs": 0.05}
BATCH = {"max_events": 100, "timeout_secs": 0.1}

POLICY = [
    {
        "name": "drop-healthchecks",
        "when": {"field": "action", "equals": "healthcheck"},
        "then": "drop",
    },
    {
        "name": "redact-secrets",
        "then": {
            "redact": {
                "fields": ["password"],
                "patterns": ["credit_card", "email", "aws_key"],
            }
        },
    },
    {
        "name": "high-to-splunk-only",
        "when": {"field": "resource.sensitivity", "in": ["high", "critical"]},
        "then": {"route": ["splunk"]},
    },
]
DATADOG_POLICY = [
    {"name": "hash-ip", "then": {"redact": {"fields": ["actor.ip"], "with": "hash"}}},
    {"name": "no-debug", "when": {"field": "level", "equals": "debug"}, "then": "drop"},
]


def make_event(via: str, i: int) -> dict[str, Any]:
    """Event ``i`` of a source; its kind (i % 8) decides what the policy does with it."""
    obj: dict[str, Any] = {
        "id": f"{via}{i}",
        "action": "login",
        "message": f"event {i}",
        "actor": {"user": f"u{i % 7}", "ip": f"10.0.{i}.1"},
    }
    kind = i % 8
    if kind == 0:
        obj["action"] = "healthcheck"
    elif kind == 1:
        obj["message"] = f"login by user{i}@example.com from the console"
    elif kind == 2:
        obj["details"] = {"note": f"card {CARD}", "order": "4111111111111112"}
    elif kind == 3:
        obj["password"] = f"hunter{i}"
    elif kind == 4:
        obj["resource"] = {"sensitivity": "high", "name": f"vault/{i}"}
    elif kind == 5:
        obj["level"] = "debug"
    elif kind == 6:
        obj["tags"] = ["aws", f"key={AWS_KEY}"]
    return obj


def secrets_of(obj: dict[str, Any]) -> list[str]:
    """The values no sink may receive."""
    found = [f"user{obj['id'][len(obj['id'].rstrip('0123456789')) :]}@example.com"]
    found += [CARD, AWS_KEY, "4111111111111111"]
    if "password" in obj:
        found.append(obj["password"])
    return [s for s in found if s in json.dumps(obj)]


def after_global(obj: dict[str, Any]) -> dict[str, Any]:
    """What the global policy should make of a kept event, written out case by case."""
    out = json.loads(json.dumps(obj))
    if "@example.com" in out["message"]:
        out["message"] = f"login by {MASK} from the console"
    if "details" in out:
        # The order number fails the Luhn check and stays.
        out["details"] = {"note": f"card {MASK}", "order": "4111111111111112"}
    if "password" in out:
        out["password"] = MASK
    if "tags" in out:
        out["tags"] = ["aws", f"key={MASK}"]
    return out


def keyed_hash(text: str) -> str:
    mac = hmac.new(HASH_KEY.encode(), text.encode(), hashlib.sha256).hexdigest()
    return "sha256:" + mac[:16]


def for_datadog(obj: dict[str, Any]) -> dict[str, Any]:
    out = after_global(obj)
    out["actor"]["ip"] = keyed_hash(obj["actor"]["ip"])
    return out


def by_id(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {o["id"]: o for o in objs}
    assert len(found) == len(objs), "an event arrived twice"
    return found


async def send_tcp(port: int, objs: list[dict[str, Any]]) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(json.dumps(o).encode() + b"\n" for o in objs))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def send_http(port: int, objs: list[dict[str, Any]]) -> None:
    url = f"http://127.0.0.1:{port}/v1/events"
    async with aiohttp.ClientSession() as session:
        for first in range(0, len(objs), 50):
            body = b"".join(json.dumps(o).encode() + b"\n" for o in objs[first : first + 50])
            headers = {"Content-Type": "application/x-ndjson"}
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()


async def test_two_sinks_get_exactly_what_the_policies_allow(tmp_path: Path) -> None:
    """TCP and HTTP events through drop, pattern redaction and a route, then Datadog's own
    hashing and drop: each sink gets exactly its events, no secret reaches either, and the
    drops are counted under the rules' names."""
    tcp_events = [make_event("t", i) for i in range(PER_SOURCE)]
    http_events = [make_event("h", i) for i in range(PER_SOURCE)]
    sent = tcp_events + http_events
    async with FakeHec(tokens=[TOKEN]) as hec, FakeDatadog(api_keys=[DD_KEY]) as dd:
        config = {
            "workers": 1,
            "shutdown_timeout_secs": 20,
            "policy_hash_key": HASH_KEY,
            "policy": POLICY,
            "sources": {
                "app_tcp": {"type": "tcp", "address": "127.0.0.1:0"},
                "app_http": {"type": "http", "address": "127.0.0.1:0"},
            },
            "sinks": {
                "splunk": {
                    "type": "splunk_hec",
                    "endpoint": hec.url,
                    "token": TOKEN,
                    "batch": BATCH,
                    "request": REQUEST,
                },
                "datadog": {
                    "type": "datadog_logs",
                    "endpoint": f"{dd.url}/api/v2/logs",
                    "api_key": DD_KEY,
                    "batch": BATCH,
                    "request": REQUEST,
                    "policy": DATADOG_POLICY,
                },
            },
        }
        daemon = DaemonProcess(tmp_path, config)
        try:
            await daemon.start()
            await asyncio.gather(
                send_tcp(daemon.port("app_tcp"), tcp_events),
                send_http(daemon.port("app_http"), http_events),
            )
            kept = [o for o in sent if o["action"] != "healthcheck"]
            to_datadog = [o for o in kept if "resource" not in o and o.get("level") != "debug"]
            await hec.wait_until(lambda: len(hec.accepted) >= len(kept), timeout_secs=30)
            await dd.wait_until(lambda: len(dd.accepted) >= len(to_datadog), timeout_secs=30)
            samples = await daemon.metrics()
            assert await daemon.terminate() == 0
        finally:
            await daemon.close()

    splunk_got = by_id(hec.events())
    assert splunk_got == {o["id"]: after_global(o) for o in kept}

    # Datadog adds its reserved attributes; the events carry none of them themselves.
    datadog_logs = [
        {k: v for k, v in log.items() if k not in ("hostname", "timestamp", "status")}
        for log in dd.accepted
    ]
    assert by_id(datadog_logs) == {o["id"]: for_datadog(o) for o in to_datadog}

    bodies = [r.body for r in hec.requests] + [r.body for r in dd.requests]
    secrets = {s for o in sent for s in secrets_of(o)}
    assert len(secrets) > PER_SOURCE // 8
    for secret in secrets:
        assert not any(secret.encode() in body for body in bodies), secret
    # Datadog never sees a client address in clear; Splunk does (no rule hides it there).
    ips = [o["actor"]["ip"].encode() for o in kept]
    assert not any(ip in r.body for ip in ips for r in dd.requests)
    assert any(ips[0] in r.body for r in hec.requests)

    healthchecks = sum(1 for o in sent if o["action"] == "healthcheck")
    debug = sum(1 for o in kept if "resource" not in o and o.get("level") == "debug")
    dropped = "forwarder_events_dropped_total"
    assert metric(samples, dropped, component="policy:drop-healthchecks", reason="policy") == (
        healthchecks
    )
    assert metric(samples, dropped, component="datadog:policy:no-debug", reason="policy") == debug
    assert debug > 0 and healthchecks > 0
    # A route that leaves a sink drops nothing: high events still reach Splunk.
    assert metric(samples, dropped, component="policy:high-to-splunk-only", reason="policy") == 0
