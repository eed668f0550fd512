"""``forwarder policy test``: what each sink would receive from some sample events.

The events go through the same code as in the daemon: the global policy, each sink's
``inputs`` and the route restriction, then the sink's own policy on a copy.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TextIO

from forwarder.events import Event, decode_object
from forwarder.policy.config import PolicyRuleConfig
from forwarder.policy.engine import Policy

__all__ = ["run_policy_test"]


def run_policy_test(
    global_rules: Sequence[PolicyRuleConfig],
    sink_rules: dict[str, tuple[list[str] | None, Sequence[PolicyRuleConfig]]],
    source_name: str,
    lines: Iterable[bytes],
    out: TextIO,
    *,
    hash_key: bytes | None = None,
) -> int:
    """Print, per sink, the events it would receive, then the drops per rule.

    Arguments:
        global_rules: the top-level ``policy:``.
        sink_rules: sink name -> (its ``inputs``, None for every source; its ``policy:``).
        source_name: the source the events are taken to come from (for ``inputs``).
        lines: NDJSON, one event per line; blank lines are skipped.
        out: where the report goes.
        hash_key: the ``policy_hash_key``, so hashes match the daemon's.

    Returns 0, or 1 when a line was not a JSON object (reported, the rest still run).
    """
    events: list[Event] = []
    invalid: list[int] = []
    now = time.time()
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        obj = decode_object(line)
        if obj is None:
            invalid.append(number)
            continue
        events.append(Event(line, source_name, now, obj=obj))

    outcome = Policy.compile(global_rules, hash_key=hash_key).apply(events)
    drops = [("global", name, count) for name, count in outcome.dropped.items()]
    for sink, (inputs, rules) in sink_rules.items():
        if inputs is not None and source_name not in inputs:
            chosen: list[Event] = []
        else:
            chosen = [
                event
                for event, route in zip(outcome.kept, outcome.routes, strict=True)
                if route is None or sink in route
            ]
        result = Policy.compile(rules, hash_key=hash_key).apply_copy(chosen)
        drops += [(sink, name, count) for name, count in result.dropped.items()]
        out.write(f"== sink {sink} ({len(result.kept)} events)\n")
        for event in result.kept:
            out.write(event.raw.decode() + "\n")

    out.write(f"== dropped by policy ({sum(count for _, _, count in drops)} events)\n")
    for where, name, count in drops:
        out.write(f"{where} rule {name!r}: {count}\n")
    if invalid:
        shown = ", ".join(map(str, invalid[:10])) + (" ..." if len(invalid) > 10 else "")
        out.write(f"== not a JSON object: {len(invalid)} lines ({shown})\n")
        return 1
    return 0
