"""``splunk_hec`` sink: Splunk HTTP Event Collector."""

from forwarder.sinks.splunk_hec.config import SplunkHecConfig
from forwarder.sinks.splunk_hec.sink import SplunkHecSink

__all__ = ["SplunkHecConfig", "SplunkHecSink"]
