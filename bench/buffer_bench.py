"""Buffer throughput: append + read + ack of N ~500-byte events, disk (each fsync mode) vs memory.

Two shapes:
- ``pipeline``: a writer appends chunks (waiting for room, committing each chunk as an HTTP
  source does) while a reader reads batches and acks them: the steady state.
- ``backlog``: append everything first, then drain: the disk buffer reads the backlog back
  from its files (its in-memory tail holds only the newest events).

Usage: .venv/bin/python -m bench.buffer_bench [--events 1000000] [--shape pipeline|backlog]
       [--buffers memory,never,interval,always] [--dir /var/tmp/buffer-bench]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import tempfile
import time
from pathlib import Path

import structlog

from bench.events import iter_events
from forwarder.buffers.base import Buffer
from forwarder.buffers.disk import DiskBuffer
from forwarder.buffers.memory import MemoryBuffer
from forwarder.events import Event

DISTINCT = 10_000  # events are reused round-robin: generating a million would dominate


async def writer(
    buffer: Buffer, events: list[Event], total: int, chunk: int, yield_each: bool
) -> None:
    sent = 0
    while sent < total:
        part = [events[(sent + i) % len(events)] for i in range(min(chunk, total - sent))]
        nbytes = sum(len(e.raw) for e in part)
        if not buffer.has_room(len(part), nbytes):
            await buffer.wait_for_room(len(part), nbytes)
        buffer.append(part)
        await buffer.commit()
        sent += len(part)
        if yield_each:
            await asyncio.sleep(0)  # a source awaits its socket between chunks


async def reader(buffer: Buffer, total: int, batch_events: int, batch_bytes: int) -> int:
    got = 0
    while got < total:
        batch = await buffer.read(batch_events, batch_bytes, 5.0)
        if batch is None:
            raise RuntimeError(f"reader starved after {got} events")
        got += len(batch.events)
        buffer.ack(batch)
    return got


async def run_one(kind: str, args: argparse.Namespace, events: list[Event], root: Path) -> dict:
    directory = root / kind
    buffer: Buffer
    if kind == "memory":
        buffer = MemoryBuffer(kind, max_events=args.max_events, max_bytes=args.max_bytes)
    else:
        buffer = DiskBuffer(
            kind,
            directory,
            max_events=args.max_events,
            max_bytes=args.max_bytes,
            fsync=kind,  # type: ignore[arg-type]
        )
    await buffer.start()
    started = time.perf_counter()
    if args.shape == "pipeline":
        await asyncio.gather(
            writer(buffer, events, args.events, args.chunk, True),
            reader(buffer, args.events, args.batch, args.batch_bytes),
        )
        appended = time.perf_counter()
    else:
        await writer(buffer, events, args.events, args.chunk, False)
        appended = time.perf_counter()
        await reader(buffer, args.events, args.batch, args.batch_bytes)
    elapsed = time.perf_counter() - started
    await buffer.stop()
    shutil.rmtree(directory, ignore_errors=True)
    return {
        "buffer": kind,
        "secs": elapsed,
        "events_per_sec": args.events / elapsed,
        "mb_per_sec": args.events * args.event_bytes / elapsed / 1e6,
        "append_secs": appended - started,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--shape", choices=["pipeline", "backlog"], default="pipeline")
    parser.add_argument("--buffers", default="memory,never,interval,always")
    parser.add_argument("--chunk", type=int, default=100, help="events per append")
    parser.add_argument("--batch", type=int, default=1000, help="events per read")
    parser.add_argument("--batch-bytes", type=int, default=1_000_000)
    parser.add_argument("--max-events", type=int, default=2_000_000)
    parser.add_argument("--max-bytes", type=int, default=2 * 1024**3)
    parser.add_argument("--dir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    raws = list(iter_events(DISTINCT))
    now = time.time()  # sources stamp a whole chunk with one receive time
    events = [Event(raw, "bench", now) for raw in raws]
    args.event_bytes = sum(len(r) for r in raws) / len(raws)
    root = Path(tempfile.mkdtemp(prefix="buffer-bench-", dir=args.dir))
    print(
        f"{args.events} events of {args.event_bytes:.0f} bytes, shape={args.shape}, "
        f"chunk={args.chunk}, batch={args.batch}, dir={root}"
    )
    print(f"{'buffer':<10}{'secs':>8}{'events/s':>12}{'MB/s':>8}{'append s':>10}")
    try:
        for kind in args.buffers.split(","):
            row = await run_one(kind, args, events, root)
            print(
                f"{row['buffer']:<10}{row['secs']:>8.2f}{row['events_per_sec']:>12,.0f}"
                f"{row['mb_per_sec']:>8.1f}{row['append_secs']:>10.2f}",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
