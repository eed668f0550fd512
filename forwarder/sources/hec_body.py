"""Splunk HEC request bodies: ``/event`` envelopes back to back and ``/raw`` lines.

An envelope is checked the way Splunk checks it, in order, and the first bad one stops the
parse with its HEC code (6 not JSON or a bad envelope value, 12 no ``event``, 13 a blank
event, 15 ``fields`` not flat); what came before it is accepted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from forwarder.events import encode, hec_seconds

__all__ = ["TEXT_META", "Parsed", "envelopes", "raw_lines"]

# Envelope keys whose values are text (the ones /raw takes from its query string too).
TEXT_META = ("host", "source", "sourcetype", "index")
_NOT_SPACE = re.compile(r"[^ \t\n\r]")
_BAD = object()  # a value that is not JSON: parsing stops there


@dataclass(slots=True)
class Parsed:
    """Envelopes accepted, in order, as (event bytes, event object, meta or None), and the
    (HEC code, index) of the first bad one, if any."""

    items: list[tuple[bytes, dict[str, Any], dict[str, Any] | None]]
    error: tuple[int, int] | None


def envelopes(body: bytes, max_event_bytes: int) -> Parsed:
    """HEC envelopes back to back (whitespace between them allowed), up to the first bad one."""
    items: list[tuple[bytes, dict[str, Any], dict[str, Any] | None]] = []
    for index, value in enumerate(_values(body)):
        checked = _BAD if value is _BAD else _envelope(value, max_event_bytes)
        if not isinstance(checked, tuple):
            return Parsed(items, (checked if isinstance(checked, int) else 6, index))
        items.append(checked)
    return Parsed(items, None)


def raw_lines(body: bytes, max_event_bytes: int) -> tuple[list[tuple[bytes, dict[str, Any]]], int]:
    """``/raw`` events, one per non-blank line: a JSON object line as it is, any other line
    as ``{"message": line}``; and how many lines were over ``max_event_bytes``."""
    out: list[tuple[bytes, dict[str, Any]]] = []
    too_large = 0
    for line in body.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        if len(line) > max_event_bytes:
            too_large += 1
            continue
        if line[:1] == b"{":
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                value = None
            if type(value) is dict:
                out.append((line, value))
                continue
        payload = {"message": line.decode("utf-8", "replace")}
        out.append((encode(payload), payload))
    return out, too_large


def _values(body: bytes) -> list[Any] | Iterator[Any]:
    # Nearly every client writes one envelope per line: orjson per line is the fast path, and
    # any line that is not exactly one value sends the whole body through the stream parser.
    try:
        return [orjson.loads(line) for line in body.split(b"\n") if line.strip()]
    except orjson.JSONDecodeError:
        return _stream(body)


def _stream(body: bytes) -> Iterator[Any]:
    text = body.decode("utf-8", "replace")
    decode = json.JSONDecoder().raw_decode
    pos = 0
    while (start := _NOT_SPACE.search(text, pos)) is not None:
        try:
            value, pos = decode(text, start.start())
        except json.JSONDecodeError:
            yield _BAD
            return
        yield value


def _envelope(
    value: Any, max_event_bytes: int
) -> tuple[bytes, dict[str, Any], dict[str, Any] | None] | int:
    """The accepted form of one envelope, or the HEC code that rejects it."""
    if type(value) is not dict:
        return 6
    event = value.get("event")
    if event is None:
        return 12
    if event == {} or (isinstance(event, str) and not event.strip()):
        return 13
    fields = value.get("fields")
    if fields is not None and not _flat(fields):
        return 15
    if value.get("time") is not None and hec_seconds(value["time"]) is None:
        return 6
    meta: dict[str, Any] = {}
    for key in ("time", *TEXT_META, "fields"):
        item = value.get(key)
        if item is None:
            continue
        if key in TEXT_META and not isinstance(item, str):
            return 6
        meta[key] = item
    payload = event if type(event) is dict else {"message": event}
    raw = encode(payload)
    if len(raw) > max_event_bytes:
        return 6
    return raw, payload, meta or None


def _flat(fields: Any) -> bool:
    """Indexed fields: an object of scalars or lists of scalars (Splunk's code 15 otherwise)."""
    if not isinstance(fields, dict):
        return False
    for item in fields.values():
        for one in item if isinstance(item, list) else (item,):
            if isinstance(one, dict | list):
                return False
    return True
