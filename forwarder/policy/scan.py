"""Which events of a batch may hold a secret: a search of their bytes before any regex runs.

Pattern redaction walks an event's strings only when its bytes show what every match of a
built-in pattern contains. The search runs once per batch, over the events' bytes joined by
NUL (which JSON text cannot hold, so it creates and hides no match), and every redact rule of
the batch shares its results.

Two ways to search, with the same answers for every event the patterns can match in:

- With Hyperscan installed (the ``speed`` extra, x86-64), one pass of a compiled database
  finds every place a pattern may match: the patterns without their look-arounds, which
  Hyperscan lacks and which only narrow a match.
- Otherwise substring tests at C speed, one pass per literal a match must contain: ``AKIA``,
  ``ASIA``, ``eyJ``, ``@``, ``bearer`` in the lower-cased bytes, 13 zeros once digits read as
  0 and spaces and dashes are deleted.

An event holding a backslash is always a suspect: its escapes may decode to what its bytes do
not show.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

hyperscan: Any
try:
    import hyperscan
except ImportError:  # the literal search does the same work, slower
    hyperscan = None

__all__ = ["ATEXT", "Hint", "RawScan", "fast_search"]

# The characters of an e-mail address's local part (RFC 5322 atext, and the dot).
ATEXT = r"A-Za-z0-9.!#$%&'*+/=?^_`{|}~-"

# What any match of a pattern contains, checked with substring tests (C speed) before the
# alternation, which Python's regex engine has to try at every position of a text.
_LITERALS = {"aws_key": (b"AKIA", b"ASIA"), "bearer_token": (b"eyJ",), "email": (b"@",)}
# Looked for in the lower-cased text ("Bearer", "BEARER"); a JWT's "eyJ" has one case only.
_FOLDED = {"bearer_token": (b"bearer",)}
# A card's digits, with its single spaces or dashes deleted and every digit read as 0, are
# a run of at least 13 zeros.
_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_CARD_DIGITS = b"0" * 13

# The same, for Hyperscan: what each built-in pattern (forwarder.policy.redact.PATTERNS)
# matches, less its look-arounds and everything after the first place a match is certain.
_PREFILTERS: dict[str, bytes] = {
    "credit_card": rb"[0-9](?:[ -]?[0-9]){12}",
    "aws_key": rb"(?:AKIA|ASIA)[A-Z0-9]{16}",
    "bearer_token": rb"[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+[A-Za-z0-9._~+/-]|eyJ[A-Za-z0-9_-]+\.eyJ",
    "email": rb"[" + ATEXT.encode() + rb"]@[A-Za-z0-9-]+\.[A-Za-z0-9-]",
    "escape": rb"\\",
}
_NAMES = list(_PREFILTERS)

# How Hint and RawScan look at bytes: as they are, lower-cased, or with digits read as 0 and
# spaces and dashes deleted (the credit-card test).
_PLAIN, _LOWER, _DIGITS = 0, 1, 2


def _transform(data: bytes, view: int) -> bytes:
    if view == _LOWER:
        return data.lower()
    return data.translate(_AS_ZERO, b" -")


_database: Any = None
_use_fast = hyperscan is not None


def fast_search(enabled: bool | None = None) -> bool:
    """Whether batches are searched with Hyperscan; ``enabled`` turns it off (or back on,
    when installed) for this process."""
    global _use_fast
    if enabled is not None:
        _use_fast = enabled and hyperscan is not None
    return _use_fast


def _compiled() -> Any:
    global _database
    if _database is None:
        database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        database.compile(
            expressions=list(_PREFILTERS.values()),
            ids=list(range(len(_NAMES))),
            elements=len(_NAMES),
            flags=[0] * len(_NAMES),
        )
        _database = database
    return _database


class Hint:
    """A quick test on UTF-8 text that is true whenever one of the built-in patterns matches
    in it (and sometimes when none does).

    Arguments:
        patterns: names of built-in patterns.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self._names = [name for name in patterns if name in _PREFILTERS]
        # An "@" and a backslash are found at memchr speed; Hyperscan pays off for the others.
        self._worth_fast = any(name != "email" for name in self._names)
        self._literals = [lit for name in patterns for lit in _LITERALS.get(name, ())]
        self._folded = [lit for name in patterns for lit in _FOLDED.get(name, ())]
        self._cards = "credit_card" in patterns

    def __call__(self, data: bytes) -> bool:
        for literal in self._literals:
            if literal in data:
                return True
        if self._folded:
            folded = _transform(data, _LOWER)
            for literal in self._folded:
                if literal in folded:
                    return True
        return self._cards and _CARD_DIGITS in _transform(data, _DIGITS)

    def hits(self, scan: RawScan) -> set[int]:
        """Events of the batch whose bytes this hint holds for, or that hold a backslash
        (escapes, whose decoded text may hold what the bytes do not show)."""
        matched = scan.matched() if self._worth_fast else None
        if matched is not None:
            found = set(matched["escape"])
            for name in self._names:
                found |= matched[name]
            return found
        found = set(scan.holding(b"\\", _PLAIN))
        for literal in self._literals:
            found |= scan.holding(literal, _PLAIN)
        for literal in self._folded:
            found |= scan.holding(literal, _LOWER)
        if self._cards:
            found |= scan.holding(_CARD_DIGITS, _DIGITS)
        return found


class RawScan:
    """One batch's event bytes, searched once for every hint of every redact rule.

    Literal searches run over the joined bytes: an event holds the literal when a match falls
    inside its text, whose index is the number of separators before the match. Results are
    kept per (literal, view), so a second redact rule looking for the same thing costs a dict
    lookup; the Hyperscan pass runs at most once.

    Arguments:
        raws: per event, its JSON bytes, or None for an event the scan need not vouch for.
    """

    __slots__ = ("_found", "_matched", "_texts", "_views", "_whole")

    def __init__(self, raws: list[bytes | None]) -> None:
        self._texts = [raw or b"" for raw in raws]
        blob = b"\x00".join(self._texts)
        # Bytes that are not JSON (cannot happen for parsed events) fall back to per-text.
        self._whole = blob.count(b"\x00") == len(self._texts) - 1
        self._views: dict[int, bytes] = {_PLAIN: blob}
        self._found: dict[tuple[bytes, int], set[int]] = {}
        self._matched: dict[str, set[int]] | None = None

    def matched(self) -> dict[str, set[int]] | None:
        """Per prefilter name, the events where it matches (Hyperscan); None when the literal
        searches must answer instead."""
        if not (_use_fast and self._whole):
            return None
        if self._matched is None:
            ends: list[tuple[int, int]] = []

            def on_match(pattern: int, _start: int, end: int, _flags: int, _ctx: Any) -> None:
                ends.append((pattern, end))

            _compiled().scan(self._views[_PLAIN], match_event_handler=on_match)
            # Where each text after the first starts; a match ending at `end` lies in the
            # text holding its last byte.
            starts = list(accumulate(len(text) + 1 for text in self._texts))
            matched: dict[str, set[int]] = {name: set() for name in _NAMES}
            for pattern, end in ends:
                matched[_NAMES[pattern]].add(bisect_right(starts, end - 1))
            self._matched = matched
        return self._matched

    def holding(self, literal: bytes, view: int) -> set[int]:
        """Indexes of the events whose bytes, seen through ``view``, contain ``literal``."""
        key = (literal, view)
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = self._locate(literal, view)
        return found

    def _locate(self, literal: bytes, view: int) -> set[int]:
        if not self._whole:
            return {
                k
                for k, text in enumerate(self._texts)
                if literal in (text if view == _PLAIN else _transform(text, view))
            }
        data = self._view(view)
        found: set[int] = set()
        # A byte of the literal the batch lacks rules it out at memchr speed; most
        # multi-byte searches cost far more.
        if any(byte not in data for byte in set(literal)):
            return found
        index = counted = 0
        at = data.find(literal)
        while at != -1:
            # Separators are counted once each, between one match and the next.
            index += data.count(b"\x00", counted, at)
            counted = at
            found.add(index)
            end = data.find(b"\x00", at)
            if end == -1:
                break
            at = data.find(literal, end)
        return found

    def _view(self, view: int) -> bytes:
        data = self._views.get(view)
        if data is None:
            data = self._views[view] = _transform(self._views[_PLAIN], view)
        return data
