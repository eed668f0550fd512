"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import settings

from forwarder.telemetry.metrics import Metrics
from tests.helpers import FakeCollector

# `make test` and CI draw the same property-test examples every run, so a run's outcome
# depends on the code alone; HYPOTHESIS_PROFILE=explore draws new ones each run (and keeps
# the failures it finds in .hypothesis/ for the next run to replay).
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture
def metrics() -> Metrics:
    """A fresh set of metrics on its own registry."""
    return Metrics()


@pytest.fixture
async def collector() -> AsyncIterator[FakeCollector]:
    """A started generic HTTP collector on 127.0.0.1 (``collector.endpoint``)."""
    async with FakeCollector() as fake:
        yield fake
