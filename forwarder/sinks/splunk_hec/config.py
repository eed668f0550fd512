"""Config of the ``splunk_hec`` sink."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from forwarder.config import SinkConfig, TlsClientConfig


class SplunkHecConfig(SinkConfig):
    """Arguments beyond the shared sink keys.

    ``host``/``source``/``sourcetype``/``index``/``fields`` fill what an event's own HEC
    envelope (from HEC ingest) leaves missing. ``timestamp_field`` names the event field to
    read ``time`` from (default: ``timestamp``, ``@timestamp``, then ``time``).
    """

    type: Literal["splunk_hec"] = "splunk_hec"
    endpoint: str
    token: SecretStr
    path: str = "/services/collector/event"
    index: str | None = None
    sourcetype: str | None = None
    source: str | None = None
    host: str | None = None
    fields: dict[str, str] = {}
    timestamp_field: str | None = None
    compression: Literal["gzip", "none"] = "gzip"
    compression_level: int = Field(1, ge=1, le=9)
    indexer_acknowledgements: bool = False
    ack_query_interval_secs: float = Field(10.0, gt=0)
    ack_timeout_secs: float = Field(300.0, gt=0)
    healthcheck: bool = True
    tls: TlsClientConfig | None = None
    secret_keys = ("token",)
