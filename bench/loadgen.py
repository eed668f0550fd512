"""Load generator: pushes pre-encoded events as fast as the target reads, or at a fixed rate.

Throughput senders write large pre-built blocks (one thread per TCP connection, blocking
``sendall`` releases the GIL) or POST pre-built bodies from concurrent aiohttp clients, so on a
2-core machine the generator takes as little CPU from the system under test as possible.
Paced senders stamp each event with ``sent_ns`` (epoch nanoseconds) as it leaves, for the
receiver to compute send-to-arrival latency.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from bench.events import EncodedLoad, stamp

__all__ = ["SendReport", "send_http", "send_http_paced", "send_tcp", "send_tcp_paced"]

# A busy target answers 503/429; the generator waits this long (seconds) when the answer
# carries no usable Retry-After, and never longer than the cap.
_BUSY_WAIT_SECS = 0.05
_BUSY_WAIT_CAP_SECS = 1.0
# Paced senders wake this often (seconds) and send every event that has come due.
_TICK_SECS = 0.002


@dataclass(frozen=True)
class SendReport:
    """What a sender did.

    Arguments:
        first_send: epoch seconds just before the first byte was written.
        last_send: epoch seconds after the last write or request returned.
        events: events sent.
        payload_bytes: event bytes sent, newlines included, envelopes excluded.
        busy_retries: requests the target refused as busy (503/429) and that were re-sent.
    """

    first_send: float
    last_send: float
    events: int
    payload_bytes: int
    busy_retries: int = 0


def _connect(port: int, connections: int) -> list[socket.socket]:
    socks = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(sock)
    return socks


def _close(socks: Sequence[socket.socket]) -> None:
    for sock in socks:
        try:
            # A half-close lets the target read everything still in flight before EOF.
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()


def send_tcp(port: int, load: EncodedLoad) -> SendReport:
    """Write ``load`` over one TCP connection per part to 127.0.0.1:``port``; blocks until
    the kernel has taken every byte (the target's reading pace sets the speed)."""
    socks = _connect(port, len(load.parts))
    errors: list[BaseException] = []

    def pump(sock: socket.socket, blocks: list[bytes]) -> None:
        try:
            for block in blocks:
                sock.sendall(block)
        except OSError as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=pump, args=(sock, blocks), daemon=True)
        for sock, blocks in zip(socks, load.parts, strict=True)
    ]
    first = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    last = time.time()
    _close(socks)
    if errors:
        raise ConnectionError(f"TCP send to port {port} failed: {errors[0]!r}")
    return SendReport(first, last, load.events, load.payload_bytes)


def send_tcp_paced(
    port: int, events: Sequence[bytes], *, rate: float, connections: int = 1
) -> SendReport:
    """Send ``events`` at ``rate`` events per second, stamping each with ``sent_ns`` as it
    leaves; ticks deal whole lines to the connections in turn."""
    socks = _connect(port, connections)
    sent = 0
    tick = 0
    payload = 0
    start = time.monotonic()
    first = time.time()
    while sent < len(events):
        due = min(len(events), int((time.monotonic() - start) * rate) + 1)
        if due > sent:
            now_ns = time.time_ns()
            chunk = b"".join([stamp(event, now_ns) + b"\n" for event in events[sent:due]])
            socks[tick % connections].sendall(chunk)
            payload += len(chunk)
            sent = due
            tick += 1
        time.sleep(_TICK_SECS)
    last = time.time()
    _close(socks)
    return SendReport(first, last, sent, payload)


def _busy_wait(response: aiohttp.ClientResponse) -> float:
    try:
        return min(_BUSY_WAIT_CAP_SECS, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return _BUSY_WAIT_SECS


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str]
) -> int:
    """POST until the target takes the body; returns how many busy answers came first."""
    busy = 0
    while True:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            if response.status < 300:
                return busy
            if response.status not in (429, 503):
                raise ConnectionError(f"POST {url} answered {response.status}")
            busy += 1
            await asyncio.sleep(_busy_wait(response))


async def send_http(
    url: str, load: EncodedLoad, *, headers: Mapping[str, str], close: bool = False
) -> SendReport:
    """POST every body of ``load`` to ``url``, one concurrent client per part; ``close``:
    each request on a new connection, as clients without keep-alive send."""
    connector = aiohttp.TCPConnector(limit=len(load.parts), force_close=close)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(bodies: list[bytes]) -> int:
            busy = 0
            for body in bodies:
                busy += await _post(session, url, body, headers)
            return busy

        first = time.time()
        busy_counts = await asyncio.gather(*(client(bodies) for bodies in load.parts))
        last = time.time()
    return SendReport(first, last, load.events, load.payload_bytes, sum(busy_counts))


async def send_http_paced(
    url: str, events: Sequence[bytes], *, rate: float, headers: Mapping[str, str]
) -> SendReport:
    """POST ``events`` as NDJSON at ``rate`` events per second, one body per tick, each
    event stamped with ``sent_ns`` as its body leaves."""
    sent = 0
    payload = 0
    busy = 0
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        start = loop.time()
        first = time.time()
        while sent < len(events):
            due = min(len(events), int((loop.time() - start) * rate) + 1)
            if due > sent:
                now_ns = time.time_ns()
                body = b"".join([stamp(event, now_ns) + b"\n" for event in events[sent:due]])
                busy += await _post(session, url, body, headers)
                payload += len(body)
                sent = due
            await asyncio.sleep(_TICK_SECS)
        last = time.time()
    return SendReport(first, last, sent, payload, busy)
