"""The daemon end to end as a real process: TCP and HTTP in, fake collector and file out."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import REPO, DaemonProcess, FakeCollector, metric, run_cli, wait_for

FAST_RETRY = {
    "retry_initial_backoff_secs": 0.01,
    "retry_max_backoff_secs": 0.05,
    "timeout_secs": 5,
}


def pipeline(tmp_path: Path, endpoint: str, **settings: Any) -> dict[str, Any]:
    """TCP and HTTP sources into an http sink on the collector and a file sink."""
    return {
        "shutdown_timeout_secs": 20,
        "sources": {
            "tcp": {"type": "tcp", "address": "127.0.0.1:0"},
            "http": {"type": "http", "address": "127.0.0.1:0"},
        },
        "sinks": {
            "hook": {
                "type": "http",
                "endpoint": endpoint,
                "batch": {"max_events": 500, "timeout_secs": 0.1},
                "request": FAST_RETRY,
            },
            "archive": {
                "type": "file",
                "path": str(tmp_path / "out" / "events.jsonl"),
                "batch": {"max_events": 500, "timeout_secs": 0.1},
            },
        },
        **settings,
    }


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start daemons (one worker unless the config says otherwise); killed at teardown."""
    started: list[DaemonProcess] = []

    async def start(config: dict[str, Any], *, subdir: str = "d") -> DaemonProcess:
        where = tmp_path / subdir
        where.mkdir(exist_ok=True)
        config.setdefault("workers", 1)
        daemon = DaemonProcess(where, config)
        started.append(daemon)
        return await daemon.start()

    yield start
    for daemon in started:
        await daemon.close()


def file_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def ndjson(objs: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(o, separators=(",", ":")).encode() + b"\n" for o in objs)


async def send_tcp(port: int, payload: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def post(port: int, body: bytes, ctype: str = "application/x-ndjson") -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/v1/events", data=body, headers={"Content-Type": ctype}
        ) as resp,
    ):
        return resp.status, resp.headers


def ids(objs: list[dict[str, Any]]) -> list[str]:
    return sorted(o["id"] for o in objs)


async def send_mixed(
    daemon: DaemonProcess, *, tcp_conns: int, per_conn: int, http: int
) -> set[str]:
    """Send over several TCP connections and HTTP at once; returns the ids sent."""
    sent: set[str] = set()
    tcp_batches = []
    for c in range(tcp_conns):
        objs = [{"id": f"t{c}-{i}", "via": "tcp"} for i in range(per_conn)]
        sent.update(o["id"] for o in objs)
        tcp_batches.append(ndjson(objs))
    http_bodies = []
    for r in range(0, http, 100):
        objs = [{"id": f"h{i}", "via": "http"} for i in range(r, min(r + 100, http))]
        sent.update(o["id"] for o in objs)
        http_bodies.append(ndjson(objs))

    async def http_client() -> None:
        for body in http_bodies:
            status, _ = await post(daemon.port("http"), body)
            assert status == 200

    await asyncio.gather(*(send_tcp(daemon.port("tcp"), b) for b in tcp_batches), http_client())
    return sent


async def test_ten_thousand_events_arrive_exactly_once(
    daemons: Any, tmp_path: Path, collector: FakeCollector
) -> None:
    """10,000 events from 4 TCP connections and HTTP, through two workers sharing the ports,
    reach the collector and the file exactly once, and the metrics say so."""
    daemon = await daemons(pipeline(tmp_path, collector.endpoint, workers=2))
    sent = await send_mixed(daemon, tcp_conns=4, per_conn=2000, http=2000)
    assert len(sent) == 10_000
    out = tmp_path / "out" / "events.jsonl"
    await collector.wait_until(lambda: len(collector.received) >= 10_000, timeout_secs=30)
    await wait_for(lambda: len(file_lines(out)) >= 10_000, timeout_secs=30)
    assert ids(collector.received) == sorted(sent)
    assert ids(file_lines(out)) == sorted(sent)
    samples = await daemon.metrics()
    assert metric(samples, "forwarder_events_received_total", source="tcp") == 8000
    assert metric(samples, "forwarder_events_received_total", source="http") == 2000
    assert metric(samples, "forwarder_events_sent_total", sink="hook") == 10_000
    assert metric(samples, "forwarder_events_sent_total", sink="archive") == 10_000
    assert metric(samples, "forwarder_queue_depth_events", sink="hook") == 0
    assert await daemon.terminate() == 0
    assert len(collector.received) == 10_000


async def test_sigterm_right_after_sending_delivers_everything(
    daemons: Any, tmp_path: Path, collector: FakeCollector
) -> None:
    """SIGTERM as soon as the clients are done: open batches are flushed, exit code 0."""
    config = pipeline(tmp_path, collector.endpoint)
    for sink in config["sinks"].values():
        sink["batch"] = {"max_events": 100_000, "timeout_secs": 30}
    daemon = await daemons(config)
    sent = await send_mixed(daemon, tcp_conns=3, per_conn=1000, http=1000)
    # The TCP senders have closed; the HTTP requests were answered 200. Stop at once.
    daemon.signal(signal.SIGTERM)
    start = time.monotonic()
    assert await daemon.wait() == 0
    # Flushed by the drain, not by the 30 s batch timeout.
    assert time.monotonic() - start < 15
    assert ids(collector.received) == sorted(sent)
    assert len(collector.requests) == 1
    assert ids(file_lines(tmp_path / "out" / "events.jsonl")) == sorted(sent)
    assert any(line.get("event") == "stopped" for line in daemon.lines)


async def test_bad_lines_are_counted_and_good_lines_around_them_delivered(
    daemons: Any, tmp_path: Path, collector: FakeCollector
) -> None:
    """Invalid lines are counted and wrapped; the valid ones around them are delivered."""
    daemon = await daemons(pipeline(tmp_path, collector.endpoint))
    await send_tcp(
        daemon.port("tcp"), b'{"id":"a"}\nthis is not json\n{"id":"b"}\n[1]\n{"id":"c"}\n'
    )
    out = tmp_path / "out" / "events.jsonl"
    await wait_for(lambda: len(file_lines(out)) == 5, timeout_secs=10)
    lines = file_lines(out)
    assert [o.get("id") for o in lines] == ["a", None, "b", None, "c"]
    assert lines[1] == {"message": "this is not json", "forwarder_parse_error": "invalid_json"}
    samples = await daemon.metrics()
    assert (
        metric(samples, "forwarder_ingest_errors_total", source="tcp", reason="invalid_json") == 2
    )
    assert metric(samples, "forwarder_events_received_total", source="tcp") == 5
    assert await daemon.terminate() == 0


async def test_stalled_collector_blocks_tcp_and_answers_503_with_bounded_memory(
    daemons: Any, tmp_path: Path, collector: FakeCollector
) -> None:
    """With the collector stalled: the TCP sender blocks, HTTP answers 503 + Retry-After,
    RSS stays bounded; after recovery every event the daemon took arrives."""
    config = {
        "shutdown_timeout_secs": 20,
        "sources": {
            "tcp": {"type": "tcp", "address": "127.0.0.1:0"},
            "http": {
                "type": "http",
                "address": "127.0.0.1:0",
                "queue_wait_secs": 0.2,
                "retry_after_secs": 2,
            },
        },
        "sinks": {
            "hook": {
                "type": "http",
                "endpoint": collector.endpoint,
                "batch": {"max_events": 100, "timeout_secs": 0.05},
                "buffer": {"max_events": 500, "max_bytes": 1_000_000},
                "request": {**FAST_RETRY, "concurrency": 2, "timeout_secs": 60},
            }
        },
    }
    collector.script.stall()
    daemon = await daemons(config)
    base_rss = daemon.rss_kib()
    sock = socket.create_connection(("127.0.0.1", daemon.port("tcp")))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sock.setblocking(False)
    pad = "x" * 200
    chunk_lines = 1000
    next_id = 0
    pending = b""
    blocked_since: float | None = None
    peak_rss = base_rss
    try:
        while next_id < 400_000:
            if len(pending) < 65536:
                objs = [{"id": f"t{i}", "pad": pad} for i in range(next_id, next_id + chunk_lines)]
                pending += ndjson(objs)
                next_id += chunk_lines
            try:
                n = sock.send(pending[:65536])
                pending = pending[n:]
                blocked_since = None
                continue
            except BlockingIOError:
                pass
            now = time.monotonic()
            blocked_since = blocked_since or now
            if now - blocked_since > 0.5:
                break
            peak_rss = max(peak_rss, daemon.rss_kib())
            await asyncio.sleep(0.01)
        assert blocked_since is not None, "the TCP sender never blocked"
        blocked_at = next_id
        peak_rss = max(peak_rss, daemon.rss_kib())

        # A request bigger than the room left (a single event may still slip in).
        refused = ndjson([{"id": f"refused{i}"} for i in range(400)])
        status, headers = await post(daemon.port("http"), refused)
        assert status == 503
        assert headers["Retry-After"] == "2"
        samples = await daemon.metrics()
        assert metric(samples, "forwarder_queue_depth_events", sink="hook") <= 500 + 65536 // 200
        # Generous: the buffer is bounded at about 1 MB, plus a chunk per connection.
        assert peak_rss - base_rss < 100 * 1024, (base_rss, peak_rss)

        collector.script.release()
        while pending:
            try:
                n = sock.send(pending)
                pending = pending[n:]
            except BlockingIOError:
                await asyncio.sleep(0.005)
        sock.shutdown(socket.SHUT_WR)
        total = next_id
        await collector.wait_until(lambda: len(collector.received) >= total, timeout_secs=60)
    finally:
        sock.close()
    assert total > blocked_at - chunk_lines
    got = ids(collector.received)
    assert got == sorted(f"t{i}" for i in range(total))
    assert not [i for i in got if i.startswith("refused")]
    samples = await daemon.metrics()
    assert metric(samples, "forwarder_ingest_errors_total", source="http", reason="busy") == 1
    assert metric(samples, "forwarder_events_received_total", source="http") == 0
    assert await daemon.terminate() == 0


# One case per kind of rule as a real process; tests/unit/test_cli.py runs every file through
# the same ``run`` entry point in-process.
PROCESS_CASES = ("unknown_sink_key", "batch_max_events_zero", "duplicate_address", "unset_env_var")


async def test_bad_configs_stop_run_with_exit_2() -> None:
    """``forwarder run -c`` on bad configs exits 2 and names the key, no traceback."""
    configs = REPO / "tests" / "configs"
    bad = {
        configs / f"{name}.yaml": (configs / f"{name}.yaml").read_text() for name in PROCESS_CASES
    }
    limit = asyncio.Semaphore(4)

    async def check(path: Path) -> None:
        async with limit:
            code, _, err = await run_cli("run", "-c", str(path))
        assert code == 2, path.name
        assert "Traceback" not in err, path.name
        for line in bad[path].splitlines():
            for tag in ("# expect: ", "# expect-start: ", "# expect-in: "):
                if line.startswith(tag):
                    assert line[len(tag) :] in err, (path.name, err)

    await asyncio.gather(*(check(p) for p in bad))


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc is not installed")
async def test_readme_netcat_example(daemons: Any, tmp_path: Path) -> None:
    """The README's ``echo ... | nc -q1 127.0.0.1 PORT`` lands in the file sink and the metrics."""
    out = tmp_path / "out" / "events.jsonl"
    daemon = await daemons(
        {
            "sources": {"tcp": {"type": "tcp", "address": "127.0.0.1:0"}},
            "sinks": {
                "archive": {"type": "file", "path": str(out), "batch": {"timeout_secs": 0.1}}
            },
        }
    )
    port = daemon.port("tcp")
    proc = await asyncio.create_subprocess_shell(
        f'echo \'{{"user":"alice","action":"login"}}\' | nc -q1 127.0.0.1 {port}'
    )
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    await wait_for(lambda: len(file_lines(out)) == 1, timeout_secs=10)
    assert file_lines(out) == [{"user": "alice", "action": "login"}]
    samples = await daemon.metrics()
    assert metric(samples, "forwarder_events_received_total", source="tcp") == 1
    assert await daemon.terminate() == 0
