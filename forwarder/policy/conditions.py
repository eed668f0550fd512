"""Conditions compiled to plain functions of the event dict, and to batch selectors.

Paths are split once, here; the functions returned only index dicts. A missing path reads as
:data:`MISSING`, which equals nothing (not even ``null``), is in no list and is no number.
Values compare the way JSON does: ``true`` is not ``1``.

A selector takes a batch's objects and the indexes still in play and returns those where the
condition holds, as one list comprehension: the common tests (a string equal to or in a set
of strings, one or two keys deep) run inside it with no Python call per event, and ``all``
narrows the indexes condition by condition.
"""

from __future__ import annotations

import operator as operator_module
import re
from collections.abc import Callable, Sequence
from typing import Any

from forwarder.policy.config import ConditionConfig

__all__ = [
    "MISSING",
    "Getter",
    "Predicate",
    "Selector",
    "compile_condition",
    "compile_selector",
    "condition_paths",
    "getter",
    "json_equal",
    "value_at",
]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

Getter = Callable[[dict[str, Any]], Any]
Predicate = Callable[[dict[str, Any]], bool]
_Test = Callable[[Any], bool]
Selector = Callable[[list[dict[str, Any]], list[int]], list[int]]


def getter(path: str) -> Getter:
    """``obj -> value at the dotted path``, or :data:`MISSING`."""
    parts = tuple(path.split("."))
    if len(parts) == 1:
        key = parts[0]
        return lambda obj: obj.get(key, MISSING)
    if len(parts) == 2:
        outer, inner = parts

        def get_two(obj: dict[str, Any]) -> Any:
            value = obj.get(outer, MISSING)
            return value.get(inner, MISSING) if type(value) is dict else MISSING

        return get_two

    return lambda obj: value_at(obj, parts)


def value_at(obj: dict[str, Any], parts: Sequence[str]) -> Any:
    """The value at the path ``parts``, or :data:`MISSING`."""
    value: Any = obj
    for part in parts:
        if type(value) is not dict:
            return MISSING
        value = value.get(part, MISSING)
    return value


def condition_paths(cond: ConditionConfig) -> set[tuple[str, ...]]:
    """The field paths the condition reads."""
    paths: set[tuple[str, ...]] = set()
    for child in [*(cond.all_ or ()), *(cond.any_ or ())]:
        paths |= condition_paths(child)
    if cond.not_ is not None:
        paths |= condition_paths(cond.not_)
    if cond.field is not None:
        paths.add(tuple(cond.field.split(".")))
    return paths


def json_equal(a: Any, b: Any) -> bool:
    """Equality without Python's ``True == 1``."""
    return a == b and (type(a) is bool) == (type(b) is bool)


def compile_condition(cond: ConditionConfig) -> Predicate:
    """The condition as ``obj -> bool``."""
    if cond.all_ is not None:
        return _all([compile_condition(c) for c in cond.all_])
    if cond.any_ is not None:
        return _any([compile_condition(c) for c in cond.any_])
    if cond.not_ is not None:
        inner = compile_condition(cond.not_)
        return lambda obj: not inner(obj)
    assert cond.field is not None  # the config model guarantees field or a combinator
    operators = cond.operators
    # The common rule `field: x, equals: "literal"` on a top-level key: one dict lookup.
    if operators == ["equals"] and "." not in cond.field and type(cond.equals) is str:
        key, expected = cond.field, cond.equals
        return lambda obj: obj.get(key) == expected
    get = getter(cond.field)
    test = _field_test(cond)
    return lambda obj: test(get(obj))


def _field_test(cond: ConditionConfig) -> _Test:
    """The operators of a field condition as one test of the field's value."""
    tests = [_test(cond, op) for op in cond.operators]
    if len(tests) == 1:
        return tests[0]
    return lambda value: _every(tests, value)


def _test(cond: ConditionConfig, operator: str) -> _Test:
    if operator == "equals":
        return _equals(cond.equals)
    if operator == "in":
        assert cond.in_ is not None
        return _in(cond.in_)
    if operator == "regex":
        assert cond.regex is not None
        search = re.compile(cond.regex).search
        return lambda v: type(v) is str and search(v) is not None
    if operator == "exists":
        wanted = bool(cond.exists)
        return lambda v: (v is not MISSING) is wanted
    bound: float = getattr(cond, operator)
    compare: Callable[[Any, float], bool] = {
        "gt": operator_module.gt,
        "gte": operator_module.ge,
        "lt": operator_module.lt,
        "lte": operator_module.le,
    }[operator]
    # Python compares int with float exactly, so huge integers need no conversion.
    return lambda v: type(v) in (int, float) and compare(v, bound)


def _equals(expected: Any) -> _Test:
    if expected is None or type(expected) is bool:
        return lambda v: v is expected
    if type(expected) is str:
        return lambda v: v == expected
    return lambda v: v is not MISSING and json_equal(v, expected)


def _in(values: Sequence[Any]) -> _Test:
    if all(type(x) is str for x in values):
        choices = frozenset(values)
        return lambda v: type(v) is str and v in choices
    return lambda v: v is not MISSING and any(json_equal(v, x) for x in values)


def _every(tests: list[_Test], value: Any) -> bool:
    return all(test(value) for test in tests)


def _all(preds: list[Predicate]) -> Predicate:
    def every(obj: dict[str, Any]) -> bool:
        return all(pred(obj) for pred in preds)

    return every


def _any(preds: list[Predicate]) -> Predicate:
    def some(obj: dict[str, Any]) -> bool:
        return any(pred(obj) for pred in preds)

    return some


def compile_selector(cond: ConditionConfig) -> Selector:
    """The condition as ``(objs, indexes) -> the indexes where it holds``, in order."""
    if cond.all_ is not None:
        steps = [compile_selector(c) for c in cond.all_]

        def select_all(objs: list[dict[str, Any]], idx: list[int]) -> list[int]:
            for step in steps:
                if not idx:
                    break
                idx = step(objs, idx)
            return idx

        return select_all
    strings = _string_choices(cond)
    if strings is not None and cond.field is not None:
        return _strings_selector(cond.field.split("."), strings)
    if cond.field is not None:
        return _value_selector(cond.field.split("."), _field_test(cond))
    pred = compile_condition(cond)
    return lambda objs, idx: [i for i in idx if pred(objs[i])]


def _string_choices(cond: ConditionConfig) -> frozenset[str] | None:
    """The strings a plain ``equals``/``in`` field test accepts, when all it takes is one."""
    operators = cond.operators
    if operators == ["equals"] and type(cond.equals) is str:
        return frozenset([cond.equals])
    if operators == ["in"] and cond.in_ is not None and all(type(x) is str for x in cond.in_):
        return frozenset(cond.in_)
    return None


def _strings_selector(parts: list[str], choices: frozenset[str]) -> Selector:
    # A non-string value is never in `choices`, but an unhashable one (a list) cannot be
    # looked up: the type test comes first. A missing key reads as None, which is no string.
    if len(parts) == 1:
        key = parts[0]

        def one(objs: list[dict[str, Any]], idx: list[int]) -> list[int]:
            return [i for i in idx if type(v := objs[i].get(key)) is str and v in choices]

        return one
    if len(parts) == 2:
        outer, inner = parts

        def two(objs: list[dict[str, Any]], idx: list[int]) -> list[int]:
            return [
                i
                for i in idx
                if type(d := objs[i].get(outer)) is dict
                and type(v := d.get(inner)) is str
                and v in choices
            ]

        return two
    get = getter(".".join(parts))
    return lambda objs, idx: [i for i in idx if type(v := get(objs[i])) is str and v in choices]


def _value_selector(parts: list[str], test: _Test) -> Selector:
    # The value is read inside the comprehension: one Python call per event, the test's.
    if len(parts) == 1:
        key = parts[0]

        def one(objs: list[dict[str, Any]], idx: list[int]) -> list[int]:
            return [i for i in idx if test(objs[i].get(key, MISSING))]

        return one
    if len(parts) == 2:
        outer, inner = parts

        def two(objs: list[dict[str, Any]], idx: list[int]) -> list[int]:
            return [
                i
                for i in idx
                if test(d.get(inner, MISSING) if type(d := objs[i].get(outer)) is dict else MISSING)
            ]

        return two
    get = getter(".".join(parts))
    return lambda objs, idx: [i for i in idx if test(get(objs[i]))]
