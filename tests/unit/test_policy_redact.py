"""Pattern redaction: each built-in pattern, Luhn, user regexes, and a property test that no
generated secret survives anywhere in an event."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.events import Event
from forwarder.policy import Policy, parse_rules
from forwarder.policy.redact import PATTERNS, luhn_valid
from forwarder.policy.scan import (
    _DIGITS,
    _LOWER,
    _PLAIN,
    _PREFILTERS,
    Hint,
    RawScan,
    _transform,
    fast_search,
)

ALL = ["credit_card", "aws_key", "bearer_token", "email"]
_SEARCHES = ["literals", *(["hyperscan"] if fast_search() else [])]


@pytest.fixture(autouse=True, params=_SEARCHES)
def search(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs with each way of searching a batch that this machine has."""
    was = fast_search()
    fast_search(request.param == "hyperscan")
    yield request.param
    fast_search(was)


def _policy(with_: str = "mask", regex: list[str] | None = None) -> Policy:
    redact: dict[str, Any] = {"patterns": ALL, "with": with_}
    if regex:
        redact["regex"] = regex
    return Policy.compile(parse_rules([{"then": {"redact": redact}}]), hash_key=b"k")


def _redact(text: str, **kwargs: Any) -> str:
    obj = {"msg": text}
    out = _policy(**kwargs).apply([Event(orjson.dumps(obj), "app", 0.0, obj=obj)])
    result: str = orjson.loads(out.kept[0].raw)["msg"]
    return result


def _textbook_luhn_digit(body: str) -> str:
    """The check digit that makes body + digit pass Luhn (written independently)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111 ok", "card [REDACTED] ok"),
        ("card 4111-1111-1111-1111", "card [REDACTED]"),
        ("amex 378282246310005.", "amex [REDACTED]."),
        ("order 4111 1111 1111 1112 ok", "order 4111 1111 1111 1112 ok"),
        ("ts 1733300000123456789", "ts 1733300000123456789"),
        ("long 41111111111111111111111", "long 41111111111111111111111"),
        ("ref 7 4111 1111 1111 1111", "ref 7 [REDACTED]"),
        ("key AKIAIOSFODNN7EXAMPLE here", "key [REDACTED] here"),
        ("sts ASIAY34FZKBOKMUTVV7A", "sts [REDACTED]"),
        ("not XAKIAIOSFODNN7EXAMPLE", "not XAKIAIOSFODNN7EXAMPLE"),
        ("Authorization: Bearer abc.DEF-123_x~+/== next", "Authorization: [REDACTED] next"),
        ("auth bearer\tabc", "auth [REDACTED]"),
        ("t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-_x end", "t=[REDACTED] end"),
        ("mail <bob.smith+audit@mail.example.co.uk>", "mail <[REDACTED]>"),
        ("no mail @ here", "no mail @ here"),
        # Digit runs that are no card must not hide an address starting inside them.
        (" 00000000000000000000@A.AC ", " [REDACTED] "),
        ("ref 1234 5678 9012 3456-7@example.com", "ref 1234 5678 9012 [REDACTED]"),
        ("", ""),
    ],
)
def test_builtin_patterns_replace_only_the_match(text: str, expected: str) -> None:
    """Each built-in pattern replaces just the matching substring."""
    assert _redact(text) == expected


def test_luhn_known_values() -> None:
    """Luhn accepts test card numbers and rejects a changed digit."""
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("79927398710")


def test_hash_mode_replaces_match_with_keyed_hash() -> None:
    """with: hash turns each match into sha256:<16 hex>, the same for the same secret."""
    out = _redact("a@b.io and a@b.io and c@d.io", with_="hash")
    first, second, third = out.split(" and ")
    assert first == second != third
    assert first.startswith("sha256:") and len(first) == 23


def test_user_regex_with_anchor_and_flags() -> None:
    """User regexes apply like patterns, anchored ones included (no raw pre-check)."""
    assert _redact("secret-123 tail", regex=["^secret-[0-9]+"]) == "[REDACTED] tail"
    assert _redact("a SSN 123-45-6789", regex=["(?i:ssn) [0-9-]+"]) == "a [REDACTED]"
    assert _redact("x secret-1", regex=["^secret-[0-9]+"]) == "x secret-1"


def test_escaped_json_is_still_scanned() -> None:
    """Escapes hide a match from the raw bytes; the decoded value is scanned anyway."""
    raw = b'{"msg":"mail bob\\u0040example.com"}'
    out = _policy().apply([Event(raw, "app", 0.0)])
    assert orjson.loads(out.kept[0].raw) == {"msg": "mail [REDACTED]"}


def test_unchanged_event_keeps_its_bytes() -> None:
    """An event with nothing to redact is not re-encoded."""
    raw = b'{"msg": "nothing here",  "n": 1}'
    out = _policy().apply([Event(raw, "app", 0.0)])
    assert out.kept[0].raw is raw


def test_text_added_by_earlier_rules_is_scanned() -> None:
    """Patterns find secrets that set wrote or rename moved earlier in the same run."""
    policy = Policy.compile(
        parse_rules(
            [
                {"then": {"set": {"contact": "ops@example.com", "team": "sec"}}},
                {"then": {"rename": {"a.note": "note"}}},
                {"then": {"redact": {"fields": ["a"], "patterns": ["email", "aws_key"]}}},
            ]
        )
    )
    obj = {"a": {"note": "key AKIAIOSFODNN7EXAMPLE"}}
    out = policy.apply([Event(orjson.dumps(obj), "app", 0.0, obj=obj)])
    assert orjson.loads(out.kept[0].raw) == {
        "a": "[REDACTED]",
        "contact": "[REDACTED]",
        "team": "sec",
        "note": "key [REDACTED]",
    }


# -- the property: no generated secret survives --------------------------------------------


@st.composite
def _cards(draw: st.DrawFn) -> str:
    size = draw(st.integers(13, 19))
    body = "".join(
        draw(st.lists(st.sampled_from(string.digits), min_size=size - 1, max_size=size - 1))
    )
    number = body + _textbook_luhn_digit(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(number[i : i + 4] for i in range(0, size, 4))


_UPPER_ALNUM = string.ascii_uppercase + string.digits
_B64URL = string.ascii_letters + string.digits + "-_"
_aws = st.builds(
    lambda p, s: p + s,
    st.sampled_from(["AKIA", "ASIA"]),
    st.text(_UPPER_ALNUM, min_size=16, max_size=16),
)
_jwts = st.builds(
    lambda a, b, c: f"eyJ{a}.eyJ{b}.{c}",
    st.text(_B64URL, min_size=1, max_size=30),
    st.text(_B64URL, min_size=1, max_size=60),
    st.text(_B64URL, max_size=40),
)
_bearers = st.builds(
    lambda scheme, tok: f"{scheme} {tok}",
    st.sampled_from(["Bearer", "bearer", "BEARER"]),
    st.text(string.ascii_letters + string.digits + "-._~+/", min_size=1, max_size=40),
)
_secrets = st.one_of(_cards(), _aws, _jwts, _bearers, st.emails())
_filler = st.text(max_size=12)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), _filler)


@st.composite
def _events(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    obj: dict[str, Any] = draw(st.dictionaries(_filler, _scalars, max_size=4))
    secrets = draw(st.lists(_secrets, min_size=1, max_size=4))
    for secret in secrets:
        value: Any = f"{draw(_filler)} {secret} {draw(_filler)}"
        for _ in range(draw(st.integers(0, 4))):
            if draw(st.booleans()):
                siblings = draw(st.lists(_scalars, max_size=2))
                value = [*siblings[:1], value, *siblings[1:]]
            else:
                value = {
                    **draw(st.dictionaries(_filler, _scalars, max_size=2)),
                    draw(_filler): value,
                }
        obj[draw(_filler)] = value
    return obj, secrets


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@settings(max_examples=300, deadline=None)
@given(_events(), st.sampled_from(["mask", "hash"]), st.booleans())
def test_no_secret_survives(
    case: tuple[dict[str, Any], list[str]], with_: str, parsed: bool
) -> None:
    """No generated card, AWS key, token or e-mail is left in any string at any depth."""
    obj, secrets = case
    raw = orjson.dumps(obj)
    # Later secrets may overwrite earlier ones under the same key: check those still present.
    present = [s for s in secrets if any(s in text for text in _strings(obj))]
    event = Event(raw, "app", 0.0, obj=obj if parsed else None)
    out = _policy(with_).apply([event])
    result = orjson.loads(out.kept[0].raw)
    for text in _strings(result):
        for secret in present:
            assert secret not in text


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(_events(), st.dictionaries(_filler, _scalars, max_size=4)), max_size=8),
    st.booleans(),
)
def test_no_secret_survives_in_a_batch(cases: list[Any], sink: bool) -> None:
    """Events with and without secrets in one batch (the bytes checked for all at once),
    through the global policy or a sink's: every secret is gone, clean events keep their
    bytes."""
    objs = [c[0] if isinstance(c, tuple) else c for c in cases]
    events = [Event(orjson.dumps(o), "app", 0.0, obj=o) for o in objs]
    before = [e.raw for e in events]
    policy = _policy()
    out = policy.apply_copy(events) if sink else policy.apply(events)
    assert len(out.kept) == len(events)
    for case, raw, event in zip(cases, before, out.kept, strict=True):
        if not isinstance(case, tuple):
            continue
        present = [s for s in case[1] if s in raw.decode()]
        for text in _strings(orjson.loads(event.raw)):
            assert not any(secret in text for secret in present)
    if sink:
        assert [e.raw for e in events] == before


_TEXT = st.binary(max_size=12).map(lambda b: b.replace(b"\x00", b""))


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.none() | _TEXT, max_size=8),
    literal=st.sampled_from([b"a", b"ab", b"\\", b"0000"]),
    view=st.sampled_from([_PLAIN, _LOWER, _DIGITS]),
)
def test_batch_scan_finds_exactly_the_texts_holding_a_literal(
    texts: list[bytes | None], literal: bytes, view: int
) -> None:
    """One search over the joined batch names the same events as a search of each text."""
    views = {_PLAIN: lambda t: t, _LOWER: bytes.lower, _DIGITS: lambda t: _transform(t, _DIGITS)}
    expected = {k for k, text in enumerate(texts) if literal in views[view](text or b"")}
    assert RawScan(texts).holding(literal, view) == expected


# Texts made of the pieces secrets are made of, so that the patterns match often.
_PIECES = st.sampled_from(
    [
        "4111",
        "1111",
        "1",
        " ",
        "-",
        "AKIA",
        "ASIA",
        "ABCD",
        "EFGH1234",
        "Bearer",
        "bearer",
        "\t",
        "tok",
        "eyJ",
        "x",
        ".",
        "@",
        "a.b",
        "mail",
        "=",
        "\\",
        "é",
        '"',
        "~",
    ]
)
_SECRETY = st.lists(_PIECES, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(texts=st.lists(_SECRETY, max_size=6), names=st.sets(st.sampled_from(ALL), min_size=1))
def test_batch_search_finds_every_text_a_pattern_matches(texts: list[str], names: set[str]) -> None:
    """Whatever the search: every text one of the patterns matches in is a suspect; where
    Hyperscan searches, exactly the texts a prefilter matches in (or holding a backslash)
    are."""
    raws = [text.encode() for text in texts]
    hits = Hint(sorted(names)).hits(RawScan(list(raws)))
    for k, text in enumerate(texts):
        if "\\" in text or any(re.search(PATTERNS[name], text) for name in names):
            assert k in hits
    if fast_search() and names != {"email"}:  # an "@" alone is found faster without it
        wanted = [*names, "escape"]
        assert hits == {
            k
            for k, raw in enumerate(raws)
            if any(re.search(_PREFILTERS[name], raw) for name in wanted)
        }
