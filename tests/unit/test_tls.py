"""TLS on the tcp, http and syslog listeners (mTLS with ``client_ca_file``, reload of renewed
files) and certificate verification by sinks. Certificates are made at test time (trustme)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from forwarder.sinks.base import Verdict
from forwarder.sinks.http import HttpCollectorSink, HttpConfig
from forwarder.telemetry.metrics import Metrics
from tests.helpers import events, wait_for
from tests.ingest_helpers import Certs, Wired

LISTENERS = {
    "tcp": b'{"user":"alice"}\n',
    "syslog": b"<38>1 2026-01-02T03:04:05Z host app - - - over tls\n",
}


def listener(kind: str, tls: dict[str, str]) -> dict[str, Any]:
    return {"type": kind, "address": "127.0.0.1:0", "tls": tls}


async def send_tls(port: int, data: bytes, ctx: ssl.SSLContext) -> None:
    """Send over TLS; raises when the handshake (or the server's check of us) fails."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    try:
        writer.write(data)
        await writer.drain()
        # With TLS 1.3 a refused client certificate shows on the first read, not the handshake.
        await asyncio.wait_for(reader.read(1), 0.5)
        if reader.at_eof() and not data:
            raise ConnectionResetError("closed by the server")
    except TimeoutError:
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass


@pytest.mark.parametrize("kind", sorted(LISTENERS))
async def test_tls_client_delivers_and_plaintext_is_refused(
    tmp_path: Path, metrics: Metrics, kind: str
) -> None:
    """A TLS client's events arrive; a plaintext client's bytes never become events."""
    certs = Certs(tmp_path)
    async with Wired(listener(kind, certs.server_tls()), metrics) as wired:
        await send_tls(wired.port, LISTENERS[kind], certs.client_context())
        await wired.wait_events(1)
        reader, writer = await asyncio.open_connection("127.0.0.1", wired.port)
        writer.write(LISTENERS[kind] * 3)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up
        writer.close()
        await asyncio.sleep(0.05)
        assert wired.buffer.depth_events == 1


@pytest.mark.parametrize("kind", sorted(LISTENERS))
async def test_mtls_requires_a_client_certificate_from_the_ca(
    tmp_path: Path, metrics: Metrics, kind: str
) -> None:
    """With client_ca_file: no certificate or one from another CA is refused; ours passes."""
    certs = Certs(tmp_path / "ours")
    stranger = Certs(tmp_path / "theirs")
    async with Wired(listener(kind, certs.server_tls(mtls=True)), metrics) as wired:
        without = certs.client_context()
        other_ca = certs.client_context()
        other_ca.load_cert_chain(str(stranger.client_cert), str(stranger.client_key))
        for ctx in (without, other_ca):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await send_tls(wired.port, b"", ctx)
        await send_tls(wired.port, LISTENERS[kind], certs.client_context(with_cert=True))
        await wired.wait_events(1)
        await asyncio.sleep(0.05)
        assert wired.buffer.depth_events == 1


async def test_http_source_over_mtls(tmp_path: Path, metrics: Metrics) -> None:
    """The http source (HEC routes included) serves HTTPS and checks client certificates."""
    certs = Certs(tmp_path)
    config = {**listener("http", certs.server_tls(mtls=True)), "auth_tokens": ["t"]}
    async with Wired(config, metrics) as wired:
        url = f"https://localhost:{wired.port}/services/collector"
        headers = {"Authorization": "Splunk t"}
        body = b'{"event":{"via":"https"}}'
        good = aiohttp.TCPConnector(ssl=certs.client_context(with_cert=True))
        async with (
            aiohttp.ClientSession(connector=good) as session,
            session.post(url, data=body, headers=headers) as resp,
        ):
            assert resp.status == 200
        bare = aiohttp.TCPConnector(ssl=certs.client_context())
        async with aiohttp.ClientSession(connector=bare) as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
        assert wired.objects() == [{"via": "https"}]


async def test_reload_picks_up_renewed_certificate(tmp_path: Path, metrics: Metrics) -> None:
    """reload_tls() (run on SIGHUP) serves renewed files to new connections."""
    old = Certs(tmp_path / "old")
    async with Wired(listener("tcp", old.server_tls()), metrics) as wired:
        renewed = Certs(tmp_path / "new")
        old.cert_file.write_bytes(renewed.cert_file.read_bytes())
        old.key_file.write_bytes(renewed.key_file.read_bytes())
        with pytest.raises(ssl.SSLError):
            await send_tls(wired.port, b'{"n":0}\n', renewed.client_context())
        reload_tls = wired.source.reload_tls  # type: ignore[attr-defined]
        reload_tls()
        await send_tls(wired.port, b'{"n":1}\n', renewed.client_context())
        with pytest.raises(ssl.SSLError):
            await send_tls(wired.port, b'{"n":2}\n', old.client_context())
        await wait_for(lambda: wired.buffer.depth_events == 1)
        assert wired.objects() == [{"n": 1}]


# -- sinks ------------------------------------------------------------------------------


@pytest.fixture
async def https_collector(tmp_path: Path) -> AsyncIterator[tuple[str, Certs, list[bytes]]]:
    """An HTTPS collector on 127.0.0.1 whose certificate is from a CA made for the test; it
    requires client certificates from that CA too."""
    certs = Certs(tmp_path / "collector")
    got: list[bytes] = []

    async def ingest(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/ingest", ingest)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(certs.cert_file), str(certs.key_file))
    ctx.load_verify_locations(cafile=str(certs.ca_file))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://localhost:{port}/ingest", certs, got
    finally:
        await runner.cleanup()


def sink(endpoint: str, tls: dict[str, Any] | None) -> HttpCollectorSink:
    config: dict[str, Any] = {"type": "http", "endpoint": endpoint}
    if tls is not None:
        config["tls"] = tls
    return HttpCollectorSink("out", HttpConfig.model_validate(config))


async def test_sink_verifies_server_certificates_by_default(
    https_collector: tuple[str, Certs, list[bytes]],
) -> None:
    """With no tls key a sink refuses a server certificate it cannot verify."""
    endpoint, _, got = https_collector
    out = sink(endpoint, None)
    await out.start()
    try:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await out.send(events(1))
    finally:
        await out.stop()
    assert got == []


@pytest.mark.parametrize(
    "tls",
    [{"ca_file": "CA"}, {"verify": False}, {"ca_file": "CA", "cert_file": "C", "key_file": "K"}],
    ids=["ca_file", "verify-off", "client-cert"],
)
async def test_sink_tls_options(
    https_collector: tuple[str, Certs, list[bytes]], tls: dict[str, Any]
) -> None:
    """``tls.ca_file`` trusts a private CA, ``verify: false`` skips checks, and a client
    certificate is presented when given."""
    endpoint, certs, got = https_collector
    files = {"CA": certs.ca_file, "C": certs.client_cert, "K": certs.client_key}
    resolved = {k: str(files[v]) if isinstance(v, str) else v for k, v in tls.items()}
    out = sink(endpoint, resolved)
    await out.start()
    try:
        answer = await out.send(events(2))
    finally:
        await out.stop()
    assert answer.verdict is Verdict.OK
    assert len(got) == 1 and got[0].count(b"\n") == 2
