"""sd_notify datagrams on real AF_UNIX sockets, the watchdog cadence, and the unit's exposure."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from forwarder.systemd import SystemdNotifier

UNIT_FILE = Path(__file__).resolve().parents[2] / "systemd" / "forwarder.service"
MAX_EXPOSURE = 2.0


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket in tmp_path, announced through NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        yield sock


def _fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def _pending(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on sock, without waiting."""
    found = []
    timeout = sock.gettimeout()
    # A socket with a timeout would wait that long for the queue to fill; this must not.
    sock.setblocking(False)
    try:
        while True:
            found.append(sock.recv(4096))
    except BlockingIOError:
        return found
    finally:
        sock.settimeout(timeout)


def test_ready_status_stopping_reach_the_socket(notify_socket: socket.socket) -> None:
    """Each state call sends one datagram with exactly its assignments."""
    notifier = SystemdNotifier()
    assert notifier.ready(status="listening on 3 ports")
    assert notifier.status("queue 12/100000")
    assert notifier.stopping()
    assert notifier.watchdog()
    received = [_fields(notify_socket.recv(4096)) for _ in range(4)]
    assert received == [
        {"READY": "1", "STATUS": "listening on 3 ports"},
        {"STATUS": "queue 12/100000"},
        {"STOPPING": "1"},
        {"WATCHDOG": "1"},
    ]


def test_status_newline_cannot_inject_an_assignment(notify_socket: socket.socket) -> None:
    """A newline in the status text stays inside STATUS instead of starting READY=1."""
    SystemdNotifier().status("half\nREADY=1")
    assert _fields(notify_socket.recv(4096)) == {"STATUS": "half READY=1"}


def test_reloading_carries_the_monotonic_timestamp(notify_socket: socket.socket) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC read from CLOCK_MONOTONIC at the call."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1_000
    SystemdNotifier().reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1_000
    fields = _fields(notify_socket.recv(4096))
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NOTIFY_SOCKET starting with @ addresses the abstract namespace."""
    name = f"forwarder-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert SystemdNotifier().ready()
        assert sock.recv(4096) == b"READY=1"


async def test_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without NOTIFY_SOCKET every call returns False and no watchdog task runs."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    notifier = SystemdNotifier()
    assert not notifier.enabled
    assert notifier.watchdog_interval_secs is None
    assert [notifier.ready(), notifier.status("x"), notifier.stopping()] == [False] * 3
    assert [notifier.reloading(), notifier.watchdog()] == [False, False]
    await notifier.start()
    await notifier.stop()


def test_send_failure_is_logged_once_and_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket path nobody listens on makes sends return False with a single warning."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    notifier = SystemdNotifier()
    with capture_logs() as logs:
        results = [notifier.ready(), notifier.watchdog(), notifier.stopping()]
    assert results == [False, False, False]
    assert [entry["event"] for entry in logs] == ["systemd_notify_failed"]


async def test_watchdog_pings_at_half_the_deadline(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With WATCHDOG_USEC=200000 the loop pings every 0.1 s, well inside the deadline."""
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    arrivals: list[float] = []

    # A thread stamps arrivals so the receiver's timing does not depend on the loop under test.
    def receive() -> None:
        while len(arrivals) < 6:
            if notify_socket.recv(4096) == b"WATCHDOG=1":
                arrivals.append(time.monotonic())

    receiver = threading.Thread(target=receive)
    receiver.start()
    notifier = SystemdNotifier()
    assert notifier.watchdog_interval_secs == pytest.approx(0.1)
    await notifier.start()
    await notifier.start()
    await asyncio.to_thread(receiver.join, 5.0)
    await notifier.stop()
    await notifier.stop()
    gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
    assert len(gaps) == 5
    assert gaps[0] >= 0.08, gaps
    assert gaps[len(gaps) // 2] < 0.2, gaps


async def test_wedged_loop_stops_pinging(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the event loop is blocked no ping goes out; pings resume once it runs again."""
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    notifier = SystemdNotifier()
    await notifier.start()
    await asyncio.sleep(0.2)
    assert _pending(notify_socket)
    time.sleep(0.4)  # noqa: ASYNC251 - blocking the loop is the condition under test
    assert _pending(notify_socket) == []
    await asyncio.sleep(0.2)
    assert _pending(notify_socket)
    await notifier.stop()
    await asyncio.sleep(0.2)
    assert _pending(notify_socket) == []


async def test_watchdog_meant_for_another_pid_is_ignored(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WATCHDOG_PID naming another process (an inherited variable) disables the pings."""
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    notifier = SystemdNotifier()
    assert notifier.watchdog_interval_secs is None
    await notifier.start()
    await asyncio.sleep(0.1)
    await notifier.stop()
    assert _pending(notify_socket) == []


def _exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert match, output
    return float(match.group(1))


def test_exposure_parser_reads_the_summary_line() -> None:
    """The parser takes the number from systemd-analyze's summary line."""
    line = "\u2192 Overall exposure level for forwarder.service: 1.4 OK \U0001f642\n"
    assert _exposure("  NAME  DESCRIPTION  EXPOSURE\n" + line) == 1.4


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_unit_exposure_is_at_most_two() -> None:
    """systemd-analyze security --offline=true parses the unit cleanly and rates it <= 2.0."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown keys and bad values are only warned about on stderr, then ignored.
    assert result.stderr == ""
    assert result.returncode == 0, result.stdout
    assert _exposure(result.stdout) <= MAX_EXPOSURE, result.stdout
