"""Source registry: ``type`` -> (config class, runtime class). Plain and greppable."""

from __future__ import annotations

from forwarder.config import SourceConfig
from forwarder.sources.base import Source
from forwarder.sources.http import HttpConfig, HttpSource
from forwarder.sources.syslog import SyslogConfig, SyslogSource
from forwarder.sources.tcp import TcpConfig, TcpSource

SOURCES: dict[str, tuple[type[SourceConfig], type[Source]]] = {
    "tcp": (TcpConfig, TcpSource),
    "http": (HttpConfig, HttpSource),
    "syslog": (SyslogConfig, SyslogSource),
}
