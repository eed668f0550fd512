"""The disk buffer: a sink's queue in append-only segment files that survive a crash.

See docs/disk-buffer.md for the file format, the fsync modes and what each survives.
"""

from __future__ import annotations

from forwarder.buffers.disk.buffer import BufferWriteError, DiskBuffer

__all__ = ["BufferWriteError", "DiskBuffer"]
