"""sd_notify from the real daemon, read off a real AF_UNIX datagram socket.

The test plays systemd: it binds the notify socket (abstract namespace, with SO_PASSCRED so
each datagram carries its sender's pid), starts ``forwarder run`` with ``NOTIFY_SOCKET`` and a
small ``WATCHDOG_USEC``, and checks what arrives: READY=1 only once the sources listen,
STATUS= with live counts, WATCHDOG=1 pings, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1
on SIGTERM; and with two workers, that only the supervisor speaks.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import DaemonProcess, FakeCollector

_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid


@dataclass
class Notification:
    fields: dict[str, str]
    pid: int
    at: float


class NotifySocket:
    """A bound AF_UNIX datagram socket collecting notifications with their sender's pid."""

    def __init__(self) -> None:
        self.name = f"@forwarder-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + self.name[1:])
        self.sock.setblocking(False)
        self.received: list[Notification] = []
        self._arrived = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            pid = -1
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CREDENTIALS.unpack(value[: _CREDENTIALS.size])[0]
            lines = data.decode().split("\n")
            fields = dict(line.split("=", 1) for line in lines if line)
            self.received.append(Notification(fields, pid, time.monotonic()))
            self._arrived.set()

    async def wait_for(self, key: str, *, after: int = 0, timeout_secs: float = 20) -> int:
        """Index of the first notification at or after ``after`` that sets ``key``."""
        async with asyncio.timeout(timeout_secs):
            while True:
                for index in range(after, len(self.received)):
                    if key in self.received[index].fields:
                        return index
                self._arrived.clear()
                await self._arrived.wait()

    def keys(self, start: int = 0) -> list[str]:
        """Every key in arrival order (a datagram's keys in their order)."""
        return [key for n in self.received[start:] for key in n.fields]

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


@pytest.fixture
async def notify(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[NotifySocket]:
    listener = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", listener.name)
    # 0.2 s: the daemon pings every 0.1 s.
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def config(tmp_path: Path, workers: int, endpoint: str) -> tuple[dict[str, Any], int, int]:
    """A config with fixed ports (known before the daemon says anything): (config, tcp, admin)."""
    tcp, admin = free_port(), free_port()
    return (
        {
            "workers": workers,
            "shutdown_timeout_secs": 1,
            "admin": {"address": f"127.0.0.1:{admin}"},
            "sources": {
                "app_tcp": {"type": "tcp", "address": f"127.0.0.1:{tcp}"},
                "app_http": {"type": "http", "address": "127.0.0.1:0"},
            },
            "sinks": {
                "webhook": {"type": "http", "endpoint": endpoint, "batch": {"timeout_secs": 0.05}}
            },
        },
        tcp,
        admin,
    )


async def ready_and_serving(notify: NotifySocket, tcp: int, admin: int) -> int:
    """Wait for READY=1, then at once connect to the ingest port and ask /readyz."""
    index = await notify.wait_for("READY")
    _, writer = await asyncio.open_connection("127.0.0.1", tcp)
    writer.close()
    await writer.wait_closed()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{admin}/readyz") as resp,
    ):
        assert resp.status == 200
    return index


async def test_notifications_over_a_daemon_life(
    tmp_path: Path, notify: NotifySocket, collector: FakeCollector
) -> None:
    """READY once listening, STATUS with counts, watchdog pings, reload, then STOPPING."""
    body, tcp, admin = config(tmp_path, 1, collector.endpoint)
    daemon = DaemonProcess(tmp_path, body)
    starting = asyncio.create_task(daemon.start())
    try:
        ready = await ready_and_serving(notify, tcp, admin)
        await starting
        assert notify.keys(0)[:2] == ["READY", "STATUS"]
        assert notify.received[ready].fields["STATUS"] == "running; 0 events buffered"

        pings_from = len(notify.received)
        await asyncio.sleep(0.6)
        pings = [n for n in notify.received[pings_from:] if n.fields == {"WATCHDOG": "1"}]
        assert 3 <= len(pings) <= 10
        gaps = sorted(b.at - a.at for a, b in itertools.pairwise(pings))
        # Half of WATCHDOG_USEC apart: never early, rarely late.
        assert gaps[0] > 0.05 and gaps[len(gaps) // 2] < 0.2, gaps

        # Events held by a destination that does not answer show in the next STATUS line.
        collector.script.stall()
        _, writer = await asyncio.open_connection("127.0.0.1", tcp)
        writer.write(b"".join(b'{"i":%d}\n' % i for i in range(500)))
        await writer.drain()
        await asyncio.sleep(0.3)
        before_reload = len(notify.received)
        daemon.signal(signal.SIGHUP)
        reloading = await notify.wait_for("RELOADING", after=before_reload)
        assert int(notify.received[reloading].fields["MONOTONIC_USEC"]) > 0
        again = await notify.wait_for("READY", after=reloading)
        assert notify.received[again].fields["STATUS"] == "running; 500 events buffered"
        collector.script.release()
        writer.close()

        daemon.signal(signal.SIGTERM)
        stopping = await notify.wait_for("STOPPING", after=again)
        assert await daemon.wait() == 0
        assert "READY" not in notify.keys(stopping)
        # Every datagram came from the daemon itself.
        assert {n.pid for n in notify.received} == {daemon.pid}
    finally:
        starting.cancel()
        await daemon.close()
    assert set(notify.keys()) == {
        "READY",
        "STATUS",
        "WATCHDOG",
        "RELOADING",
        "MONOTONIC_USEC",
        "STOPPING",
    }


async def test_with_two_workers_only_the_supervisor_notifies(
    tmp_path: Path, notify: NotifySocket, collector: FakeCollector
) -> None:
    """workers: 2: READY once every worker listens, reload and stop, all from one pid."""
    body, tcp, admin = config(tmp_path, 2, collector.endpoint)
    daemon = DaemonProcess(tmp_path, body)
    starting = asyncio.create_task(daemon.start())
    try:
        ready = await ready_and_serving(notify, tcp, admin)
        await starting
        assert notify.received[ready].fields["STATUS"] == "running; 2 workers"
        worker_pids = worker_children(daemon.pid)
        assert len(worker_pids) == 2
        await asyncio.sleep(0.4)
        daemon.signal(signal.SIGHUP)
        reloading = await notify.wait_for("RELOADING", after=ready + 1)
        await notify.wait_for("READY", after=reloading)
        daemon.signal(signal.SIGTERM)
        await notify.wait_for("STOPPING", after=reloading)
        assert await daemon.wait() == 0
        senders = {n.pid for n in notify.received}
        assert senders == {daemon.pid}
        assert sum(1 for n in notify.received if n.fields == {"WATCHDOG": "1"}) >= 3
    finally:
        starting.cancel()
        await daemon.close()


def worker_children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``, from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may hold spaces, so split after ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry))
    return children
