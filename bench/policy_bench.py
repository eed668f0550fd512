"""Throughput of the policy stage: ingest-path events/s with and without a 10-rule policy.

Usage: ``.venv/bin/python -m bench.policy_bench [--events 100000] [--batch 1000] [--rules FILE]``

"Without" is what the ingest path does anyway (parse each line into an :class:`Event`);
"with" adds ``Policy.apply`` per batch, as a source hands batches to routing. The policy is
``bench/configs/policy-10-rules.yaml`` unless ``--rules`` names another: ten rules, two of
them redactions with patterns; one event in 50 carries an e-mail address
and one in 200 a card number, so the redaction walk runs on some events, not none.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench.events import iter_events
from forwarder.events import Event, decode_object
from forwarder.policy import Policy, parse_rules

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


def _ingest(lines: list[bytes], batch: int, policy: Policy | None) -> tuple[float, int]:
    """Seconds to turn the lines into events (and run the policy per batch); events kept."""
    kept = 0
    start = time.process_time()
    now = time.time()
    for first in range(0, len(lines), batch):
        events = []
        for line in lines[first : first + batch]:
            obj = decode_object(line)
            if obj is not None:
                events.append(Event(line, "bench", now, obj=obj))
        if policy is not None:
            events = policy.apply(events).kept
        kept += len(events)
    return time.process_time() - start, kept


def _best(runs: int, measure: Callable[[], tuple[float, int]]) -> tuple[float, int]:
    results = [measure() for _ in range(runs)]
    return min(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="events per apply() call")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    parser.add_argument("--rules", type=Path, default=RULES, help="policy file (YAML)")
    args = parser.parse_args()

    lines = _lines(args.events)
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


if __name__ == "__main__":
    main()
