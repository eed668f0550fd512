"""Incremental newline splitting with a hard bound on what one connection may hold."""

from __future__ import annotations


class LineSplitter:
    """Split a byte stream into lines, whole reads at a time.

    Arguments:
        max_line_bytes: longest line kept; a longer one is skipped up to its newline and
            counted, and a partial line is discarded as soon as it passes the limit, so a
            client that never sends a newline holds at most ``max_line_bytes`` (plus one CR
            that may be the first half of a CRLF).
    """

    __slots__ = ("_discarding", "_max", "_partial")

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._partial = b""
        self._discarding = False

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Lines completed by ``data`` (no newline, no trailing CR, blanks skipped) and the
        number of too-long lines skipped."""
        parts = data.split(b"\n")
        tail = parts.pop()
        too_large = 0
        if self._partial or self._discarding:
            if parts:
                parts[0] = self._partial + parts[0]
            else:
                tail = self._partial + tail
            self._partial = b""
        if self._discarding and parts:
            # The first completed line is the rest of one already counted as too large.
            parts.pop(0)
            self._discarding = False
        limit = self._max
        lines: list[bytes] = []
        for line in parts:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                continue
            if len(line) > limit:
                too_large += 1
                continue
            lines.append(line)
        if self._discarding:
            tail = b""
        elif len(tail) > limit + (tail[-1:] == b"\r"):
            # (A CR at the end may be the first half of a CRLF split across reads.)
            too_large += 1
            self._discarding = True
            tail = b""
        self._partial = tail
        return lines, too_large

    def close(self) -> list[bytes]:
        """The last line when the stream ended without a newline."""
        tail, self._partial = self._partial, b""
        self._discarding = False
        if tail.endswith(b"\r"):
            tail = tail[:-1]
        return [tail] if tail else []

    @property
    def pending_bytes(self) -> int:
        return len(self._partial)
