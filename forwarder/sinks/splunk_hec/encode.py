"""HEC envelopes, built with byte joins: the event's bytes are spliced in, never re-encoded.

``{"time":1733300000.123,"host":"h","source":"s","sourcetype":"t","index":"i","event":{...}}``
objects back to back, newline-separated. ``time`` is epoch seconds as a plain decimal with
millisecond precision (HEC rejects exponent notation).
"""

from __future__ import annotations

import socket
from typing import Any

import orjson

from forwarder.events import Event, hec_seconds, object_time

_META_KEYS = ("host", "source", "sourcetype", "index")


class HecEncoder:
    """Encodes events for one sink.

    Arguments:
        host/source/sourcetype/index/fields: config values; an event's own HEC envelope
            takes precedence, and config only fills what it lacks.
        timestamp_field: event field holding the time, or None for the ingest-time default.
    """

    def __init__(
        self,
        *,
        host: str | None,
        source: str | None,
        sourcetype: str | None,
        index: str | None,
        fields: dict[str, str],
        timestamp_field: str | None,
    ) -> None:
        self.config_meta = {
            k: v
            for k, v in (("source", source), ("sourcetype", sourcetype), ("index", index))
            if v is not None
        }
        self.host = host
        self.local_host = socket.gethostname()
        self.fields = fields
        self.timestamp_field = timestamp_field
        # The common case (no envelope from ingest): everything but time and host is constant.
        static = b"".join(
            b',"%s":%s' % (k.encode(), orjson.dumps(v)) for k, v in self.config_meta.items()
        )
        if fields:
            static += b',"fields":' + orjson.dumps(fields)
        self._static = static + b',"event":'
        self._config_host = orjson.dumps(host) if host is not None else None
        self._local_host = orjson.dumps(self.local_host)

    def body(self, events: list[Event]) -> bytes:
        if self.timestamp_field is not None or any(e.meta for e in events):
            return b"\n".join([self.envelope(e) for e in events])
        # The common case, inlined: one format per event, no method call.
        static = self._static
        fixed_host = self._config_host
        local_host = self._local_host
        dumps = orjson.dumps
        return b"\n".join(
            [
                b'{"time":%.3f,"host":%s%s%s}'
                % (
                    e.received if e.time is None else e.time,
                    fixed_host or (local_host if e.host is None else dumps(e.host)),
                    static,
                    e.raw,
                )
                for e in events
            ]
        )

    def envelope(self, event: Event) -> bytes:
        if event.meta:
            return self._from_meta(event)
        t = self._time(event)
        if self._config_host is not None:
            host = self._config_host
        elif event.host is not None:
            host = orjson.dumps(event.host)
        else:
            host = self._local_host
        return b'{"time":%.3f,"host":%s%s%s}' % (t, host, self._static, event.raw)

    def _time(self, event: Event) -> float:
        if self.timestamp_field is None:
            return event.timestamp
        found = object_time(event.parsed(), (self.timestamp_field,))
        return event.received if found is None else found

    def _from_meta(self, event: Event) -> bytes:
        meta: dict[str, Any] = event.meta or {}
        head: dict[str, Any] = {}
        for key in _META_KEYS:
            value = meta.get(key)
            if value is None:
                value = self.config_meta.get(key)
            if value is None and key == "host":
                value = self.host or event.host or self.local_host
            if value is not None:
                head[key] = value
        fields = dict(self.fields)
        if isinstance(meta.get("fields"), dict):
            fields.update(meta["fields"])
        if fields:
            head["fields"] = fields
        t = hec_seconds(meta.get("time"))
        if t is None:
            t = self._time(event)
        return b'{"time":%.3f,%s,"event":%s}' % (t, orjson.dumps(head)[1:-1], event.raw)
