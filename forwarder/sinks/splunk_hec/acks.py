"""Indexer acknowledgements: one poller per sink asks ``/services/collector/ack`` about every
outstanding ``ackId`` at once, every ``ack_query_interval_secs``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any


class AckResult(Enum):
    INDEXED = "indexed"
    TIMED_OUT = "timed_out"
    DISABLED = "disabled"  # HEC code 14: acks are off for this token; a 200 is the answer


Query = Callable[[list[int]], Awaitable[dict[str, Any]]]


class AckTracker:
    """Waits for ack ids.

    Arguments:
        query: POSTs ``{"acks": [...]}`` and returns the parsed answer (``{"acks": {"0":
            true}}``, or ``{"code": 14}``); raises on network errors (polled again later).
        interval_secs: how often to poll.
        timeout_secs: how long an id may stay unacknowledged before its batch is resent.
    """

    def __init__(self, query: Query, *, interval_secs: float, timeout_secs: float) -> None:
        self._query = query
        self.interval_secs = interval_secs
        self.timeout_secs = timeout_secs
        self._waiting: dict[int, asyncio.Future[AckResult]] = {}
        self._poller: asyncio.Task[None] | None = None
        self.disabled = False

    async def wait(self, ack_id: int) -> AckResult:
        if self.disabled:
            return AckResult.DISABLED
        future = asyncio.get_running_loop().create_future()
        self._waiting[ack_id] = future
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            async with asyncio.timeout(self.timeout_secs):
                return await asyncio.shield(future)
        except TimeoutError:
            return AckResult.TIMED_OUT
        finally:
            self._waiting.pop(ack_id, None)

    async def stop(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def _poll(self) -> None:
        while self._waiting:
            await asyncio.sleep(self.interval_secs)
            ids = sorted(self._waiting)
            if not ids:
                continue
            try:
                answer = await self._query(ids)
            except Exception:  # network trouble: ask again next round
                continue
            if answer.get("code") == 14:
                self.disabled = True
                self._resolve_all(AckResult.DISABLED)
                return
            acks = answer.get("acks")
            if not isinstance(acks, dict):
                continue
            for key, value in acks.items():
                if value is True and key.isdigit():
                    future = self._waiting.get(int(key))
                    if future is not None and not future.done():
                        future.set_result(AckResult.INDEXED)

    def _resolve_all(self, result: AckResult) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_result(result)
