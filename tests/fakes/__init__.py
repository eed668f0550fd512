"""Fake Splunk HEC and Datadog Logs servers on 127.0.0.1: strict, recording, scriptable."""

from __future__ import annotations

from tests.fakes.datadog import FakeDatadog
from tests.fakes.hec import FakeHec
from tests.fakes.script import Hang, Reset, Respond, Script, SeenRequest

__all__ = ["FakeDatadog", "FakeHec", "Hang", "Reset", "Respond", "Script", "SeenRequest"]
