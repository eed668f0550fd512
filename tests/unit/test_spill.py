"""Spill files: what a memory buffer holds at a graceful stop, written and read back."""

from __future__ import annotations

from pathlib import Path

from forwarder.buffers.spill import load_spill, remove_spill, write_spill
from forwarder.events import Event


def make_events(n: int, start: int = 0) -> list[Event]:
    return [
        Event(b'{"n":%d,"msg":"caf\xc3\xa9"}' % i, "tcp", 1700000000.25, {"index": "audit"})
        for i in range(start, start + n)
    ]


def test_round_trip_keeps_bytes_envelope_and_order(tmp_path: Path) -> None:
    """Spilled events come back byte for byte with their envelope, oldest file first."""
    first, second = make_events(3), make_events(2, start=3)
    assert write_spill(tmp_path / "spill" / "sink", first) == 3
    assert write_spill(tmp_path / "spill" / "sink", second) == 2
    events, bad, paths = load_spill(tmp_path / "spill" / "sink")
    assert bad == 0
    assert len(paths) == 2 and all(p.suffix == ".jsonl" for p in paths)
    assert [e.raw for e in events] == [e.raw for e in first + second]
    assert {(e.source, e.received) for e in events} == {("tcp", 1700000000.25)}
    assert events[0].meta == {"index": "audit"}


def test_nothing_to_spill_writes_no_file(tmp_path: Path) -> None:
    """An empty spill creates no file, and a missing directory loads as empty."""
    assert write_spill(tmp_path / "s", []) == 0
    assert not (tmp_path / "s").exists()
    assert load_spill(tmp_path / "s") == ([], 0, [])


def test_bad_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    """Damaged or torn lines are counted; the good lines around them still load."""
    write_spill(tmp_path, make_events(4))
    path = next(tmp_path.glob("*.jsonl"))
    lines = path.read_bytes().split(b"\n")
    lines[1] = b'{"source": "tcp", "event": '  # cut short
    lines.insert(2, b'{"event": 5}')  # not an object
    path.write_bytes(b"\n".join(lines) + b'{"torn')
    events, bad, paths = load_spill(tmp_path)
    assert [e.parsed()["n"] for e in events] == [0, 2, 3]
    assert bad == 3 and paths == [path]


def test_interrupted_spill_is_still_read(tmp_path: Path) -> None:
    """A temporary file left by a crash mid-spill gives back the lines it holds."""
    write_spill(tmp_path, make_events(2))
    done = next(tmp_path.glob("*.jsonl"))
    torn = tmp_path / "20200101T000000.000000001-1.jsonl.tmp"
    torn.write_bytes(done.read_bytes() + b'{"source":"tcp","rec')
    done.unlink()
    events, bad, paths = load_spill(tmp_path)
    assert [e.parsed()["n"] for e in events] == [0, 1]
    assert bad == 1 and paths == [torn]


def test_remove_deletes_only_the_files_read(tmp_path: Path) -> None:
    """remove_spill deletes the files that were loaded; a later spill is kept."""
    write_spill(tmp_path, make_events(2))
    _, _, paths = load_spill(tmp_path)
    write_spill(tmp_path, make_events(1, start=9))
    remove_spill(paths)
    remove_spill(paths)  # already gone: no error
    events, _, left = load_spill(tmp_path)
    assert [e.parsed()["n"] for e in events] == [9]
    assert len(left) == 1 and left[0] not in paths
