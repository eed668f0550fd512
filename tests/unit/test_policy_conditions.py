"""Conditions over dotted paths: each operator and combinator, and missing paths."""

from __future__ import annotations

from typing import Any

import pytest

from forwarder.policy.conditions import Predicate, compile_condition
from forwarder.policy.config import ConditionConfig

EVENT: dict[str, Any] = {
    "action": "login",
    "count": 7,
    "ratio": 0.5,
    "flag": True,
    "nothing": None,
    "actor": {"user": "alice", "roles": ["admin"], "geo": {"country": "NZ"}},
    "resource": {"sensitivity": "high", "size": 1024},
    "tags": ["a", "b"],
}


def _pred(spec: dict[str, Any]) -> Predicate:
    return compile_condition(ConditionConfig.model_validate(spec))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"field": "action", "equals": "login"}, True),
        ({"field": "action", "equals": "logout"}, False),
        ({"field": "actor.user", "equals": "alice"}, True),
        ({"field": "actor.geo.country", "equals": "NZ"}, True),
        ({"field": "actor.geo.country.code", "equals": "NZ"}, False),
        ({"field": "count", "equals": 7}, True),
        ({"field": "count", "equals": 7.0}, True),
        ({"field": "count", "equals": "7"}, False),
        ({"field": "flag", "equals": True}, True),
        ({"field": "flag", "equals": 1}, False),
        ({"field": "count", "equals": True}, False),
        ({"field": "nothing", "equals": None}, True),
        ({"field": "absent", "equals": None}, False),
        ({"field": "tags", "equals": ["a", "b"]}, True),
        ({"field": "actor.roles", "equals": ["admin"]}, True),
        ({"field": "resource.sensitivity", "in": ["high", "critical"]}, True),
        ({"field": "resource.sensitivity", "in": ["low"]}, False),
        ({"field": "actor", "in": ["high"]}, False),
        ({"field": "count", "in": [1, 7]}, True),
        ({"field": "flag", "in": [1, 2]}, False),
        ({"field": "absent", "in": [None]}, False),
        ({"field": "actor.user", "regex": "^al"}, True),
        ({"field": "actor.user", "regex": "^bo"}, False),
        ({"field": "count", "regex": "7"}, False),
        ({"field": "actor.geo", "exists": True}, True),
        ({"field": "actor.shoe", "exists": True}, False),
        ({"field": "actor.shoe", "exists": False}, True),
        ({"field": "nothing", "exists": True}, True),
        ({"field": "count", "gt": 6}, True),
        ({"field": "count", "gt": 7}, False),
        ({"field": "count", "gte": 7}, True),
        ({"field": "count", "lt": 7}, False),
        ({"field": "count", "lte": 7}, True),
        ({"field": "ratio", "lt": 0.6}, True),
        ({"field": "resource.size", "gte": 1000, "lt": 2000}, True),
        ({"field": "resource.size", "gte": 1000, "lt": 1024}, False),
        ({"field": "flag", "gt": 0}, False),
        ({"field": "action", "gt": 0}, False),
        ({"field": "absent", "lt": 10}, False),
    ],
)
def test_field_operators(spec: dict[str, Any], expected: bool) -> None:
    """Each operator compares the value at the path the way JSON values compare."""
    assert _pred(spec)(EVENT) is expected


def test_huge_integers_compare_exactly() -> None:
    """A number too large for a float is still compared, not an error."""
    assert _pred({"field": "n", "gt": 1e300})({"n": 10**400})
    assert not _pred({"field": "n", "lt": 1e300})({"n": 10**400})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"all": [{"field": "action", "equals": "login"}, {"field": "count", "gt": 5}]}, True),
        ({"all": [{"field": "action", "equals": "login"}, {"field": "count", "gt": 9}]}, False),
        ({"any": [{"field": "action", "equals": "x"}, {"field": "count", "gt": 5}]}, True),
        ({"any": [{"field": "action", "equals": "x"}, {"field": "count", "gt": 9}]}, False),
        ({"not": {"field": "action", "equals": "login"}}, False),
        ({"not": {"field": "absent", "equals": "x"}}, True),
        (
            {
                "all": [
                    {
                        "any": [
                            {"field": "actor.user", "equals": "bob"},
                            {"field": "flag", "equals": True},
                        ]
                    },
                    {"not": {"field": "resource.sensitivity", "in": ["low"]}},
                ]
            },
            True,
        ),
    ],
)
def test_combinators(spec: dict[str, Any], expected: bool) -> None:
    """all/any/not combine conditions, nested to any depth."""
    assert _pred(spec)(EVENT) is expected


def test_path_through_non_dict_is_missing() -> None:
    """A path that runs into a list or a string reads as missing, not an error."""
    assert _pred({"field": "tags.0", "exists": False})(EVENT)
    assert _pred({"field": "action.x.y", "exists": False})(EVENT)
    assert not _pred({"field": "action.x", "equals": "l"})(EVENT)
