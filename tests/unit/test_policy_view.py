"""Views: policies read the fields they name from a partial decode; events no rule changes keep
their bytes, and every outcome equals the one from whole parsed objects."""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from forwarder.buffers.memory import MemoryBuffer
from forwarder.events import Event
from forwarder.policy import Policy, parse_rules
from forwarder.policy.conditions import value_at
from forwarder.policy.view import view_decoder
from forwarder.routing import Router, Target
from forwarder.sources.base import decode_lines
from forwarder.telemetry.metrics import Metrics
from tests.policy_strategies import PATHS, objects, scalars


def _compile(text: str) -> Policy:
    return Policy.compile(parse_rules(yaml.safe_load(text)), hash_key=b"k")


def _viewed(policy: Policy, lines: list[bytes]) -> tuple[list[Event], int]:
    return decode_lines(
        lines, "app", keep_objects=True, wrap_invalid=True, view=view_decoder(policy.reads)
    )


def test_view_holds_only_the_read_fields_and_the_envelope() -> None:
    decoder = view_decoder(frozenset({("action",), ("actor", "user"), ("labels",)}))
    line = (
        b'{"action":"a","time":5,"host":"h","actor":{"user":"u","ip":"1"},'
        b'"labels":{"x":[1,{"y":2}]},"other":{"deep":1}}'
    )
    assert decoder.decode(line) == {
        "action": "a",
        "time": 5,
        "host": "h",
        "actor": {"user": "u"},
        "labels": {"x": [1, {"y": 2}]},
    }
    assert decoder.covers([("actor", "user"), ("labels", "x", "y"), ("time",)])
    assert not decoder.covers([("actor", "ip")])


def test_unchanged_events_keep_their_bytes_and_are_never_parsed() -> None:
    policy = _compile("""
    - {when: {field: action, equals: healthcheck}, then: drop}
    - {then: {redact: {fields: [password], patterns: [email]}}}
    - {when: {field: actor.user, in: [root]}, then: {set: {alert: true}}}
    """)
    lines = [
        b'{"action": "login",  "actor": {"user": "ann"}, "n": 1}',
        b'{"action": "healthcheck"}',
        b'{"action": "login", "password": "hunter2"}',
        b'{"action": "login", "actor": {"user": "root"}}',
        b'{"note": "mail ann@example.com"}',
    ]
    events, invalid = _viewed(policy, lines)
    assert invalid == 0 and all(e.obj is None and e.view is not None for e in events)
    kept = policy.apply(events).kept
    assert kept[0].raw is lines[0] and kept[0].obj is None  # spacing and all
    assert [orjson.loads(e.raw) for e in kept[1:]] == [
        {"action": "login", "password": "[REDACTED]"},
        {"action": "login", "actor": {"user": "root"}, "alert": True},
        {"note": "mail [REDACTED]"},
    ]
    # A new top-level field is appended to the bytes, which stay as they came; the view
    # shows it.
    assert kept[2].raw == b'{"action": "login", "actor": {"user": "root"},"alert":true}'
    assert kept[2].obj is None and kept[2].view == {
        "action": "login",
        "actor": {"user": "root"},
        "alert": True,
    }
    # A parsed and re-encoded event's view no longer fits.
    assert kept[1].view is None and kept[3].view is None


def test_new_top_level_fields_are_appended_to_the_bytes() -> None:
    """Empty objects, trailing spaces and nested new objects; a field the event has already,
    or one whose value may hold a secret, takes the parse; later rules see what was set."""
    policy = _compile("""
    - when: {field: a, exists: false}
      then: {set: {tag: {x: [1, "y"]}, flags.new: true}}
    - when: {field: a, equals: 1}
      then: {set: {tag: t}}
    - when: {field: flags.new, equals: true}
      then: {route: [s1]}
    """)
    lines = [b"{}", b'{"b": 2}  ', b'{"a":1,"tag":"old"}', b'{"a":1}', b'{"flags":{"k":1}}']
    events, _ = _viewed(policy, lines)
    outcome = policy.apply(events)
    assert [e.raw for e in outcome.kept] == [
        b'{"tag":{"x":[1,"y"]},"flags":{"new":true}}',
        b'{"b": 2,"tag":{"x":[1,"y"]},"flags":{"new":true}}',
        b'{"a":1,"tag":"t"}',
        b'{"a":1,"tag":"t"}',
        b'{"flags":{"k":1,"new":true},"tag":{"x":[1,"y"]}}',
    ]
    assert outcome.routes == [frozenset({"s1"})] * 2 + [None] * 2 + [frozenset({"s1"})]
    assert outcome.kept[0].view == {"tag": {"x": [1, "y"]}, "flags": {"new": True}}

    # A value that may hold a secret is not appended: pattern redaction must see it.
    secret = _compile("""
    - {when: {field: a, exists: false}, then: {set: {note: "ann@example.com"}}}
    - {then: {redact: {patterns: [email]}}}
    """)
    events, _ = _viewed(secret, [b'{"b": 2}'])
    assert orjson.loads(secret.apply(events).kept[0].raw) == {"b": 2, "note": "[REDACTED]"}


def test_appending_on_copies_leaves_the_shared_event_alone() -> None:
    policy = _compile("- {when: {field: a, equals: 1}, then: {set: {tag: t}}}")
    events, _ = _viewed(policy, [b'{"a": 1}'])
    view = dict(events[0].view or {})
    [copy] = policy.apply_copy(events).kept
    assert copy is not events[0] and copy.raw == b'{"a": 1,"tag":"t"}'
    assert copy.view == {"a": 1, "tag": "t"}
    assert events[0].raw == b'{"a": 1}' and events[0].view == view


def test_set_on_a_field_outside_the_view_keeps_the_rest_of_the_event() -> None:
    """The view's ``labels`` holds only the key the rule sets: the event is parsed in full
    before the set, so the new key joins the whole object."""
    policy = _compile("- {when: {field: action, equals: a}, then: {set: {labels.new: 1}}}")
    events, _ = _viewed(policy, [b'{"action":"a","labels":{"env":"prod"}}'])
    assert events[0].view == {"action": "a", "labels": {}}
    [kept] = policy.apply(events).kept
    assert orjson.loads(kept.raw) == {"action": "a", "labels": {"env": "prod", "new": 1}}


def test_a_line_the_view_cannot_hold_is_parsed_in_full() -> None:
    policy = _compile("- {when: {field: actor.user, equals: bob}, then: drop}")
    lines = [b'{"actor":"bob"}', b"[1]", b"{oops", b'{"actor":{"user":"bob"}}', b'{"m":"\xff"}']
    events, invalid = _viewed(policy, lines)
    full, full_invalid = decode_lines(lines, "app", keep_objects=True, wrap_invalid=True)
    assert invalid == full_invalid == 3
    assert [e.raw for e in events] == [e.raw for e in full]
    assert events[0].obj == {"actor": "bob"} and events[0].view is None
    assert [orjson.loads(e.raw) for e in policy.apply(events).kept] == [
        orjson.loads(e.raw) for e in policy.apply(full).kept
    ]


def test_router_uses_views_unless_a_policy_sets_fields_on_every_event() -> None:
    router = Router(Metrics(), _compile("- {when: {field: a, equals: x}, then: drop}"))
    assert router.view is not None and not router.view.covers([("b", "c")])
    sink_policy = _compile("- {then: {redact: {fields: [b.c]}}}")
    buffer = MemoryBuffer("s", max_events=10, max_bytes=10_000)
    router.set_routes({"app": [Target("s", buffer, "block", sink_policy)]}, router.policy)
    assert router.view is not None and router.view.covers([("a",), ("b", "c")])
    router.set_routes(router.targets, _compile("- {then: {set: {tag: t}}}"))
    assert router.needs_objects and router.view is None


_SCALARS = scalars(floats=True)
_OBJECTS = objects(_SCALARS, lists=True)
_WHEN = st.one_of(
    st.builds(lambda p, v: {"field": p, "equals": v}, PATHS, _SCALARS),
    st.builds(lambda p: {"field": p, "exists": True}, PATHS),
    st.builds(lambda p: {"field": p, "gt": 0}, PATHS),
    st.builds(lambda p: {"not": {"field": p, "in": ["h1", "", 1]}}, PATHS),
)
_THEN = st.one_of(
    st.just("drop"),
    st.just({"route": ["s1"]}),
    st.builds(lambda p: {"sample": {"rate": 2, "key": p}}, PATHS),
    st.builds(lambda p, v: {"set": {p: v}}, PATHS, _SCALARS),
    st.builds(lambda a, b: {"rename": {a: b}}, PATHS, PATHS),
    st.builds(lambda p: {"remove": [p]}, PATHS),
    st.builds(lambda p: {"redact": {"fields": [p], "with": "hash"}}, PATHS),
    st.just({"redact": {"patterns": ["email"]}}),
)
_RULES = st.lists(
    st.builds(
        lambda w, t: {"then": t} if w is None else {"when": w, "then": t}, st.none() | _WHEN, _THEN
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(rules=_RULES, objs=st.lists(_OBJECTS, min_size=1, max_size=4))
# A pattern in a field no rule names (not in the view), and a rename whose target goes
# through a non-object the view does not show.
@example(rules=[{"then": {"redact": {"patterns": ["email"]}}}], objs=[{"a": "x@y.io"}])
@example(rules=[{"then": {"rename": {"a": "b.a"}}}], objs=[{"a": 1, "b": 2}])
def test_views_and_whole_objects_give_the_same_outcome(
    rules: list[dict[str, Any]], objs: list[dict[str, Any]]
) -> None:
    """Whatever the rules and events, in place and on copies: the same events kept, with the
    same bytes (once parsed), routes, drop counts, time and host."""
    lines = [orjson.dumps(obj) for obj in objs]
    for copy in (False, True):
        results = []
        for view in (True, False):
            policy = Policy.compile(parse_rules(rules), hash_key=b"k")
            if view:
                events, _ = _viewed(policy, lines)
            else:
                events, _ = decode_lines(lines, "app", keep_objects=True, wrap_invalid=True)
            before = [(e.raw, e.view and dict(e.view)) for e in events]
            outcome = policy.apply_copy(events) if copy else policy.apply(events)
            if copy:
                assert [(e.raw, e.view) for e in events] == before
            # A view that outlives the policy still shows, at every path read, what the
            # event's bytes hold there.
            for e in outcome.kept:
                if e.view is not None:
                    full = orjson.loads(e.raw)
                    for path in policy.reads:
                        assert value_at(e.view, path) == value_at(full, path)
            results.append(
                (
                    [orjson.loads(e.raw) for e in outcome.kept],
                    [(e.time, e.host) for e in outcome.kept],
                    outcome.routes,
                    outcome.dropped,
                )
            )
        assert results[0] == results[1]
