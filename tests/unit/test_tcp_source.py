"""tcp source on real sockets: many connections, bad and oversized lines, limits, backpressure."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from forwarder.buffers.memory import MemoryBuffer
from forwarder.routing import Router, Target
from forwarder.sources.base import SourceContext
from forwarder.sources.tcp import TcpConfig, TcpSource
from forwarder.telemetry.metrics import Metrics
from tests.helpers import sample, wait_for


@pytest.fixture
async def make(metrics: Metrics) -> AsyncIterator[Any]:
    """Start a tcp source named ``src`` feeding one buffer; stopped at teardown."""
    started: list[TcpSource] = []

    async def build(*, max_events: int = 100_000, **config: Any) -> tuple[TcpSource, MemoryBuffer]:
        buffer = MemoryBuffer("out", max_events=max_events, max_bytes=1 << 30)
        router = Router(metrics)
        router.add_target("src", Target("out", buffer, "block"))
        cfg = TcpConfig.model_validate({"type": "tcp", "address": "127.0.0.1:0", **config})
        source = TcpSource(cfg, SourceContext("src", router, metrics))
        await source.start()
        started.append(source)
        return source, buffer

    yield build
    for source in started:
        await source.stop()


def port(source: TcpSource) -> int:
    return source.bound[0][1]


def taken(buffer: MemoryBuffer) -> list[dict[str, Any]]:
    """Everything the buffer holds, as objects, oldest first."""
    return [json.loads(e.raw) for e in buffer.unacked()]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return sample(metrics.registry, name, **labels)


async def send(p: int, data: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", p)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def test_many_concurrent_connections_deliver_everything_in_order(
    make: Any, metrics: Metrics
) -> None:
    """50 connections sending at once: every line arrives, each connection's in order."""
    source, buffer = await make()
    conns, per = 50, 100

    async def client(c: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port(source))
        for i in range(0, per, 10):
            lines = b"".join(
                json.dumps({"c": c, "i": j}).encode() + b"\n" for j in range(i, i + 10)
            )
            writer.write(lines)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(client(c) for c in range(conns)))
    await wait_for(lambda: buffer.depth_events == conns * per)
    by_conn: dict[int, list[int]] = {}
    for obj in taken(buffer):
        by_conn.setdefault(obj["c"], []).append(obj["i"])
    assert by_conn == {c: list(range(per)) for c in range(conns)}
    assert value(metrics, "forwarder_events_received_total", source="src") == conns * per


async def test_invalid_lines_are_counted_and_wrapped(make: Any, metrics: Metrics) -> None:
    """Lines that are not JSON objects are counted and wrapped; good lines around them pass."""
    source, buffer = await make()
    await send(port(source), b'{"a":1}\nnot json\n[1,2]\n{"a":2}\n')
    await wait_for(lambda: buffer.depth_events == 4)
    assert taken(buffer) == [
        {"a": 1},
        {"message": "not json", "forwarder_parse_error": "invalid_json"},
        {"message": "[1,2]", "forwarder_parse_error": "not_an_object"},
        {"a": 2},
    ]
    assert value(metrics, "forwarder_ingest_errors_total", source="src", reason="invalid_json") == 2


async def test_invalid_lines_dropped_with_on_invalid_drop(make: Any, metrics: Metrics) -> None:
    """on_invalid: drop leaves bad lines out and counts them as dropped (reason invalid)."""
    source, buffer = await make(on_invalid="drop")
    await send(port(source), b'{"a":1}\n{oops\n"str"\n{"a":2}\n')
    await wait_for(lambda: value(metrics, "forwarder_events_received_total", source="src") == 2)
    assert taken(buffer) == [{"a": 1}, {"a": 2}]
    assert value(metrics, "forwarder_ingest_errors_total", source="src", reason="invalid_json") == 2
    assert value(metrics, "forwarder_events_dropped_total", component="src", reason="invalid") == 2


async def test_too_large_line_is_counted_and_connection_stays_open(
    make: Any, metrics: Metrics
) -> None:
    """A line over max_event_bytes is skipped and counted; the same connection goes on."""
    source, buffer = await make(max_event_bytes=64)
    reader, writer = await asyncio.open_connection("127.0.0.1", port(source))
    big = json.dumps({"pad": "x" * 200}).encode()
    writer.write(b'{"n":1}\n' + big + b'\n{"n":2}\n')
    await writer.drain()
    await wait_for(lambda: buffer.depth_events == 2)
    # A partial line over the limit, then its end and more lines, in separate writes.
    writer.write(big[:100])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(big[100:] + b'\n{"n":3}\n')
    await writer.drain()
    await wait_for(lambda: buffer.depth_events == 3)
    assert taken(buffer) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert value(metrics, "forwarder_ingest_errors_total", source="src", reason="too_large") == 2
    assert not reader.at_eof()
    writer.close()
    await writer.wait_closed()


async def test_last_line_without_newline_is_kept_at_close(make: Any) -> None:
    """A connection that closes after a line with no newline still delivers that line."""
    source, buffer = await make()
    await send(port(source), b'{"a":1}\n{"last":true}')
    await wait_for(lambda: buffer.depth_events == 2)
    assert taken(buffer) == [{"a": 1}, {"last": True}]


async def test_max_connections_refuses_the_extra_client(make: Any, metrics: Metrics) -> None:
    """Past max_connections a new client is closed and counted; the others keep working."""
    source, buffer = await make(max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", port(source)) for _ in range(2)]
    await wait_for(lambda: value(metrics, "forwarder_connections_active", source="src") == 2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port(source))
    try:
        assert await asyncio.wait_for(reader.read(), 2) == b""
    except ConnectionResetError:
        pass
    writer.close()
    reason = "too_many_connections"
    assert value(metrics, "forwarder_ingest_errors_total", source="src", reason=reason) == 1
    for i, (_, w) in enumerate(held):
        w.write(json.dumps({"conn": i}).encode() + b"\n")
        await w.drain()
    await wait_for(lambda: buffer.depth_events == 2)
    for _, w in held:
        w.close()
        await w.wait_closed()


async def test_stop_places_partial_lines_and_closes_clients(make: Any) -> None:
    """stop() places what open connections sent (their last partial line too) and closes them."""
    source, buffer = await make()
    reader, writer = await asyncio.open_connection("127.0.0.1", port(source))
    writer.write(b'{"a":1}\n{"a":2}')
    await writer.drain()
    await wait_for(lambda: buffer.depth_events == 1)
    await source.stop()
    assert taken(buffer) == [{"a": 1}, {"a": 2}]
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()


async def test_full_block_buffer_blocks_the_sender_until_space_frees(
    make: Any, metrics: Metrics
) -> None:
    """With a full block buffer the source stops reading, the sender's socket fills and its
    writes block; once the buffer drains the writes resume and every line arrives once."""
    source, buffer = await make(max_events=100)
    sock = socket.create_connection(("127.0.0.1", port(source)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sock.setblocking(False)
    next_line = 0
    pending = b""

    def refill() -> None:
        nonlocal next_line, pending
        if len(pending) < 65536:
            pending += b"".join(
                b'{"i":%d,"pad":"................"}\n' % i
                for i in range(next_line, next_line + 2000)
            )
            next_line += 2000

    def send_some() -> bool:
        """Send what the socket takes now; False when it takes nothing."""
        nonlocal pending
        try:
            n = sock.send(pending[:65536])
        except BlockingIOError:
            return False
        pending = pending[n:]
        return True

    try:
        # Phase 1: nobody drains the buffer, so the sender must end up blocked.
        blocked_since: float | None = None
        while next_line < 2_000_000:
            refill()
            if send_some():
                blocked_since = None
                continue
            now = time.monotonic()
            blocked_since = blocked_since or now
            # Blocked with the buffer full, not merely behind a slow reader.
            if now - blocked_since > 0.3 and buffer.depth_events >= 100:
                break
            await asyncio.sleep(0.01)
        assert blocked_since is not None, "the sender never blocked"
        assert buffer.depth_events <= 100 + 300_000 // 30
        stuck_at = next_line

        # Phase 2: a reader frees space; the sender's writes go through again.
        received: list[int] = []

        async def consume() -> None:
            while True:
                batch = await buffer.read(5000, 1 << 30, 0.05)
                if batch is None:
                    if received and len(received) == total:
                        return
                    continue
                received.extend(json.loads(e.raw)["i"] for e in batch.events)
                buffer.ack(batch)

        total = -1
        consumer = asyncio.create_task(consume())
        target = stuck_at + 4000
        while pending or next_line < target:
            if next_line < target:
                refill()
            if not send_some():
                await asyncio.sleep(0.001)
        total = next_line
        sock.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(consumer, 30)
    finally:
        sock.close()
    assert received == list(range(total))
    assert value(metrics, "forwarder_events_received_total", source="src") == total
