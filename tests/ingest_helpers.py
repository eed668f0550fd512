"""Helpers for ingest tests: a source wired to a real memory buffer, test certificates.

Everything listens on 127.0.0.1 with kernel-chosen ports.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
from pathlib import Path
from typing import Any

import orjson
import trustme

from forwarder.buffers.memory import MemoryBuffer
from forwarder.routing import Router, Target
from forwarder.sources import SOURCES
from forwarder.sources.base import Source, SourceContext
from forwarder.telemetry.metrics import Metrics
from tests.helpers import wait_for


class Wired:
    """A source built from a config dict, its events landing in one memory buffer.

    Arguments:
        config: the source's config (``type`` picks the class), addresses with port 0.
        metrics: the metrics the source counts into.
        max_events: buffer capacity in events; small values make the buffer fill up.
        when_full: ``block`` or ``drop_newest``.
    """

    def __init__(
        self,
        config: dict[str, Any],
        metrics: Metrics,
        *,
        max_events: int = 100_000,
        when_full: str = "block",
        name: str = "src",
    ) -> None:
        cls_config, cls_source = SOURCES[config["type"]]
        self.config = cls_config.model_validate(config)
        self.metrics = metrics
        self.name = name
        self.router = Router(metrics)
        self.buffer = MemoryBuffer("sink", max_events=max_events, max_bytes=1 << 30)
        self.router.add_target(name, Target("sink", self.buffer, when_full))
        self.source: Source = cls_source(self.config, SourceContext(name, self.router, metrics))

    async def __aenter__(self) -> Wired:
        await self.source.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.source.stop()

    @property
    def port(self) -> int:
        return self.source.bound[0][1]

    def objects(self) -> list[dict[str, Any]]:
        """Every event object in the buffer, in order."""
        return [orjson.loads(e.raw) for e in self.buffer.unacked()]

    def metas(self) -> list[dict[str, Any] | None]:
        return [e.meta for e in self.buffer.unacked()]

    async def wait_events(self, n: int, *, timeout_secs: float = 5.0) -> list[dict[str, Any]]:
        await wait_for(lambda: self.buffer.depth_events >= n, timeout_secs=timeout_secs)
        return self.objects()

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


class Certs:
    """A test CA with a server certificate for 127.0.0.1/localhost and a client certificate,
    written as PEM files under ``directory``."""

    def __init__(self, directory: Path, *, ca: trustme.CA | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = ca or trustme.CA()
        self.directory = directory
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server.key"
        server.private_key_pem.write_to_path(str(self.key_file))
        server.cert_chain_pems[0].write_to_path(str(self.cert_file))
        for extra in server.cert_chain_pems[1:]:
            extra.write_to_path(str(self.cert_file), append=True)
        client = self.ca.issue_cert("client@example.test")
        self.client_cert = directory / "client.pem"
        self.client_key = directory / "client.key"
        client.private_key_pem.write_to_path(str(self.client_key))
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))

    def server_tls(self, *, mtls: bool = False) -> dict[str, str]:
        tls = {"cert_file": str(self.cert_file), "key_file": str(self.key_file)}
        if mtls:
            tls["client_ca_file"] = str(self.ca_file)
        return tls

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if with_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def raise_open_files(wanted: int) -> None:
    """Lift this process's open-file limit to ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def send_tcp(port: int, data: bytes, *, ssl_context: ssl.SSLContext | None = None) -> None:
    """Connect, send ``data``, close, and wait for the server to close its side."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ssl_context, server_hostname="localhost" if ssl_context else None
    )
    writer.write(data)
    await writer.drain()
    if writer.can_write_eof():
        # The server places what it read, then closes: after this, the events are in.
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
