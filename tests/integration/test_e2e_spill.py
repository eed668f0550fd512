"""Memory buffers at a graceful stop, with real processes: what the shutdown deadline leaves
undelivered is spilled to ``data_dir/spill/<sink>/`` and delivered after the next start.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.script import Hang
from tests.helpers import DaemonProcess, FakeCollector, metric
from tests.integration.crash_helpers import (
    SINK,
    SOURCE,
    forwarder_config,
    logged,
    post_events,
    received_ids,
    wait_until,
)

MEMORY = {"type": "memory", "max_events": 100_000}
SENT = 3000
AFTER = 500  # sent to the restarted daemon while it re-delivers the spill


@pytest.mark.parametrize("siem", ["stalled", "slow"])
async def test_sigterm_spills_what_is_undelivered_and_the_next_start_delivers_it(
    tmp_path: Path, siem: str
) -> None:
    """SIGTERM while the SIEM is stalled (nothing goes) or slow (some goes during the drain):
    the rest is spilled, and after a restart against a working SIEM every acknowledged event
    has arrived exactly once, spilled ones and new ones alike, and the spill files are gone."""
    data_dir = tmp_path / "data"
    spill_dir = data_dir / "spill" / SINK
    async with FakeCollector() as first, aiohttp.ClientSession() as session:
        if siem == "stalled":
            first.script.stall()
        else:
            first.script.always(Hang(0.4))
        config = forwarder_config(data_dir, first, MEMORY, shutdown_timeout_secs=1.0)
        daemon = await DaemonProcess(tmp_path, config).start()
        try:
            for start in range(0, SENT, 100):
                ids = range(start, start + 100)
                assert await post_events(session, daemon.port(SOURCE), ids) == 200
            assert await daemon.terminate(timeout_secs=10) == 0
        finally:
            await daemon.close()
        first.script.shutdown()
    before_stop = Counter(received_ids(first))
    spilled = sum(line["events"] for line in logged(daemon, "spilled undelivered events"))
    assert spilled == SENT - len(before_stop) > 0
    # Stalled: nothing went before the deadline; slow: part went during the drain.
    assert bool(before_stop) == (siem == "slow")
    assert max(before_stop.values(), default=1) == 1
    assert [p.suffix for p in spill_dir.iterdir()] == [".jsonl"]

    async with FakeCollector() as second, aiohttp.ClientSession() as session:
        config = forwarder_config(data_dir, second, MEMORY)
        daemon = await DaemonProcess(tmp_path, config).start()
        try:
            requeued = logged(daemon, "re-queued spilled events")
            assert [line["events"] for line in requeued] == [spilled]
            for start in range(SENT, SENT + AFTER, 100):
                ids = range(start, start + 100)
                assert await post_events(session, daemon.port(SOURCE), ids) == 200
            await wait_until(
                lambda: len(second.received) >= spilled + AFTER,
                timeout_secs=15,
                what="spilled and new events delivered",
            )
            samples = await daemon.metrics()
        finally:
            await daemon.close()
    after_start = Counter(received_ids(second))
    assert max(after_start.values()) == 1
    assert set(after_start) | set(before_stop) == set(range(SENT + AFTER))
    assert not set(after_start) & set(before_stop)
    assert list(spill_dir.iterdir()) == []
    assert metric(samples, "forwarder_events_dropped_total", component=SINK, reason="corrupt") == 0
