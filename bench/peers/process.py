"""Running a system under test as a subprocess and measuring what it costs.

CPU time and peak RSS come from ``/proc``: the root process and every descendant it has at
each sample (a forwarder may run worker processes), so nothing depends on psutil.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

__all__ = ["DaemonProcess", "ProcessTree", "TargetError", "free_port", "port_accepts"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_STOP_TIMEOUT_SECS = 60.0


class TargetError(RuntimeError):
    """A system under test could not be set up, started or stopped; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for configs that need a number)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields after the last ")" are fixed.
    return text[text.rindex(")") + 2 :].split()


def _hwm_bytes(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class ProcessTree:
    """CPU seconds and peak RSS of a process and its descendants, sampled from /proc.

    A descendant's CPU is the last value sampled before it exited, so sample every fraction
    of a second while it runs; the final sample of a live process is exact.

    Arguments:
        root: pid of the process under test.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self._ticks: dict[int, int] = {}
        self._hwm: dict[int, int] = {}

    def _descendants(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                fields = _stat_fields(int(entry.name))
                if fields is not None:
                    children.setdefault(int(fields[1]), []).append(int(entry.name))
        found, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, ()))
        return found

    def sample(self) -> None:
        """Read the CPU ticks and VmHWM of every live process in the tree."""
        for pid in self._descendants():
            fields = _stat_fields(pid)
            if fields is None:
                continue
            # utime and stime: fields 14 and 15 of /proc/PID/stat (1-based, pid first).
            self._ticks[pid] = int(fields[11]) + int(fields[12])
            self._hwm[pid] = max(self._hwm.get(pid, 0), _hwm_bytes(pid))

    def cpu_seconds(self) -> float:
        """User plus system CPU seconds of every process seen so far."""
        return sum(self._ticks.values()) / _CLK_TCK

    def cpu_by_process(self) -> dict[int, float]:
        """CPU seconds of each process seen so far, by pid."""
        return {pid: ticks / _CLK_TCK for pid, ticks in self._ticks.items()}

    def peak_rss_bytes(self) -> int:
        """Sum of each process's peak RSS (exact for one process, an upper bound for many)."""
        return sum(self._hwm.values())

    def processes(self) -> int:
        return len(self._ticks)


class DaemonProcess:
    """A system under test in the foreground, output to a log file, stopped with SIGTERM.

    Arguments:
        argv: program and arguments.
        log_path: file that receives stdout and stderr.
        name: what error messages call it.
    """

    def __init__(self, argv: list[str], *, log_path: Path, name: str) -> None:
        self.argv = argv
        self.log_path = log_path
        self.name = name
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise TargetError(f"{self.name} is not running")
        return self._process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def start(
        self, ready: Callable[[], Awaitable[bool]], *, timeout_secs: float = 30.0
    ) -> None:
        """Start the process and poll ``ready`` until it answers True."""
        with self.log_path.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_secs
        while loop.time() < deadline:
            if self._process.returncode is not None:
                raise TargetError(
                    f"{self.name} exited with {self._process.returncode} during start-up:\n"
                    f"{self.log_tail()}"
                )
            if await ready():
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise TargetError(f"{self.name} not ready after {timeout_secs:.0f} s:\n{self.log_tail()}")

    async def stop(self) -> int | None:
        """SIGTERM, wait for a graceful exit, SIGKILL after a minute; returns the exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.returncode is None:
            try:
                process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(process.wait(), _STOP_TIMEOUT_SECS)
            except TimeoutError:
                process.kill()
                await process.wait()
        return process.returncode


async def port_accepts(port: int) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True
