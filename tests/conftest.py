"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from forwarder.telemetry.metrics import Metrics
from tests.helpers import FakeCollector


@pytest.fixture
def metrics() -> Metrics:
    """A fresh set of metrics on its own registry."""
    return Metrics()


@pytest.fixture
async def collector() -> AsyncIterator[FakeCollector]:
    """A started generic HTTP collector on 127.0.0.1 (``collector.endpoint``)."""
    async with FakeCollector() as fake:
        yield fake
