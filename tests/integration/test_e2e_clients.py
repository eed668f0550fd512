"""Clients nobody here wrote, through a real forwarder process, to a fake Splunk HEC:
the splunk-hec-handler library, plain HTTP, util-linux logger, Python's SysLogHandler."""

from __future__ import annotations

import asyncio
import gzip
import logging
import logging.handlers
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from splunk_hec_handler import SplunkHecHandler

from tests.fakes.hec import FakeHec
from tests.helpers import DaemonProcess
from tests.ingest_helpers import send_tcp

INGEST_TOKEN = "a1b2c3d4-0000-4000-8000-00000000abcd"
LOGGER = shutil.which("logger")


class Pipeline:
    """forwarder with HEC, syslog TCP and syslog UDP sources, one splunk_hec sink."""

    def __init__(self, daemon: DaemonProcess, hec: FakeHec) -> None:
        self.daemon = daemon
        self.hec = hec

    async def envelopes(self, n: int) -> list[dict[str, Any]]:
        await self.hec.wait_until(lambda: len(self.hec.accepted) >= n, timeout_secs=10)
        return self.hec.accepted


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[Pipeline]:
    async with FakeHec() as hec:
        daemon = DaemonProcess(
            tmp_path,
            {
                # One process: these tests are about clients, not about workers sharing ports.
                "workers": 1,
                "sources": {
                    "hec": {
                        "type": "http",
                        "address": "127.0.0.1:0",
                        "auth_tokens": [INGEST_TOKEN],
                    },
                    "syslog_tcp": {"type": "syslog", "address": "127.0.0.1:0", "mode": "tcp"},
                    "syslog_udp": {"type": "syslog", "address": "127.0.0.1:0", "mode": "udp"},
                },
                "sinks": {
                    "splunk": {
                        "type": "splunk_hec",
                        "endpoint": hec.url,
                        "token": "00000000-0000-0000-0000-000000000001",
                        "source": "forwarder",
                        "sourcetype": "_json",
                        "index": "audit",
                        "batch": {"timeout_secs": 0.05},
                    }
                },
            },
        )
        try:
            await daemon.start()
            yield Pipeline(daemon, hec)
        finally:
            await daemon.close()


async def test_splunk_hec_handler_library(pipeline: Pipeline) -> None:
    """splunk-hec-handler's records arrive with their host, source, sourcetype, index, time."""
    port = pipeline.daemon.port("hec")
    handler = SplunkHecHandler(
        "127.0.0.1",
        INGEST_TOKEN,
        port=port,
        proto="http",
        source="billing",
        sourcetype="app:json",
        index="payments",
        hostname="app-host-1",
    )
    log = logging.getLogger("test_splunk_hec_handler_library")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        before = time.time()
        await asyncio.to_thread(log.warning, {"user": "alice", "action": "refund"})
        await asyncio.to_thread(log.info, "plain text line")
    finally:
        log.removeHandler(handler)
        handler.close()
    got = await pipeline.envelopes(2)
    assert [e["event"] for e in got] == [
        {"log_level": "WARNING", "user": "alice", "action": "refund"},
        {"log_level": "INFO", "message": "plain text line"},
    ]
    for envelope in got:
        assert envelope["host"] == "app-host-1"
        assert (envelope["source"], envelope["sourcetype"]) == ("billing", "app:json")
        assert envelope["index"] == "payments"
        assert before - 1 <= envelope["time"] <= time.time()


async def test_plain_http_envelopes_and_config_fills_gaps(pipeline: Pipeline) -> None:
    """Raw HTTP with gzip: the client's metadata wins, the sink's config fills what is missing."""
    body = b"".join(
        orjson.dumps(o)
        for o in (
            {
                "time": 1733300000.25,
                "host": "db-1",
                "index": "security",
                "fields": {"region": "eu"},
                "event": {"query": "DROP TABLE"},
            },
            {"event": "bare string"},
        )
    )
    url = f"http://127.0.0.1:{pipeline.daemon.port('hec')}/services/collector/event"
    headers = {"Authorization": f"Splunk {INGEST_TOKEN}", "Content-Encoding": "gzip"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=gzip.compress(body), headers=headers) as resp,
    ):
        assert resp.status == 200
        assert await resp.json() == {"text": "Success", "code": 0}
    first, second = await pipeline.envelopes(2)
    assert first == {
        "time": 1733300000.25,
        "host": "db-1",
        "source": "forwarder",
        "sourcetype": "_json",
        "index": "security",
        "fields": {"region": "eu"},
        "event": {"query": "DROP TABLE"},
    }
    assert second["event"] == {"message": "bare string"}
    assert (second["index"], second["source"]) == ("audit", "forwarder")


@pytest.mark.skipif(LOGGER is None, reason="util-linux logger (bsdutils) missing")
@pytest.mark.parametrize(
    ("transport", "args"),
    [
        ("tcp", ["--tcp", "--rfc5424"]),
        ("tcp", ["--tcp", "--rfc5424", "--octet-count"]),
        ("tcp", ["--tcp", "--rfc3164"]),
        ("tcp", ["--tcp", "--rfc3164", "--octet-count"]),
        ("udp", ["--udp", "--rfc5424"]),
        ("udp", ["--udp", "--rfc3164"]),
    ],
    ids=["5424-lf", "5424-octets", "3164-lf", "3164-octets", "5424-udp", "3164-udp"],
)
async def test_logger(pipeline: Pipeline, transport: str, args: list[str]) -> None:
    """util-linux logger over TCP and UDP, both RFCs, both framings: parsed fields arrive."""
    assert LOGGER is not None
    port = pipeline.daemon.port(f"syslog_{transport}")
    proc = await asyncio.create_subprocess_exec(
        LOGGER,
        *args,
        "--server",
        "127.0.0.1",
        "--port",
        str(port),
        "-p",
        "authpriv.notice",
        "-t",
        "sudo",
        "--id=99",
        "alice : TTY=pts/0 ; COMMAND=/bin/ls",
    )
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    [envelope] = await pipeline.envelopes(1)
    event = envelope["event"]
    assert (event["facility"], event["facility_code"]) == ("authpriv", 10)
    assert (event["severity"], event["severity_code"]) == ("notice", 5)
    assert (event["app_name"], event["procid"]) == ("sudo", "99")
    assert event["hostname"] == socket.gethostname()
    assert event["message"] == "alice : TTY=pts/0 ; COMMAND=/bin/ls"
    assert abs(envelope["time"] - time.time()) < 120
    assert (envelope["source"], envelope["index"]) == ("forwarder", "audit")
    assert envelope["host"] == socket.gethostname()


async def test_python_sysloghandler(pipeline: Pipeline) -> None:
    """Python's SysLogHandler over TCP: facility, severity, tag and message arrive."""
    handler = logging.handlers.SysLogHandler(
        ("127.0.0.1", pipeline.daemon.port("syslog_tcp")),
        facility=logging.handlers.SysLogHandler.LOG_LOCAL4,
        socktype=socket.SOCK_STREAM,
    )
    handler.setFormatter(logging.Formatter("audit-svc: %(message)s"))
    log = logging.getLogger("test_e2e_python_sysloghandler")
    log.propagate = False
    log.addHandler(handler)
    try:
        await asyncio.to_thread(log.critical, '{"user": "bob", "action": "delete"}')
    finally:
        log.removeHandler(handler)
        handler.close()
    [envelope] = await pipeline.envelopes(1)
    event = envelope["event"]
    assert (event["facility"], event["severity"]) == ("local4", "crit")
    assert event["app_name"] == "audit-svc"
    assert event["message"] == {"user": "bob", "action": "delete"}


async def test_flood_without_newline_keeps_memory_bounded(pipeline: Pipeline) -> None:
    """100 MB without a newline on syslog TCP: RSS stays bounded, other clients deliver."""
    port = pipeline.daemon.port("syslog_tcp")
    before = pipeline.daemon.rss_kib()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = b"<13>" + b"z" * ((1 << 20) - 4)
    peak = before
    for i in range(100):
        writer.write(chunk)
        await writer.drain()
        if i % 10 == 0:
            peak = max(peak, pipeline.daemon.rss_kib())
            await send_tcp(port, f"<14>1 - h app - - - beside the flood {i}\n".encode())
    writer.close()
    envelopes = await pipeline.envelopes(10)
    assert len([e for e in envelopes if "beside the flood" in str(e["event"]["message"])]) == 10
    # max_event_bytes is 1 MiB: the flood may cost a few buffers of that, never 100 MB.
    assert peak - before < 40 * 1024, f"RSS grew {peak - before} KiB"
