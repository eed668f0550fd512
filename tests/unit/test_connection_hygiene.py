"""Connection hygiene on the listeners: max_connections, idle timeout, bounded per-connection
memory (slowloris, endless lines), and the connections gauge."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest

from forwarder.sources.tcp import TcpSource
from forwarder.telemetry.metrics import Metrics
from tests.helpers import wait_for
from tests.ingest_helpers import Wired, raise_open_files, send_tcp

MESSAGES = {"tcp": b'{"ok":true}\n', "syslog": b"<13>1 - h app - - - ok\n"}


def stream(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "address": "127.0.0.1:0", **extra}


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def close_all(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in conns:
        writer.close()
    for _, writer in conns:
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def active(wired: Wired) -> float:
    return wired.sample("forwarder_connections_active", source="src")


@pytest.mark.parametrize("kind", ["tcp", "syslog", "http"])
async def test_excess_connections_are_refused_and_counted(metrics: Metrics, kind: str) -> None:
    """Past max_connections a new connection is closed at once and counted; the gauge reads
    the open ones; once one closes, a new client gets in."""
    async with Wired(stream(kind, max_connections=3), metrics) as wired:
        held = [await connect(wired.port) for _ in range(3)]
        await wait_for(lambda: active(wired) == 3)
        reader, writer = await connect(wired.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        reason = {"source": "src", "reason": "too_many_connections"}
        assert wired.sample("forwarder_ingest_errors_total", **reason) == 1
        assert active(wired) == 3
        await close_all(held[:1])
        await wait_for(lambda: active(wired) == 2)
        if kind != "http":
            await send_tcp(wired.port, MESSAGES[kind])
            await wired.wait_events(1)
        await close_all(held[1:])


@pytest.mark.parametrize("kind", ["tcp", "syslog"])
async def test_idle_connection_is_closed(metrics: Metrics, kind: str) -> None:
    """A connection silent for idle_timeout_secs is closed and counted, its partial line
    placed."""
    async with Wired(stream(kind, idle_timeout_secs=0.2), metrics) as wired:
        reader, writer = await connect(wired.port)
        writer.write(MESSAGES[kind].rstrip(b"\n"))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        reason = {"source": "src", "reason": "idle_timeout"}
        assert wired.sample("forwarder_ingest_errors_total", **reason) == 1
        assert len(await wired.wait_events(1)) == 1
        assert active(wired) == 0


async def test_http_idle_connection_is_closed(metrics: Metrics) -> None:
    """An http connection that sends nothing is closed after idle_timeout_secs."""
    async with Wired(stream("http", idle_timeout_secs=0.2), metrics) as wired:
        reader, writer = await connect(wired.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await wait_for(lambda: active(wired) == 0)


async def test_two_thousand_idle_connections_do_not_block_others(metrics: Metrics) -> None:
    """2,000 idle clients hold connections; another client's events still arrive at once."""
    raise_open_files(10_000)
    async with Wired(stream("tcp"), metrics) as wired:
        idle = await asyncio.gather(*(connect(wired.port) for _ in range(2000)))
        await wait_for(lambda: active(wired) == 2000)
        await send_tcp(wired.port, b'{"n":1}\n{"n":2}\n')
        assert await wired.wait_events(2) == [{"n": 1}, {"n": 2}]
        await close_all(list(idle))
        await wait_for(lambda: active(wired) == 0)


@pytest.mark.parametrize("kind", ["tcp", "syslog"])
async def test_slowloris_holds_at_most_max_event_bytes(metrics: Metrics, kind: str) -> None:
    """A client trickling a never-ending line holds no more than max_event_bytes, is not
    idle, and does not delay other clients."""
    limit = 4096
    async with Wired(stream(kind, max_event_bytes=limit), metrics) as wired:
        source = wired.source
        assert isinstance(source, TcpSource)
        _, slow = await connect(wired.port)
        slow.write(b"<13>1 - h app - - - " if kind == "syslog" else b'{"slow":"')
        peak = 0
        for i in range(60):
            slow.write(b"x" * 100)
            await slow.drain()
            await asyncio.sleep(0.005)
            peak = max(peak, source.pending_bytes)
            if i == 30:
                await send_tcp(wired.port, MESSAGES[kind])
                await wired.wait_events(1)
        assert 0 < peak <= limit
        reason = {"source": "src", "reason": "too_large"}
        await wait_for(lambda: wired.sample("forwarder_ingest_errors_total", **reason) == 1)
        slow.close()
        assert wired.buffer.depth_events == 1


async def test_hundred_megabytes_without_newline(metrics: Metrics) -> None:
    """100 MB with no newline: held bytes stay under max_event_bytes, the line is counted
    once as too large, and the next line on the same connection arrives."""
    limit = 1 << 20
    async with Wired(stream("tcp", max_event_bytes=limit), metrics) as wired:
        source = wired.source
        assert isinstance(source, TcpSource)
        reader, writer = await connect(wired.port)
        chunk = b"y" * (1 << 20)
        peak = 0
        for _ in range(100):
            writer.write(chunk)
            await writer.drain()
            peak = max(peak, source.pending_bytes)
        writer.write(b'\n{"after":"flood"}\n')
        await send_tcp(wired.port, b'{"other":"client"}\n')
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
        got = await wired.wait_events(2)
    assert peak <= limit
    assert sorted(got, key=str) == [{"after": "flood"}, {"other": "client"}]
    reason = {"source": "src", "reason": "too_large"}
    assert wired.sample("forwarder_ingest_errors_total", **reason) == 1


async def test_http_client_trickling_headers_is_closed_after_the_idle_timeout(
    metrics: Metrics,
) -> None:
    """An HTTP client that sends a request's header a byte at a time, never finishing it, is
    closed once idle_timeout_secs have passed since it connected, though bytes keep coming;
    a client that finishes its request meanwhile is served."""
    async with Wired(stream("http", idle_timeout_secs=1.0), metrics) as wired:
        reader, slow = await connect(wired.port)
        loop = asyncio.get_running_loop()
        start = loop.time()
        head = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 1000
        closed_after = None
        for byte in head:
            if loop.time() - start > 5:
                break
            try:
                slow.write(bytes([byte]))
                await slow.drain()
            except ConnectionError:
                closed_after = loop.time() - start
                break
            if reader.at_eof() or slow.is_closing():
                closed_after = loop.time() - start
                break
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), 0.05) == b"":
                    closed_after = loop.time() - start
                    break
        assert closed_after is not None and 0.9 <= closed_after < 3, closed_after
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{wired.port}/v1/events", json={"ok": True}) as resp,
        ):
            assert resp.status == 200
        await wired.wait_events(1)
        slow.close()
