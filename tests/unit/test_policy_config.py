"""Policy rule configs: what loads, and errors that name the rule and the key."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from forwarder.policy import parse_rules, route_targets


def _errors(text: str, *, sink: bool = False) -> list[str]:
    with pytest.raises(ValidationError) as info:
        parse_rules(yaml.safe_load(text), sink=sink)
    return [".".join(map(str, e["loc"])) + ": " + e["msg"] for e in info.value.errors()]


def test_readme_example_loads_with_names_and_actions() -> None:
    """The documented example loads; unnamed rules are called rule-<index>."""
    rules = parse_rules(
        yaml.safe_load(
            """
            - name: drop-healthchecks
              when: {field: action, equals: healthcheck}
              then: drop
            - then: {redact: {fields: [password, actor.session], patterns: [credit_card, email]}}
            - when: {field: resource.sensitivity, in: [high, critical]}
              then: {route: [splunk]}
            """
        )
    )
    assert [r.name for r in rules] == ["drop-healthchecks", "rule-1", "rule-2"]
    assert [r.then.kind for r in rules] == ["drop", "redact", "route"]
    redact = rules[1].then.redact
    assert redact is not None
    assert redact.fields == ("password", "actor.session")
    assert redact.patterns == ("credit_card", "email")
    assert redact.with_ == "mask"
    assert rules[2].when is not None and rules[2].when.in_ == ("high", "critical")


def test_unknown_pattern_names_rule_and_position() -> None:
    """An unknown pattern is reported at its list position with the rule's name."""
    errors = _errors(
        """
        - name: redact-secrets
          then: {redact: {fields: [password], patterns: [credit_card, foo]}}
        """
    )
    assert len(errors) == 1
    assert errors[0].startswith("0.then.redact.patterns.1: unknown pattern 'foo'")
    assert errors[0].endswith("(rule 'redact-secrets')")


@pytest.mark.parametrize(
    ("rule", "where", "words"),
    [
        ("{then: dropp}", "0.then", "unknown action 'dropp'"),
        ("{then: {rout: [a]}}", "0.then", "expected one action"),
        ("{then: {route: [a], set: {x: 1}}}", "0.then", "one action per rule"),
        ("{then: {route: []}}", "0.then.route", "at least 1 item"),
        ("{when: {field: a}, then: drop}", "0.when", "needs an operator"),
        ("{when: {equals: 1}, then: drop}", "0.when", "needs 'field'"),
        ("{when: {all: [], any: []}, then: drop}", "0.when", "takes no other keys"),
        ("{when: {any: []}, then: drop}", "0.when", "needs at least one condition"),
        ("{when: {field: 'a..b', exists: true}, then: drop}", "0.when.field", "invalid field"),
        ("{when: {field: a, regex: '('}, then: drop}", "0.when.regex", "invalid regex '('"),
        ("{when: {not: {field: a, gt: x}}, then: drop}", "0.when.not.gt", "valid number"),
        ("{when: {field: a, equal: 1}, then: drop}", "0.when.equal", "unknown key"),
        ("{then: {redact: {with: hash}}}", "0.then.redact", "at least one of fields"),
        ("{then: {redact: {regex: ['(?i)x']}}}", "0.then.redact.regex.0", "scoped flags"),
        ("{then: {redact: {regex: ['x*']}}}", "0.then.redact.regex.0", "empty string"),
        ("{then: {redact: {regex: ['(a)\\1']}}}", "0.then.redact.regex.0", "(?P=name)"),
        (
            "{then: {redact: {regex: ['(?P<n>a)', '(?P<n>b)']}}}",
            "0.then.redact",
            "cannot be combined",
        ),
        ("{then: {redact: {fields: [a], with: blur}}}", "0.then.redact.with", "'mask' or 'hash'"),
        ("{then: {sample: {rate: 0}}}", "0.then.sample.rate", "greater than or equal to 1"),
        ("{then: {set: {'.a': 1}}}", "0.then.set..a.[key]", "invalid field path"),
        ("{name: '', then: drop}", "0.name", "at least 1 character"),
    ],
)
def test_rule_errors_name_key_and_rule(rule: str, where: str, words: str) -> None:
    """Each rejected rule is reported at the key at fault, naming the unnamed rule by index."""
    errors = _errors(f"[{rule}]")
    assert len(errors) == 1, errors
    loc, _, message = errors[0].partition(": ")
    assert loc == where
    assert words in message
    assert message.endswith("(rule 'rule-0')")


def test_duplicate_rule_names_are_rejected() -> None:
    """Drop counts are keyed by name, so two rules may not share one."""
    errors = _errors("[{name: a, then: drop}, {then: drop}, {name: a, then: drop}]")
    assert errors == ["2.name: duplicate rule name (rule 'a')"]


def test_default_name_collision_is_rejected() -> None:
    """A name equal to another rule's default name is a duplicate too."""
    errors = _errors("[{then: drop}, {name: rule-0, then: drop}]")
    assert errors == ["1.name: duplicate rule name (rule 'rule-0')"]


def test_sink_policy_cannot_route() -> None:
    """Routing belongs to the global policy; a sink's list rejects it at the route key."""
    text = "[{then: drop}, {name: r, then: {route: [a]}}]"
    assert parse_rules(yaml.safe_load(text))[1].then.route == ("a",)
    errors = _errors(text, sink=True)
    assert len(errors) == 1
    assert errors[0].startswith("1.then.route: a sink's policy cannot route")


def test_errors_in_several_rules_are_all_reported() -> None:
    """Every bad rule is reported at once, each under its own name."""
    errors = _errors("[{name: one, then: nope}, {then: {sample: {rate: -1}}}]")
    assert [e.split(": ")[0] for e in errors] == ["0.then", "1.then.sample.rate"]
    assert errors[0].endswith("(rule 'one')")
    assert errors[1].endswith("(rule 'rule-1')")


def test_rules_are_frozen() -> None:
    """Config models cannot be changed after loading."""
    rule = parse_rules([{"then": "drop"}])[0]
    with pytest.raises(ValidationError):
        rule.name = "other"  # type: ignore[misc]


def test_route_targets_lists_every_sink_named() -> None:
    """route_targets gives positions so the caller can report unknown sinks by key."""
    data: list[dict[str, Any]] = [
        {"then": {"route": ["splunk", "datadog"]}},
        {"then": "drop"},
        {"then": {"route": ["archive"]}},
    ]
    assert list(route_targets(parse_rules(data))) == [
        (0, 0, "splunk"),
        (0, 1, "datadog"),
        (2, 0, "archive"),
    ]
