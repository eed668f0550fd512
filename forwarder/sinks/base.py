"""What a sink implements: encode a chunk of events, send it, and classify the answer.

Everything else (batching, retries, splitting, dead letters, metrics) is shared and lives in
:mod:`forwarder.sinks.delivery`. A sink reads its destination's answer exactly once and turns it
into an :class:`Answer`; nothing downstream looks at status codes again.
"""

from __future__ import annotations

import ssl
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from forwarder.events import Event

if TYPE_CHECKING:
    from forwarder.config import SinkConfig, TlsClientConfig


class Verdict(Enum):
    OK = "ok"  # every event delivered
    RETRY = "retry"  # transient: same events again after a backoff
    DOWN = "down"  # destination misconfigured: keep the data, back off, sink marked down
    SPLIT = "split"  # too large: halve and resend; a single event is dead-lettered
    BISECT = "bisect"  # some event is bad, unknown which: halve; a single event is dead-lettered
    PARTIAL = "partial"  # events before ``index`` delivered, ``index`` bad, the rest resent
    # Events before ``index`` delivered; the rest resent as they are, their own answer deciding
    # (HEC indexes the objects before the first it refuses for a configuration error).
    PREFIX = "prefix"


@dataclass(frozen=True, slots=True)
class Answer:
    """A destination's answer, classified once where it is read.

    Arguments:
        verdict: what the shared delivery code does next.
        reason: short label for ``forwarder_retries_total{reason}`` and dead-letter records,
            e.g. ``http_503``, ``timeout``, ``connection``, ``hec_code_6``.
        status: HTTP status, None when no answer arrived.
        body: the destination's answer text (truncated), kept with dead letters.
        retry_after: seconds the destination asked us to wait, if it said.
        index: for PARTIAL, the 0-based index of the rejected event; for PREFIX, how many
            events at the start were delivered.
        ack_id: for OK from a destination with delivery acknowledgements, the id that
            :meth:`Sink.confirm` waits on.
    """

    verdict: Verdict
    reason: str = ""
    status: int | None = None
    body: str = ""
    retry_after: float | None = None
    index: int | None = None
    ack_id: int | None = None


OK = Answer(Verdict.OK, "ok", 200)


def classify_http(status: int, body: str, retry_after: float | None) -> Answer:
    """The generic reading of an HTTP status, shared by sinks without a finer one."""
    reason = f"http_{status}"
    if 200 <= status < 300:
        return Answer(Verdict.OK, reason, status, body)
    if status in (408, 429) or status >= 500:
        return Answer(Verdict.RETRY, reason, status, body, retry_after)
    if status == 413:
        return Answer(Verdict.SPLIT, reason, status, body)
    return Answer(Verdict.DOWN, reason, status, body, retry_after)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime
    from time import time

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None


class Sink(ABC):
    """A destination. Subclasses state the destination's limits at the top of their module.

    Arguments:
        name: the sink's name in the config.
        config: its validated config.
    """

    #: Hard limits of the destination; batching never exceeds them whatever the config says.
    max_batch_events: int | None = None
    max_batch_bytes: int | None = None
    #: Largest single encoded event the destination takes; larger ones are dead-lettered.
    max_event_bytes: int | None = None

    def __init__(self, name: str, config: SinkConfig) -> None:
        self.name = name
        self.config = config
        self.log = structlog.get_logger().bind(component=name)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def healthcheck(self) -> str | None:
        """None when the destination looks healthy, else what is wrong. Never raises."""
        return None

    def event_bytes(self, event: Event) -> int:
        """Approximate encoded size of one event, for batch sizing."""
        return len(event.raw) + 1

    async def confirm(self, answer: Answer) -> Answer:
        """For destinations that acknowledge later (HEC indexer acks): wait for the verdict
        on an OK answer. Runs outside the request timeout. Default: the answer stands."""
        return answer

    @abstractmethod
    async def send(self, events: list[Event]) -> Answer:
        """Send one request holding ``events`` and classify the answer. Network errors and
        timeouts may propagate: the shared code classifies those as transient."""


class HttpSink(Sink):
    """A sink that talks HTTP through one pooled aiohttp session."""

    def __init__(self, name: str, config: SinkConfig) -> None:
        super().__init__(name, config)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        tls: TlsClientConfig | None = getattr(self.config, "tls", None)
        connector = aiohttp.TCPConnector(
            limit=self.config.request.concurrency * 2,
            ssl=client_ssl_context(tls),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.config.request.timeout_secs),
            auto_decompress=True,
        )

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"sink {self.name} is not started")
        return self._session

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], *, method: str = "POST"
    ) -> tuple[int, str, float | None]:
        """Send (POST unless told) and read the whole answer: (status, body text,
        Retry-After seconds)."""
        async with self.session.request(method, url, data=body, headers=headers) as resp:
            text = await resp.text(errors="replace")
            return resp.status, text[:4096], parse_retry_after(resp.headers.get("Retry-After"))


def client_ssl_context(tls: TlsClientConfig | None) -> ssl.SSLContext | bool:
    if tls is None:
        return True
    if not tls.verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    return ctx


def answer_json(body: str) -> dict[str, Any]:
    """The destination's JSON answer, or {} when it is not JSON."""
    import orjson

    try:
        value = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
