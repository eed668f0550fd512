"""Actions compiled from ``then``: transforms over a batch's :class:`Edits`, and verdicts.

A transform gets the indexes of the events its rule's condition selected and changes them
through :class:`Edits`, which decides whether a change is made in place or on a copy; one
Python call per rule and batch, not per event.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from forwarder.policy.conditions import MISSING, getter
from forwarder.policy.config import RedactConfig, SampleConfig
from forwarder.policy.edits import Edits, Obj, settable
from forwarder.policy.redact import MASK, PatternRedactor, hasher, may_hold_secret

__all__ = ["Redact", "Remove", "Rename", "Sampler", "SetFields", "Transform"]


class Transform(Protocol):
    # The fields the transform looks at before changing an event: views hold them, so an
    # event with nothing to change is never parsed in full.
    paths: frozenset[tuple[str, ...]]

    def apply(self, edits: Edits, selected: list[int]) -> None:
        """Change the ``selected`` events of ``edits``."""
        ...


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


class SetFields:
    """``set: {path: value}``: writes each value; a path through a non-dict is skipped."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = [(_split(path), value) for path, value in values.items()]
        self.paths = frozenset(parts for parts, _ in self._values)
        # A value that may match a pattern is text the event's bytes do not hold; after
        # writing it the bytes no longer vouch for the event (see PatternRedactor).
        self._adds_text = may_hold_secret(list(values.values()))

    def apply(self, edits: Edits, selected: list[int]) -> None:
        raws = edits.raws
        for parts, value in self._values:
            # Each event gets its own copy of a list or dict value: a later action on one
            # event must not show through in another.
            fresh = type(value) in (dict, list)
            written = edits.set_many(
                selected, parts, value, fresh=fresh, splice=not self._adds_text
            )
            if self._adds_text:
                for i in written:
                    raws[i] = None


class Rename:
    """``rename: {from: to}``: moves a value, replacing what ``to`` held; an absent ``from``,
    or a ``to`` through a non-dict, leaves the event as it is."""

    def __init__(self, moves: dict[str, str]) -> None:
        self._moves = [(getter(src), _split(src), _split(dst)) for src, dst in moves.items()]
        self.paths = frozenset(src for _, src, _ in self._moves)

    def apply(self, edits: Edits, selected: list[int]) -> None:
        objs = edits.objs
        for get, src, dst in self._moves:
            if edits.in_place and src[:-1] == dst[:-1]:
                # Within one dict and on the batch's own objects: a key rename, one
                # comprehension for the batch.
                edits.move_many(selected, src, dst[-1])
                continue
            # Moving under the source itself ("a" -> "a.b") always works once it is gone.
            under_src = dst[: len(src)] == src
            for i in edits.needing(selected, src):
                obj = objs[i]
                if get(obj) is MISSING or not (under_src or settable(obj, dst)):
                    continue
                edits.set(i, dst, edits.pop(i, src))


class Remove:
    """``remove: [paths]``."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        self._paths = [_split(path) for path in paths]
        self.paths = frozenset(self._paths)

    def apply(self, edits: Edits, selected: list[int]) -> None:
        for parts in self._paths:
            edits.pop_many(selected, parts)


class Redact:
    """``redact``: whole fields, then patterns inside every string value.

    Arguments:
        config: the validated ``redact`` mapping.
        hash_key: HMAC key for ``with: hash``; None uses the per-process key.
    """

    def __init__(self, config: RedactConfig, hash_key: bytes | None) -> None:
        digest = hasher(hash_key) if config.with_ == "hash" else None
        self._whole = _mask if digest is None else _whole_hasher(digest)
        self._fields = [_split(path) for path in config.fields]
        self.paths = frozenset(self._fields)
        self._patterns = (
            PatternRedactor(config.patterns, config.regex, digest or _mask)
            if config.patterns or config.regex
            else None
        )

    def apply(self, edits: Edits, selected: list[int]) -> None:
        # Masks and hashes are not secrets: the bytes still vouch for what they hold (a mask
        # that matched a pattern by chance would be harmless to leave unscanned).
        for parts in self._fields:
            edits.update_many(selected, parts, self._whole)
        if self._patterns is not None:
            self._patterns.redact(edits, selected)


def _mask(_value: Any) -> str:
    return MASK


def _whole_hasher(digest: Callable[[str], str]) -> Callable[[Any], str]:
    """A whole field's hash: of its text, or of the JSON of any other value."""

    def whole(value: Any) -> str:
        return digest(value if type(value) is str else orjson.dumps(value).decode())

    return whole


class Sampler:
    """``sample``: keeps one event in ``rate``.

    With ``key``, the CRC-32 of the key's value decides, so a value gets the same verdict in
    every process and after every restart; events without the key, or rules without one, are
    kept by a counter (the 1st, the rate+1-th, ...).
    """

    def __init__(self, config: SampleConfig) -> None:
        self._rate = config.rate
        self._get = getter(config.key) if config.key is not None else None
        self._count = 0

    def keep(self, obj: Obj) -> bool:
        """The verdict for one event."""
        if self._get is not None:
            value = self._get(obj)
            if value is not MISSING:
                data = (
                    value.encode()
                    if type(value) is str
                    else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
                )
                return zlib.crc32(data) % self._rate == 0
        self._count += 1
        return (self._count - 1) % self._rate == 0
