"""Hypothesis strategies for the policy property tests: small events over a few keys, two of
them envelope fields (time, host), and dotted paths over the same keys."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

KEYS = ("time", "host", "a", "b")
PATHS = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join)


def scalars(*, floats: bool = False) -> st.SearchStrategy[Any]:
    """JSON scalars, among them strings a time parser, a condition and a pattern look at."""
    kinds: list[st.SearchStrategy[Any]] = [st.none(), st.booleans(), st.integers(-5, 5)]
    if floats:
        kinds.append(st.floats(-10, 10, allow_nan=False))
    kinds.append(st.sampled_from(["2024-05-01T10:00:00Z", "1717236000", "h1", "x@y.io", ""]))
    return st.one_of(kinds)


def objects(
    scalar: st.SearchStrategy[Any], *, lists: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    """Event objects of up to four keys, values nested objects (and lists) of ``scalar``."""

    def nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        children = st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
        return st.one_of(children, st.lists(inner, max_size=2)) if lists else children

    values = st.recursive(scalar, nested, max_leaves=6)
    return st.dictionaries(st.sampled_from(KEYS), values, max_size=4)
