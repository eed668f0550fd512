"""The policy engine over batches: order, routes, copies for sinks, re-encoding, and the
policy-test report."""

from __future__ import annotations

import copy
import io
from collections.abc import Sequence
from typing import Any

import orjson
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.events import Event, object_time
from forwarder.policy import Policy, PolicyRuleConfig, parse_rules
from forwarder.policy.cli import run_policy_test
from tests.policy_strategies import KEYS, PATHS, objects, scalars


def _compile(text: str) -> Policy:
    return Policy.compile(parse_rules(yaml.safe_load(text)))


def _event(obj: dict[str, Any]) -> Event:
    return Event(orjson.dumps(obj), "app", 1.5, meta={"host": "h"}, obj=obj)


class _CountingEvent(Event):
    """An Event that counts re-encodings."""

    __slots__ = ("encodes",)

    def __init__(self, obj: dict[str, Any]) -> None:
        super().__init__(orjson.dumps(obj), "app", 0.0, obj=obj)
        self.encodes = 0

    def replace_object(self, obj: dict[str, Any], *, envelope: bool = True) -> None:
        self.encodes += 1
        super().replace_object(obj, envelope=envelope)


ROUTES = """
- {name: to-siem, when: {field: kind, in: [a, b]}, then: {route: [splunk, datadog]}}
- {name: not-dd, when: {field: kind, equals: b}, then: {route: [splunk, archive]}}
- {name: nowhere, when: {field: kind, equals: c}, then: {route: [datadog]}}
- {name: never, when: {field: kind, equals: c}, then: {route: [splunk]}}
"""


def test_routes_intersect_and_empty_route_drops() -> None:
    """Several route rules intersect; no route means every sink; an empty set drops."""
    out = _compile(ROUTES).apply([_event({"kind": k}) for k in "abcd"])
    assert [e.obj for e in out.kept] == [{"kind": "a"}, {"kind": "b"}, {"kind": "d"}]
    assert out.routes == [frozenset({"splunk", "datadog"}), frozenset({"splunk"}), None]
    assert out.dropped == {"never": 1}


def test_rules_run_in_order_and_stop_at_drop() -> None:
    """A rule sees earlier rules' changes; nothing runs after a drop."""
    out = _compile(
        """
        - then: {rename: {lvl: level}}
        - {name: debug, when: {field: level, equals: debug}, then: drop}
        - then: {set: {seen: true}}
        """
    ).apply([_event({"lvl": "debug"}), _event({"lvl": "info"})])
    assert [orjson.loads(e.raw) for e in out.kept] == [{"level": "info", "seen": True}]
    assert out.dropped == {"debug": 1}


def test_changed_event_is_encoded_once() -> None:
    """Several changing rules re-encode an event once; an unchanged one not at all."""
    policy = _compile(
        """
        - then: {set: {a: 1}}
        - then: {redact: {fields: [password]}}
        - then: {remove: [debug]}
        - then: {redact: {patterns: [email]}}
        """
    )
    changed = _CountingEvent({"password": "p", "debug": 1, "msg": "x@y.io"})
    same = _CountingEvent({"a": 1})
    out = policy.apply([changed, same])
    assert out.kept == [changed, same]
    assert (changed.encodes, same.encodes) == (1, 0)
    assert orjson.loads(changed.raw) == {"password": "[REDACTED]", "msg": "[REDACTED]", "a": 1}
    assert changed.obj == orjson.loads(changed.raw)


def test_apply_copy_leaves_shared_events_intact() -> None:
    """A sink's policy returns new events for what it changes and never touches the input."""
    objs: list[dict[str, Any]] = [
        {"actor": {"ip": "10.0.0.1", "user": "a"}, "tags": ["x@y.io"]},
        {"other": 1},
    ]
    events = [_event(o) for o in objs]
    before = [(e.raw, copy.deepcopy(e.obj)) for e in events]
    policy = _compile(
        """
        - then: {redact: {fields: [actor.ip], patterns: [email]}}
        - when: {field: actor.user, exists: true}
          then: {set: {actor.zone: z}}
        """
    )
    out = policy.apply_copy(events)
    assert [(e.raw, e.obj) for e in events] == before
    changed, unchanged = out.kept
    assert changed is not events[0]
    assert orjson.loads(changed.raw) == {
        "actor": {"ip": "[REDACTED]", "user": "a", "zone": "z"},
        "tags": ["[REDACTED]"],
    }
    assert changed.obj == orjson.loads(changed.raw)
    assert (changed.source, changed.received, changed.meta) == ("app", 1.5, {"host": "h"})
    assert unchanged is events[1]


def test_events_without_parsed_object_are_parsed() -> None:
    """Events whose source kept only bytes are parsed; kept unchanged ones keep obj None."""
    events = [Event(b'{"action":"healthcheck"}', "app", 0.0), Event(b'{"n":1}', "app", 0.0)]
    out = _compile("[{when: {field: action, equals: healthcheck}, then: drop}]").apply(events)
    assert out.kept == [events[1]]
    assert events[1].obj is None


def test_empty_policy_keeps_everything_unrestricted() -> None:
    """No rules: every event is kept, unrouted, unchanged."""
    events = [_event({"n": i}) for i in range(3)]
    out = Policy.compile([]).apply(events)
    assert out.kept == events
    assert out.routes == [None, None, None]
    assert out.dropped == {}


def _report(config: str, lines: list[bytes], source: str = "app_tcp") -> tuple[int, str]:
    doc = yaml.safe_load(config)
    sinks: dict[str, tuple[list[str] | None, Sequence[PolicyRuleConfig]]] = {
        name: (body.get("inputs"), parse_rules(body.get("policy", []), sink=True))
        for name, body in doc["sinks"].items()
    }
    out = io.StringIO()
    code = run_policy_test(parse_rules(doc.get("policy", [])), sinks, source, lines, out)
    return code, out.getvalue()


CONFIG = """
policy:
  - name: drop-healthchecks
    when: {field: action, equals: healthcheck}
    then: drop
  - name: redact-secrets
    then: {redact: {fields: [password]}}
  - name: high-to-splunk-only
    when: {field: resource.sensitivity, in: [high, critical]}
    then: {route: [splunk]}
sinks:
  splunk: {}
  datadog:
    policy: [{name: no-logout, when: {field: action, equals: logout}, then: drop}]
  syslog_only:
    inputs: [syslog]
"""


def test_policy_test_report_per_sink() -> None:
    """The report lists what each sink gets and the drops per rule."""
    lines = [
        b'{"action":"healthcheck"}',
        b'{"action":"login","password":"p"}',
        b"",
        b'{"action":"read","resource":{"sensitivity":"high"}}',
        b'{"action":"logout"}',
    ]
    code, text = _report(CONFIG, lines)
    assert code == 0
    assert text.splitlines() == [
        "== sink splunk (3 events)",
        '{"action":"login","password":"[REDACTED]"}',
        '{"action":"read","resource":{"sensitivity":"high"}}',
        '{"action":"logout"}',
        "== sink datadog (1 events)",
        '{"action":"login","password":"[REDACTED]"}',
        "== sink syslog_only (0 events)",
        "== dropped by policy (2 events)",
        "global rule 'drop-healthchecks': 1",
        "datadog rule 'no-logout': 1",
    ]


def test_policy_test_reports_bad_lines_and_fails() -> None:
    """Lines that are not JSON objects are listed and the exit code is 1."""
    code, text = _report(CONFIG, [b"not json", b"[1]", b'{"action":"x"}'])
    assert code == 1
    assert text.splitlines()[-1] == "== not a JSON object: 2 lines (1, 2)"
    assert "== sink splunk (1 events)" in text


def test_sink_copy_and_global_in_place_agree() -> None:
    """Several rules changing the same nested object: a sink's policy leaves the shared input
    as it was and gives the same result as the global policy, which changes it in place."""
    rules = """
    - then: {set: {actor.zone: z, labels.team: sec}}
    - then: {rename: {actor.ip: client.ip}}
    - then: {remove: [actor.session]}
    - then: {redact: {fields: [client.ip], with: hash}}
    """
    policy = Policy.compile(parse_rules(yaml.safe_load(rules)), hash_key=b"k")
    obj: dict[str, Any] = {"actor": {"ip": "10.0.0.1", "session": "s", "user": "a"}, "n": 1}
    shared = _event(obj)
    snapshot = copy.deepcopy(obj)
    copied = policy.apply_copy([shared]).kept[0]
    assert shared.obj == snapshot and orjson.loads(shared.raw) == snapshot
    own = _event(copy.deepcopy(obj))
    in_place = policy.apply([own]).kept[0]
    assert in_place is own
    assert orjson.loads(copied.raw) == orjson.loads(in_place.raw) == in_place.obj
    result = orjson.loads(copied.raw)
    assert result["actor"] == {"user": "a", "zone": "z"}
    assert result["labels"] == {"team": "sec"}
    assert result["client"]["ip"].startswith("sha256:")


_SCALARS = scalars()
_OBJECTS = objects(_SCALARS)
_RULES = st.lists(
    st.one_of(
        st.builds(lambda p, v: {"then": {"set": {p: v}}}, PATHS, _SCALARS),
        st.builds(lambda a, b: {"then": {"rename": {a: b}}}, PATHS, PATHS),
        st.builds(
            lambda a, b: {"then": {"rename": {f"{a}.{b}": f"{a}.{b[::-1]}x"}}},
            st.sampled_from(KEYS),
            st.sampled_from(KEYS),
        ),
        st.builds(lambda p: {"then": {"remove": [p]}}, PATHS),
        st.builds(lambda p: {"then": {"redact": {"fields": [p], "with": "hash"}}}, PATHS),
        st.just({"then": {"redact": {"patterns": ["email", "credit_card"]}}}),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(rules=_RULES, objs=st.lists(_OBJECTS, min_size=1, max_size=4))
def test_in_place_and_copy_agree_and_envelope_follows(
    rules: list[dict[str, Any]], objs: list[dict[str, Any]]
) -> None:
    """Whatever the rules: the global policy (in place, with its short cuts) and a sink's
    (copy on write) produce the same events, and every event's time and host are what its
    final object says, although only events whose envelope fields changed are read again."""
    policy = Policy.compile(parse_rules(rules), hash_key=b"k")
    shared = _ingested(objs)
    snapshot = copy.deepcopy(objs)
    copied = policy.apply_copy(shared).kept
    assert [e.obj for e in shared] == snapshot
    owned = _ingested(copy.deepcopy(objs))
    in_place = policy.apply(owned).kept
    assert [orjson.loads(e.raw) for e in in_place] == [orjson.loads(e.raw) for e in copied]
    for event in [*in_place, *copied]:
        obj = orjson.loads(event.raw)
        assert event.obj == obj
        assert (event.time, event.host) == (object_time(obj), _host(obj))


def _ingested(objs: list[dict[str, Any]]) -> list[Event]:
    """Events as ingest makes them: bytes, the parsed object, its time and host."""
    return [Event(orjson.dumps(o), "app", 1.0, None, o, object_time(o), _host(o)) for o in objs]


def _host(obj: dict[str, Any]) -> str | None:
    host = obj.get("host")
    return host if type(host) is str and host else None
