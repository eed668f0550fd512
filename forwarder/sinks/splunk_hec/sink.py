"""Splunk HEC sink.

Destination limits: Splunk Enterprise takes up to 800 MiB per request by default; Splunk Cloud
is reported at 1 MB, so batches default to 1,000,000 bytes. Objects are concatenated (no array).
A 400 carrying ``invalid-event-number`` k means objects before k were indexed, k was bad and
those after k were not: we deliver, dead-letter k, and resend the rest (PARTIAL). When k was
refused for a configuration error (code 7, an index the token may not write), the events
before it are delivered and the rest are kept and retried until the configuration is fixed
(PREFIX, then DOWN).
"""

from __future__ import annotations

import gzip
import uuid
from typing import Any

from forwarder.events import Event
from forwarder.sinks.base import Answer, HttpSink, Verdict, answer_json, classify_http
from forwarder.sinks.splunk_hec.acks import AckResult, AckTracker
from forwarder.sinks.splunk_hec.config import SplunkHecConfig
from forwarder.sinks.splunk_hec.encode import HecEncoder

# HEC codes that mean the destination is misconfigured (token, index, channel): keep data.
_DOWN_CODES = {1, 2, 3, 4, 7, 10, 11, 14, 16}
# HEC codes that blame an event in the batch.
_DATA_CODES = {5, 6, 12, 13, 15}
_RETRY_CODES = {8, 9}


class SplunkHecSink(HttpSink):
    """Posts envelopes to ``{endpoint}{path}`` with ``Authorization: Splunk <token>``."""

    config: SplunkHecConfig

    def __init__(self, name: str, config: SplunkHecConfig) -> None:
        super().__init__(name, config)
        base = config.endpoint.rstrip("/")
        self.url = base + config.path
        self.ack_url = base + "/services/collector/ack"
        self.health_url = base + "/services/collector/health"
        self.channel = str(uuid.uuid4())
        self.headers = {
            "Authorization": f"Splunk {config.token.get_secret_value()}",
            "X-Splunk-Request-Channel": self.channel,
            "Content-Type": "application/json",
        }
        if config.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        self.encoder = HecEncoder(
            host=config.host,
            source=config.source,
            sourcetype=config.sourcetype,
            index=config.index,
            fields=config.fields,
            timestamp_field=config.timestamp_field,
        )
        self.acks = AckTracker(
            self._query_acks,
            interval_secs=config.ack_query_interval_secs,
            timeout_secs=config.ack_timeout_secs,
        )

    def event_bytes(self, event: Event) -> int:
        # Envelope overhead: time, host, static metadata; close enough for batch sizing.
        return len(event.raw) + 120

    async def stop(self) -> None:
        await self.acks.stop()
        await super().stop()

    async def healthcheck(self) -> str | None:
        if not self.config.healthcheck:
            return None
        try:
            async with self.session.get(self.health_url, headers=self.headers) as resp:
                text = await resp.text(errors="replace")
        except Exception as exc:  # a healthcheck reports, never raises
            return f"{type(exc).__name__}: {exc}"
        if resp.status == 200:
            return None
        return f"HTTP {resp.status}: {text[:200]}"

    async def send(self, events: list[Event]) -> Answer:
        body = self.encoder.body(events)
        if self.config.compression == "gzip":
            body = gzip.compress(body, self.config.compression_level)
        status, text, retry_after = await self.post(self.url, body, self.headers)
        return self.classify(status, text, retry_after)

    def classify(self, status: int, text: str, retry_after: float | None) -> Answer:
        answer = answer_json(text)
        code = answer.get("code")
        reason = f"hec_code_{code}" if isinstance(code, int) else f"http_{status}"
        if 200 <= status < 300:
            ack_id = answer.get("ackId") if self.config.indexer_acknowledgements else None
            return Answer(Verdict.OK, reason, status, text, ack_id=_int_or_none(ack_id))
        if isinstance(code, int):
            if code in _DOWN_CODES:
                # A per-object refusal (code 7, an index the token may not write) names the
                # object: those before it were indexed and must not be sent again.
                done = _int_or_none(answer.get("invalid-event-number"))
                if done:
                    return Answer(Verdict.PREFIX, reason, status, text, index=done)
                return Answer(Verdict.DOWN, reason, status, text, retry_after)
            if code in _RETRY_CODES:
                return Answer(Verdict.RETRY, reason, status, text, retry_after)
            if code in _DATA_CODES:
                index = _int_or_none(answer.get("invalid-event-number"))
                if index is not None:
                    return Answer(Verdict.PARTIAL, reason, status, text, index=index)
                return Answer(Verdict.BISECT, reason, status, text)
        if status == 400:
            return Answer(Verdict.BISECT, reason, status, text)
        return classify_http(status, text, retry_after)

    async def confirm(self, answer: Answer) -> Answer:
        if answer.ack_id is None:
            return answer
        result = await self.acks.wait(answer.ack_id)
        if result is AckResult.TIMED_OUT:
            return Answer(Verdict.RETRY, "ack_timeout", answer.status, answer.body)
        return answer

    async def _query_acks(self, ids: list[int]) -> dict[str, Any]:
        import orjson

        headers = {k: v for k, v in self.headers.items() if k != "Content-Encoding"}
        _, text, _ = await self.post(self.ack_url, orjson.dumps({"acks": ids}), headers)
        return answer_json(text)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
