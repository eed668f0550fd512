"""The systems under test: forwarder itself and the peers it is measured against.

Every target is started fresh per run as a subprocess in the foreground, fed on a TCP (or
HTTP) ingest port it reports, delivers to a blackhole at ``sink_port``, and is stopped with
SIGTERM. ``pid`` is the root of the process tree whose CPU and memory the runner samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

__all__ = ["Target"]


class Target(Protocol):
    """What the runner needs from a system under test."""

    name: str

    @property
    def pid(self) -> int: ...

    def check(self, workdir: Path) -> None:
        """Raise ``TargetError`` with a clear message when the target cannot run at all."""

    async def start(self, *, sink_port: int, workdir: Path) -> int:
        """Start delivering to 127.0.0.1:``sink_port``; return the ingest port once ready."""

    async def stop(self) -> int | None:
        """SIGTERM and wait; return the exit code (None when not running)."""
