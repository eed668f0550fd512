"""LineSplitter: newline splitting across reads with a hard per-connection bound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from forwarder.sources.lines import LineSplitter


def feed_all(splitter: LineSplitter, chunks: list[bytes]) -> tuple[list[bytes], int]:
    lines: list[bytes] = []
    too_large = 0
    for chunk in chunks:
        got, skipped = splitter.feed(chunk)
        lines += got
        too_large += skipped
    lines += splitter.close()
    return lines, too_large


def test_line_split_across_reads_is_joined() -> None:
    """A line arriving in three reads comes out once, whole."""
    s = LineSplitter(100)
    assert s.feed(b'{"a"') == ([], 0)
    assert s.feed(b":1") == ([], 0)
    assert s.feed(b'}\n{"b":2}\n') == ([b'{"a":1}', b'{"b":2}'], 0)
    assert s.pending_bytes == 0


def test_crlf_line_endings_are_stripped() -> None:
    """CRLF-terminated lines lose the CR, even when the CR and LF arrive in separate reads."""
    s = LineSplitter(100)
    assert s.feed(b"a\r\nb\r") == ([b"a"], 0)
    assert s.feed(b"\nc\r\n") == ([b"b", b"c"], 0)


def test_blank_lines_are_skipped() -> None:
    """Empty lines and bare CRLFs yield nothing."""
    s = LineSplitter(100)
    assert s.feed(b"\n\r\nx\n\n") == ([b"x"], 0)


def test_last_line_without_newline_is_returned_at_close() -> None:
    """The final line of a stream that ends without a newline is kept."""
    s = LineSplitter(100)
    assert s.feed(b"one\ntwo") == ([b"one"], 0)
    assert s.close() == [b"two"]
    assert s.close() == []


def test_too_long_line_in_one_read_is_skipped_and_counted() -> None:
    """A complete line over the limit is skipped; its neighbours come through."""
    s = LineSplitter(5)
    assert s.feed(b"ok\n" + b"x" * 6 + b"\nfine\n") == ([b"ok", b"fine"], 1)


def test_line_of_exactly_the_limit_is_kept() -> None:
    """The limit is inclusive."""
    s = LineSplitter(5)
    assert s.feed(b"12345\n") == ([b"12345"], 0)


def test_partial_line_over_limit_is_dropped_at_once_and_skipped_to_newline() -> None:
    """A partial line past the limit is discarded immediately (bounded memory), counted once,
    and the rest of it up to the newline is skipped too."""
    s = LineSplitter(10)
    assert s.feed(b"good\n" + b"y" * 11) == ([b"good"], 1)
    assert s.pending_bytes == 0
    for _ in range(100):
        assert s.feed(b"y" * 1000) == ([], 0)
        assert s.pending_bytes == 0
    assert s.feed(b"yyy\nafter\n") == ([b"after"], 0)


def test_partial_line_growing_over_limit_across_reads_is_dropped() -> None:
    """A partial line that passes the limit only when joined with the next read is dropped."""
    s = LineSplitter(10)
    assert s.feed(b"123456") == ([], 0)
    assert s.pending_bytes == 6
    assert s.feed(b"7890ab") == ([], 1)
    assert s.pending_bytes == 0
    assert s.feed(b"c\nnext\n") == ([b"next"], 0)


def test_never_ending_line_holds_at_most_the_limit() -> None:
    """A client that never sends a newline cannot make the splitter hold more than the limit."""
    s = LineSplitter(64)
    for _ in range(1000):
        s.feed(b"z" * 7)
        assert s.pending_bytes <= 64


def test_discarded_line_ending_at_close_is_not_returned() -> None:
    """A too-long tail still being discarded when the stream closes yields nothing."""
    s = LineSplitter(4)
    assert s.feed(b"abcdef") == ([], 1)
    assert s.close() == []


@given(
    st.lists(
        st.binary(min_size=1, max_size=8).filter(lambda b: b"\n" not in b and b"\r" not in b),
        max_size=20,
    ),
    st.data(),
)
def test_any_chunking_gives_the_same_lines(lines: list[bytes], data: st.DataObject) -> None:
    """However the stream is cut into reads, the same lines and the same count come out."""
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    want = [line for line in lines if line and len(line) <= 6]
    want_too_large = sum(1 for line in lines if len(line) > 6)
    assert feed_all(LineSplitter(6), chunks) == (want, want_too_large)
