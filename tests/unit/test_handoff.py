"""Connections accepted once and handed to workers (forwarder.handoff), in one process: the
supervisor's listener and the workers' receivers on real sockets, the sources serving what
they are handed (plain, TLS, syslog and HTTP) as if they had accepted it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from forwarder.handoff import Listener, Receiver, channel_pair, hand
from forwarder.telemetry.metrics import Metrics
from forwarder.worker import HANDED_ENV
from tests.helpers import wait_for
from tests.ingest_helpers import Certs, Wired
from tests.unit.test_tls import send_tls


class Workers:
    """``count`` channels, each with a receiver that keeps what it is handed (or passes it on
    to ``adopt``)."""

    def __init__(self, count: int, adopt: Any = None) -> None:
        self.ours: list[socket.socket] = []
        self.theirs: list[socket.socket] = []
        self.receivers: list[Receiver] = []
        self.got: list[list[tuple[str, socket.socket]]] = []
        for _ in range(count):
            ours, theirs = channel_pair()
            self.ours.append(ours)
            self.theirs.append(theirs)
            got: list[tuple[str, socket.socket]] = []
            self.got.append(got)
            keep = adopt or (lambda name, sock, got=got: got.append((name, sock)))
            receiver = Receiver(theirs, keep)
            receiver.start()
            self.receivers.append(receiver)

    def channels(self) -> list[socket.socket]:
        return [s for s in self.ours if s.fileno() >= 0]

    def close(self) -> None:
        for receiver in self.receivers:
            receiver.stop()
        for sock in self.ours:
            sock.close()
        for got in self.got:
            for _, sock in got:
                sock.close()


@pytest.fixture
async def workers() -> AsyncIterator[list[Workers]]:
    made: list[Workers] = []
    yield made
    for w in made:
        w.close()


def port_of(listener: Listener) -> int:
    return int(listener.address.rsplit(":", 1)[1])


async def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_connections_go_round_robin_and_carry_the_clients_bytes(
    workers: list[Workers],
) -> None:
    """Four clients, two workers: two each, in turn, and each handed socket is the client's."""
    two = Workers(2)
    workers.append(two)
    listener = Listener("app", "127.0.0.1:0", two.channels)
    listener.start()
    try:
        clients = [await connect(port_of(listener)) for _ in range(4)]
        await wait_for(lambda: sum(map(len, two.got)) == 4)
        assert [len(g) for g in two.got] == [2, 2]
        assert {name for g in two.got for name, _ in g} == {"app"}
        # Every client reaches exactly one handed socket: its peer address is the client's.
        handed = {sock.getpeername(): sock for g in two.got for _, sock in g}
        assert set(handed) == {c.getsockname() for c in clients}
        for i, client in enumerate(clients):
            client.sendall(b"hello %d" % i)
            peer = handed[client.getsockname()]
            peer.settimeout(5)
            assert peer.recv(100) == b"hello %d" % i
            client.close()
    finally:
        listener.close()


async def test_a_dead_worker_is_skipped(workers: list[Workers]) -> None:
    """A worker whose end is closed (it died) gets nothing; the others get everything."""
    two = Workers(2)
    workers.append(two)
    two.receivers[0].stop()
    listener = Listener("app", "127.0.0.1:0", two.channels)
    listener.start()
    try:
        clients = [await connect(port_of(listener)) for _ in range(3)]
        await wait_for(lambda: len(two.got[1]) == 3)
        assert two.got[0] == []
    finally:
        listener.close()
        for c in clients:
            c.close()


def test_hand_closes_the_connection_when_no_worker_takes_it() -> None:
    ours, theirs = channel_pair()
    theirs.close()
    a, b = socket.socketpair()
    try:
        assert hand([ours], 0, "app", a) == (-1, False)
        assert a.fileno() == -1
        b.settimeout(5)
        assert b.recv(1) == b""  # the client sees the close at once
    finally:
        ours.close()
        b.close()


async def test_connections_wait_in_the_backlog_while_no_worker_is_ready(
    workers: list[Workers],
) -> None:
    """With no worker ready the listener pauses; the client waits, and is handed on resume."""
    one = Workers(1)
    workers.append(one)
    ready: list[socket.socket] = []
    listener = Listener("app", "127.0.0.1:0", lambda: ready)
    listener.start()
    try:
        client = await connect(port_of(listener))
        await asyncio.sleep(0.2)
        assert one.got == [[]]
        ready.extend(one.channels())
        listener.start()
        await wait_for(lambda: len(one.got[0]) == 1)
        assert one.got[0][0][1].getpeername() == client.getsockname()
        client.close()
    finally:
        listener.close()


async def test_a_burst_no_worker_has_room_for_waits_instead_of_being_closed() -> None:
    """More connections than a worker's channel holds arrive while it reads nothing: the
    listener keeps the one that did not fit and leaves the rest in the backlog; once the
    worker reads again every client is handed over, none closed."""
    ours, theirs = channel_pair()
    listener = Listener("app", "127.0.0.1:0", lambda: [ours])
    listener.start()
    got: list[tuple[str, socket.socket]] = []
    receiver = Receiver(theirs, lambda name, sock: got.append((name, sock)))
    clients: list[socket.socket] = []
    try:
        # What one channel holds before it refuses (about 280 on Linux's defaults).
        sent = 0
        with contextlib.ExitStack() as stack:
            probe_ours, _probe_theirs = (stack.enter_context(s) for s in channel_pair())
            probe = stack.enter_context(socket.socket())
            with contextlib.suppress(BlockingIOError):
                while True:
                    socket.send_fds(probe_ours, [b"x"], [probe.fileno()])
                    sent += 1
        total = sent + 40
        for _ in range(total):
            clients.append(await connect(port_of(listener)))
            if len(clients) % 50 == 0:
                await asyncio.sleep(0)  # the listener accepts as they come
        await asyncio.sleep(0.2)
        for client in clients:
            # Still open: a closed one would read as b"" (end of stream).
            with pytest.raises(BlockingIOError):
                client.recv(1)
        receiver.start()
        await wait_for(lambda: len(got) == total, timeout_secs=10)
        assert {sock.getpeername() for _, sock in got} == {c.getsockname() for c in clients}
    finally:
        listener.close()
        receiver.stop()
        ours.close()
        for client in clients:
            client.close()
        for _, sock in got:
            sock.close()


@contextlib.asynccontextmanager
async def through_supervisor(wired: Wired, workers: list[Workers]) -> AsyncIterator[int]:
    """A listener handing its connections to two workers that pass them to ``wired``'s
    source, as the supervisor and workers do; yields the port clients connect to."""
    two = Workers(2, adopt=lambda name, sock: wired.source.adopt(sock))
    workers.append(two)
    listener = Listener("src", "127.0.0.1:0", two.channels)
    listener.start()
    try:
        yield port_of(listener)
    finally:
        listener.close()


SERVED = {
    "tcp": (b'{"user":"alice"}\n', "alice"),
    "syslog": (b"<38>1 2026-01-02T03:04:05Z host app - - - handed over\n", "handed over"),
}


@pytest.mark.parametrize("kind", sorted(SERVED))
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_stream_sources_serve_handed_connections(
    tmp_path: Path,
    metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[Workers],
    kind: str,
    tls: bool,
) -> None:
    """A handed source does not listen; what a client sends through the supervisor's port
    becomes events as on its own listener, over TLS too; once stopped it takes nothing."""
    monkeypatch.setenv(HANDED_ENV, '["src"]')
    certs = Certs(tmp_path)
    config: dict[str, Any] = {"type": kind, "address": "127.0.0.1:5999"}
    if tls:
        config["tls"] = certs.server_tls()
    async with Wired(config, metrics) as wired:
        assert wired.source.bound == [("127.0.0.1", 5999)]
        async with through_supervisor(wired, workers) as port:
            data, text = SERVED[kind]
            for _ in range(2):
                if tls:
                    await send_tls(port, data, certs.client_context())
                else:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(data)
                    writer.close()
                    await writer.wait_closed()
            objects = await wired.wait_events(2)
            assert all(text in str(obj) for obj in objects)
    a, b = socket.socketpair()
    wired.source.adopt(a)
    b.settimeout(5)
    assert b.recv(1) == b""
    b.close()


async def test_http_source_serves_handed_connections(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch, workers: list[Workers]
) -> None:
    """Keep-alive requests over handed connections get their answers; the events arrive."""
    monkeypatch.setenv(HANDED_ENV, '["src"]')
    async with Wired({"type": "http", "address": "127.0.0.1:5998"}, metrics) as wired:
        assert wired.source.bound == [("127.0.0.1", 5998)]
        async with through_supervisor(wired, workers) as port:
            url = f"http://127.0.0.1:{port}/v1/events"
            async with aiohttp.ClientSession() as session:
                for i in range(3):
                    async with session.post(url, json={"n": i}) as resp:
                        assert resp.status == 200, await resp.text()
            assert [obj["n"] for obj in await wired.wait_events(3)] == [0, 1, 2]
