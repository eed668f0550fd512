"""Shared delivery: retries, splitting, bisection, partial acceptance and dead letters.

A sink only sends one request and classifies the answer. This module decides what happens
next, so every sink fails the same, documented way:

- RETRY and DOWN are retried forever with exponential backoff and full jitter (tenacity),
  honouring ``Retry-After`` up to ``retry_after_max_secs``. The buffer, not an attempt limit,
  bounds what is held. DOWN also marks the sink down until a request succeeds.
- SPLIT (too large) and BISECT (some event is bad) halve the chunk; a single event that is
  still refused goes to the dead-letter store with the answer that refused it.
- PARTIAL delivers what came before the bad event, dead-letters it, and resends the rest.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_result,
    stop_never,
    wait_random_exponential,
)

from forwarder.events import Event
from forwarder.sinks.base import Answer, Sink, Verdict

if TYPE_CHECKING:
    from forwarder.config import RequestConfig
    from forwarder.deadletter import DeadLetterStore
    from forwarder.telemetry.metrics import Metrics

_TRANSIENT = (Verdict.RETRY, Verdict.DOWN)


class Delivery:
    """Delivers chunks of events through one sink until each event is resolved.

    Arguments:
        sink: the destination.
        request: retry and timeout settings (seconds).
        metrics: where outcomes are counted.
        dead_letters: where rejected events go.
    """

    def __init__(
        self,
        sink: Sink,
        request: RequestConfig,
        metrics: Metrics,
        dead_letters: DeadLetterStore,
    ) -> None:
        self.sink = sink
        self.request = request
        self.metrics = metrics
        self.dead_letters = dead_letters
        self.up = True
        self.last_error: str | None = None
        self.delivered_events = 0
        self.dead_lettered_events = 0
        self.retries = 0
        self._log = structlog.get_logger().bind(component=sink.name)
        self._jitter = wait_random_exponential(
            multiplier=request.retry_initial_backoff_secs, max=request.retry_max_backoff_secs
        )
        name = sink.name
        self._sent = metrics.events_sent.labels(name)
        self._duration = metrics.request_duration.labels(name)
        self._size = metrics.batch_size.labels(name)
        self._up_gauge = metrics.sink_up.labels(name)
        self._up_gauge.set(1)

    async def deliver(self, events: list[Event], pending: list[list[Event]] | None = None) -> None:
        """Return once every event is delivered or dead-lettered.

        Arguments:
            events: the chunk.
            pending: a list the caller keeps to learn, if this is cancelled, which events were
                not settled yet: it holds the parts still to send, the one in flight included.
        """
        oversized = self.sink.max_event_bytes
        if oversized is not None:
            too_big = [e for e in events if self.sink.event_bytes(e) > oversized]
            if too_big:
                events = [e for e in events if self.sink.event_bytes(e) <= oversized]
                self._dead_letter(
                    too_big,
                    Answer(
                        Verdict.SPLIT,
                        "too_large",
                        None,
                        "event exceeds the destination's per-event limit",
                    ),
                )
        stack = pending if pending is not None else []
        if events:
            stack.append(events)
        while stack:
            chunk = stack[-1]
            answer = await self._send_until_settled(chunk)
            stack.pop()
            name = self.sink.name
            if answer.verdict is Verdict.OK:
                self.delivered_events += len(chunk)
                self._sent.inc(len(chunk))
                self.metrics.batches.labels(name, "success").inc()
            elif answer.verdict is Verdict.PARTIAL and answer.index is not None:
                k = min(max(answer.index, 0), len(chunk) - 1)
                if k:
                    self.delivered_events += k
                    self._sent.inc(k)
                self._dead_letter([chunk[k]], answer)
                if k + 1 < len(chunk):
                    stack.append(chunk[k + 1 :])
            elif answer.verdict is Verdict.PREFIX and answer.index:
                k = min(answer.index, len(chunk))
                self.delivered_events += k
                self._sent.inc(k)
                if k < len(chunk):
                    stack.append(chunk[k:])
            elif len(chunk) == 1:
                self._dead_letter(chunk, answer)
            else:
                # SPLIT, BISECT, or a PARTIAL without an index: halve, left half first.
                self.metrics.batches.labels(name, "split").inc()
                mid = len(chunk) // 2
                stack.append(chunk[mid:])
                stack.append(chunk[:mid])

    async def _send_until_settled(self, chunk: list[Event]) -> Answer:
        retrying = AsyncRetrying(
            stop=stop_never,
            wait=self._wait,
            retry=retry_if_result(lambda a: a.verdict in _TRANSIENT),
            before_sleep=self._before_sleep,
        )
        answer: Answer = await retrying(self._attempt, chunk)
        if not self.up:
            self.up = True
            self._up_gauge.set(1)
            self._log.info("sink up", after=self.last_error)
            self.last_error = None
        return answer

    async def _attempt(self, chunk: list[Event]) -> Answer:
        start = time.perf_counter()
        self._size.observe(len(chunk))
        try:
            async with asyncio.timeout(self.request.timeout_secs):
                answer = await self.sink.send(chunk)
        except TimeoutError:
            answer = Answer(Verdict.RETRY, "timeout", None, "no answer within timeout_secs")
        except (aiohttp.ClientError, OSError) as exc:
            answer = Answer(Verdict.RETRY, "connection", None, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            # A sink bug must not wedge the batch or kill the worker: keep the data, retry,
            # and say so (the retry metric and last_error show it too).
            self._log.exception("sink raised; retrying")
            answer = Answer(Verdict.RETRY, "error", None, f"{type(exc).__name__}: {exc}")
        self._duration.observe(time.perf_counter() - start)
        if answer.verdict is Verdict.OK and answer.ack_id is not None:
            answer = await self.sink.confirm(answer)
        return answer

    def _wait(self, state: RetryCallState) -> float:
        answer = state.outcome.result() if state.outcome else None
        if answer is not None and answer.retry_after is not None:
            return min(answer.retry_after, self.request.retry_after_max_secs)
        return float(self._jitter(state))

    def _before_sleep(self, state: RetryCallState) -> None:
        self.retries += 1
        answer: Answer = state.outcome.result()  # type: ignore[union-attr]
        name = self.sink.name
        self.metrics.retries.labels(name, answer.reason).inc()
        self.metrics.batches.labels(name, "retry").inc()
        detail = f"{answer.reason}: {answer.body[:200]}" if answer.body else answer.reason
        if answer.verdict is Verdict.DOWN and self.up:
            self.up = False
            self._up_gauge.set(0)
            self._log.error("sink down; data kept, retrying", status=answer.status, error=detail)
        self.last_error = detail

    def _dead_letter(self, events: list[Event], answer: Answer) -> None:
        self.dead_lettered_events += len(events)
        self.metrics.batches.labels(self.sink.name, "dead_letter").inc()
        self.dead_letters.write(
            events, reason=answer.reason, status=answer.status, response=answer.body
        )
