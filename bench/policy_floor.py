"""The floor of a policy stage in Python: the read-mostly bench policy written out by hand.

Usage: ``.venv/bin/python -m bench.policy_floor [--events 100000] [--batch 480] [--runs 3]``

``bench/configs/policy-10-rules-read-mostly.yaml`` as one hand-written function: a single
loop over the batch, every condition inlined as dict lookups and comparisons, no call per
rule, the tag on denied events spliced into the event's bytes instead of parsing and
re-encoding it. Nothing a general engine could do faster in Python. It reuses the pieces no
engine can skip: the views the ingest path decodes, the batch's search for possible secrets
(Hyperscan where installed) and the pattern redactor for the events that search points at.

Before timing, both run over the lines and must keep the same events, with the same bytes
and the same routes; the command fails when they differ (a change to the bench load or to the
file's rules that this function does not follow).

Prints, per event, over validating lines without a policy (the daemon's ingest path):
decoding the views alone, views plus the pattern search, the hand-written policy, and the
engine (``Policy.apply``) on the same lines.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from bench.policy_bench import _lines, _rules, decoded
from forwarder.cli import tune_gc
from forwarder.events import Event
from forwarder.policy import Policy, parse_rules
from forwarder.policy.actions import Sampler
from forwarder.policy.config import SampleConfig
from forwarder.policy.redact import MASK, PatternRedactor, hasher
from forwarder.policy.scan import Hint, RawScan
from forwarder.policy.view import ViewDecoder, decoder_for

RULES = Path(__file__).parent / "configs" / "policy-10-rules-read-mostly.yaml"
HASH_KEY = b"bench"

# The policy's two pattern redactions, and the batch searches that point at their suspects.
SECRETS = ["credit_card", "aws_key", "bearer_token"]
_SECRETS_HINT = Hint(SECRETS)
_EMAILS_HINT = Hint(["email"])

# The events kept and, aligned with them, the sinks each may reach (None: no restriction).
Kept = tuple[list[Event], list[frozenset[str] | None]]
Stage = Callable[[list[Event]], Kept]


class HandWritten:
    """The ten rules of :data:`RULES`, in their order, over one batch of view-decoded events."""

    def __init__(self) -> None:
        self._secrets = PatternRedactor(SECRETS, (), lambda _text: MASK)
        self._emails = PatternRedactor(["email"], (), hasher(HASH_KEY))
        self._automation = re.compile("^terraform-provider/")
        self._hec = frozenset(["hec"])
        self._sample = Sampler(SampleConfig(rate=4, key="actor.user")).keep

    def __call__(self, events: list[Event]) -> Kept:
        scan = RawScan([event.raw for event in events])
        secrets = _SECRETS_HINT.hits(scan)
        emails = _EMAILS_HINT.hits(scan)
        hec = self._hec
        kept: list[Event] = []
        routes: list[frozenset[str] | None] = []
        for i, event in enumerate(events):
            view: Any = event.view
            action = view.get("action")
            outcome = view.get("outcome")
            # drop-healthchecks, drop-successful-logouts
            if action == "healthcheck" or action == "ping":
                continue
            if action == "user.logout" and outcome == "success":
                continue
            # redact-secrets: fields, then patterns; pseudonymise-emails
            obj = None
            request = view.get("request")
            if (
                "password" in view
                or "token" in view
                or (type(request) is dict and "authorization" in request)
            ):
                obj = orjson.loads(event.raw)
                for key in ("password", "token"):
                    if key in obj:
                        obj[key] = MASK
                if type(obj.get("request")) is dict and "authorization" in obj["request"]:
                    obj["request"]["authorization"] = MASK
            if i in secrets:
                obj = self._secrets.scan(obj or orjson.loads(event.raw))
            if i in emails:
                obj = self._emails.scan(obj or orjson.loads(event.raw))
            # sensitive-to-siem-only
            target = view.get("target")
            target = target if type(target) is dict else {}
            route = hec if target.get("kind") in ("secret", "policy") else None
            # thin-token-issue
            if action == "token.issue" and outcome == "success" and not self._sample(view):
                continue
            # drop-automation-downloads
            if action == "file.download":
                client = view.get("client")
                agent = client.get("user_agent") if type(client) is dict else None
                if type(agent) is str and self._automation.search(agent):
                    continue
            # keep-high-severity-on-siem
            severity = view.get("severity")
            if type(severity) in (int, float) and severity < 2:
                route = hec
            # flag-denials: a key the view shows absent, appended to the object's bytes
            if outcome == "denied" and view.get("alert") is not True:
                if obj is not None:
                    obj["alert"] = True
                elif "alert" not in view and len(event.raw) > 2:
                    # A non-empty object's bytes end with its closing brace (lines come
                    # stripped); the key goes last, where a parse and re-encode puts it.
                    event.raw = event.raw[:-1] + b',"alert":true}'
                else:
                    obj = orjson.loads(event.raw)
                    obj["alert"] = True
            # drop-test-tenant
            if target.get("tenant") == "t-0000":
                continue
            if obj is not None:
                event.raw = orjson.dumps(obj)
            kept.append(event)
            routes.append(route)
        return kept, routes


def engine_stage(policy: Policy) -> Stage:
    def stage(events: list[Event]) -> Kept:
        outcome = policy.apply(events)
        return outcome.kept, outcome.routes

    return stage


def search_only(events: list[Event]) -> Kept:
    """The pattern search every batch pays, and nothing else."""
    scan = RawScan([event.raw for event in events])
    _SECRETS_HINT.hits(scan)
    _EMAILS_HINT.hits(scan)
    return events, [None] * len(events)


def views_only(events: list[Event]) -> Kept:
    return events, [None] * len(events)


def run(
    lines: list[bytes], batch: int, view: ViewDecoder | None, stage: Stage | None
) -> Iterator[Kept]:
    """Decode the lines batch by batch (views with ``view``, else validation only) and pass
    each batch through ``stage``; yields what each batch keeps."""
    for events in decoded(lines, batch, keep_objects=view is not None, view=view):
        yield (events, [None] * len(events)) if stage is None else stage(events)


def _pairs(batches: Iterator[Kept]) -> list[tuple[Event, frozenset[str] | None]]:
    return [pair for kept, routes in batches for pair in zip(kept, routes, strict=True)]


def differences(lines: list[bytes], batch: int, view: ViewDecoder, policy: Policy) -> list[str]:
    """Where the hand-written function and the engine disagree over ``lines``: empty when
    they keep the same events with the same bytes and routes."""
    hand = _pairs(run(lines, batch, view, HandWritten()))
    engine = _pairs(run(lines, batch, view, engine_stage(policy)))
    found = []
    if len(hand) != len(engine):
        found.append(f"kept {len(hand)} events, the engine {len(engine)}")
    for (a, route_a), (b, route_b) in zip(hand, engine, strict=False):
        if a.raw != b.raw or route_a != route_b:
            found.append(f"hand {a.raw[:80]!r} -> {route_a}, engine {b.raw[:80]!r} -> {route_b}")
            break
    return found


def _seconds(batches: Iterator[Kept]) -> float:
    """CPU seconds to go through ``batches``; each batch's events are let go as the next is
    made, as the daemon hands them on."""
    start = time.process_time()
    for _kept in batches:
        pass
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=480, help="events per batch")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()

    lines = _lines(args.events)
    tune_gc()
    policy = Policy.compile(parse_rules(_rules(RULES)), hash_key=HASH_KEY)
    view = decoder_for([policy])
    assert view is not None  # no rule of the file sets fields on every event
    found = differences(lines, args.batch, view, policy)
    if found:
        sys.exit("the hand-written policy and the engine differ: " + "; ".join(found))

    stages: dict[str, Stage | None] = {
        "views alone": views_only,
        "views and pattern search": search_only,
        "hand-written policy": HandWritten(),
        "engine": engine_stage(policy),
    }
    best = dict.fromkeys(["validating", *stages], float("inf"))
    # Each run times every stage in turn, so drift in the machine's speed hits all alike.
    for _ in range(args.runs):
        best["validating"] = min(best["validating"], _seconds(run(lines, args.batch, None, None)))
        for name, stage in stages.items():
            best[name] = min(best[name], _seconds(run(lines, args.batch, view, stage)))

    base = best["validating"]
    print(f"events: {len(lines)}, batch {args.batch}, policy {RULES.name}")
    print(f"validating without a policy: {base / len(lines) * 1e6:>5.2f} us/event")
    print("more per event, with the policy's views:")
    for name in stages:
        print(f"  {name + ':':<27}{(best[name] - base) / len(lines) * 1e6:>5.2f} us")


if __name__ == "__main__":
    main()
