"""Throughput of the policy stage: ingest-path events/s with and without a 10-rule policy.

Usage: ``.venv/bin/python -m bench.policy_bench [--events 100000] [--batch 480] [--rules FILE]
[--per-rule]``

"Without" is what the ingest path does with no policy (validate each line, build an
:class:`Event` holding its bytes); "with" is what it does with one: decode each line as the
router decides (a view of the fields the rules read, or a whole dict when a rule sets fields
on every event), then ``Policy.apply`` per batch, as a source hands batches to routing,
which parses in full only the events a rule changes. The policy is
``bench/configs/policy-10-rules.yaml`` unless ``--rules`` names another: ten rules, two of
them redactions with patterns; one event in 50 carries an e-mail address
and one in 200 a card number, so the redaction walk runs on some events, not none.

Then the floor: what any policy engine in this process pays per event before evaluating a
rule, measured the same way: parsing into a dict instead of validating, re-encoding a
changed event, and one keyed hash (HMAC-SHA256) of a value never seen before. With
``--per-rule``, each rule of the file alone: a way to find the expensive rule of a policy.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench.events import iter_events
from forwarder.cli import tune_gc
from forwarder.events import Event, encode
from forwarder.policy import Policy, parse_rules
from forwarder.policy.redact import hasher
from forwarder.policy.view import ViewDecoder, decoder_for
from forwarder.sources.base import decode_lines

RULES = Path(__file__).parent / "configs" / "policy-10-rules.yaml"


def _rules(path: Path) -> list[Any]:
    doc = yaml.safe_load(path.read_text())
    rules: list[Any] = doc["policy"] if isinstance(doc, dict) else doc
    return rules


def _lines(count: int) -> list[bytes]:
    lines = []
    for i, line in enumerate(iter_events(count)):
        if i % 50 == 0 or i % 200 == 7:
            obj = orjson.loads(line)
            obj["note"] = (
                "contact alice.smith@example.com" if i % 50 == 0 else "card 4111 1111 1111 1111"
            )
            line = orjson.dumps(obj)
        lines.append(line)
    return lines


def decoded(
    lines: list[bytes], batch: int, *, keep_objects: bool, view: ViewDecoder | None
) -> Iterator[list[Event]]:
    """The lines as the ingest path turns them into events, ``batch`` lines at a time: one
    TCP read's worth, on which the daemon runs the policy."""
    for first in range(0, len(lines), batch):
        events, _ = decode_lines(
            lines[first : first + batch],
            "bench",
            keep_objects=keep_objects,
            wrap_invalid=True,
            view=view,
        )
        yield events


def _ingest(
    lines: list[bytes],
    batch: int,
    policy: Policy | None,
    *,
    views: bool = True,
    view: ViewDecoder | None = None,
) -> tuple[float, int]:
    """Seconds to turn the lines into events (and run the policy per batch); events kept.
    With a policy, lines are decoded as the router decides (views of the fields the policy
    reads, unless it changes every event) or with ``view``; ``views=False`` parses every
    line into a dict."""
    kept = 0
    if policy is not None and views and view is None:
        view = decoder_for([policy])
    start = time.process_time()
    for events in decoded(lines, batch, keep_objects=policy is not None, view=view):
        if policy is not None:
            events = policy.apply(events).kept
        kept += len(events)
    return time.process_time() - start, kept


def _per_item(items: list[Any], work: Callable[[Any], object]) -> tuple[float, int]:
    start = time.process_time()
    for item in items:
        work(item)
    return time.process_time() - start, len(items)


def _best(runs: int, measure: Callable[[], tuple[float, int]]) -> tuple[float, int]:
    results = [measure() for _ in range(runs)]
    return min(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    # 480 events of ~530 bytes: what one 256 KB read of a TCP connection holds, and the
    # daemon runs the policy on each read's events.
    parser.add_argument("--batch", type=int, default=480, help="events per apply() call")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    parser.add_argument("--rules", type=Path, default=RULES, help="policy file (YAML)")
    parser.add_argument("--per-rule", action="store_true", help="also time each rule alone")
    args = parser.parse_args()

    lines = _lines(args.events)
    # The daemon's collector settings: with the defaults, the dicts a policy run builds
    # trigger a collection every few hundred objects, which the daemon never sees.
    tune_gc()
    mean_bytes = sum(map(len, lines)) / len(lines)
    policy = Policy.compile(parse_rules(_rules(args.rules)), hash_key=b"bench")
    base_secs, _ = _best(args.runs, lambda: _ingest(lines, args.batch, None))
    with_secs, kept = _best(args.runs, lambda: _ingest(lines, args.batch, policy))

    print(f"events: {len(lines)}, mean {mean_bytes:.0f} bytes, batch {args.batch}")
    print(f"without policy: {len(lines) / base_secs:>10,.0f} events/s")
    print(
        f"with policy:    {len(lines) / with_secs:>10,.0f} events/s  "
        f"({len(policy)} rules, {kept} kept)"
    )
    per_event_us = (with_secs - base_secs) / len(lines) * 1e6
    print(f"policy cost:    {per_event_us:>10.1f} us/event")

    objs = [orjson.loads(line) for line in lines]
    # The empty policy keeps every event untouched, after parsing each into a dict.
    parse_secs, _ = _best(args.runs, lambda: _ingest(lines, args.batch, Policy(), views=False))
    encode_secs, _ = _best(args.runs, lambda: _per_item(objs, encode))
    values = [f"{n:016x}" for n in range(len(lines))]
    # A fresh hasher per run: every value is new to it, as unique session ids are.
    hash_secs, _ = _best(args.runs, lambda: _per_item(values, hasher(b"bench")))
    print("floor, per event, before any rule:")
    print(f"  parse into a dict:  {(parse_secs - base_secs) / len(lines) * 1e6:>6.1f} us more")
    print(f"  re-encode:          {encode_secs / len(lines) * 1e6:>6.1f} us when changed")
    print(f"  keyed hash:         {hash_secs / len(values) * 1e6:>6.1f} us per new value")
    view = decoder_for([policy])
    if view is None:
        print("  (no views: a rule sets fields on every event, so each is parsed in full)")
    else:
        # The empty policy reads nothing: what decoding views of this policy's fields costs.
        view_secs, _ = _best(args.runs, lambda: _ingest(lines, args.batch, Policy(), view=view))
        print(
            f"  view of {len(view.paths)} fields:  "
            f"{(view_secs - base_secs) / len(lines) * 1e6:>6.1f} us more, instead of parsing"
        )
    if args.per_rule:
        # Each rule alone, against the empty policy: what it adds, its re-encoding included.
        print("each rule alone, per event (re-encoding of the events it changes included):")
        for rule in parse_rules(_rules(args.rules)):
            alone = Policy.compile([rule], hash_key=b"bench")
            # Runs alternate with the empty policy's, so drift in the machine's speed hits
            # both alike; best of each.
            pairs = [
                (_ingest(lines, args.batch, Policy())[0], _ingest(lines, args.batch, alone)[0])
                for _ in range(args.runs)
            ]
            base = min(pair[0] for pair in pairs)
            secs = min(pair[1] for pair in pairs)
            print(f"  {alone.names[0]:<28} {(secs - base) / len(lines) * 1e6:>6.1f} us")


if __name__ == "__main__":
    main()
