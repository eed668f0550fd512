"""``file`` sink: JSON lines appended to a local file, flushed per batch.

Limits: none but the disk. A failed write (full disk, permissions) is transient: the batch is
kept and retried, the sink shows down, and nothing is half-written twice (a short write is
truncated back before the retry).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Literal

from forwarder.config import SinkConfig
from forwarder.events import Event
from forwarder.sinks.base import OK, Answer, Sink, Verdict


class FileConfig(SinkConfig):
    type: Literal["file"] = "file"
    path: Path
    fsync: bool = False


class FileSink(Sink):
    """Appends each event's JSON object as one line."""

    config: FileConfig

    async def start(self) -> None:
        return None

    async def send(self, events: list[Event]) -> Answer:
        data = b"\n".join(e.raw for e in events) + b"\n"
        try:
            await asyncio.to_thread(self._append, data)
        except OSError as exc:
            return Answer(Verdict.DOWN, "write_error", None, f"{self.config.path}: {exc.strerror}")
        return OK

    def _append(self, data: bytes) -> None:
        path = self.config.path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.config.fsync:
                    os.fsync(fd)
            except OSError:
                # Leave no partial batch behind: the retry writes it whole.
                os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)
