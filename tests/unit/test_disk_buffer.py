"""The disk buffer against real files: round trips, restarts, damage, full disks, fsync modes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.buffers.base import Batch
from forwarder.buffers.disk import BufferWriteError, DiskBuffer
from forwarder.buffers.disk.segment import HEADER_SIZE
from forwarder.events import Event

KIB = 1024


def make_events(n: int, start: int = 0, pad: int = 0) -> list[Event]:
    return [
        Event(b'{"n":%d,"pad":"%s"}' % (i, b"x" * pad), "app", 1700000000.5, {"host": "h"})
        for i in range(start, start + n)
    ]


def numbers(events: list[Event]) -> list[int]:
    return [int(e.parsed()["n"]) for e in events]


class Corruption:
    """Collects on_corrupt counts."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def __call__(self, n: int) -> None:
        self.counts.append(n)

    @property
    def total(self) -> int:
        return sum(self.counts)


def new_buffer(directory: Path, corrupt: Corruption | None = None, **kw: object) -> DiskBuffer:
    options: dict[str, object] = {"max_events": 100_000, "max_bytes": 100 * 1024 * KIB}
    options.update(kw)
    return DiskBuffer("sink", directory, on_corrupt=corrupt, **options)  # type: ignore[arg-type]


async def drain(buffer: DiskBuffer, batch: int = 1000, ack: bool = True) -> list[Event]:
    got: list[Event] = []
    while (taken := await buffer.read(batch, 10 * 1024 * KIB, 0.05)) is not None:
        got.extend(taken.events)
        if ack:
            buffer.ack(taken)
    return got


async def reopen(directory: Path, corrupt: Corruption | None = None, **kw: object) -> DiskBuffer:
    buffer = new_buffer(directory, corrupt, **kw)
    await buffer.start()
    return buffer


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[DiskBuffer]:
    started = await reopen(tmp_path / "buf")
    yield started
    await started.stop()


async def test_round_trip_keeps_order_envelope_and_counts(buffer: DiskBuffer) -> None:
    """Appended events come back in order with their envelope; ack releases the space."""
    events = make_events(250)
    buffer.append(events[:100])
    buffer.append(events[100:])
    assert buffer.depth_events == 250
    assert buffer.unread_events == 250
    assert buffer.disk_bytes == buffer.depth_bytes > sum(len(e.raw) for e in events)
    first = await buffer.read(100, 1 << 20, 1)
    assert first is not None and numbers(first.events) == list(range(100))
    assert first.nbytes == sum(len(e.raw) for e in events[:100])
    assert first.events[0].meta == {"host": "h"} and first.events[0].source == "app"
    assert buffer.unread_events == 150 and buffer.depth_events == 250
    buffer.ack(first)
    assert buffer.depth_events == 150
    buffer.ack(first)  # a second ack of the same batch changes nothing
    assert buffer.depth_events == 150
    rest = await drain(buffer)
    assert numbers(rest) == list(range(100, 250))
    assert buffer.depth_events == 0 and buffer.depth_bytes == 0


async def test_read_times_out_when_empty_and_wakes_on_append(buffer: DiskBuffer) -> None:
    """An empty read waits up to its timeout and returns as soon as events arrive."""
    assert await buffer.read(10, 1000, 0.01) is None
    waiter = asyncio.create_task(buffer.read(10, 1000, 5))
    await asyncio.sleep(0.01)
    buffer.append(make_events(3))
    batch = await waiter
    assert batch is not None and numbers(batch.events) == [0, 1, 2]


async def test_read_respects_event_and_byte_limits(buffer: DiskBuffer) -> None:
    """A read returns at most max_events and about max_bytes, always at least one event."""
    events = make_events(20, pad=100)
    buffer.append(events)
    size = len(events[0].raw)
    batch = await buffer.read(5, 10**9, 1)
    assert batch is not None and len(batch.events) == 5
    batch = await buffer.read(100, size * 3, 1)
    assert batch is not None and len(batch.events) == 3
    batch = await buffer.read(100, 1, 1)
    assert batch is not None and len(batch.events) == 1


async def test_backlog_beyond_memory_tail_is_read_from_disk_in_order(tmp_path: Path) -> None:
    """With a tail far smaller than the backlog every event still comes back once, in order."""
    buffer = await reopen(tmp_path, tail_bytes=4 * KIB, segment_bytes=64 * KIB)
    try:
        for chunk in range(40):
            buffer.append(make_events(50, start=chunk * 50, pad=50))
        assert len(segments(tmp_path)) > 3
        got = await drain(buffer, batch=333)
        assert numbers(got) == list(range(2000))
        assert buffer.depth_events == 0
    finally:
        await buffer.stop()


async def test_interleaved_append_and_read_across_tail_and_disk(tmp_path: Path) -> None:
    """Reads interleaved with appends that overflow the tail neither lose nor repeat events."""
    buffer = await reopen(tmp_path, tail_bytes=2 * KIB, segment_bytes=16 * KIB)
    got: list[Event] = []
    try:
        for chunk in range(60):
            buffer.append(make_events(17, start=chunk * 17, pad=20))
            batch = await buffer.read(13, 1 << 20, 0)
            assert batch is not None
            got.extend(batch.events)
            buffer.ack(batch)
        got.extend(await drain(buffer, batch=7))
        assert numbers(got) == list(range(60 * 17))
    finally:
        await buffer.stop()


async def test_restart_requeues_only_unacked_with_out_of_order_acks(tmp_path: Path) -> None:
    """Acks past a gap are not saved: a restart resends from the oldest unacked batch."""
    buffer = await reopen(tmp_path)
    buffer.append(make_events(100))
    batches = [await buffer.read(10, 1 << 20, 1) for _ in range(4)]
    assert all(b is not None for b in batches)
    b0, _b1, b2, b3 = (b for b in batches if b is not None)
    buffer.ack(b0)
    buffer.ack(b2)  # out of order: b1 is still in flight
    buffer.ack(b3)
    await buffer.stop()

    again = await reopen(tmp_path)
    try:
        assert again.depth_events == 90
        assert numbers(await drain(again)) == list(range(10, 100))
    finally:
        await again.stop()


async def test_restart_after_gap_filled_resends_nothing_delivered(tmp_path: Path) -> None:
    """Once the straggler is acked the whole prefix counts as delivered across a restart."""
    buffer = await reopen(tmp_path)
    buffer.append(make_events(60))
    b0, b1, b2 = [await buffer.read(20, 1 << 20, 1) for _ in range(3)]
    assert b0 is not None and b1 is not None and b2 is not None
    buffer.ack(b1)
    buffer.ack(b0)  # the prefix now runs through b1
    await buffer.stop()

    again = await reopen(tmp_path)
    try:
        assert numbers(await drain(again)) == list(range(40, 60))
    finally:
        await again.stop()


async def test_unacked_lists_in_flight_disk_only_and_tail_in_order(tmp_path: Path) -> None:
    """unacked() gives every held event oldest first, reading the disk-only part back."""
    buffer = await reopen(tmp_path, tail_bytes=KIB)
    try:
        buffer.append(make_events(10))
        first = await buffer.read(4, 1 << 20, 1)
        assert first is not None
        buffer.append(make_events(90, start=10, pad=30))
        assert numbers(buffer.unacked()) == list(range(100))
        buffer.ack(first)
        assert numbers(buffer.unacked()) == list(range(4, 100))
    finally:
        await buffer.stop()


async def test_segments_roll_over_and_delivered_ones_are_deleted(tmp_path: Path) -> None:
    """Small segments roll over; once delivered they are deleted, disk_bytes follows."""
    buffer = await reopen(tmp_path, segment_bytes=8 * KIB, fsync_interval_secs=0.01)
    try:
        for chunk in range(20):
            buffer.append(make_events(20, start=chunk * 20, pad=40))
        files = segments(tmp_path)
        assert len(files) >= 5
        assert all(f.stat().st_size <= 8 * KIB for f in files)
        assert buffer.disk_bytes == sum(f.stat().st_size for f in files)
        assert numbers(await drain(buffer, batch=50)) == list(range(400))
        for _ in range(100):
            if len(segments(tmp_path)) == 1:
                break
            await asyncio.sleep(0.01)
        # Only the segment still open for writing remains.
        assert len(segments(tmp_path)) == 1
        assert buffer.disk_bytes == segments(tmp_path)[0].stat().st_size
    finally:
        await buffer.stop()
    again = await reopen(tmp_path)
    try:
        assert again.depth_events == 0
        assert segments(tmp_path) == []
    finally:
        await again.stop()


async def test_empty_buffer_takes_any_chunk_then_refuses(tmp_path: Path) -> None:
    """An empty buffer takes one oversized chunk; then it has no room, in flight included."""
    buffer = await reopen(tmp_path, max_events=10, max_bytes=4 * KIB)
    try:
        assert buffer.has_room(50, 20 * KIB)
        buffer.append(make_events(50, pad=200))
        assert not buffer.has_room(1, 10)
        assert len(await drain(buffer, ack=False)) == 50
        assert not buffer.has_room(1, 10)
    finally:
        await buffer.stop()


async def test_event_bound(tmp_path: Path) -> None:
    """has_room counts events held against max_events."""
    buffer = await reopen(tmp_path, max_events=10)
    try:
        buffer.append(make_events(8))
        assert buffer.has_room(2, 100) and not buffer.has_room(3, 100)
    finally:
        await buffer.stop()


async def test_byte_bound_counts_record_bytes(tmp_path: Path) -> None:
    """has_room counts the bytes the records take on disk against max_bytes."""
    probe = await reopen(tmp_path / "probe")
    probe.append(make_events(10))
    held = probe.depth_bytes
    await probe.stop()
    buffer = await reopen(tmp_path / "b", max_bytes=held + 50)
    try:
        buffer.append(make_events(10))
        assert buffer.depth_bytes == held == buffer.disk_bytes
        assert buffer.has_room(1, 50) and not buffer.has_room(1, 51)
    finally:
        await buffer.stop()


async def test_wait_for_room_returns_after_ack(buffer: DiskBuffer) -> None:
    """A writer waiting for room resumes when the reader acks."""
    buffer.max_events = 5
    buffer.append(make_events(5))
    waiter = asyncio.create_task(buffer.wait_for_room(1, 10))
    await asyncio.sleep(0.02)
    assert not waiter.done()
    batch = await buffer.read(5, 1 << 20, 1)
    assert batch is not None
    buffer.ack(batch)
    await asyncio.wait_for(waiter, 1)


# -- damage ----------------------------------------------------------------------------


async def write_and_stop(directory: Path, n: int, **kw: object) -> list[int]:
    """Append n events in chunks of 10 and stop; return each record's start offset."""
    buffer = await reopen(directory, **kw)
    for chunk in range(0, n, 10):
        buffer.append(make_events(10, start=chunk))
    await buffer.stop()
    data = segments(directory)[0].read_bytes()
    offsets = []
    pos = 0
    while pos < len(data):
        offsets.append(pos)
        pos += HEADER_SIZE + int.from_bytes(data[pos + 2 : pos + 6], "little")
    return offsets


async def recovered_numbers(directory: Path, corrupt: Corruption) -> list[int]:
    buffer = await reopen(directory, corrupt)
    try:
        return numbers(await drain(buffer))
    finally:
        await buffer.stop()


async def test_flipped_byte_mid_record_skips_only_that_record(tmp_path: Path) -> None:
    """A CRC mismatch skips one record, is counted once, and the rest of the file is read."""
    offsets = await write_and_stop(tmp_path, 30)
    path = segments(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[offsets[12] + HEADER_SIZE + 5] ^= 0x20
    path.write_bytes(bytes(data))
    corrupt = Corruption()
    assert await recovered_numbers(tmp_path, corrupt) == [n for n in range(30) if n != 12]
    assert corrupt.counts == [1]


async def test_damaged_length_field_resynchronises(tmp_path: Path) -> None:
    """A smashed header makes the scanner find the next valid record, not give up."""
    offsets = await write_and_stop(tmp_path, 30)
    path = segments(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[offsets[5] + 2 : offsets[5] + 6] = b"\xff\xff\xff\x0f"
    path.write_bytes(bytes(data))
    corrupt = Corruption()
    assert await recovered_numbers(tmp_path, corrupt) == [n for n in range(30) if n != 5]
    assert corrupt.total == 1


async def test_truncated_mid_record_keeps_everything_before(tmp_path: Path) -> None:
    """A torn last record (cut inside its payload or header) is skipped and counted."""
    for cut_in_header in (False, True):
        directory = tmp_path / str(cut_in_header)
        offsets = await write_and_stop(directory, 20)
        path = segments(directory)[0]
        cut = offsets[19] + (3 if cut_in_header else HEADER_SIZE + 4)
        os.truncate(path, cut)
        corrupt = Corruption()
        assert await recovered_numbers(directory, corrupt) == list(range(19))
        assert corrupt.counts == [1]


async def test_garbage_appended_is_skipped_and_new_appends_go_to_a_new_file(
    tmp_path: Path,
) -> None:
    """Trailing garbage is counted; appends after recovery never follow the garbage."""
    await write_and_stop(tmp_path, 10)
    path = segments(tmp_path)[0]
    with path.open("ab") as f:
        f.write(b"\xff\xae" + os.urandom(500) + b"not a record at all")
    corrupt = Corruption()
    buffer = await reopen(tmp_path, corrupt)
    try:
        assert corrupt.counts == [1]
        buffer.append(make_events(5, start=10))
        assert len(segments(tmp_path)) == 2
        assert numbers(await drain(buffer)) == list(range(15))
    finally:
        await buffer.stop()


async def test_undecodable_record_with_valid_crc_is_skipped(tmp_path: Path) -> None:
    """A well-framed record whose payload is not an event record is damage, not an event."""
    import struct
    import zlib

    await write_and_stop(tmp_path, 10)
    path = segments(tmp_path)[0]
    payload = b'["not", "a", "record"]'
    with path.open("ab") as f:
        f.write(struct.pack("<2sII", b"\xff\xae", len(payload), zlib.crc32(payload)) + payload)
    corrupt = Corruption()
    assert await recovered_numbers(tmp_path, corrupt) == list(range(10))
    assert corrupt.counts == [1]


async def test_zero_length_segment_is_harmless(tmp_path: Path) -> None:
    """An empty segment file is neither an error nor damage."""
    await write_and_stop(tmp_path, 10)
    (tmp_path / "00000000000000000007.seg").write_bytes(b"")
    corrupt = Corruption()
    assert await recovered_numbers(tmp_path, corrupt) == list(range(10))
    assert corrupt.counts == []


@pytest.mark.parametrize("state", [None, b"\x00garbage{", b'{"segment": "x", "offset": -1}'])
async def test_missing_or_garbage_state_resends_everything_kept(
    tmp_path: Path, state: bytes | None
) -> None:
    """Without a usable state file start() still succeeds and resends every kept record."""
    buffer = await reopen(tmp_path, fsync_interval_secs=0.01)
    buffer.append(make_events(10))
    batch = await buffer.read(5, 1 << 20, 1)
    assert batch is not None
    buffer.ack(batch)
    await buffer.stop()
    assert (tmp_path / "state.json").exists()
    if state is None:
        (tmp_path / "state.json").unlink()
    else:
        (tmp_path / "state.json").write_bytes(state)
    corrupt = Corruption()
    assert await recovered_numbers(tmp_path, corrupt) == list(range(10))
    assert corrupt.counts == []


async def test_new_segment_ids_stay_above_the_saved_position(tmp_path: Path) -> None:
    """After every file is delivered and deleted, new files still sort after the saved
    position, so the next restart does not take them for delivered."""
    await write_and_stop(tmp_path, 10)
    assert await recovered_numbers(tmp_path, Corruption()) == list(range(10))
    assert segments(tmp_path) == []
    buffer = await reopen(tmp_path)
    buffer.append(make_events(3, start=100))
    await buffer.stop()
    assert await recovered_numbers(tmp_path, Corruption()) == [100, 101, 102]


async def test_kill_9_loses_no_appended_event(tmp_path: Path) -> None:
    """A process killed with SIGKILL right after appending loses nothing on restart."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from forwarder.buffers.disk import DiskBuffer
        from forwarder.events import Event

        async def main():
            b = DiskBuffer("s", Path({str(tmp_path)!r}), max_events=10**6, max_bytes=10**9,
                           fsync="never")
            await b.start()
            for c in range(100):
                b.append([Event(b'{{"n":%d}}' % (c * 50 + i), "a", 1.0) for i in range(50)])
            await b.commit()
            print("appended", flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    try:
        assert proc.stdout is not None
        while True:  # its log lines come first
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "the writer process exited early"
            if line.strip() == b"appended":
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    corrupt = Corruption()
    assert await recovered_numbers(tmp_path, corrupt) == list(range(5000))
    assert corrupt.counts == []


# -- fsync modes -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["always", "interval", "never"])
async def test_fsync_modes_round_trip_across_restart(tmp_path: Path, mode: str) -> None:
    """Every fsync mode keeps committed events across a restart."""
    buffer = await reopen(tmp_path, fsync=mode, segment_bytes=4 * KIB)
    for chunk in range(10):
        buffer.append(make_events(10, start=chunk * 10, pad=30))
        await buffer.commit()
    await buffer.stop()
    assert await recovered_numbers(tmp_path, Corruption()) == list(range(100))


async def test_fsync_always_syncs_before_commit_returns(tmp_path: Path) -> None:
    """In always mode commit() returns only once every appended chunk has been fsynced."""
    buffer = await reopen(tmp_path, fsync="always", segment_bytes=2 * KIB)
    try:
        writer = buffer._writer  # the sync ledger is the only witness of an fsync
        for chunk in range(5):
            buffer.append(make_events(20, start=chunk * 20))
        assert writer.synced < writer.appended
        await buffer.commit()
        assert writer.synced == writer.appended == 5
    finally:
        await buffer.stop()


async def test_fsync_interval_syncs_in_background_and_never_does_not(tmp_path: Path) -> None:
    """interval mode catches up within its interval without a commit; never mode never does."""
    interval = await reopen(tmp_path / "i", fsync="interval", fsync_interval_secs=0.01)
    never = await reopen(tmp_path / "n", fsync="never", fsync_interval_secs=0.01)
    try:
        for buffer in (interval, never):
            buffer.append(make_events(10))
            await buffer.commit()  # returns at once in both modes
        for _ in range(200):
            if interval._writer.synced == 1:
                break
            await asyncio.sleep(0.01)
        assert interval._writer.synced == 1
        assert never._writer.synced == 0
    finally:
        await interval.stop()
        await never.stop()


# -- lifecycle ---------------------------------------------------------------------------


async def test_stop_is_idempotent_and_safe_without_start(tmp_path: Path) -> None:
    """stop() without start() and a second stop() do nothing harmful."""
    never_started = new_buffer(tmp_path / "a")
    await never_started.stop()
    await never_started.stop()
    with pytest.raises(BufferWriteError):
        never_started.append(make_events(1))
    started = await reopen(tmp_path / "b")
    started.append(make_events(2))
    await started.stop()
    await started.stop()
    with pytest.raises(BufferWriteError):
        started.append(make_events(1))
    assert await started.read(1, 1, 0.01) is None


# -- a full or failing disk --------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root and mount permission, else the test is skipped)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_full_disk_sets_error_refuses_room_and_recovers(tiny_fs: Path) -> None:
    """ENOSPC: disk_error is set, has_room is False, append raises BufferWriteError; once
    space is freed the probe clears the error and writes resume, with nothing torn."""
    corrupt = Corruption()
    directory = tiny_fs / "buf"
    buffer = await reopen(directory, corrupt, fsync="always")
    filler = tiny_fs / "filler"
    try:
        buffer.append(make_events(10))
        await buffer.commit()
        # Leave about 40 KiB free so the next chunk is written in part and then fails.
        filler.write_bytes(b"\0" * (1024 * KIB - 40 * KIB - buffer.disk_bytes - 8 * KIB))
        stored = 10
        with pytest.raises(BufferWriteError):
            for chunk in range(100):
                buffer.append(make_events(20, start=1000 + chunk * 20, pad=200))
                stored += 20
        assert buffer.disk_error is not None and "No space" in buffer.disk_error
        # The part of the failed chunk that did get written was truncated away.
        assert sum(f.stat().st_size for f in segments(directory)) == buffer.disk_bytes
        assert not buffer.has_room(1, 1)
        with pytest.raises(BufferWriteError):
            buffer.append(make_events(1))
        assert buffer.depth_events == stored
        filler.unlink()
        for _ in range(300):
            if buffer.disk_error is None:
                break
            await asyncio.sleep(0.01)
        assert buffer.disk_error is None and buffer.has_room(1, 1)
        buffer.append(make_events(5, start=5000))
        await buffer.commit()
        assert buffer.depth_events == stored + 5
    finally:
        await buffer.stop()
    again = await reopen(directory, corrupt)
    try:
        got = numbers(await drain(again))
        assert len(got) == stored + 5 and got[-5:] == list(range(5000, 5005))
        assert corrupt.counts == []  # the failed write was truncated away
    finally:
        await again.stop()


async def test_read_only_filesystem_sets_error_and_recovers(tiny_fs: Path) -> None:
    """EROFS (the filesystem remounted read-only) is a disk error too: start() still
    succeeds, appends are refused, and writes resume after a remount read-write."""
    directory = tiny_fs / "buf"
    directory.mkdir()
    remount = ["mount", "-o", "remount,ro", str(tiny_fs)]
    if (await asyncio.to_thread(subprocess.run, remount, capture_output=True)).returncode:
        pytest.skip("cannot remount the tmpfs read-only here")
    buffer = await reopen(directory)
    try:
        with pytest.raises(BufferWriteError):
            buffer.append(make_events(5))
        assert buffer.disk_error is not None and "Read-only" in buffer.disk_error
        assert not buffer.has_room(1, 1)
        assert buffer.depth_events == 0
        rw = ["mount", "-o", "remount,rw", str(tiny_fs)]
        await asyncio.to_thread(subprocess.run, rw, check=True)
        for _ in range(300):
            if buffer.disk_error is None:
                break
            await asyncio.sleep(0.01)
        assert buffer.disk_error is None
        buffer.append(make_events(3, start=7))
        assert numbers(await drain(buffer)) == [7, 8, 9]
    finally:
        await buffer.stop()


# -- against a model ---------------------------------------------------------------------

Op = tuple[str, int]
ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 40)),
        st.tuples(st.just("read"), st.integers(1, 30)),
        st.tuples(st.just("ack"), st.integers(0, 3)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=40,
)


async def run_against_model(directory: Path, ops: list[Op]) -> None:
    options = {"tail_bytes": 600, "segment_bytes": 2 * KIB, "fsync": "never"}
    buffer = await reopen(directory, **options)
    appended = 0
    queue: list[int] = []  # ids not yet read, in order
    flight: list[tuple[Batch, list[int]]] = []  # in read order
    acked: set[int] = set()  # positions in flight that were acked
    try:
        for op, arg in ops:
            if op == "append":
                buffer.append(make_events(arg, start=appended, pad=appended % 7 * 10))
                queue.extend(range(appended, appended + arg))
                appended += arg
            elif op == "read":
                batch = await buffer.read(arg, 1 << 20, 0)
                if not queue:
                    assert batch is None
                    continue
                assert batch is not None
                assert numbers(batch.events) == queue[: len(batch.events)]
                flight.append((batch, queue[: len(batch.events)]))
                del queue[: len(batch.events)]
            elif op == "ack" and flight:
                index = arg % len(flight)
                buffer.ack(flight[index][0])
                acked.add(index)
            elif op == "restart":
                await buffer.stop()
                # Everything after the contiguous acked prefix comes back, in order.
                prefix = 0
                while prefix in acked:
                    prefix += 1
                queue = [n for _, ids in flight[prefix:] for n in ids] + queue
                flight, acked = [], set()
                buffer = await reopen(directory, **options)
            assert buffer.depth_events == len(queue) + sum(
                len(ids) for i, (_, ids) in enumerate(flight) if i not in acked
            )
            assert buffer.unread_events == len(queue)
        await buffer.stop()
        prefix = 0
        while prefix in acked:
            prefix += 1
        expected = [n for _, ids in flight[prefix:] for n in ids] + queue
        buffer = await reopen(directory, **options)
        assert numbers(await drain(buffer, batch=17)) == expected
    finally:
        await buffer.stop()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy)
def test_matches_a_model_under_random_appends_reads_acks_and_restarts(ops: list[Op]) -> None:
    """Any mix of appends, reads, out-of-order acks and restarts yields exactly the events a
    simple model predicts, in order, with depth counts to match."""
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run_against_model(Path(directory), ops))
