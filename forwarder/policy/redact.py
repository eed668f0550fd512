"""Finding secrets inside string values: built-in patterns, user regexes, masks and hashes.

The patterns of one redact action are joined into a single alternation with a named group
per pattern, so an event is walked once whatever the number of patterns. Credit cards are
the exception: their candidates (runs of digits) are confirmed with the Luhn checksum in the
replacement function, which keeps order numbers and other long digit strings that fail it,
and they are searched in a pass of their own, first. In the alternation, a run that turned
out not to be a card would still have been consumed, hiding an e-mail address or key that
starts inside it ("ref 1234 5678 9012 3456-7@example.com").
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from forwarder.policy.scan import ATEXT, Hint, RawScan

if TYPE_CHECKING:
    from forwarder.policy.edits import Edits

__all__ = [
    "MASK",
    "PATTERNS",
    "PatternRedactor",
    "combined_pattern",
    "hasher",
    "luhn_valid",
    "may_hold_secret",
]

MASK = "[REDACTED]"

PATTERNS: dict[str, str] = {
    # A run of 13+ digits with single spaces or dashes between them; which part of the run
    # is a card number is decided by _cards (Luhn over 13 to 19 digits).
    "credit_card": r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,}(?![0-9])",
    "aws_key": r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])",
    "bearer_token": (
        r"(?<![A-Za-z])[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+[A-Za-z0-9._~+/-]+=*"
        r"|eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
    ),
    # The look-behind makes a match start where a run of address characters starts, so a
    # long run without "@" is scanned once, not once per position.
    "email": rf"(?<![{ATEXT}])[{ATEXT}]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+",
}

_BUILTIN_PREFIX = "_p_"
_USER_PREFIX = "_r"
_DIGIT_GROUP = re.compile(r"[0-9]+")
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def combined_pattern(patterns: Sequence[str], regexes: Sequence[str]) -> str:
    """One alternation of the named built-in patterns and the user regexes."""
    parts = [f"(?P<{_BUILTIN_PREFIX}{name}>{PATTERNS[name]})" for name in patterns]
    parts += [f"(?P<{_USER_PREFIX}{i}>{rx})" for i, rx in enumerate(regexes)]
    return "|".join(parts)


def luhn_valid(digits: str) -> bool:
    """True when the string of ASCII digits passes the Luhn checksum."""
    odd = sum(ord(c) - 48 for c in digits[-1::-2])
    even = sum(_DOUBLED[ord(c) - 48] for c in digits[-2::-2])
    return (odd + even) % 10 == 0


_PROCESS_KEY = os.urandom(32)
_HASH_CACHE = 16384


def hasher(key: bytes | None) -> Callable[[str], str]:
    """``value -> "sha256:<16 hex>"``: HMAC-SHA256 under ``key``, or under a key drawn once per
    process, so equal values hash equally across every policy of the process."""
    secret = key if key is not None else _PROCESS_KEY
    if len(secret) > 64:
        secret = hashlib.sha256(secret).digest()
    # HMAC (RFC 2104) with the keyed inner and outer states computed once: copying a state
    # costs far less than hmac.digest setting the key up again for every value.
    padded = secret.ljust(64, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded)).copy
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded)).copy

    # Values repeat (addresses, user names): a hit costs a dict lookup. Most misses are
    # values never seen again, so the cache is emptied when full rather than kept in LRU
    # order, whose bookkeeping costs a third of a digest on every miss.
    cache: dict[str, str] = {}

    def digest(value: str) -> str:
        cached = cache.get(value)
        if cached is not None:
            return cached
        state = inner()
        state.update(value.encode("utf-8", "surrogatepass"))
        mac = outer()
        mac.update(state.digest())
        if len(cache) >= _HASH_CACHE:
            cache.clear()
        # The hex of 8 bytes is the 16 hex shown.
        hashed = cache[value] = "sha256:" + mac.digest()[:8].hex()
        return hashed

    return digest


class PatternRedactor:
    """Replaces every match of the patterns inside every string value of an event.

    Arguments:
        patterns: names of built-in patterns (keys of :data:`PATTERNS`).
        regexes: user regexes; already checked by the config.
        replace: ``matched text -> replacement`` (a mask or a hash).
    """

    def __init__(
        self, patterns: Sequence[str], regexes: Sequence[str], replace: Callable[[str], str]
    ) -> None:
        others = [name for name in patterns if name != "credit_card"]
        self._regex = re.compile(combined_pattern(others, regexes)) if others or regexes else None
        self._card = re.compile(PATTERNS["credit_card"]) if "credit_card" in patterns else None
        self._replace = replace
        # User regexes have no hint (and may be anchored): with them every string is tried.
        self._hint = None if regexes else Hint(patterns)

    def redact(self, edits: Edits, selected: list[int]) -> None:
        """Replace every match in the ``selected`` events; an event with a match becomes a
        copy with the containers on the way to each change copied (its object, which other
        sinks may share, is never modified)."""
        # Most events are cleared by one look at their bytes (edits.raws), all events of the
        # batch at once. A backslash means escapes, whose decoded text may hold what the
        # bytes do not show.
        objs, raws = edits.objs, edits.raws
        hint = self._hint
        if hint is None:
            suspects = selected
        else:
            if edits.scan is None:
                edits.scan = RawScan(raws)
            hits = hint.hits(edits.scan)
            suspects = [i for i in selected if i in hits or raws[i] is None]
        # Every string value is walked: the whole object, not a view of some fields.
        edits.full(suspects)
        for i in suspects:
            obj = objs[i]
            new = self._walk(obj)
            if new is not obj:
                edits.replace(i, new)

    def scan(self, value: Any) -> Any:
        """``value`` with every match replaced (containers copied where changed)."""
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        kind = type(value)
        if kind is str:
            # The patterns are ASCII, so the UTF-8 bytes show whatever the text would.
            if self._hint is not None and not self._hint(value.encode("utf-8", "surrogatepass")):
                return value
            new = value
            if self._card is not None:
                new = self._card.sub(self._on_card, new)
            if self._regex is not None:
                new = self._regex.sub(self._on_match, new)
            return value if new == value else new
        if kind is dict:
            copy = None
            for key, item in value.items():
                new = self._walk(item)
                if new is not item:
                    if copy is None:
                        copy = dict(value)
                    copy[key] = new
            return value if copy is None else copy
        if kind is list:
            items = None
            for i, item in enumerate(value):
                new = self._walk(item)
                if new is not item:
                    if items is None:
                        items = list(value)
                    items[i] = new
            return value if items is None else items
        return value

    def _on_match(self, match: re.Match[str]) -> str:
        return self._replace(match.group())

    def _on_card(self, match: re.Match[str]) -> str:
        return self._cards(match.group())

    def _cards(self, run: str) -> str:
        digits = run.replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return self._replace(run)
        # The run may hold a card next to other numbers ("ref 7 4111 1111 1111 1111"): try
        # each stretch of whole digit groups of card length, longest first from each start.
        groups = [(m.start(), m.end()) for m in _DIGIT_GROUP.finditer(run)]
        out: list[str] = []
        done = 0
        i = 0
        while i < len(groups):
            end = _card_end(run, groups, i)
            if end is None:
                i += 1
                continue
            start = groups[i][0]
            out += [run[done:start], self._replace(run[start : groups[end][1]])]
            done = groups[end][1]
            i = end + 1
        return run if not out else "".join(out) + run[done:]


def _card_end(run: str, groups: list[tuple[int, int]], first: int) -> int | None:
    """Index of the last group of the longest Luhn-valid card starting at group ``first``."""
    found = None
    size = 0
    for last in range(first, len(groups)):
        size += groups[last][1] - groups[last][0]
        if size > 19:
            break
        if size >= 13:
            digits = "".join(run[a:b] for a, b in groups[first : last + 1])
            if luhn_valid(digits):
                found = last
    return found


_ANY_PATTERN = PatternRedactor(list(PATTERNS), (), lambda _text: MASK)


def may_hold_secret(value: Any) -> bool:
    """True when a string inside ``value`` matches a built-in pattern."""
    return _ANY_PATTERN.scan(value) is not value
