"""``http`` sink: POST batches to any HTTP collector as NDJSON or a JSON array.

Answers: 2xx delivered; 408, 429, 5xx and network errors retried (``Retry-After`` honoured);
413 split in halves; any other 4xx keeps the data, backs off and marks the sink down, since a
generic collector does not say which event it disliked.
"""

from __future__ import annotations

import gzip
from typing import Literal

from pydantic import Field

from forwarder.config import SinkConfig, TlsClientConfig
from forwarder.events import Event
from forwarder.sinks.base import Answer, HttpSink, classify_http


class HttpConfig(SinkConfig):
    type: Literal["http"] = "http"
    endpoint: str
    encoding: Literal["ndjson", "json_array"] = "ndjson"
    headers: dict[str, str] = {}
    compression: Literal["gzip", "none"] = "none"
    compression_level: int = Field(1, ge=1, le=9)
    method: Literal["POST", "PUT"] = "POST"
    tls: TlsClientConfig | None = None


class HttpCollectorSink(HttpSink):
    """Generic HTTP collector."""

    config: HttpConfig

    def encode(self, events: list[Event]) -> bytes:
        if self.config.encoding == "ndjson":
            return b"\n".join(e.raw for e in events) + b"\n"
        return b"[" + b",".join(e.raw for e in events) + b"]"

    async def send(self, events: list[Event]) -> Answer:
        body = self.encode(events)
        headers = {
            "Content-Type": "application/x-ndjson"
            if self.config.encoding == "ndjson"
            else "application/json",
            **self.config.headers,
        }
        if self.config.compression == "gzip":
            body = gzip.compress(body, self.config.compression_level)
            headers["Content-Encoding"] = "gzip"
        status, text, retry_after = await self.post(
            self.config.endpoint, body, headers, method=self.config.method
        )
        return classify_http(status, text, retry_after)
