"""Actions compiled from ``then``: transforms that return a changed event, and verdicts.

Transforms never modify a dict or list in place: they copy the containers on the way to what
they change and share the rest. So one parsed object can feed several sinks' policies, and an
unchanged event is recognised by identity (``new is obj``) without comparing anything.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from forwarder.policy.conditions import MISSING, getter, json_equal
from forwarder.policy.config import RedactConfig, SampleConfig
from forwarder.policy.redact import MASK, PatternRedactor, hasher, may_hold_secret

__all__ = [
    "Redact",
    "Remove",
    "Rename",
    "Sampler",
    "SetFields",
    "Transform",
    "remove_path",
    "set_path",
    "update_path",
]

Obj = dict[str, Any]


class Transform(Protocol):
    # True when a change may bring text the event's bytes do not hold and a pattern could
    # match; after such a change the bytes no longer vouch for the event (see Redact).
    adds_text: bool

    def apply(self, obj: Obj, raw: bytes | None) -> Obj:
        """``obj`` when nothing changed, else a changed copy. ``raw`` is JSON text holding
        every string ``obj`` holds, or None when that is not known."""
        ...


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def set_path(obj: Obj, parts: tuple[str, ...], value: Any) -> Obj | None:
    """``obj`` with ``value`` at ``parts`` (a copy, creating missing dicts on the way; ``obj``
    itself when the value is already there); None when a value on the way is not a dict."""
    head, rest = parts[0], parts[1:]
    child = obj.get(head, MISSING)
    if not rest:
        # Setting what is already there is no change: the event keeps its bytes.
        if child is not MISSING and json_equal(child, value):
            return obj
        new: Any = value
    elif child is MISSING:
        new = set_path({}, rest, value)
    elif type(child) is not dict:
        return None
    else:
        new = set_path(child, rest, value)
        if new is None:
            return None
        if new is child:
            return obj
    out = dict(obj)
    out[head] = new
    return out


def update_path(obj: Obj, parts: tuple[str, ...], change: Callable[[Any], Any]) -> Obj:
    """``obj`` with the value at ``parts`` replaced by ``change(value)``; ``obj`` itself
    when the path is absent."""
    head, rest = parts[0], parts[1:]
    child = obj.get(head, MISSING)
    if child is MISSING:
        return obj
    if rest:
        if type(child) is not dict:
            return obj
        new = update_path(child, rest, change)
        if new is child:
            return obj
    else:
        new = change(child)
    out = dict(obj)
    out[head] = new
    return out


def remove_path(obj: Obj, parts: tuple[str, ...]) -> Obj:
    """``obj`` without the key at ``parts``; ``obj`` itself when the path is absent."""
    head, rest = parts[0], parts[1:]
    if head not in obj:
        return obj
    if rest:
        child = obj[head]
        if type(child) is not dict:
            return obj
        new = remove_path(child, rest)
        if new is child:
            return obj
        out = dict(obj)
        out[head] = new
        return out
    out = dict(obj)
    del out[head]
    return out


class SetFields:
    """``set: {path: value}``: writes each value; a path through a non-dict is skipped."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = [(_split(path), value) for path, value in values.items()]
        self.adds_text = may_hold_secret(list(values.values()))

    def apply(self, obj: Obj, raw: bytes | None) -> Obj:
        for parts, value in self._values:
            # Each event gets its own copy of a list or dict value: a later action on one
            # event must not show through in another.
            if type(value) in (dict, list):
                value = copy.deepcopy(value)
            new = set_path(obj, parts, value)
            if new is not None:
                obj = new
        return obj


class Rename:
    """``rename: {from: to}``: moves a value, replacing what ``to`` held; an absent ``from``,
    or a ``to`` through a non-dict, leaves the event as it is."""

    adds_text = False

    def __init__(self, moves: dict[str, str]) -> None:
        self._moves = [(getter(src), _split(src), _split(dst)) for src, dst in moves.items()]

    def apply(self, obj: Obj, raw: bytes | None) -> Obj:
        for get, src, dst in self._moves:
            value = get(obj)
            if value is MISSING:
                continue
            moved = set_path(remove_path(obj, src), dst, value)
            if moved is not None:
                obj = moved
        return obj


class Remove:
    """``remove: [paths]``."""

    adds_text = False

    def __init__(self, paths: tuple[str, ...]) -> None:
        self._paths = [_split(path) for path in paths]

    def apply(self, obj: Obj, raw: bytes | None) -> Obj:
        for parts in self._paths:
            obj = remove_path(obj, parts)
        return obj


class Redact:
    """``redact``: whole fields, then patterns inside every string value.

    Arguments:
        config: the validated ``redact`` mapping.
        hash_key: HMAC key for ``with: hash``; None uses the per-process key.
    """

    # Masks and hashes are not secrets; they may match a pattern by chance, and leaving
    # them unscanned is harmless.
    adds_text = False

    def __init__(self, config: RedactConfig, hash_key: bytes | None) -> None:
        self._hash = hasher(hash_key) if config.with_ == "hash" else None
        self._replace: Callable[[str], str] = self._hash or (lambda _text: MASK)
        self._fields = [_split(path) for path in config.fields]
        self._patterns = (
            PatternRedactor(config.patterns, config.regex, self._replace)
            if config.patterns or config.regex
            else None
        )

    def _whole(self, value: Any) -> str:
        if self._hash is None:
            return MASK
        return self._hash(value if type(value) is str else orjson.dumps(value).decode())

    def apply(self, obj: Obj, raw: bytes | None) -> Obj:
        for parts in self._fields:
            obj = update_path(obj, parts, self._whole)
        if self._patterns is not None:
            obj = self._patterns.redact(obj, raw)
        return obj


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
