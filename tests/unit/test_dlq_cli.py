"""``forwarder dlq list|show|replay`` as a process, against dead letters on disk and fake SIEMs."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from forwarder.deadletter import DeadLetterStore, read_records
from forwarder.events import Event
from forwarder.telemetry.metrics import Metrics
from tests.fakes import FakeDatadog, FakeHec
from tests.helpers import run_cli

TOKEN = "2b7e1516-28ae-4d2a-a6ab-f7158809cf4f"
DD_KEY = "6bc1bee22e409f96e93d7e117393172a"
REQUEST = {"timeout_secs": 5, "retry_initial_backoff_secs": 0.01, "retry_max_backoff_secs": 0.05}


def poisoned(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("poison"))


@pytest.fixture
async def hec() -> AsyncIterator[FakeHec]:
    async with FakeHec(tokens=[TOKEN]) as fake:
        yield fake


@pytest.fixture
async def dd() -> AsyncIterator[FakeDatadog]:
    async with FakeDatadog(api_keys=[DD_KEY]) as fake:
        yield fake


def write_config(tmp_path: Path, hec: FakeHec, dd: FakeDatadog) -> Path:
    config = {
        "data_dir": str(tmp_path / "data"),
        "sinks": {
            "splunk": {
                "type": "splunk_hec",
                "endpoint": hec.url,
                "token": TOKEN,
                "index": "audit",
                "request": REQUEST,
            },
            "datadog": {
                "type": "datadog_logs",
                "endpoint": f"{dd.url}/api/v2/logs",
                "api_key": DD_KEY,
                "request": REQUEST,
            },
        },
    }
    path = tmp_path / "forwarder.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def store(tmp_path: Path, sink: str) -> DeadLetterStore:
    return DeadLetterStore(
        tmp_path / "data" / "dead_letter" / sink, sink, max_bytes=1 << 30, metrics=Metrics()
    )


def letters(tmp_path: Path, sink: str) -> list[dict[str, Any]]:
    return [r for path in store(tmp_path, sink).files() for r in read_records(path)]


def seed(tmp_path: Path, sink: str, objs: list[dict[str, Any]], reason: str, status: int) -> None:
    batch = [Event(json.dumps(o).encode(), "tcp", 1_733_300_000.0 + i) for i, o in enumerate(objs)]
    store(tmp_path, sink).write(batch, reason=reason, status=status, response='{"code":6}')


async def test_list_counts_per_sink_and_reason(
    tmp_path: Path, hec: FakeHec, dd: FakeDatadog
) -> None:
    """list prints one row per sink and reason with its event count."""
    config = write_config(tmp_path, hec, dd)
    code, out, _ = await run_cli("dlq", "list", "-c", str(config))
    assert code == 0 and "no dead letters" in out
    seed(tmp_path, "splunk", [{"n": 1}, {"n": 2}], "hec_code_6", 400)
    seed(tmp_path, "splunk", [{"n": 3}], "http_413", 413)
    seed(tmp_path, "datadog", [{"n": 4}], "too_large", 0)
    code, out, err = await run_cli("dlq", "list", "-c", str(config))
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert rows == [
        ["datadog", "too_large", "1"],
        ["splunk", "hec_code_6", "2"],
        ["splunk", "http_413", "1"],
    ]


async def test_show_prints_records_up_to_the_limit(
    tmp_path: Path, hec: FakeHec, dd: FakeDatadog
) -> None:
    """show --sink S --limit N prints N records as JSON lines, with the answer and reason."""
    config = write_config(tmp_path, hec, dd)
    seed(tmp_path, "splunk", [{"n": n} for n in range(5)], "hec_code_6", 400)
    code, out, err = await run_cli(
        "dlq", "show", "--sink", "splunk", "--limit", "3", "-c", str(config)
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["event"] for r in records] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert {(r["sink"], r["reason"], r["status"], r["response"]) for r in records} == {
        ("splunk", "hec_code_6", 400, '{"code":6}')
    }


async def test_replay_delivers_and_removes(tmp_path: Path, hec: FakeHec, dd: FakeDatadog) -> None:
    """replay sends through the sink's own encoding; delivered letters are gone afterwards."""
    config = write_config(tmp_path, hec, dd)
    objs = [{"n": n, "timestamp": "2024-12-04T08:13:20Z"} for n in range(4)]
    batch = [Event(json.dumps(o).encode(), "tcp", 5.0, None, None, 1_733_300_000.0) for o in objs]
    store(tmp_path, "splunk").write(batch, reason="hec_code_6", status=400, response="")
    code, out, err = await run_cli("dlq", "replay", "--sink", "splunk", "-c", str(config))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "total 4 / delivered 4 / rejected again 0"
    assert hec.events() == objs
    assert {(e["index"], e["time"]) for e in hec.accepted} == {("audit", 1_733_300_000.0)}
    assert letters(tmp_path, "splunk") == []
    assert list((tmp_path / "data" / "dead_letter" / "splunk").iterdir()) == []


async def test_replay_keeps_what_is_rejected_again(
    tmp_path: Path, hec: FakeHec, dd: FakeDatadog
) -> None:
    """Events the destination still refuses stay as dead letters, with the new answer."""
    config = write_config(tmp_path, hec, dd)
    objs = [{"n": 0}, {"n": 1, "poison": True}, {"n": 2}, {"n": 3, "poison": True}]
    seed(tmp_path, "splunk", objs, "hec_code_6", 400)
    hec.poison = poisoned
    code, out, err = await run_cli("dlq", "replay", "--sink", "splunk", "-c", str(config))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "total 4 / delivered 2 / rejected again 2"
    assert hec.events() == [{"n": 0}, {"n": 2}]
    kept = letters(tmp_path, "splunk")
    assert [r["event"] for r in kept] == [objs[1], objs[3]]
    assert all("invalid-event-number" in json.loads(r["response"]) for r in kept)
    hec.poison = None
    code, out, err = await run_cli("dlq", "replay", "--sink", "splunk", "-c", str(config))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "total 2 / delivered 2 / rejected again 0"
    assert hec.events() == [{"n": 0}, {"n": 2}, objs[1], objs[3]]
    assert letters(tmp_path, "splunk") == []


async def test_replay_through_datadog(tmp_path: Path, hec: FakeHec, dd: FakeDatadog) -> None:
    """Datadog dead letters replay through the Datadog encoding, bisecting what is still bad."""
    config = write_config(tmp_path, hec, dd)
    objs = [{"n": n, "message": f"m{n}", "poison": n == 2} for n in range(5)]
    seed(tmp_path, "datadog", objs, "http_400", 400)
    dd.poison = poisoned
    code, out, err = await run_cli("dlq", "replay", "--sink", "datadog", "-c", str(config))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "total 5 / delivered 4 / rejected again 1"
    assert sorted(log["n"] for log in dd.accepted) == [0, 1, 3, 4]
    assert [r["event"]["n"] for r in letters(tmp_path, "datadog")] == [2]
    assert letters(tmp_path, "splunk") == []


async def test_replay_of_an_unknown_sink_is_a_usage_error(
    tmp_path: Path, hec: FakeHec, dd: FakeDatadog
) -> None:
    """A sink name not in the config exits 2 and says so."""
    config = write_config(tmp_path, hec, dd)
    code, _, err = await run_cli("dlq", "replay", "--sink", "nope", "-c", str(config))
    assert code == 2
    assert "nope" in err


async def test_replay_shows_a_progress_bar_on_a_terminal(
    tmp_path: Path, hec: FakeHec, dd: FakeDatadog
) -> None:
    """On a tty, replay draws a progress bar that reaches the total, then the summary."""
    config = write_config(tmp_path, hec, dd)
    seed(tmp_path, "splunk", [{"n": n} for n in range(1200)], "hec_code_6", 400)
    leader, follower = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "forwarder.cli", "dlq", "replay", "--sink", "splunk",
        "-c", str(config),
        stdout=follower, stderr=asyncio.subprocess.PIPE, env={**os.environ},
    )  # fmt: skip
    os.close(follower)
    loop = asyncio.get_running_loop()
    output = b""
    while True:
        try:
            chunk = await loop.run_in_executor(None, os.read, leader, 65536)
        except OSError:  # EIO: the process closed its side
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    text = output.decode()
    assert "1200/1200" in text
    assert "[" + "#" * 40 + "]" in text
    assert text.rstrip().endswith("total 1200 / delivered 1200 / rejected again 0")
    assert len(hec.events()) == 1200


async def test_replay_gives_up_on_a_refusing_destination_and_keeps_the_rest(
    tmp_path: Path, hec: FakeHec, dd: FakeDatadog
) -> None:
    """Events from the 601st on name an index the token may not write (code 7, sink down):
    replay delivers the first 600 (the second chunk of 500 in part), gives up after
    --give-up-after seconds with exit 1 and keeps exactly the 600 it could not send."""
    config = write_config(tmp_path, hec, dd)
    hec.allowed_indexes = {"audit"}
    batch = [
        Event(json.dumps({"n": n}).encode(), "tcp", 1.0, {"index": "secret"} if n >= 600 else None)
        for n in range(1200)
    ]
    store(tmp_path, "splunk").write(batch, reason="hec_code_7", status=400, response="")
    code, out, err = await run_cli(
        "dlq", "replay", "--sink", "splunk", "--give-up-after", "1", "-c", str(config)
    )
    assert code == 1
    assert "gave up" in err and "hec_code_7" in err and "600 events kept" in err
    assert out.strip().splitlines()[-1] == "total 1200 / delivered 600 / rejected again 0"
    assert hec.events() == [{"n": n} for n in range(600)]
    assert sorted(r["event"]["n"] for r in letters(tmp_path, "splunk")) == list(range(600, 1200))
    hec.allowed_indexes.add("secret")
    code, out, err = await run_cli("dlq", "replay", "--sink", "splunk", "-c", str(config))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "total 600 / delivered 600 / rejected again 0"
    assert sorted(e["n"] for e in hec.events()) == list(range(1200))
    assert letters(tmp_path, "splunk") == []


async def test_replay_rejects_a_negative_give_up(
    tmp_path: Path, hec: FakeHec, dd: FakeDatadog
) -> None:
    """--give-up-after below 0 is a usage error that names the option; nothing is claimed."""
    config = write_config(tmp_path, hec, dd)
    seed(tmp_path, "splunk", [{"n": 1}], "hec_code_6", 400)
    code, _, err = await run_cli(
        "dlq", "replay", "--sink", "splunk", "--give-up-after", "-1", "-c", str(config)
    )
    assert code == 2 and "--give-up-after" in err
    assert [r["event"] for r in letters(tmp_path, "splunk")] == [{"n": 1}]
