"""SyslogFramer: both RFC 6587 framings, split anywhere, bounded whatever the sender does."""

from __future__ import annotations

import itertools
import logging
import logging.handlers
import os
import shutil
import socket
import subprocess
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from forwarder.sources.framing import SyslogFramer
from forwarder.sources.syslog_parse import parse_syslog

# Captured from util-linux 2.38.1 `logger -T --octet-count` and `logger -T` (LF framing).
LOGGER_OCTETS = (
    b"38 <13>Dec  4 20:08:42 vm myapp: hello oc"
    b'99 <13>1 2026-12-04T20:08:42.037912+00:00 vm myapp - - [timeQuality tzKnown="1" '
    b'isSynced="0"] hello oc'
)
LOGGER_LINES = b"<131>Dec  4 20:08:42 vm myapp[4937]: hello 3164\n<13>1 - - myapp - - - bare\n"
HEADER_ROOM = 10  # a length field cut by a read is held as well, at most 10 digits


def feed_all(framer: SyslogFramer, chunks: list[bytes], limit: int) -> tuple[list[bytes], int]:
    """Feed every chunk and close; checks the held bytes stay bounded after each read."""
    messages: list[bytes] = []
    skipped = 0
    for chunk in chunks:
        got, too_large = framer.feed(chunk)
        messages += got
        skipped += too_large
        # (+1: a line at the limit ending in CR, whose LF may come in the next read.)
        assert framer.pending_bytes <= max(limit + 1, HEADER_ROOM)
    return messages + framer.close(), skipped


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def test_logger_octet_counted_frames() -> None:
    """Counted frames from logger --octet-count come out whole, without the length."""
    messages, skipped = feed_all(SyslogFramer(1024), [LOGGER_OCTETS], 1024)
    assert skipped == 0
    assert messages == [LOGGER_OCTETS[3:41], LOGGER_OCTETS[44:]]


@pytest.mark.parametrize("stream", [LOGGER_OCTETS, LOGGER_LINES], ids=["octets", "lines"])
def test_every_split_point_gives_the_same_messages(stream: bytes) -> None:
    """A message cut by a read boundary anywhere is reassembled exactly."""
    whole, _ = feed_all(SyslogFramer(1024), [stream], 1024)
    assert len(whole) == 2
    for cut in range(1, len(stream)):
        assert feed_all(SyslogFramer(1024), split_at(stream, [cut]), 1024) == (whole, 0)
    assert feed_all(SyslogFramer(1024), split_at(stream, list(range(len(stream)))), 1024) == (
        whole,
        0,
    )


def test_lf_framing_accepts_crlf_nul_and_a_last_line_without_terminator() -> None:
    """LF, CRLF and NUL all end a message; EOF ends the last one; blanks are skipped."""
    stream = b"<13>a\r\n<13>b\x00<13>c\n\n\r\n<13>d"
    for cut in range(1, len(stream)):
        messages, skipped = feed_all(SyslogFramer(64), split_at(stream, [cut]), 64)
        assert (messages, skipped) == ([b"<13>a", b"<13>b", b"<13>c", b"<13>d"], 0)


def test_octet_frame_of_exactly_max_is_kept_and_one_more_is_skipped() -> None:
    """The limit is inclusive: max bytes pass, max + 1 are skipped and counted."""
    stream = b"8 <13>abcd9 <13>abcde5 <13>x"
    messages, skipped = feed_all(SyslogFramer(8), [stream], 8)
    assert (messages, skipped) == ([b"<13>abcd", b"<13>x"], 1)


def test_lf_line_of_exactly_max_is_kept_and_one_more_is_skipped() -> None:
    """An LF-framed line of max bytes passes; one byte more is skipped and counted."""
    stream = b"<13>abcd\n<13>abcde\n<13>x\n"
    messages, skipped = feed_all(SyslogFramer(8), list(map(bytes, zip(stream))), 8)
    assert (messages, skipped) == ([b"<13>abcd", b"<13>x"], 1)


def test_huge_counted_frame_is_discarded_as_it_arrives() -> None:
    """A frame announcing megabytes is dropped read by read while nothing is held."""
    framer = SyslogFramer(1024)
    assert framer.feed(b"9999999 ") == ([], 1)
    for _ in range(9):
        assert framer.feed(b"x" * 1_000_000) == ([], 0)
        assert framer.pending_bytes == 0
    assert framer.feed(b"x" * 999_999 + b"4 <1>") == ([], 0)
    assert framer.feed(b"a") == ([b"<1>a"], 0)


def test_endless_line_is_discarded_as_it_arrives() -> None:
    """An LF-framed sender that never ends its line holds at most max bytes."""
    framer = SyslogFramer(1000)
    assert framer.feed(b"<13>" + b"x" * 996) == ([], 0)
    assert framer.pending_bytes == 1000
    assert framer.feed(b"y") == ([], 1)
    for _ in range(100):
        assert framer.feed(b"y" * 777) == ([], 0)
        assert framer.pending_bytes == 0
    assert framer.feed(b"z\n<13>next\n") == ([b"<13>next"], 0)


def test_bad_length_field_switches_to_lf_framing() -> None:
    """Text that starts with a digit but has no length field still arrives, line by line."""
    stream = b"2026-12-04 plain text\n<13>second\n"
    assert feed_all(SyslogFramer(64), [stream], 64) == (
        [b"2026-12-04 plain text", b"<13>second"],
        0,
    )


def test_bad_length_field_after_good_frames_keeps_what_came_before() -> None:
    """A sender that stops counting mid-stream loses none of its messages."""
    stream = b"5 <1>ab<13>unframed\n<13>more"
    for cut in range(1, len(stream)):
        assert feed_all(SyslogFramer(64), split_at(stream, [cut]), 64) == (
            [b"<1>ab", b"<13>unframed", b"<13>more"],
            0,
        )


def test_endless_digits_do_not_accumulate() -> None:
    """A length field longer than ten digits is not a length field."""
    framer = SyslogFramer(64)
    assert framer.feed(b"12345678901234567890") == ([], 0)
    assert framer.pending_bytes <= 20
    assert framer.feed(b" <13>x\n") == ([b"12345678901234567890 <13>x"], 0)


def test_newlines_and_zero_lengths_between_counted_frames_are_skipped() -> None:
    """Trailing newlines some senders add after a frame do not break the count."""
    stream = b"5 <1>ab\n5 <1>cd\r\n0 \x005 <1>ef"
    assert feed_all(SyslogFramer(64), [stream], 64) == ([b"<1>ab", b"<1>cd", b"<1>ef"], 0)


def test_close_delivers_a_counted_frame_cut_by_eof() -> None:
    """At EOF the part of a counted frame that arrived is delivered, not dropped."""
    framer = SyslogFramer(64)
    assert framer.feed(b"20 <13>cut sh") == ([], 0)
    assert framer.close() == [b"<13>cut sh"]
    assert framer.close() == []


def test_close_after_complete_frames_delivers_nothing() -> None:
    """A stream that ended on a frame boundary has nothing left at close."""
    framer = SyslogFramer(64)
    assert framer.feed(b"4 <1>a4 <1>b") == ([b"<1>a", b"<1>b"], 0)
    assert framer.close() == []


def test_empty_reads_do_not_pick_a_framing() -> None:
    """The framing is chosen by the first byte, not by the first (possibly empty) read."""
    framer = SyslogFramer(64)
    assert framer.feed(b"") == ([], 0)
    assert framer.feed(b"4 <1>a") == ([b"<1>a"], 0)


_LF_MESSAGE = st.binary(max_size=40).filter(
    lambda m: b"\n" not in m and b"\x00" not in m and not m.endswith(b"\r")
)


@given(
    st.lists(_LF_MESSAGE, max_size=12),
    st.lists(st.sampled_from([b"\n", b"\x00"]), min_size=12, max_size=12),
    st.lists(st.integers(0, 800), max_size=20),
    st.integers(1, 30),
)
def test_lf_framing_split_anywhere_loses_nothing(
    bodies: list[bytes], terminators: list[bytes], cuts: list[int], limit: int
) -> None:
    """LF/NUL framing: any split yields every message up to the limit; the rest are counted."""
    messages = [b"<" + body for body in bodies]
    stream = b"".join(m + t for m, t in zip(messages, terminators, strict=False))
    cuts = [c for c in cuts if c <= len(stream)]
    got, skipped = feed_all(SyslogFramer(limit), split_at(stream, cuts), limit)
    assert got == [m for m in messages if len(m) <= limit]
    assert skipped == sum(len(m) > limit for m in messages)


@given(
    st.lists(st.binary(min_size=1, max_size=60), max_size=12),
    st.lists(st.integers(0, 900), max_size=20),
    st.integers(1, 40),
)
def test_octet_framing_split_anywhere_loses_nothing(
    messages: list[bytes], cuts: list[int], limit: int
) -> None:
    """Octet counting: any split yields every message up to the limit; the rest are counted."""
    stream = b"".join(b"%d %s" % (len(m), m) for m in messages)
    cuts = [c for c in cuts if c <= len(stream)]
    got, skipped = feed_all(SyslogFramer(limit), split_at(stream, cuts), limit)
    assert got == [m for m in messages if len(m) <= limit]
    assert skipped == sum(len(m) > limit for m in messages)


@example([b"\x01" * 5, b"\x01" * 5, b"\x01" * 17, b"\x01" * 17, b"\r"], 44)
@given(st.lists(st.binary(max_size=200), max_size=10), st.integers(1, 50))
def test_arbitrary_bytes_stay_bounded(chunks: list[bytes], limit: int) -> None:
    """Whatever arrives, the framer never holds more than the limit (or a length field)."""
    messages, _ = feed_all(SyslogFramer(limit), chunks, limit)
    assert all(len(m) <= limit for m in messages)


def _capture_tcp(command: list[str], stdin: bytes) -> bytes:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(10)
        port = server.getsockname()[1]
        env = {**os.environ, "TZ": "UTC"}
        # The kernel completes the handshake from the backlog, so logger can send and exit
        # before accept() runs.
        subprocess.run(
            [*command, "-n", "127.0.0.1", "-P", str(port), "-T"], input=stdin, check=True, env=env
        )
        connection, _ = server.accept()
        with connection:
            connection.settimeout(10)
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger not installed")
@pytest.mark.parametrize("framing", [["--octet-count"], []], ids=["octets", "lines"])
@pytest.mark.parametrize("rfc", ["--rfc5424", "--rfc3164"])
def test_live_logger_stream_frames_and_parses(rfc: str, framing: list[str]) -> None:
    """Several messages logger sends on one TCP connection come out one by one and parse."""
    lines = [b"first", b"second with spaces", b"x" * 300]
    data = _capture_tcp(["logger", rfc, *framing, "-t", "audit"], b"\n".join(lines) + b"\n")
    received = time.time()
    messages, skipped = feed_all(SyslogFramer(2048), list(map(bytes, zip(data))), 2048)
    assert skipped == 0
    events = [parse_syslog(m, received=received) for m in messages]
    assert all(ok for _, ok in events)
    assert [event["message"].encode() for event, _ in events] == lines
    assert {event["app_name"] for event, _ in events} == {"audit"}


def test_live_python_syslog_handler_over_tcp_is_nul_framed() -> None:
    """SysLogHandler over TCP ends each record with NUL only; each becomes one message."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(10)
        handler = logging.handlers.SysLogHandler(
            address=server.getsockname(), socktype=socket.SOCK_STREAM
        )
        for text in ("one", "two"):
            handler.emit(logging.makeLogRecord({"msg": text, "levelname": "INFO"}))
        handler.close()
        connection, _ = server.accept()
        with connection:
            connection.settimeout(10)
            data = b""
            while chunk := connection.recv(65536):
                data += chunk
    messages, skipped = feed_all(SyslogFramer(256), [data], 256)
    assert (messages, skipped) == ([b"<14>one", b"<14>two"], 0)
