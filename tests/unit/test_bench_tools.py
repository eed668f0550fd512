"""The benchmark's own tools: event generator, blackhole, load generator, runner pieces."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from bench.blackhole import Blackhole
from bench.events import hec_bodies, iter_events, ndjson_bodies, ndjson_parts, stamp
from bench.loadgen import send_http, send_tcp, send_tcp_paced
from bench.peers.forwarder_daemon import ForwarderOptions, bench_config
from bench.peers.process import ProcessTree
from bench.peers.syslog_ng import SyslogNgTarget
from bench.run import (
    RunResult,
    build_loads,
    format_table,
    parse_args,
    run_ceiling,
    run_target,
    timeline,
)

HEC = {"Authorization": "Splunk t", "Content-Type": "application/json"}


def test_generator_is_deterministic_per_seed() -> None:
    """The same seed yields the same bytes; another seed yields different events."""
    first = list(iter_events(300, seed=7))
    assert first == list(iter_events(300, seed=7))
    assert first != list(iter_events(300, seed=8))


def test_generator_ids_are_unique_and_events_about_500_bytes() -> None:
    """Each event is a nested JSON object with its index as id, averaging about 500 bytes."""
    events = list(iter_events(2000, seed=3, first_id=100))
    objects = [orjson.loads(event) for event in events]
    assert [obj["id"] for obj in objects] == [f"{i:010d}" for i in range(100, 2100)]
    assert all(isinstance(obj["actor"], dict) for obj in objects)
    average = sum(map(len, events)) / len(events)
    assert 450 <= average <= 600, average
    # Only the top-level id may match what the blackhole looks for.
    assert all(event.count(b'"id":') == 1 for event in events)


def test_encodings_carry_every_event_once() -> None:
    """NDJSON parts, NDJSON bodies and HEC bodies hold every event exactly once."""
    events = list(iter_events(1234, seed=1))
    parts = ndjson_parts(events, parts=3, block_bytes=10_000)
    lines = b"".join(b"".join(blocks) for blocks in parts.parts).splitlines()
    assert lines == events
    assert parts.payload_bytes == sum(len(event) + 1 for event in events)
    bodies = ndjson_bodies(events, parts=2, batch_events=100)
    assert sorted(b"".join(b"".join(p) for p in bodies.parts).splitlines()) == sorted(events)
    hec = hec_bodies(events, parts=4, batch_events=500)
    wrapped = [orjson.loads(line) for p in hec.parts for body in p for line in body.splitlines()]
    assert sorted(orjson.dumps(w["event"]) for w in wrapped) == sorted(events)


def test_stamp_adds_send_time_and_keeps_json_valid() -> None:
    """A stamped event is the same object plus sent_ns."""
    event = next(iter_events(1))
    stamped = orjson.loads(stamp(event, 123456789))
    assert stamped.pop("sent_ns") == 123456789
    assert stamped == orjson.loads(event)


async def test_blackhole_counts_ids_duplicates_and_gzip() -> None:
    """HEC and Datadog bodies, plain or gzip, are counted by id with duplicates apart."""
    blackhole = Blackhole()
    await blackhole.start()
    events = list(iter_events(10))
    hec_body = hec_bodies(events[:6]).parts[0][0]
    datadog_body = orjson.dumps([{"message": event.decode()} for event in events[4:]])
    # A sink that re-serialises may move the id away from the first key.
    reordered = b'{"event":{"action":"x","id": "0000000009"}}{"event":{"id": "extra"}}'
    base = f"http://127.0.0.1:{blackhole.port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/services/collector/event", data=hec_body) as r:
                assert (r.status, await r.json()) == (200, {"text": "Success", "code": 0})
            zipped = gzip.compress(datadog_body)
            gz = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
            async with session.post(f"{base}/api/v2/logs", data=zipped, headers=gz) as r:
                assert r.status == 202
            async with session.post(f"{base}/api/v2/logs", data=b"not gzip", headers=gz) as r:
                assert r.status == 400
            async with session.post(f"{base}/services/collector", data=reordered) as r:
                assert r.status == 200
            async with session.get(f"{base}/stats") as r:
                stats = await r.json()
    finally:
        await blackhole.stop()
    assert stats["requests"] == 4
    assert (stats["events"], stats["unique"], stats["duplicates"]) == (14, 11, 3)
    assert stats["wire_bytes"] == len(hec_body) + len(zipped) + len(b"not gzip") + len(reordered)
    assert stats["body_bytes"] == len(hec_body) + len(datadog_body) + len(reordered)
    assert stats["bad_requests"] == 1
    assert 0 < stats["first_arrival"] <= stats["last_arrival"] <= time.time()


async def test_blackhole_reports_latency_of_stamped_events() -> None:
    """Events stamped 5 ms in the past show a p50 of at least 5 ms."""
    blackhole = Blackhole(latency=True)
    await blackhole.start()
    sent_ns = time.time_ns() - 5_000_000
    body = b"\n".join(stamp(event, sent_ns) for event in iter_events(100))
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{blackhole.port}/v1/anything"
            async with session.post(url, data=body) as response:
                assert response.status == 200
    finally:
        await blackhole.stop()
    stats = blackhole.stats()
    assert stats.latency_samples == 100
    assert stats.latency_p50_ms is not None and stats.latency_p99_ms is not None
    assert 5.0 <= stats.latency_p50_ms <= stats.latency_p99_ms < 5000


async def test_tcp_senders_deliver_every_byte() -> None:
    """The block sender and the paced sender deliver whole lines over real connections."""
    received: list[bytes] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read())
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    events = list(iter_events(3000))
    load = ndjson_parts(events, parts=3, block_bytes=50_000)
    report = await asyncio.to_thread(send_tcp, port, load)
    paced = await asyncio.to_thread(send_tcp_paced, port, events[:200], rate=4000)
    await asyncio.sleep(0.2)
    server.close()
    await server.wait_closed()
    lines = b"".join(received).splitlines()
    assert sorted(line for line in lines if b"sent_ns" not in line) == sorted(events)
    stamped = [orjson.loads(line) for line in lines if b"sent_ns" in line]
    assert sorted(obj.pop("id") for obj in stamped) == [f"{i:010d}" for i in range(200)]
    assert (report.events, paced.events) == (3000, 200)
    # 200 events at 4000/s take about 50 ms; far quicker means the pacing is broken.
    assert paced.last_send - paced.first_send >= 0.04


async def test_http_sender_and_blackhole_ceiling_run() -> None:
    """A 20,000-event ceiling run sends everything straight to the blackhole, losing none."""
    args = parse_args(["--events", "20000", "--ceiling-clients", "2", "--idle-timeout", "5"])
    result = await run_ceiling(1, args, build_loads(args))
    assert (result.events, result.received, result.lost, result.duplicates) == (20000, 20000, 0, 0)
    assert result.requests == 40
    assert result.events_per_s > 0 and result.cpu_s > 0


@contextlib.asynccontextmanager
async def events_server(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[str]:
    """A real HTTP server answering ``POST /v1/events`` with ``handler``; yields its URL."""
    app = web.Application()
    app.router.add_post("/v1/events", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1/events"
    finally:
        await runner.cleanup()


async def test_http_sender_retries_busy_answers() -> None:
    """A 503 with Retry-After is waited out and the body re-sent."""
    blackhole = Blackhole()
    await blackhole.start()
    busy = {"left": 2}

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        if busy["left"]:
            busy["left"] -= 1
            return web.Response(status=503, headers={"Retry-After": "0"})
        blackhole.count(body, gzipped=False)
        return web.Response(text="{}")

    try:
        async with events_server(handler) as url:
            load = ndjson_bodies(list(iter_events(300)), parts=1, batch_events=100)
            report = await send_http(url, load, headers={})
    finally:
        await blackhole.stop()
    assert report.busy_retries == 2
    assert blackhole.stats().unique == 300


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "close"])
async def test_http_sender_sizes_requests_and_opens_a_connection_per_request_if_asked(
    close: bool,
) -> None:
    """``--http-batch`` sets the events per request; ``--http-close`` (``close``) sends each
    on a new connection, as clients without keep-alive do."""
    peers: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        assert len((await request.read()).splitlines()) == 10
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(text="{}")

    args = parse_args(["--events", "60", "--connections", "1", "--http", "--http-batch", "10"])
    loads = build_loads(args)
    assert loads.http is not None
    async with events_server(handler) as url:
        await send_http(url, loads.http, headers={}, close=close)
    assert len(peers) == 6
    assert len(set(peers)) == (6 if close else 1)


def test_process_tree_counts_children_cpu_and_memory() -> None:
    """CPU and peak RSS include a child that the root process started."""
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.15: pass"
    script = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"
    process = subprocess.Popen([sys.executable, "-c", script])
    tree = ProcessTree(process.pid)
    while process.poll() is None:
        tree.sample()
        time.sleep(0.02)
    assert tree.processes() >= 2
    assert tree.cpu_seconds() >= 0.1
    assert tree.peak_rss_bytes() > 1 << 20


def test_bench_config_applies_run_options(tmp_path: Path) -> None:
    """Ports, data_dir and the gzip/disk/workers/http flags land in the generated config."""
    options = ForwarderOptions(http=True, gzip=True, buffer="disk", workers=2)
    config = bench_config(
        options, ingest_port=1001, admin_port=1002, sink_port=1003, data_dir=tmp_path
    )
    assert config == {
        "data_dir": str(tmp_path),
        "shutdown_timeout_secs": 30,
        "log": {"level": "info", "format": "json"},
        "admin": {"address": "127.0.0.1:1002"},
        "sources": {"in": {"type": "http", "address": "127.0.0.1:1001"}},
        "sinks": {
            "hec": {
                "type": "splunk_hec",
                "endpoint": "http://127.0.0.1:1003",
                "token": "00000000-0000-0000-0000-000000000000",
                "compression": "gzip",
                "batch": {"max_events": 500, "max_bytes": 1048576, "timeout_secs": 1.0},
                "buffer": {"type": "disk"},
                "request": {"concurrency": 4},
            }
        },
        "workers": 2,
    }


def test_syslog_ng_config_is_templated_with_both_ports() -> None:
    """The peer config gets the source and HEC ports and keeps flow control."""
    text = SyslogNgTarget().render(source_port=15170, hec_port=18088)
    assert "port(15170)" in text
    assert 'url("http://127.0.0.1:18088/services/collector/event")' in text
    assert "flags(flow-control);" in text
    assert "@" not in text.replace("@version", "")


def _result(target: str, events_per_s: float) -> RunResult:
    return RunResult(
        target=target,
        run=1,
        mode="throughput",
        ingest="tcp",
        events=0,
        received=0,
        lost=0,
        duplicates=0,
        seconds=0.0,
        send_seconds=0.0,
        events_per_s=events_per_s,
        mib_per_s=0.0,
        cpu_s=0.0,
        cpu_us_per_event=0.0,
        peak_rss_mib=0.0,
        processes=1,
        requests=0,
        blackhole_cpu_s=0.0,
        blackhole_busy_pct=0.0,
        busy_retries=0,
        exit_code=0,
        latency_p50_ms=None,
        latency_p99_ms=None,
    )


def test_table_shows_medians_ranges_and_ratio() -> None:
    """The table's ratio is forwarder median over syslog-ng median."""
    results = [_result("forwarder", v) for v in (300, 100, 200)]
    results += [_result("syslog-ng", v) for v in (50, 100, 150)]
    row = next(line for line in format_table(results).splitlines() if line.startswith("events/s"))
    assert row.split() == ["events/s", "200", "[100..300]", "100", "[50..150]", "2.00"]


async def test_timeline_shows_arrivals_and_each_process_cpu() -> None:
    """Each line has the events that arrived in its interval (summing to all of them) and the
    CPU share of every process of the tree; a busy process shows busy."""
    counts = iter([0, 300, 300, 1000, 1000, 1000, 1000, 1000])

    async def arrived() -> int:
        return next(counts)

    lines: list[str] = []
    task = asyncio.create_task(timeline(arrived, ProcessTree(os.getpid()), lines))
    # Busy in this process (the tree's root) between the samples.
    end = time.monotonic() + 0.45
    while time.monotonic() < end:
        sum(range(1000))
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(lines) >= 3
    events = [int(line.split(" s ")[1].split(" ev")[0].replace(",", "")) for line in lines]
    assert events[:3] == [0, 300, 0] and sum(events) <= 1000
    shares = [int(line.rsplit(":", 1)[1].strip(" %")) for line in lines]
    assert max(shares) >= 25
    assert all(f"{os.getpid()}:" in line for line in lines)


@pytest.mark.skipif(shutil.which("syslog-ng") is None, reason="syslog-ng-core not installed")
async def test_syslog_ng_peer_run_loses_nothing(tmp_path: Path) -> None:
    """A small syslog-ng run with flow control delivers every event exactly once."""
    args = parse_args(["--events", "5000", "--connections", "2", "--idle-timeout", "5"])
    target = SyslogNgTarget()
    target.check(tmp_path)
    result = await run_target(target, 1, args, build_loads(args), tmp_path)
    assert (result.received, result.lost, result.duplicates) == (5000, 0, 0)
    assert result.exit_code == 0
    assert result.cpu_s > 0 and result.peak_rss_mib > 1


def test_policy_bench_reports_stage_floor_and_each_rule() -> None:
    """The policy micro-benchmark runs the bench policy over its lines, keeps what the policy
    keeps, and names every rule in the per-rule timing."""
    from bench import policy_bench
    from forwarder.events import Event
    from forwarder.policy import Policy, parse_rules

    rules = parse_rules(policy_bench._rules(policy_bench.RULES))
    lines = policy_bench._lines(2000)
    events = [Event(line, "bench", 0.0) for line in lines]
    kept = len(Policy.compile(rules).apply(events).kept)
    assert 0 < kept < len(lines)
    command = [sys.executable, "-m", "bench.policy_bench", "--events", "2000", "--runs", "1"]
    out = subprocess.run(
        [*command, "--per-rule"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert f"({len(rules)} rules, {kept} kept)" in out
    for label in ("policy cost:", "parse into a dict:", "re-encode:", "keyed hash:"):
        assert label in out
    timed = out.split("each rule alone", 1)[1]
    assert [rule.name for rule in rules] == [line.split()[0] for line in timed.splitlines()[1:]]
    # The bench policy tags every event: no views. The read-mostly one decodes views.
    assert "(no views: a rule sets fields on every event" in out
    other = Path(policy_bench.__file__).parent / "configs" / "policy-10-rules-read-mostly.yaml"
    out = subprocess.run(
        [*command, "--rules", str(other)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert "(10 rules," in out and "view of 11 fields:" in out


def test_policy_floor_matches_the_engine_and_reports_each_stage() -> None:
    """The hand-written read-mostly policy keeps what the engine keeps, byte for byte and
    route for route; a policy that differs is caught; the command prints every stage."""
    from bench import policy_bench, policy_floor
    from forwarder.policy import Policy, parse_rules
    from forwarder.policy.view import decoder_for

    lines = policy_bench._lines(3000)
    rules = parse_rules(policy_bench._rules(policy_floor.RULES))
    policy = Policy.compile(rules, hash_key=policy_floor.HASH_KEY)
    view = decoder_for([policy])
    assert view is not None
    assert policy_floor.differences(lines, 480, view, policy) == []
    # The same rules with the tag on denied events left out: the bytes differ.
    without_tag = Policy.compile(
        [rule for rule in rules if rule.name != "flag-denials"], hash_key=policy_floor.HASH_KEY
    )
    assert policy_floor.differences(lines, 480, view, without_tag)
    # Another key for the e-mail hashes: the redacted events differ.
    other_key = Policy.compile(rules, hash_key=b"another key")
    assert policy_floor.differences(lines, 480, view, other_key)

    out = subprocess.run(
        [sys.executable, "-m", "bench.policy_floor", "--events", "2000", "--runs", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert "validating without a policy:" in out
    for label in ("views alone:", "views and pattern search:", "hand-written policy:", "engine:"):
        assert f"  {label}" in out
