"""Sink registry: ``type`` -> (config class, runtime class). Plain and greppable."""

from __future__ import annotations

from forwarder.config import SinkConfig
from forwarder.sinks.base import Sink
from forwarder.sinks.datadog_logs import DatadogLogsConfig, DatadogLogsSink
from forwarder.sinks.file import FileConfig, FileSink
from forwarder.sinks.http import HttpCollectorSink, HttpConfig
from forwarder.sinks.splunk_hec import SplunkHecConfig, SplunkHecSink

SINKS: dict[str, tuple[type[SinkConfig], type[Sink]]] = {
    "file": (FileConfig, FileSink),
    "http": (HttpConfig, HttpCollectorSink),
    "splunk_hec": (SplunkHecConfig, SplunkHecSink),
    "datadog_logs": (DatadogLogsConfig, DatadogLogsSink),
}
