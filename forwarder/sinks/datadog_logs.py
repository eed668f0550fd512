"""``datadog_logs`` sink: Datadog Logs intake v2.

Destination limits: at most 1000 entries and 5 MB uncompressed per request (413 above); a log
over 1 MB is silently truncated by the intake and still answered 2xx, so we dead-letter such an
event (``too_large``) instead of letting it be cut. Batches stay at or below 1000 entries and
4,250,000 bytes (headroom for escaping); config may lower these, never raise them.
``timestamp`` must be epoch milliseconds. 202 is success; 400 blames the payload (bisect to find
the bad entries); 401/403 is a key problem (keep data, sink down).
"""

from __future__ import annotations

import gzip
import socket
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, model_validator

from forwarder.config import SinkConfig, TlsClientConfig
from forwarder.events import Event, object_time
from forwarder.sinks.base import Answer, HttpSink, Verdict, classify_http

MAX_ENTRIES = 1000
MAX_BATCH_BYTES = 4_250_000
MAX_LOG_BYTES = 1_000_000
SITES = {
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "uk1.datadoghq.com",
    "ddog-gov.com",
    "us2.ddog-gov.com",
}
_SEVERITY_FIELDS = ("status", "severity", "level", "log_level")
# Bytes each entry gains from the reserved attributes; subtracted from the batch byte limit so
# the encoded request stays under the intake's.
_ENTRY_OVERHEAD = 256


class DatadogLogsConfig(SinkConfig):
    type: Literal["datadog_logs"] = "datadog_logs"
    api_key: SecretStr
    site: str = "datadoghq.com"
    endpoint: str | None = None
    service: str | None = None
    source: str | None = None
    hostname: str | None = None
    tags: list[str] = []
    message_field: str = "message"
    timestamp_field: str | None = None
    compression: Literal["gzip", "none"] = "gzip"
    compression_level: int = Field(1, ge=1, le=9)
    tls: TlsClientConfig | None = None
    secret_keys = ("api_key",)

    @model_validator(mode="after")
    def _known_site(self) -> DatadogLogsConfig:
        if self.endpoint is None and self.site not in SITES:
            raise ValueError(f"site: unknown Datadog site {self.site!r}; set endpoint instead")
        return self


class DatadogLogsSink(HttpSink):
    """Posts JSON arrays of log objects with ``DD-API-KEY``."""

    config: DatadogLogsConfig
    max_batch_events = MAX_ENTRIES
    max_batch_bytes = MAX_BATCH_BYTES - MAX_ENTRIES * _ENTRY_OVERHEAD
    max_event_bytes = MAX_LOG_BYTES

    def __init__(self, name: str, config: DatadogLogsConfig) -> None:
        super().__init__(name, config)
        self.url = config.endpoint or f"https://http-intake.logs.{config.site}/api/v2/logs"
        self.headers = {
            "DD-API-KEY": config.api_key.get_secret_value(),
            "Content-Type": "application/json",
        }
        if config.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        self.hostname = config.hostname or socket.gethostname()
        self.ddtags = ",".join(config.tags) if config.tags else None

    def event_bytes(self, event: Event) -> int:
        # A log without a message carries its JSON text again as the message, escaped: up to
        # three times the raw size in all. Only an event that could cross the per-log limit
        # that way is encoded to measure it, so the intake never truncates one.
        if 3 * len(event.raw) + _ENTRY_OVERHEAD <= MAX_LOG_BYTES:
            return len(event.raw) + _ENTRY_OVERHEAD
        return len(orjson.dumps(self.entry(event)))

    def entry(self, event: Event) -> dict[str, Any]:
        """One log object: the event's fields plus Datadog's reserved attributes."""
        obj = dict(event.parsed())
        cfg = self.config
        message = obj.get(cfg.message_field)
        if message is None:
            obj["message"] = event.raw.decode("utf-8", "replace")
        elif cfg.message_field != "message":
            obj["message"] = message
        if cfg.source is not None:
            obj.setdefault("ddsource", cfg.source)
        if cfg.service is not None:
            obj.setdefault("service", cfg.service)
        obj.setdefault(
            "hostname", self.hostname if cfg.hostname else obj.get("host", self.hostname)
        )
        if self.ddtags:
            existing = obj.get("ddtags")
            obj["ddtags"] = (
                f"{existing},{self.ddtags}" if isinstance(existing, str) else self.ddtags
            )
        if "status" not in obj:
            for name in _SEVERITY_FIELDS[1:]:
                value = obj.get(name)
                if isinstance(value, str | int):
                    obj["status"] = value
                    break
        if cfg.timestamp_field is not None:
            seconds = object_time(obj, (cfg.timestamp_field,)) or event.received
        else:
            seconds = event.timestamp
        obj["timestamp"] = int(seconds * 1000)
        return obj

    def encode(self, events: list[Event]) -> bytes:
        return orjson.dumps([self.entry(e) for e in events])

    async def send(self, events: list[Event]) -> Answer:
        body = self.encode(events)
        if len(body) > MAX_BATCH_BYTES and len(events) > 1:
            # Batches are sized by the events' bytes as received; copied messages can push
            # the encoded request past the intake's limit. Halve rather than earn a 413.
            return Answer(Verdict.SPLIT, "too_large", None, "encoded batch over the limit")
        if self.config.compression == "gzip":
            body = gzip.compress(body, self.config.compression_level)
        status, text, retry_after = await self.post(self.url, body, self.headers)
        if status == 400:
            return Answer(Verdict.BISECT, "http_400", status, text)
        return classify_http(status, text, retry_after)
