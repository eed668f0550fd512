"""HEC envelopes: one object per event, back to back, metadata per object, time as seconds."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import orjson
import pytest

from forwarder.events import Event
from forwarder.sinks.splunk_hec.encode import HecEncoder
from forwarder.sources.base import decode_lines

RECEIVED = 1_733_300_000.25


def encoder(**overrides: Any) -> HecEncoder:
    settings: dict[str, Any] = {
        "host": None,
        "source": None,
        "sourcetype": None,
        "index": None,
        "fields": {},
        "timestamp_field": None,
    }
    settings.update(overrides)
    return HecEncoder(**settings)


def ingested(obj: dict[str, Any], meta: dict[str, Any] | None = None) -> Event:
    """An event as a source builds it: compact bytes, receive time, its own time and host."""
    [event], _ = decode_lines([orjson.dumps(obj)], "tcp", keep_objects=False, wrap_invalid=False)
    event.received = RECEIVED
    event.meta = meta
    return event


def decode_all(body: bytes) -> list[dict[str, Any]]:
    """Concatenated JSON objects, parsed the way HEC reads them."""
    decoder = json.JSONDecoder()
    text = body.decode()
    out, position = [], 0
    while position < len(text):
        while position < len(text) and text[position] in " \n\r\t":
            position += 1
        if position == len(text):
            break
        value, position = decoder.raw_decode(text, position)
        out.append(value)
    return out


def test_body_is_objects_back_to_back_with_config_metadata() -> None:
    """Each event becomes one envelope carrying time, host, source, sourcetype, index, fields."""
    enc = encoder(
        host="fwd-1", source="forwarder", sourcetype="_json", index="audit", fields={"dc": "x"}
    )
    events = [ingested({"user": "alice", "n": i}) for i in range(3)]
    body = enc.body(events)
    assert not body.startswith(b"[")
    assert decode_all(body) == [
        {
            "time": RECEIVED,
            "host": "fwd-1",
            "source": "forwarder",
            "sourcetype": "_json",
            "index": "audit",
            "fields": {"dc": "x"},
            "event": {"user": "alice", "n": i},
        }
        for i in range(3)
    ]


def test_event_bytes_are_spliced_unchanged() -> None:
    """The event object is the bytes received, not a re-encoding of them."""
    raw = b'{"b":1, "a":"\\u00e9"}'
    body = encoder().body([Event(raw, "tcp", RECEIVED)])
    assert body.endswith(b',"event":' + raw + b"}")


def test_unset_metadata_is_left_out() -> None:
    """Without config values, only time, host and event are sent: HEC applies its defaults."""
    [envelope] = decode_all(encoder().body([ingested({"x": 1})]))
    assert set(envelope) == {"time", "host", "event"}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"timestamp": "2024-12-04T08:13:20Z"}, 1_733_300_000.0),
        ({"@timestamp": "2024-12-04T08:13:20.5+00:00"}, 1_733_300_000.5),
        ({"time": 1_733_300_000}, 1_733_300_000.0),
        ({"time": 1_733_300_000_123}, 1_733_300_000.123),
        ({"timestamp": "2024-12-04T09:13:20+01:00", "time": 5}, 1_733_300_000.0),
        ({"timestamp": "not a time"}, RECEIVED),
        ({"other": 1}, RECEIVED),
    ],
)
def test_time_comes_from_the_event_else_the_receive_time(
    obj: dict[str, Any], expected: float
) -> None:
    """RFC 3339 strings and epoch s/ms numbers in timestamp, @timestamp, time; else received."""
    [envelope] = decode_all(encoder().body([ingested(obj)]))
    assert envelope["time"] == pytest.approx(expected, abs=0.0005)


def test_timestamp_field_names_the_field_to_read() -> None:
    """With timestamp_field set, only that field is read; other time fields are ignored."""
    enc = encoder(timestamp_field="created")
    with_field = ingested({"created": "2024-12-04T08:13:20Z", "timestamp": 5})
    without = ingested({"timestamp": "2024-12-04T08:13:20Z"})
    first, second = decode_all(enc.body([with_field, without]))
    assert first["time"] == 1_733_300_000.0
    assert second["time"] == RECEIVED


@pytest.mark.parametrize("when", [RECEIVED, 1e9, 4_102_444_800.999, 0.001])
def test_time_is_a_plain_decimal(when: float) -> None:
    """``time`` never uses exponent notation and keeps millisecond precision."""
    body = encoder().body([Event(b'{"a":1}', "tcp", when)])
    match = re.match(rb'\{"time":([0-9.]+),', body)
    assert match is not None, body[:60]
    assert float(match.group(1)) == pytest.approx(when, abs=0.0005)
    assert b"e" not in match.group(1).lower()


def test_host_prefers_config_then_event_then_local_hostname() -> None:
    """host: the configured one, else the event's own host, else this machine's name."""
    events = [ingested({"host": "app-7"}), ingested({"hostname": "x"}), ingested({"host": ""})]
    configured = [e["host"] for e in decode_all(encoder(host="fwd").body(events))]
    assert configured == ["fwd", "fwd", "fwd"]
    unconfigured = [e["host"] for e in decode_all(encoder().body(events))]
    assert unconfigured == ["app-7", socket.gethostname(), socket.gethostname()]


def test_metadata_does_not_carry_over_between_objects() -> None:
    """Every envelope repeats its own metadata: HEC does not carry values to the next object."""
    enc = encoder(source="s", sourcetype="t", index="i")
    envelopes = decode_all(enc.body([ingested({"n": 1}), ingested({"n": 2})]))
    for envelope in envelopes:
        assert (envelope["source"], envelope["sourcetype"], envelope["index"]) == ("s", "t", "i")


def test_envelope_from_hec_ingest_wins_and_config_fills_gaps() -> None:
    """An event that arrived with its own HEC envelope keeps it; config fills what it lacks."""
    meta = {"time": "1733300000.5", "index": "client", "fields": {"k": "v"}}
    enc = encoder(index="audit", sourcetype="_json", host="fwd", fields={"dc": "x"})
    [envelope] = decode_all(enc.body([ingested({"a": 1}, meta)]))
    assert envelope == {
        "time": 1_733_300_000.5,
        "host": "fwd",
        "sourcetype": "_json",
        "index": "client",
        "fields": {"dc": "x", "k": "v"},
        "event": {"a": 1},
    }
