"""Sink registry: ``type`` -> (config class, runtime class). Plain and greppable."""

from __future__ import annotations

from forwarder.config import SinkConfig
from forwarder.sinks.base import Sink
from forwarder.sinks.file import FileConfig, FileSink
from forwarder.sinks.http import HttpCollectorSink, HttpConfig

SINKS: dict[str, tuple[type[SinkConfig], type[Sink]]] = {
    "file": (FileConfig, FileSink),
    "http": (HttpConfig, HttpCollectorSink),
}
