"""The daemon as a real process: 50,000 events over TCP to a fake SIEM that rejects 1 in 1,000
and answers 30% of requests 503. Every other event arrives exactly once, the rejected ones sit
in the dead-letter store with the destination's answer, and ``forwarder dlq replay`` delivers
them once the destination takes them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from forwarder.deadletter import read_records
from tests.fakes import FakeDatadog, FakeHec
from tests.helpers import DaemonProcess, metric, run_cli

TOKEN = "3ad77bb4-0d7a-4a36-b1c3-0f1e5d1c7e21"
DD_KEY = "ae2d8a571e03ac9c9eb76fac45af8e51"
TOTAL = 50_000
BAD = {i for i in range(TOTAL) if i % 1000 == 500}
REQUEST = {
    "concurrency": 4,
    "timeout_secs": 10,
    "retry_initial_backoff_secs": 0.01,
    "retry_max_backoff_secs": 0.1,
}


def poisoned(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("poison"))


def dead_letters(data_dir: Path, sink: str) -> list[dict[str, Any]]:
    directory = data_dir / "dead_letter" / sink
    return [r for path in sorted(directory.glob("*.jsonl")) for r in read_records(path)]


async def send_tcp(port: int) -> None:
    """All events on one connection, written in large chunks."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = []
    for i in range(TOTAL):
        obj = {"i": i, "user": f"u{i % 97}", "action": "login", "poison": i in BAD}
        chunk.append(json.dumps(obj, separators=(",", ":")).encode())
        if len(chunk) == 5000:
            writer.write(b"\n".join(chunk) + b"\n")
            await writer.drain()
            chunk = []
    writer.write(b"\n".join(chunk) + b"\n")
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def run_until_settled(
    daemon: DaemonProcess, arrived: Callable[[], int], data_dir: Path, sink: str
) -> float:
    """Send everything and wait until every event arrived or was dead-lettered; seconds taken."""
    start = time.monotonic()
    await send_tcp(daemon.port("app_tcp"))
    deadline = start + 90
    while arrived() < TOTAL - len(BAD) or len(dead_letters(data_dir, sink)) < len(BAD):
        assert time.monotonic() < deadline, (arrived(), len(dead_letters(data_dir, sink)))
        await asyncio.sleep(0.1)
    return time.monotonic() - start


def config_for(tmp_path: Path, sink: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"),
        "shutdown_timeout_secs": 10,
        "sources": {"app_tcp": {"type": "tcp", "address": "127.0.0.1:0"}},
        "sinks": {sink: {**body, "request": REQUEST, "batch": {"timeout_secs": 0.2}}},
    }


@pytest.mark.slow
async def test_hec_rejects_and_503s_lose_nothing_and_replay_delivers(tmp_path: Path) -> None:
    """HEC: exactly once except the rejected, which sit with HEC's answer until replayed."""
    async with FakeHec(tokens=[TOKEN], poison=poisoned, seed=3) as hec:
        hec.script.fail_randomly(0.3)
        sink = {"type": "splunk_hec", "endpoint": hec.url, "token": TOKEN, "index": "audit"}
        config = config_for(tmp_path, "splunk", sink)
        daemon = DaemonProcess(tmp_path, config)
        data_dir = tmp_path / "data"
        try:
            await daemon.start()
            secs = await run_until_settled(daemon, lambda: len(hec.accepted), data_dir, "splunk")
            samples = await daemon.metrics()
            assert await daemon.terminate() == 0
        finally:
            await daemon.close()
        print(
            f"\nsplunk_hec: {TOTAL} events settled in {secs:.2f}s over {len(hec.requests)} requests"
        )
        got = [e["i"] for e in hec.events()]
        assert sorted(got) == sorted(set(range(TOTAL)) - BAD)
        assert len(got) == len(set(got))
        letters = dead_letters(data_dir, "splunk")
        assert sorted(r["event"]["i"] for r in letters) == sorted(BAD)
        for record in letters:
            answer = json.loads(record["response"])
            assert (record["status"], record["reason"], answer["code"]) == (400, "hec_code_6", 6)
            assert "invalid-event-number" in answer
        assert metric(samples, "forwarder_events_sent_total", sink="splunk") == TOTAL - len(BAD)
        assert metric(samples, "forwarder_dead_letter_events_total", sink="splunk") == len(BAD)
        assert metric(
            samples, "forwarder_batches_total", sink="splunk", outcome="dead_letter"
        ) == len(BAD)
        retries = metric(samples, "forwarder_retries_total", sink="splunk", reason="hec_code_9")
        assert retries > 0
        assert metric(samples, "forwarder_batches_total", sink="splunk", outcome="retry") == retries
        assert metric(samples, "forwarder_sink_up", sink="splunk") == 1

        hec.poison = None
        hec.script.fail_randomly(0.0)
        code, out, err = await run_cli(
            "dlq", "replay", "--sink", "splunk", "-c", str(daemon.config_path)
        )
        assert code == 0, err
        assert (
            out.strip().splitlines()[-1]
            == f"total {len(BAD)} / delivered {len(BAD)} / rejected again 0"
        )
        got = [e["i"] for e in hec.events()]
        assert sorted(got) == list(range(TOTAL))
        assert dead_letters(data_dir, "splunk") == []


@pytest.mark.slow
async def test_datadog_poison_and_503s_lose_nothing_and_replay_delivers(tmp_path: Path) -> None:
    """Datadog: 400 for poison entries bisected to them alone; the rest exactly once."""
    async with FakeDatadog(api_keys=[DD_KEY], poison=poisoned, seed=5) as dd:
        dd.script.fail_randomly(0.3)
        sink = {"type": "datadog_logs", "endpoint": f"{dd.url}/api/v2/logs", "api_key": DD_KEY}
        config = config_for(tmp_path, "datadog", sink)
        daemon = DaemonProcess(tmp_path, config)
        data_dir = tmp_path / "data"
        try:
            await daemon.start()
            secs = await run_until_settled(daemon, lambda: len(dd.accepted), data_dir, "datadog")
            samples = await daemon.metrics()
            assert await daemon.terminate() == 0
        finally:
            await daemon.close()
        print(f"\ndatadog_logs: {TOTAL} events settled in {secs:.2f}s, {len(dd.requests)} requests")
        got = [log["i"] for log in dd.accepted]
        assert sorted(got) == sorted(set(range(TOTAL)) - BAD)
        assert len(got) == len(set(got))
        letters = dead_letters(data_dir, "datadog")
        assert sorted(r["event"]["i"] for r in letters) == sorted(BAD)
        assert {(r["status"], r["reason"], r["response"]) for r in letters} == {
            (400, "http_400", '{"errors": ["Bad Request"]}')
        }
        assert metric(samples, "forwarder_events_sent_total", sink="datadog") == TOTAL - len(BAD)
        assert metric(samples, "forwarder_dead_letter_events_total", sink="datadog") == len(BAD)
        assert metric(samples, "forwarder_batches_total", sink="datadog", outcome="split") > 0
        assert metric(samples, "forwarder_retries_total", sink="datadog", reason="http_503") > 0

        dd.poison = None
        dd.script.fail_randomly(0.0)
        code, out, err = await run_cli(
            "dlq", "replay", "--sink", "datadog", "-c", str(daemon.config_path)
        )
        assert code == 0, err
        assert (
            out.strip().splitlines()[-1]
            == f"total {len(BAD)} / delivered {len(BAD)} / rejected again 0"
        )
        assert sorted(log["i"] for log in dd.accepted) == list(range(TOTAL))
        assert dead_letters(data_dir, "datadog") == []
