"""RFC 6587 framing of syslog over a byte stream (TCP, TLS).

The two framings cannot be told apart per message without guessing, so a connection picks
one from its first byte: a digit means octet counting (``MSG-LEN SP MSG``), anything else
(``<`` in practice) means non-transparent framing, where LF, CRLF or NUL ends a message.

Octet counting cannot resynchronise after a bad length field, so a connection whose length
field is not a number followed by a space switches to LF framing for the rest of its life,
starting with the bytes that broke the count; the messages still arrive, and the parser
reports the ones that are not syslog. Some senders put a newline after each counted frame;
newlines (and NULs) between frames are skipped.
"""

from __future__ import annotations

import re
from typing import Final

from forwarder.sources.lines import LineSplitter

__all__ = ["SyslogFramer"]

# Ten digits count up to 9.9 GB, far past any max_message_bytes, yet a stream of digits
# with no space still fails fast instead of being held.
_MAX_LEN_DIGITS: Final = 10
_BETWEEN_FRAMES: Final = b"\r\n\x00"
_FRAME_HEAD: Final = re.compile(rb"[\r\n\x00]*(\d{1,%d}) " % _MAX_LEN_DIGITS)


class SyslogFramer:
    """Cut one connection's byte stream into syslog messages, a read at a time.

    Arguments:
        max_message_bytes: longest message kept, in bytes; a longer one is skipped and
            counted, its bytes discarded as they arrive, so one connection never holds more
            than ``max_message_bytes`` (plus a length field of at most 10 digits, or a CR
            whose LF is still to come) whatever the client sends.
    """

    __slots__ = ("_body", "_header", "_lines", "_max", "_octets", "_remaining", "_skipping")

    def __init__(self, max_message_bytes: int) -> None:
        self._max = max_message_bytes
        self._octets: bool | None = None  # None until the connection's first byte
        self._lines = LineSplitter(max_message_bytes)
        self._header = b""  # digits of a length field cut by the end of a read
        self._body = bytearray()  # the part of a counted frame that has arrived
        self._remaining = 0  # bytes of the current counted frame still to come
        self._skipping = False  # the current counted frame is too large: discard it

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Messages completed by ``data`` and the number of too-large messages skipped."""
        if self._octets is None:
            if not data:
                return [], 0
            self._octets = data[:1].isdigit()
        if self._octets:
            return self._feed_octets(data)
        return self._feed_lines(data)

    def close(self) -> list[bytes]:
        """At end of stream: a last LF-framed message that had no terminator, or the part
        of a counted frame that arrived before the connection closed."""
        if not self._octets:
            return self._lines.close()
        tail = bytes(self._body) if self._remaining and not self._skipping else b""
        self._body.clear()
        self._header, self._remaining, self._skipping = b"", 0, False
        return [tail] if tail else []

    @property
    def pending_bytes(self) -> int:
        """Bytes held for messages not yet complete."""
        return len(self._body) + len(self._header) + self._lines.pending_bytes

    def _feed_lines(self, data: bytes) -> tuple[list[bytes], int]:
        # NUL ends a message as LF does (SysLogHandler over TCP sends NUL and no LF).
        if b"\x00" in data:
            data = data.replace(b"\x00", b"\n")
        return self._lines.feed(data)

    def _feed_octets(self, data: bytes) -> tuple[list[bytes], int]:
        if self._header:
            data, self._header = self._header + data, b""
        messages: list[bytes] = []
        skipped = 0
        pos, end = 0, len(data)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                self._remaining -= take
                if self._skipping:
                    self._skipping = self._remaining > 0
                else:
                    self._body += data[pos : pos + take]
                    if self._remaining == 0:
                        messages.append(bytes(self._body))
                        self._body.clear()
                pos += take
                continue
            head = _FRAME_HEAD.match(data, pos)
            if head is None:
                rest = data[pos:].lstrip(_BETWEEN_FRAMES)
                if len(rest) <= _MAX_LEN_DIGITS and (not rest or rest.isdigit()):
                    # A length field cut by the end of this read.
                    self._header = rest
                    break
                # Not a length field: the rest of the connection is LF framed.
                self._octets = False
                lines, too_large = self._feed_lines(rest)
                return messages + lines, skipped + too_large
            pos = head.end()
            length = int(head.group(1))
            if length > self._max:
                self._skipping = True
                skipped += 1
            elif pos + length <= end:
                # The common case: the whole frame is in this read, no copy into _body.
                if length:
                    messages.append(data[pos : pos + length])
                pos += length
                continue
            self._remaining = length
        return messages, skipped
