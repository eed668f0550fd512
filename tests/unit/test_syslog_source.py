"""The syslog source: real logger and SysLogHandler clients over TCP and UDP, parsed fields."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import shutil
import socket
from typing import Any

import pytest

from forwarder.config import ConfigError, build
from forwarder.telemetry.metrics import Metrics
from tests.helpers import wait_for
from tests.ingest_helpers import Wired, send_tcp

LOGGER = shutil.which("logger")
needs_logger = pytest.mark.skipif(LOGGER is None, reason="util-linux logger (bsdutils) missing")


def syslog(mode: str = "tcp", **extra: Any) -> dict[str, Any]:
    return {"type": "syslog", "address": "127.0.0.1:0", "mode": mode, **extra}


async def run_logger(port: int, *args: str) -> None:
    assert LOGGER is not None
    proc = await asyncio.create_subprocess_exec(
        LOGGER, "--server", "127.0.0.1", "--port", str(port), *args
    )
    assert await asyncio.wait_for(proc.wait(), 10) == 0


@needs_logger
@pytest.mark.parametrize("octets", [False, True], ids=["lf", "octet-count"])
async def test_logger_rfc5424_over_tcp(metrics: Metrics, octets: bool) -> None:
    """logger --rfc5424 over TCP: header, structured data and message arrive as fields."""
    async with Wired(syslog(), metrics) as wired:
        framing = ["--octet-count"] if octets else []
        await run_logger(
            wired.port,
            "--tcp",
            "--rfc5424",
            *framing,
            "-p",
            "auth.warning",
            "-t",
            "sshd",
            "--id=4242",
            "--msgid",
            "LOGIN",
            "--sd-id",
            "login@32473",
            "--sd-param",
            'user="alice"',
            "--sd-param",
            'ip="10.0.0.7"',
            "session opened",
        )
        [event] = await wired.wait_events(1)
    assert event["facility"] == "auth" and event["facility_code"] == 4
    assert event["severity"] == "warning" and event["severity_code"] == 4
    assert event["syslog_version"] == 1
    assert event["hostname"] == socket.gethostname()
    assert wired.buffer.unacked()[0].host == socket.gethostname()
    assert (event["app_name"], event["procid"], event["msgid"]) == ("sshd", "4242", "LOGIN")
    assert event["structured_data"]["login@32473"] == {"user": "alice", "ip": "10.0.0.7"}
    assert event["message"] == "session opened"
    assert event["timestamp"].endswith("Z")


@needs_logger
@pytest.mark.parametrize("octets", [False, True], ids=["lf", "octet-count"])
async def test_logger_rfc3164_over_tcp(metrics: Metrics, octets: bool) -> None:
    """logger --rfc3164 over TCP: PRI, BSD timestamp, host, tag and pid are parsed."""
    async with Wired(syslog(), metrics) as wired:
        framing = ["--octet-count"] if octets else []
        await run_logger(
            wired.port,
            "--tcp",
            "--rfc3164",
            *framing,
            "-p",
            "local3.err",
            "-t",
            "auditd",
            "--id=77",
            "disk full",
        )
        [event] = await wired.wait_events(1)
    assert (event["facility"], event["facility_code"]) == ("local3", 19)
    assert (event["severity"], event["severity_code"]) == ("err", 3)
    assert "syslog_version" not in event
    assert (event["app_name"], event["procid"]) == ("auditd", "77")
    assert event["message"] == "disk full"
    assert event["timestamp"].endswith("Z")


@needs_logger
@pytest.mark.parametrize("rfc", ["--rfc5424", "--rfc3164"])
async def test_logger_over_udp(metrics: Metrics, rfc: str) -> None:
    """logger over UDP, either RFC: one datagram is one parsed event."""
    async with Wired(syslog("udp"), metrics) as wired:
        await run_logger(wired.port, "--udp", rfc, "-p", "user.notice", "-t", "app", "over udp")
        [event] = await wired.wait_events(1)
    assert (event["facility"], event["severity"]) == ("user", "notice")
    assert event["app_name"] == "app"
    assert event["message"] == "over udp"


@needs_logger
async def test_json_body_is_kept_as_an_object(metrics: Metrics) -> None:
    """A message whose body is a JSON object arrives as an object under ``message``."""
    async with Wired(syslog(), metrics) as wired:
        await run_logger(wired.port, "--tcp", "-t", "audit", '@cee: {"user": "bob", "ok": true}')
        [event] = await wired.wait_events(1)
    assert event["message"] == {"user": "bob", "ok": True}
    assert event["app_name"] == "audit"


@pytest.mark.parametrize("mode", ["tcp", "udp"])
async def test_python_sysloghandler(metrics: Metrics, mode: str) -> None:
    """logging.handlers.SysLogHandler (NUL-terminated over TCP) delivers parsed records."""
    async with Wired(syslog(mode), metrics) as wired:
        kind = socket.SOCK_STREAM if mode == "tcp" else socket.SOCK_DGRAM
        handler = logging.handlers.SysLogHandler(
            ("127.0.0.1", wired.port),
            facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV,
            socktype=kind,
        )
        handler.setFormatter(logging.Formatter("pyapp[%(process)d]: %(message)s"))
        log = logging.getLogger(f"test_sysloghandler_{mode}")
        log.propagate = False
        log.addHandler(handler)
        try:
            # In a thread: the handler's socket calls block, the source runs on this loop.
            await asyncio.to_thread(log.error, "first %s", mode)
            await asyncio.to_thread(log.warning, "second %s", mode)
            got = await wired.wait_events(2)
        finally:
            log.removeHandler(handler)
            handler.close()
    assert [e["message"] for e in got] == [f"first {mode}", f"second {mode}"]
    assert [e["severity"] for e in got] == ["err", "warning"]
    assert {e["facility"] for e in got} == {"authpriv"}
    assert {e["app_name"] for e in got} == {"pyapp"}


async def test_not_syslog_is_wrapped_and_counted(metrics: Metrics) -> None:
    """Text with no <PRI> is kept as ``message`` with a parse-error marker and counted."""
    async with Wired(syslog(), metrics) as wired:
        await send_tcp(wired.port, b"<13>1 - h app - - - fine\nplain text, no PRI\n")
        got = await wired.wait_events(2)
    assert got[0]["message"] == "fine"
    assert got[1]["message"] == "plain text, no PRI"
    assert got[1]["syslog_parse_error"] == "missing or invalid <PRI>"
    reason = {"source": "src", "reason": "invalid_syslog"}
    assert wired.sample("forwarder_ingest_errors_total", **reason) == 1


async def test_not_syslog_dropped_when_configured(metrics: Metrics) -> None:
    """``on_invalid: drop`` leaves unparseable messages out, counted as dropped."""
    async with Wired(syslog(on_invalid="drop"), metrics) as wired:
        await send_tcp(wired.port, b"garbage\n<14>Dec  4 20:08:42 h app: kept\n")
        got = await wired.wait_events(1)
    assert [e["message"] for e in got] == ["kept"]
    dropped = {"component": "src", "reason": "invalid"}
    assert wired.sample("forwarder_events_dropped_total", **dropped) == 1


async def test_udp_datagram_over_the_limit_is_counted(metrics: Metrics) -> None:
    """A datagram larger than ``max_event_bytes`` is dropped and counted; others pass."""
    async with Wired(syslog("udp", max_event_bytes=100), metrics) as wired:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"<13>1 - h app - - - " + b"x" * 200, ("127.0.0.1", wired.port))
            sock.sendto(b"<13>1 - h app - - - small", ("127.0.0.1", wired.port))
        got = await wired.wait_events(1)
        await asyncio.sleep(0.05)
    assert [e["message"] for e in got] == ["small"]
    too_large = {"source": "src", "reason": "too_large"}
    assert wired.sample("forwarder_ingest_errors_total", **too_large) == 1


async def test_udp_full_buffer_drops_and_counts(metrics: Metrics) -> None:
    """UDP cannot make a sender wait: with a full block buffer datagrams are counted drops."""
    async with Wired(syslog("udp"), metrics, max_events=1) as wired:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"<13>1 - h app - - - one", ("127.0.0.1", wired.port))
            await wired.wait_events(1)
            sock.sendto(b"<13>1 - h app - - - two", ("127.0.0.1", wired.port))
        dropped = {"component": "src", "reason": "queue_full"}
        await wait_for(lambda: wired.sample("forwarder_events_dropped_total", **dropped) == 1)
    assert [e["message"] for e in wired.objects()] == ["one"]


def test_tls_with_udp_is_a_config_error(tmp_path: Any) -> None:
    """``tls`` on a UDP syslog source is refused at config time, naming the source."""
    with pytest.raises(ConfigError) as err:
        build(
            {
                "data_dir": str(tmp_path),
                "sources": {"sl": syslog("udp", tls={"cert_file": "/c.pem", "key_file": "/k.pem"})},
                "sinks": {"f": {"type": "file", "path": str(tmp_path / "out")}},
            }
        )
    assert "sources.sl" in str(err.value)
    assert "mode: tcp" in str(err.value)


async def test_stop_without_start_and_twice(metrics: Metrics) -> None:
    """stop() is safe without start() and idempotent, in both modes."""
    for mode in ("tcp", "udp"):
        wired = Wired(syslog(mode), metrics, name=f"s_{mode}")
        await wired.source.stop()
        await wired.source.start()
        assert wired.source.bound
        await wired.source.stop()
        await wired.source.stop()
        assert wired.source.bound == []
