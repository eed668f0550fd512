"""parse_syslog against the bytes real senders emit, the RFC corner cases, and fuzzing."""

from __future__ import annotations

import logging
import logging.handlers
import os
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwarder.sources.syslog_parse import FACILITIES, SEVERITIES, parse_syslog

# 2026-12-04 20:08:50 UTC, a few seconds after the captures below were made.
DEC_4_2026 = datetime(2026, 12, 4, 20, 8, 50, tzinfo=UTC).timestamp()

# Captured from util-linux 2.38.1 `logger -n 127.0.0.1 -P PORT -T ...` and Python 3.11's
# SysLogHandler on a local socket.
LOGGER_5424 = (
    b'<37>1 2026-12-04T20:08:42.024054+00:00 vm myapp - ID47 [timeQuality tzKnown="1" '
    b'isSynced="0"][zoo@123 tiger="hungry"] hello world\n'
)
LOGGER_3164 = b"<131>Dec  4 20:08:42 vm myapp[4937]: hello 3164\n"
LOGGER_5424_BARE = b"<13>1 - - myapp - - - bare"
HANDLER_PLAIN = b"<156>plain message\x00"
HANDLER_IDENT = b"<155>myapp: with ident\x00"


def parse(data: bytes, received: float = DEC_4_2026) -> dict[str, object]:
    event, ok = parse_syslog(data, received=received)
    assert ok, event
    return event


def test_logger_rfc5424_message_parses_every_field() -> None:
    """logger --rfc5424 output yields header, both SD elements and the message."""
    assert parse(LOGGER_5424) == {
        "facility": "auth",
        "facility_code": 4,
        "severity": "notice",
        "severity_code": 5,
        "syslog_version": 1,
        "timestamp": "2026-12-04T20:08:42.024054Z",
        "hostname": "vm",
        "app_name": "myapp",
        "msgid": "ID47",
        "structured_data": {
            "timeQuality": {"tzKnown": "1", "isSynced": "0"},
            "zoo@123": {"tiger": "hungry"},
        },
        "message": "hello world",
    }


def test_logger_rfc3164_message_parses_tag_and_pid() -> None:
    """logger --rfc3164 -i output yields host, tag, pid and a UTC timestamp."""
    assert parse(LOGGER_3164) == {
        "facility": "local0",
        "facility_code": 16,
        "severity": "err",
        "severity_code": 3,
        "timestamp": "2026-12-04T20:08:42Z",
        "hostname": "vm",
        "app_name": "myapp",
        "procid": "4937",
        "message": "hello 3164",
    }


def test_nilvalues_are_omitted() -> None:
    """A 5424 header of NILVALUEs leaves those keys out instead of storing '-'."""
    assert parse(LOGGER_5424_BARE) == {
        "facility": "user",
        "facility_code": 1,
        "severity": "notice",
        "severity_code": 5,
        "syslog_version": 1,
        "app_name": "myapp",
        "message": "bare",
    }


def test_rfc5424_without_msg_has_no_message_key() -> None:
    """A 5424 message that ends after its SD carries no message key."""
    event = parse(b'<14>1 2026-01-02T03:04:05Z host app 12 - [a@1 k="v"]')
    assert "message" not in event
    assert event["structured_data"] == {"a@1": {"k": "v"}}
    assert event["procid"] == "12"


def test_python_syslog_handler_without_ident() -> None:
    """SysLogHandler's '<PRI>message\\0' is a message with no host, tag or timestamp."""
    assert parse(HANDLER_PLAIN) == {
        "facility": "local3",
        "facility_code": 19,
        "severity": "warning",
        "severity_code": 4,
        "message": "plain message",
    }


def test_python_syslog_handler_with_ident() -> None:
    """SysLogHandler with ident 'myapp: ' gives app_name and the message after it."""
    event = parse(HANDLER_IDENT)
    assert (event["app_name"], event["message"]) == ("myapp", "with ident")
    assert "hostname" not in event and "timestamp" not in event


def test_json_object_message_is_decoded() -> None:
    """A MSG that is a JSON object arrives as a dict under message."""
    event = parse(b'<110>Dec  4 20:08:42 web1 audit[7]: {"user": "alice", "action": "login"}')
    assert event["message"] == {"user": "alice", "action": "login"}
    assert event["app_name"] == "audit"


def test_cee_cookie_json_message_is_decoded() -> None:
    """The @cee: cookie in front of a JSON object is dropped and the object decoded."""
    event = parse(b'<13>1 - h app - - - @cee: {"event": {"id": 3}}')
    assert event["message"] == {"event": {"id": 3}}


@pytest.mark.parametrize(
    "body",
    ["[1, 2]", "{not json}", '{"a": 1} trailing', "@cee: [1]", '"{}"'],
)
def test_non_object_json_stays_text(body: str) -> None:
    """Anything but one whole JSON object stays the original text."""
    assert parse(b"<13>app: " + body.encode())["message"] == body


def test_structured_data_escapes_and_repeated_params() -> None:
    """SD values unescape \\" \\\\ \\] only; a repeated param name collects a list."""
    data = (
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
        b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
        b'[examplePriority@32473 class="high"]'
        b'[origin ip="192.0.2.1" ip="192.0.2.129" path="C:\\\\x \\"q\\" [a\\]" odd="\\n"]'
        b"[empty@1] An application event log entry"
    )
    event = parse(data)
    assert event["structured_data"] == {
        "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
        "examplePriority@32473": {"class": "high"},
        "origin": {"ip": ["192.0.2.1", "192.0.2.129"], "path": 'C:\\x "q" [a]', "odd": "\\n"},
        "empty@1": {},
    }
    assert event["message"] == "An application event log entry"
    assert event["timestamp"] == "2003-10-11T22:14:15.003Z"
    assert event["facility"] == "local4"


def test_bom_before_msg_is_dropped() -> None:
    """The UTF-8 BOM RFC 5424 allows before MSG is not part of the message."""
    data = b"<34>1 2003-10-11T22:14:15.003Z host su - ID47 - \xef\xbb\xbf'su root' failed"
    assert parse(data)["message"] == "'su root' failed"


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [
        ("2003-08-24T05:14:15.000003-07:00", "2003-08-24T12:14:15.000003Z"),
        ("2026-12-31T23:30:00+05:30", "2026-12-31T18:00:00Z"),
        ("2026-12-31T22:30:00-01:45", "2027-01-01T00:15:00Z"),
        ("1985-04-12T23:20:50.52Z", "1985-04-12T23:20:50.52Z"),
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59Z"),
    ],
)
def test_rfc5424_timestamps_convert_to_utc(stamp: str, utc: str) -> None:
    """Offsets are applied, fractions kept as sent, a leap second read as :59."""
    assert parse(f"<13>1 {stamp} h a - - - m".encode())["timestamp"] == utc


def test_rfc5424_with_invalid_timestamp_keeps_all_text() -> None:
    """A 5424-looking line with an impossible timestamp is kept whole as the message."""
    data = b"<13>1 2026-13-40T25:00:00Z host app - - - text"
    event = parse(data)
    assert event["message"] == data[4:].decode()
    assert "timestamp" not in event and "syslog_version" not in event


def test_rfc5424_with_malformed_sd_keeps_header_and_text() -> None:
    """Broken structured data leaves the header parsed and the rest as the message."""
    event = parse(b'<13>1 - host app - - [unclosed a="1" text')
    assert event["hostname"] == "host"
    assert event["message"] == '[unclosed a="1" text'
    assert "structured_data" not in event


@pytest.mark.parametrize(
    ("data", "utc"),
    [
        (b"<13>Dec 04 20:08:42 h t: m", "2026-12-04T20:08:42Z"),
        (b"<13>Dec  4 20:08:42.123 h t: m", "2026-12-04T20:08:42.123Z"),
        (b"<13>2026-12-04T21:08:42.5+01:00 h t: m", "2026-12-04T20:08:42.5Z"),
        (b"<13>2026-12-04T20:08:42 h t: m", "2026-12-04T20:08:42Z"),
    ],
)
def test_bsd_timestamp_variants(data: bytes, utc: str) -> None:
    """Zero-padded days, fractions and rsyslog's ISO timestamp all read as BSD headers."""
    event = parse(data)
    assert (event["timestamp"], event["hostname"], event["app_name"]) == (utc, "h", "t")


@pytest.mark.parametrize(
    ("data", "received", "utc"),
    [
        (b"<13>Dec 31 23:59:58 h t: m", datetime(2027, 1, 1, 0, 0, 3, tzinfo=UTC), "2026"),
        (b"<13>Jan  1 00:00:01 h t: m", datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "2027"),
        (b"<13>Jul 31 12:00:00 h t: m", datetime(2027, 1, 1, tzinfo=UTC), "2026"),
        (b"<13>Mar  1 12:00:00 h t: m", datetime(2027, 1, 1, tzinfo=UTC), "2027"),
        (b"<13>Feb 29 12:00:00 h t: m", datetime(2028, 5, 1, tzinfo=UTC), "2028"),
    ],
)
def test_bsd_year_is_the_one_nearest_receive_time(
    data: bytes, received: datetime, utc: str
) -> None:
    """A BSD timestamp takes the year that puts it nearest the receive time."""
    stamp = parse(data, received.timestamp())["timestamp"]
    assert isinstance(stamp, str) and stamp.startswith(utc + "-")


def test_feb_29_without_a_nearby_leap_year_is_text() -> None:
    """Feb 29 with no leap year around the receive time is not taken for a timestamp."""
    event = parse(b"<13>Feb 29 12:00:00 h t: m", datetime(2026, 5, 1, tzinfo=UTC).timestamp())
    assert event["message"] == "Feb 29 12:00:00 h t: m"
    assert "timestamp" not in event


def test_bsd_timestamp_in_assumed_zone() -> None:
    """assume_tz sets the zone of BSD timestamps, and the output is still UTC."""
    zone = timezone(timedelta(hours=2))
    event, ok = parse_syslog(b"<13>Dec  4 22:08:42 h t: m", received=DEC_4_2026, assume_tz=zone)
    assert ok and event["timestamp"] == "2026-12-04T20:08:42Z"


TS = "2026-12-04T20:08:42Z"


def test_offsetless_iso_timestamp_in_assumed_zone() -> None:
    """An ISO timestamp without offset is read in assume_tz; one with an offset is not."""
    zone = timezone(timedelta(hours=-3))
    bare, _ = parse_syslog(b"<13>2026-12-31T22:00:00 h t: m", received=DEC_4_2026, assume_tz=zone)
    assert bare["timestamp"] == "2027-01-01T01:00:00Z"
    fixed, _ = parse_syslog(b"<13>2026-12-31T22:00:00Z h t: m", received=DEC_4_2026, assume_tz=zone)
    assert fixed["timestamp"] == "2026-12-31T22:00:00Z"


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        (
            b"<13>Dec  4 20:08:42 myapp[1]: m",
            {"timestamp": TS, "app_name": "myapp", "procid": "1", "message": "m"},
        ),
        (
            b"<13>Dec  4 20:08:42 host just text",
            {"timestamp": TS, "hostname": "host", "message": "just text"},
        ),
        (b"<13>Dec  4 20:08:42 host", {"timestamp": TS, "hostname": "host"}),
        (
            b"<13>Dec  4 20:08:42 fe80::1 sshd: m",
            {"timestamp": TS, "hostname": "fe80::1", "app_name": "sshd", "message": "m"},
        ),
        (
            b"<13>postfix/smtpd[99]: m",
            {"app_name": "postfix/smtpd", "procid": "99", "message": "m"},
        ),
        (b"<13>key:value text", {"message": "key:value text"}),
        (b"<13>Dec  4 20:08:42X rest", {"message": "Dec  4 20:08:42X rest"}),
        (b"<13>Smarch 4 text", {"message": "Smarch 4 text"}),
    ],
)
def test_bsd_host_and_tag_variants(data: bytes, fields: dict[str, str]) -> None:
    """Host and tag are found only where they can be told apart from message text."""
    event = parse(data)
    assert {k: v for k, v in event.items() if not k.startswith(("facility", "severity"))} == (
        fields
    )


@pytest.mark.parametrize("trailer", [b"\n", b"\r\n", b"\x00", b"\n\x00"])
def test_trailing_terminators_are_stripped(trailer: bytes) -> None:
    """A trailing LF, CRLF or NUL is framing, not message."""
    assert parse(b"<13>app: text" + trailer)["message"] == "text"


@pytest.mark.parametrize("code", range(192))
def test_every_pri_maps_to_facility_and_severity(code: int) -> None:
    """PRI = facility * 8 + severity, names as syslog.h and SysLogHandler spell them."""
    event = parse(f"<{code}>m".encode())
    assert event["facility"] == FACILITIES[code // 8]
    assert event["severity"] == SEVERITIES[code % 8]
    assert (event["facility_code"], event["severity_code"]) == (code // 8, code % 8)


def test_facility_names_of_note() -> None:
    """The facilities audit pipelines filter on carry their usual names."""
    assert [FACILITIES[i] for i in (0, 4, 10, 13, 16, 23)] == [
        "kern", "auth", "authpriv", "security", "local0", "local7",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty message"),
        (b"hello", "missing or invalid <PRI>"),
        (b"<192>too high", "missing or invalid <PRI>"),
        (b"<abc>x", "missing or invalid <PRI>"),
        (b"<>x", "missing or invalid <PRI>"),
        (b" <13>leading space", "missing or invalid <PRI>"),
    ],
)
def test_non_syslog_input_is_reported(data: bytes, why: str) -> None:
    """Input without a valid <PRI> is returned as text with the reason, ok False."""
    event, ok = parse_syslog(data, received=DEC_4_2026)
    assert not ok
    assert event == {"message": data.decode(), "syslog_parse_error": why}


def test_invalid_utf8_is_replaced() -> None:
    """Bytes that are not UTF-8 become U+FFFD rather than an error."""
    event, ok = parse_syslog(b"\xff\xfe junk", received=DEC_4_2026)
    assert not ok and event["message"] == "\ufffd\ufffd junk"
    assert parse(b"<13>app: caf\xe9")["message"] == "caf\ufffd"


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    """Any byte string parses to an event with a message or a header field."""
    event, ok = parse_syslog(data, received=DEC_4_2026)
    assert ok == ("syslog_parse_error" not in event)
    assert "facility" in event if ok else isinstance(event["message"], str)


_HEADERS = st.sampled_from(
    [b"<13>", b"<13>1 ", b"<13>1 - h a p m ", b"<13>1 2026-12-04T20:08:42Z h a p m [", b"<13>Dec "]
)


@given(_HEADERS, st.text(alphabet='<>[]"\\= -:0123456789TZabcDe\ufeff\n', max_size=80))
def test_syslog_shaped_text_never_raises(header: bytes, tail: str) -> None:
    """Text that looks like syslog headers, SD and timestamps parses without raising."""
    event, ok = parse_syslog(header + tail.encode(), received=DEC_4_2026)
    assert ok and event["facility"] == "user"


def _capture_udp(command: list[str]) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        port = server.getsockname()[1]
        env = {**os.environ, "TZ": "UTC"}
        subprocess.run([*command, "-n", "127.0.0.1", "-P", str(port), "-d"], check=True, env=env)
        return server.recv(65536)


@pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger not installed")
@pytest.mark.parametrize("rfc", ["--rfc5424", "--rfc3164"])
def test_live_logger_datagram_parses(rfc: str) -> None:
    """What logger sends over UDP right now parses, with a timestamp near the receive time."""
    data = _capture_udp(["logger", rfc, "-t", "audit", "-p", "authpriv.warning", "-i", "ok"])
    received = time.time()
    event, ok = parse_syslog(data, received=received)
    assert ok, event
    assert (event["facility"], event["severity"]) == ("authpriv", "warning")
    assert (event["app_name"], event["message"]) == ("audit", "ok")
    assert event["hostname"] == socket.gethostname()
    assert isinstance(event["procid"], str) and event["procid"].isdigit()
    stamp = datetime.fromisoformat(str(event["timestamp"]))
    assert abs(stamp.timestamp() - received) < 5


def test_live_python_syslog_handler_parses() -> None:
    """A record logged through SysLogHandler to a UDP socket parses with its JSON body."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        handler = logging.handlers.SysLogHandler(
            address=server.getsockname(), facility=logging.handlers.SysLogHandler.LOG_AUTH
        )
        handler.ident = "billing: "
        record = logging.makeLogRecord({"msg": '{"user": "bob", "ok": true}', "levelno": 40})
        record.levelname = "ERROR"
        handler.emit(record)
        handler.close()
        data = server.recv(65536)
    assert parse(data) == {
        "facility": "auth",
        "facility_code": 4,
        "severity": "err",
        "severity_code": 3,
        "app_name": "billing",
        "message": {"user": "bob", "ok": True},
    }
