"""Policy actions one at a time: drop, set, rename, remove, redact fields, sample."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from forwarder.events import Event
from forwarder.policy import Policy, PolicyOutcome, parse_rules


def _run(rules: str, *objs: dict[str, Any], hash_key: bytes | None = None) -> PolicyOutcome:
    policy = Policy.compile(parse_rules(yaml.safe_load(rules)), hash_key=hash_key)
    return policy.apply([Event(orjson.dumps(o), "app", 0.0, obj=o) for o in objs])


def _objs(outcome: PolicyOutcome) -> list[Any]:
    # Read from the bytes: they are what the sinks send.
    return [orjson.loads(e.raw) for e in outcome.kept]


def test_drop_when_condition_holds() -> None:
    """drop removes matching events and counts them under the rule's name."""
    out = _run(
        "[{name: hc, when: {field: action, equals: healthcheck}, then: drop}]",
        {"action": "healthcheck"},
        {"action": "login"},
        {"action": "healthcheck"},
    )
    assert _objs(out) == [{"action": "login"}]
    assert out.dropped == {"hc": 2}


def test_rule_without_when_applies_to_every_event() -> None:
    """No when means always."""
    out = _run("[{then: drop}]", {"a": 1}, {"b": 2})
    assert out.kept == []
    assert out.dropped == {"rule-0": 2}


def test_set_creates_nested_fields_and_overwrites() -> None:
    """set writes values at dotted paths, creating dicts on the way."""
    out = _run(
        "[{then: {set: {env: prod, labels.team: sec, actor.user: x}}}]",
        {"actor": {"user": "alice", "uid": 1}},
        {"env": "dev", "labels": "not-a-dict"},
    )
    assert _objs(out) == [
        {"actor": {"user": "x", "uid": 1}, "env": "prod", "labels": {"team": "sec"}},
        # A path through a non-dict is skipped rather than destroying the value.
        {"env": "prod", "labels": "not-a-dict", "actor": {"user": "x"}},
    ]


def test_set_gives_each_event_its_own_container() -> None:
    """A list value set on two events is two lists: changing one leaves the other."""
    out = _run("[{then: {set: {tags: [a]}}}]", {"n": 1}, {"n": 2})
    first, second = (e.obj for e in out.kept)
    assert first is not None and second is not None
    assert first["tags"] == second["tags"] == ["a"]
    assert first["tags"] is not second["tags"]


def test_rename_moves_values_between_paths() -> None:
    """rename moves a value (nested paths too); an absent source changes nothing."""
    out = _run(
        "[{then: {rename: {msg: message, actor.ip: client.ip}}}]",
        {"msg": "hi", "actor": {"ip": "10.0.0.1", "user": "a"}},
        {"other": 1},
    )
    assert _objs(out) == [
        {"actor": {"user": "a"}, "message": "hi", "client": {"ip": "10.0.0.1"}},
        {"other": 1},
    ]


def test_remove_deletes_paths_and_ignores_absent_ones() -> None:
    """remove deletes each listed path that exists."""
    out = _run(
        "[{then: {remove: [debug, actor.session, no.such.path]}}]",
        {"debug": 1, "actor": {"session": "s", "user": "a"}, "keep": True},
    )
    assert _objs(out) == [{"actor": {"user": "a"}, "keep": True}]


def test_redact_fields_masks_whole_values() -> None:
    """Listed fields become [REDACTED] whatever their type; others are untouched."""
    out = _run(
        "[{then: {redact: {fields: [password, actor.session, missing]}}}]",
        {"password": "hunter2", "actor": {"session": {"id": 1}, "user": "a"}, "n": 1},
    )
    assert _objs(out) == [
        {"password": "[REDACTED]", "actor": {"session": "[REDACTED]", "user": "a"}, "n": 1}
    ]


def test_redact_hash_is_keyed_and_stable() -> None:
    """with: hash gives sha256:<16 hex>, equal for equal values, different per key."""
    rules = "[{then: {redact: {fields: [ip], with: hash}}}]"
    events = [{"ip": "10.0.0.1"}, {"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]
    one = [o["ip"] for o in _objs(_run(rules, *copy.deepcopy(events), hash_key=b"k1"))]
    again = [o["ip"] for o in _objs(_run(rules, *copy.deepcopy(events), hash_key=b"k1"))]
    other = [o["ip"] for o in _objs(_run(rules, *copy.deepcopy(events), hash_key=b"k2"))]
    assert one == again
    assert one[0] == one[1] != one[2]
    assert all(h.startswith("sha256:") and len(h) == 7 + 16 for h in one)
    assert all(set(h[7:]) <= set("0123456789abcdef") for h in one)
    assert other[0] != one[0]


def _keyed_verdicts(count: int) -> list[bool]:
    out = _run(
        "[{name: s, then: {sample: {rate: 4, key: user}}}]",
        *({"user": f"u{i % 50}", "i": i} for i in range(count)),
    )
    kept = {o["i"] for o in _objs(out)}
    return [i in kept for i in range(count)]


def test_sample_by_key_is_deterministic_per_value() -> None:
    """Events with the same key value all get the same verdict, about 1 in rate kept."""
    verdicts = _keyed_verdicts(1000)
    by_user: dict[int, set[bool]] = {}
    for i, keep in enumerate(verdicts):
        by_user.setdefault(i % 50, set()).add(keep)
    assert all(len(v) == 1 for v in by_user.values())
    kept_users = sum(1 for v in by_user.values() if True in v)
    assert 4 <= kept_users <= 25


def test_sample_by_key_is_the_same_in_another_process() -> None:
    """The verdict for a key value survives a restart (no per-process hash seed)."""
    code = (
        "from tests.unit.test_policy_actions import _keyed_verdicts;"
        "print(''.join('1' if v else '0' for v in _keyed_verdicts(200)))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    ).stdout.strip()
    assert other == "".join("1" if v else "0" for v in _keyed_verdicts(200))


def test_sample_without_key_keeps_every_nth() -> None:
    """Without a key a counter keeps the 1st, (rate+1)th, ... across batches."""
    policy = Policy.compile(parse_rules([{"name": "s", "then": {"sample": {"rate": 3}}}]))
    seen: list[int] = []
    dropped = 0
    for batch in (range(0, 4), range(4, 10)):
        out = policy.apply([Event(orjson.dumps({"i": i}), "app", 0.0) for i in batch])
        seen += [orjson.loads(e.raw)["i"] for e in out.kept]
        dropped += out.dropped.get("s", 0)
    assert seen == [0, 3, 6, 9]
    assert dropped == 6


def test_sample_events_missing_the_key_fall_back_to_counter() -> None:
    """Events without the key field are sampled by the counter, not all kept or dropped."""
    out = _run("[{then: {sample: {rate: 2, key: user}}}]", *({"i": i} for i in range(6)))
    assert [o["i"] for o in _objs(out)] == [0, 2, 4]
