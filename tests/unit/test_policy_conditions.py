"""Conditions over dotted paths: each operator and combinator, and missing paths."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.policy.conditions import Predicate, compile_condition, compile_selector
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


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-3, 3),
    st.sampled_from(["a", "b", "ab", ""]),
    st.lists(st.sampled_from(["a", "b"]), max_size=2),
)
_OBJECTS = st.recursive(
    _VALUES, lambda inner: st.dictionaries(st.sampled_from("xyz"), inner, max_size=3), max_leaves=8
).filter(lambda v: isinstance(v, dict))
_FIELDS = st.lists(st.sampled_from("xyz"), min_size=1, max_size=3).map(".".join)
_LEAVES = st.one_of(
    st.builds(lambda f, v: {"field": f, "equals": v}, _FIELDS, _VALUES),
    st.builds(
        lambda f, v: {"field": f, "in": v}, _FIELDS, st.lists(_VALUES, min_size=1, max_size=3)
    ),
    st.builds(lambda f: {"field": f, "regex": "^a"}, _FIELDS),
    st.builds(lambda f, b: {"field": f, "exists": b}, _FIELDS, st.booleans()),
    st.builds(
        lambda f, op, n: {"field": f, op: n},
        _FIELDS,
        st.sampled_from(["gt", "gte", "lt", "lte"]),
        st.integers(-2, 2),
    ),
    st.builds(lambda f: {"field": f, "gte": 0, "lt": 2}, _FIELDS),
)
_CONDITIONS = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.builds(lambda cs: {"all": cs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda cs: {"any": cs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda c: {"not": c}, inner),
    ),
    max_leaves=4,
)


@settings(max_examples=400, deadline=None)
@given(spec=_CONDITIONS, objs=st.lists(_OBJECTS, max_size=5))
def test_batch_selector_agrees_with_predicate(
    spec: dict[str, Any], objs: list[dict[str, Any]]
) -> None:
    """The batch selectors, with their inlined fast paths, pick exactly the events the plain
    per-event predicate holds for."""
    cond = ConditionConfig.model_validate(spec)
    pred = compile_condition(cond)
    every = list(range(len(objs)))
    assert compile_selector(cond)(objs, every) == [i for i in every if pred(objs[i])]
