"""The benchmark runner: forwarder and its peer under the same load, runs interleaved.

    python -m bench.run --events 1000000 --connections 4 --runs 3 --peer syslog-ng
    python -m bench.run --events 300000 --runs 5 --policy bench/configs/policy-10-rules.yaml

Each run starts a fresh blackhole process and a fresh system under test, sends the
pre-encoded load, waits until the blackhole holds every id (or nothing arrived for
``--idle-timeout`` seconds: the rest are lost), then stops the target with SIGTERM. Runs go
A B A B so machine drift hits both alike. Throughput mode first measures the blackhole's own
ceiling (the load generator POSTing HEC batches straight to it), so a slow receiver is never
mistaken for a slow forwarder. One line per run, then a table of medians, ranges and ratios.

``--policy FILE`` adds a target ``forwarder+policy``, run interleaved with the plain forwarder:
the same config with FILE's ``policy:`` list as the global policy. Its runs wait for the
events the policy keeps (found by running the same rules over the load here), and its
events/s and CPU us/event count every event it took in, kept or dropped, so both targets are
measured on the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.blackhole import BlackholeProcess
from bench.events import EncodedLoad, hec_bodies, iter_events, ndjson_bodies, ndjson_parts
from bench.loadgen import SendReport, send_http, send_http_paced, send_tcp, send_tcp_paced
from bench.peers import Target
from bench.peers.forwarder_daemon import ForwarderOptions, ForwarderTarget
from bench.peers.process import ProcessTree, TargetError
from bench.peers.syslog_ng import SyslogNgTarget

__all__ = [
    "Loads",
    "RunResult",
    "build_loads",
    "format_line",
    "format_table",
    "main",
    "parse_args",
    "run_ceiling",
    "run_target",
]

_MIB = 1024 * 1024
_SAMPLE_SECS = 0.25
_TOKEN = "00000000-0000-0000-0000-000000000000"
_NDJSON = {"Content-Type": "application/x-ndjson"}
_HEC = {"Authorization": f"Splunk {_TOKEN}", "Content-Type": "application/json"}
CEILING = "blackhole"


@dataclass(frozen=True)
class RunResult:
    """One run's figures. Times in seconds, rates per second, sizes in MiB, latency in ms."""

    target: str
    run: int
    mode: str
    ingest: str
    events: int
    received: int
    lost: int
    duplicates: int
    seconds: float
    send_seconds: float
    events_per_s: float
    mib_per_s: float
    cpu_s: float
    cpu_us_per_event: float
    peak_rss_mib: float
    processes: int
    requests: int
    blackhole_cpu_s: float
    blackhole_busy_pct: float
    busy_retries: int
    exit_code: int | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None


@dataclass
class Loads:
    """Every encoding a run may need, built once before the first run.

    Arguments:
        tcp: NDJSON blocks, one part per connection (throughput over TCP).
        http: NDJSON bodies for ``POST /v1/events`` (throughput with --http).
        hec: HEC bodies for the ceiling run.
        paced: single events for latency mode (stamped as they are sent).
        kept: target name -> events of the throughput load its policy lets through.
    """

    tcp: EncodedLoad | None = None
    http: EncodedLoad | None = None
    hec: EncodedLoad | None = None
    paced: list[bytes] | None = None
    kept: dict[str, int] = dataclasses.field(default_factory=dict)


class PolicyForwarderTarget(ForwarderTarget):
    """forwarder with a global policy: the bench config plus ``policy:`` from a file.

    Arguments:
        options: the run's flags, as for the plain forwarder.
        rules: the ``policy:`` list as loaded from YAML.
    """

    name = "forwarder+policy"

    def __init__(self, options: ForwarderOptions, rules: list[Any]) -> None:
        super().__init__(options)
        self.rules = rules

    def _config(
        self, workdir: Path, ingest_port: int, admin_port: int, sink_port: int
    ) -> dict[str, Any]:
        config = super()._config(workdir, ingest_port, admin_port, sink_port)
        config["policy"] = self.rules
        return config

    def kept(self, events: list[bytes]) -> int:
        """How many of ``events`` the policy lets through to the sink."""
        from forwarder.events import Event
        from forwarder.policy import Policy, parse_rules

        policy = Policy.compile(parse_rules(self.rules))
        return len(policy.apply([Event(raw, "in", 0.0) for raw in events]).kept)


def load_policy(path: Path) -> list[Any]:
    """The rule list of a policy file: a YAML list, or a mapping with a ``policy:`` list."""
    doc = yaml.safe_load(path.read_text())
    rules = doc.get("policy") if isinstance(doc, dict) else doc
    if not isinstance(rules, list):
        raise TargetError(f"{path}: expected a list of rules or a mapping with 'policy:'")
    return rules


def build_loads(args: argparse.Namespace) -> Loads:
    if args.mode == "latency":
        return Loads(paced=list(iter_events(int(args.rate * args.duration), seed=args.seed)))
    events = list(iter_events(args.events, seed=args.seed))
    return Loads(
        tcp=ndjson_parts(events, parts=args.connections),
        http=(
            ndjson_bodies(events, parts=args.connections, batch_events=args.http_batch)
            if args.http
            else None
        ),
        hec=hec_bodies(events, parts=args.ceiling_clients) if args.ceiling_runs else None,
    )


# (label, RunResult field, format) of each figure the table compares.
_FIGURES = (
    ("events/s", "events_per_s", "{:,.0f}"),
    ("MiB/s", "mib_per_s", "{:.1f}"),
    ("events lost", "lost", "{:,.0f}"),
    ("duplicates", "duplicates", "{:,.0f}"),
    ("CPU seconds", "cpu_s", "{:.2f}"),
    ("CPU us/event", "cpu_us_per_event", "{:.2f}"),
    ("peak RSS MiB", "peak_rss_mib", "{:.1f}"),
    ("blackhole busy %", "blackhole_busy_pct", "{:.0f}"),
    ("latency p50 ms", "latency_p50_ms", "{:.1f}"),
    ("latency p99 ms", "latency_p99_ms", "{:.1f}"),
)


def format_line(r: RunResult) -> str:
    """One run on one line."""
    line = (
        f"{r.target:<10} run {r.run} {r.ingest:<4} {r.received:>9,}/{r.events:,} ev "
        f"{r.seconds:7.2f} s {r.events_per_s:>9,.0f} ev/s {r.mib_per_s:6.1f} MiB/s "
        f"lost {r.lost:,} dup {r.duplicates:,} cpu {r.cpu_s:.2f} s "
        f"{r.cpu_us_per_event:.1f} us/ev rss {r.peak_rss_mib:.1f} MiB"
    )
    if r.latency_p50_ms is not None and r.latency_p99_ms is not None:
        line += f" p50 {r.latency_p50_ms:.1f} ms p99 {r.latency_p99_ms:.1f} ms"
    return line + (
        f" (sent in {r.send_seconds:.2f} s, {r.requests:,} requests,"
        f" blackhole cpu {r.blackhole_cpu_s:.2f} s = {r.blackhole_busy_pct:.0f}% busy,"
        f" exit {r.exit_code})"
    )


def format_table(results: list[RunResult]) -> str:
    """Median [min..max] of every figure per target, and forwarder / syslog-ng ratios."""
    names = list(dict.fromkeys(r.target for r in results))
    ratio = "forwarder" in names and "syslog-ng" in names
    header = ["figure", *(f"{name} median [min..max]" for name in names)]
    rows = [header + (["forwarder/syslog-ng"] if ratio else [])]
    for label, field, spec in _FIGURES:
        medians: dict[str, float] = {}
        row = [label]
        for name in names:
            values = [getattr(r, field) for r in results if r.target == name]
            values = [v for v in values if v is not None]
            if not values:
                row.append("-")
                continue
            medians[name] = statistics.median(values)
            low, high = spec.format(min(values)), spec.format(max(values))
            row.append(f"{spec.format(medians[name])} [{low}..{high}]")
        if not medians:
            continue
        if ratio:
            fwd, peer = medians.get("forwarder"), medians.get("syslog-ng")
            row.append(f"{fwd / peer:.2f}" if fwd is not None and peer else "-")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    )


_TIMELINE_SECS = 0.1


async def timeline(
    arrived: Callable[[], Awaitable[int]], tree: ProcessTree, lines: list[str]
) -> None:
    """Until cancelled, every 0.1 s a line in ``lines``: time since the start, events that
    ``arrived`` (distinct ids at the blackhole) in the interval, and the CPU share of each
    process of ``tree`` (pid order). Shows where a run waits: start-up, a worker left alone,
    the last partial batch waiting for its timeout."""
    loop = asyncio.get_running_loop()
    start = last_at = loop.time()
    last_unique = 0
    tree.sample()
    last_cpu = tree.cpu_by_process()
    while True:
        await asyncio.sleep(_TIMELINE_SECS)
        unique = await arrived()
        tree.sample()
        now, cpu = loop.time(), tree.cpu_by_process()
        shares = " ".join(
            f"{pid}:{(cpu[pid] - last_cpu.get(pid, 0.0)) / (now - last_at):4.0%}"
            for pid in sorted(cpu)
        )
        lines.append(f"  {now - start:6.1f} s {unique - last_unique:>9,} ev  cpu {shares}")
        last_at, last_unique, last_cpu = now, unique, cpu


async def _sample(trees: list[ProcessTree]) -> None:
    while True:
        for tree in trees:
            tree.sample()
        await asyncio.sleep(_SAMPLE_SECS)


async def _measure(
    name: str,
    run: int,
    args: argparse.Namespace,
    ingest: str,
    send: Callable[[], Awaitable[SendReport]],
    blackhole: BlackholeProcess,
    target_pid: int | None,
    kept: Callable[[int], int] | None = None,
) -> tuple[RunResult, ProcessTree]:
    """Send, wait for the blackhole to hold every id, and collect the figures; the CPU and
    memory figures are the target's, or the blackhole's own in a ceiling run.

    ``kept(sent)`` is how many of the sent events a policy lets through (None: all); rates
    and CPU per event then count the events taken in, in proportion to those delivered."""
    sink_tree = ProcessTree(blackhole.pid)
    tree = sink_tree if target_pid is None else ProcessTree(target_pid)
    trees = [tree] if tree is sink_tree else [tree, sink_tree]
    for each in trees:
        each.sample()
    cpu_base, sink_base = tree.cpu_seconds(), sink_tree.cpu_seconds()
    tasks = [asyncio.create_task(_sample(trees))]
    lines: list[str] = []
    if args.timeline:

        async def arrived() -> int:
            return (await blackhole.stats()).unique

        tasks.append(asyncio.create_task(timeline(arrived, tree, lines)))
    try:
        sent = await send()
        expected = sent.events if kept is None else kept(sent.events)
        stats = await blackhole.wait_for(expected, idle_timeout_secs=args.idle_timeout)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if lines:
        print(f"{name} run {run}: every {_TIMELINE_SECS} s", *lines, sep="\n", flush=True)
    for each in trees:
        each.sample()
    # With nothing delivered, the run lasted until the wait gave up.
    seconds = max((stats.last_arrival or time.time()) - sent.first_send, 1e-9)
    received = min(stats.unique, expected)
    # Events taken in: all sent, when all that the policy keeps arrived.
    handled = round(sent.events * received / max(expected, 1))
    cpu = tree.cpu_seconds() - cpu_base
    result = RunResult(
        target=name,
        run=run,
        mode=args.mode,
        ingest=ingest,
        events=sent.events,
        received=received,
        lost=expected - received,
        duplicates=stats.duplicates,
        seconds=seconds,
        send_seconds=sent.last_send - sent.first_send,
        events_per_s=handled / seconds,
        mib_per_s=sent.payload_bytes * handled / max(sent.events, 1) / seconds / _MIB,
        cpu_s=cpu,
        cpu_us_per_event=cpu / max(handled, 1) * 1e6,
        peak_rss_mib=tree.peak_rss_bytes() / _MIB,
        processes=tree.processes(),
        requests=stats.requests,
        blackhole_cpu_s=sink_tree.cpu_seconds() - sink_base,
        # Near 100% means the receiver, not the target, set the pace of this run.
        blackhole_busy_pct=(sink_tree.cpu_seconds() - sink_base) / seconds * 100,
        busy_retries=sent.busy_retries,
        exit_code=None,
        latency_p50_ms=stats.latency_p50_ms,
        latency_p99_ms=stats.latency_p99_ms,
    )
    return result, tree


async def run_ceiling(run: int, args: argparse.Namespace, loads: Loads) -> RunResult:
    """The load generator straight into the blackhole: the receiver's own maximum."""
    assert loads.hec is not None
    hec = loads.hec
    blackhole = BlackholeProcess()
    await blackhole.start()
    try:
        url = f"http://127.0.0.1:{blackhole.port}/services/collector/event"
        result, _ = await _measure(
            CEILING, run, args, "hec", lambda: send_http(url, hec, headers=_HEC), blackhole, None
        )
        return result
    finally:
        await blackhole.stop()


def _sender(
    args: argparse.Namespace, loads: Loads, port: int, http: bool
) -> Callable[[], Awaitable[SendReport]]:
    url = f"http://127.0.0.1:{port}/v1/events"
    if args.mode == "latency":
        assert loads.paced is not None
        paced = loads.paced
        if http:
            return lambda: send_http_paced(url, paced, rate=args.rate, headers=_NDJSON)
        return lambda: asyncio.to_thread(
            send_tcp_paced, port, paced, rate=args.rate, connections=args.connections
        )
    if http:
        assert loads.http is not None
        bodies = loads.http
        return lambda: send_http(url, bodies, headers=_NDJSON, close=args.http_close)
    assert loads.tcp is not None
    blocks = loads.tcp
    return lambda: asyncio.to_thread(send_tcp, port, blocks)


async def run_target(
    target: Target, run: int, args: argparse.Namespace, loads: Loads, workdir: Path
) -> RunResult:
    """One run of one system under test against a fresh blackhole."""
    http = bool(args.http) and isinstance(target, ForwarderTarget)
    blackhole = BlackholeProcess(latency=args.mode == "latency")
    await blackhole.start()
    try:
        port = await target.start(sink_port=blackhole.port, workdir=workdir)
        try:
            send = _sender(args, loads, port, http)
            kept = loads.kept.get(target.name)
            result, _ = await _measure(
                target.name,
                run,
                args,
                "http" if http else "tcp",
                send,
                blackhole,
                target.pid,
                None if kept is None else lambda _sent: kept,
            )
        finally:
            exit_code = await target.stop()
        return RunResult(**{**asdict(result), "exit_code": exit_code})
    finally:
        await blackhole.stop()


def _targets(args: argparse.Namespace) -> list[Target]:
    targets: list[Target] = []
    if not args.no_forwarder:
        options = ForwarderOptions(
            http=args.http, gzip=args.gzip, buffer=args.buffer, workers=args.workers
        )
        targets.append(ForwarderTarget(options))
        if args.policy is not None:
            targets.append(PolicyForwarderTarget(options, load_policy(args.policy)))
    if args.peer == "syslog-ng":
        targets.append(SyslogNgTarget())
    return targets


async def _main(args: argparse.Namespace, workdir: Path) -> list[RunResult]:
    targets = _targets(args)
    for target in targets:
        target.check(workdir)
    loads = build_loads(args)
    for target in targets:
        if isinstance(target, PolicyForwarderTarget):
            events = loads.paced or list(iter_events(args.events, seed=args.seed))
            loads.kept[target.name] = target.kept(events)
    results: list[RunResult] = []
    if args.mode == "throughput":
        for run in range(1, args.ceiling_runs + 1):
            results.append(await run_ceiling(run, args, loads))
            print(format_line(results[-1]), flush=True)
    for run in range(1, args.runs + 1):
        for target in targets:
            rundir = workdir / f"{run}-{target.name}"
            rundir.mkdir()
            results.append(await run_target(target, run, args, loads, rundir))
            print(format_line(results[-1]), flush=True)
    return results


def _run_loop(main: Coroutine[Any, Any, list[RunResult]]) -> list[RunResult]:
    # uvloop when installed: the generator's HTTP clients then cost the machine less.
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    add = parser.add_argument
    add("--events", type=int, default=1_000_000, help="events per throughput run")
    add("--connections", type=int, default=4, help="TCP connections or HTTP clients")
    add("--runs", type=int, default=3, help="runs per target, interleaved A B A B")
    add("--peer", choices=["syslog-ng", "none"], default="none", help="peer to compare with")
    add("--no-forwarder", action="store_true", help="measure only the peer and the ceiling")
    add("--mode", choices=["throughput", "latency"], default="throughput")
    add("--rate", type=float, default=10_000, help="latency mode: events per second")
    add("--duration", type=float, default=10, help="latency mode: seconds of load per run")
    add("--gzip", action="store_true", help="forwarder: compression gzip on the HEC sink")
    add("--buffer", choices=["memory", "disk"], default="memory", help="forwarder buffer")
    add("--workers", type=int, default=None, help="forwarder: top-level workers: N")
    add("--http", action="store_true", help="forwarder ingest over POST /v1/events")
    add("--http-batch", type=int, default=500, help="--http: events per request")
    add("--http-close", action="store_true", help="--http: a new connection per request")
    add("--ceiling-runs", type=int, default=1, help="blackhole ceiling runs (0: none)")
    add("--ceiling-clients", type=int, default=8, help="HTTP clients of the ceiling run")
    add("--seed", type=int, default=1, help="event generator seed")
    add("--idle-timeout", type=float, default=30, help="seconds without arrivals = lost")
    add("--json", type=Path, default=None, help="write raw results to this file")
    add("--keep", action="store_true", help="keep configs and logs of every run")
    add(
        "--timeline",
        action="store_true",
        help="print, every 0.1 s of each run, events arrived and each target process's CPU",
    )
    add(
        "--policy",
        type=Path,
        default=None,
        help="also run forwarder+policy: this file's policy: list as the global policy",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="forwarder-bench-"))
    try:
        results = _run_loop(_main(args, workdir))
    except TargetError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"configs and logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(format_table(results))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
