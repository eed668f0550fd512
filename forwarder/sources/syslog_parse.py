"""Syslog message parsing: RFC 5424, RFC 3164 and the BSD variants seen in the wild.

``parse_syslog`` turns one framed message into the event object the syslog source forwards.
Keys whose value is absent or the NILVALUE ``-`` are left out, so an event carries only what
the sender said:

    facility, facility_code, severity, severity_code   always, from ``<PRI>``
    syslog_version                                     RFC 5424 only
    timestamp                                          RFC 3339, UTC, fraction as sent
    hostname, app_name, procid, msgid                  app_name/procid are the BSD TAG[PID]
    structured_data                                    {sd-id: {param: value}}; a param name
                                                       repeated in one element (RFC 5424 allows
                                                       it, e.g. origin ip=) gives a list
    message                                            str, or dict (see below)

When MSG is a JSON object, optionally behind the CEE cookie ``@cee:``, ``message`` holds the
decoded dict rather than its text: audit producers log JSON over syslog, and the SIEM should
index its fields. The parser does not merge it into the top level, so syslog header fields
and the producer's own fields can never overwrite each other; the caller decides.

BSD timestamps carry neither year nor zone. The zone is ``assume_tz`` (UTC unless the caller
knows better); the year is the one that puts the timestamp nearest to the receive time, so a
``Dec 31 23:59:59`` received on 1 January lands in the old year (a ``Feb 29`` with no leap
year within a year of it is not a timestamp). A leap second (``:60``) is read as ``:59``.

BSD headers are ambiguous, and the reading follows rsyslog's: after a timestamp the first
word is the host; a word followed by ``: `` (optionally ``[pid]``) is the tag, which is how
``SysLogHandler``'s ident and glibc's ``syslog(3)`` look; without a timestamp there is no host.

Input that has no valid ``<PRI>`` is parsed as neither RFC: the result is the text (invalid
UTF-8 replaced) with ``syslog_parse_error`` saying why, and ``ok`` is False. Anything after a
valid ``<PRI>`` parses, as RFC 3164 at worst: text that fits no header field, including a
5424 line with an impossible timestamp or broken structured data, stays in ``message``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any

import orjson

__all__ = ["FACILITIES", "SEVERITIES", "parse_syslog"]

# Names as Python's logging.handlers.SysLogHandler and rsyslog spell them; codes 12-15 are
# the RFC 5424 additions that glibc never named.
FACILITIES: tuple[str, ...] = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
    "uucp", "cron", "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip
SEVERITIES: tuple[str, ...] = (
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
)  # fmt: skip

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(60))
_TRAILER = b"\r\n\x00"
_BOM = "\ufeff"
# Past this distance from the receive time the current year may not be the nearest one.
_SAFE_YEAR_DISTANCE_SECS = 150 * 86400

_PRI = re.compile(r"<(\d{1,3})>")
_RFC5424_HEADER = re.compile(r"([1-9]\d{0,2}) (\S+) (\S+) (\S+) (\S+) (\S+)(?: |$)")
_ISO = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)?")
_BSD = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)(\.\d{1,9})?")
# TAG[PID]: with the colon followed by a space or the end, so that an IPv6 hostname or a
# "key:value" message is not taken for a tag.
_TAG = re.compile(r"([^\s\[\]:]{1,64})(?:\[([^\s\[\]]{1,128})\])?:(?: |$)")
_SD_NAME = r'[^\s=\]"]+'
_SD_VALUE = r'[^"\\]*(?:\\.[^"\\]*)*'
_SD_ELEMENT = re.compile(rf'\[({_SD_NAME})((?: {_SD_NAME}="{_SD_VALUE}")*)\]', re.DOTALL)
_SD_PARAM = re.compile(rf' ({_SD_NAME})="({_SD_VALUE})"', re.DOTALL)
_SD_ESCAPE = re.compile(r'\\(["\\\]])')


def parse_syslog(
    data: bytes, *, received: float, assume_tz: tzinfo = UTC
) -> tuple[dict[str, Any], bool]:
    """Parse one syslog message; returns the event object and whether it was syslog at all.

    Arguments:
        data: one message as framed, a trailing CR, LF or NUL allowed.
        received: receive time, epoch seconds; picks the year of a BSD timestamp.
        assume_tz: zone of timestamps that carry no offset (BSD ones).
    """
    text = data.rstrip(_TRAILER).decode("utf-8", "replace")
    pri = _PRI.match(text)
    if pri is None or int(pri.group(1)) > 191:
        why = "empty message" if not text else "missing or invalid <PRI>"
        return {"message": text, "syslog_parse_error": why}, False
    code = int(pri.group(1))
    event: dict[str, Any] = {
        "facility": FACILITIES[code >> 3],
        "facility_code": code >> 3,
        "severity": SEVERITIES[code & 7],
        "severity_code": code & 7,
    }
    start = pri.end()
    if not _parse_5424(text, start, event):
        _parse_3164(text, start, event, received, assume_tz)
    return event, True


def _parse_5424(text: str, start: int, event: dict[str, Any]) -> bool:
    header = _RFC5424_HEADER.match(text, start)
    if header is None:
        return False
    version, stamp, hostname, app_name, procid, msgid = header.groups()
    utc: str | None = None
    if stamp != "-":
        iso = _ISO.fullmatch(stamp)
        utc = _iso_to_utc(iso, UTC) if iso is not None else None
        if utc is None:
            # Not a 5424 header after all; the BSD reading keeps every byte as message.
            return False
    event["syslog_version"] = int(version)
    if utc is not None:
        event["timestamp"] = utc
    for key, value in (
        ("hostname", hostname),
        ("app_name", app_name),
        ("procid", procid),
        ("msgid", msgid),
    ):
        if value != "-":
            event[key] = value
    rest = text[header.end() :]
    if not rest:
        return True
    if rest[0] == "-" and (len(rest) == 1 or rest[1] == " "):
        message = rest[2:]
    else:
        sd, message = _parse_structured_data(rest)
        if sd:
            event["structured_data"] = sd
    _set_message(event, message)
    return True


def _parse_structured_data(rest: str) -> tuple[dict[str, dict[str, Any]], str]:
    """Split SD elements from MSG; malformed SD is returned as part of MSG, unparsed."""
    sd: dict[str, dict[str, Any]] = {}
    pos = 0
    while pos < len(rest) and rest[pos] == "[":
        element = _SD_ELEMENT.match(rest, pos)
        if element is None:
            return {}, rest
        params = sd.setdefault(element.group(1), {})
        for name, raw in _SD_PARAM.findall(element.group(2)):
            value = _SD_ESCAPE.sub(r"\1", raw) if "\\" in raw else raw
            if name not in params:
                params[name] = value
            elif isinstance(params[name], list):
                params[name].append(value)
            else:
                params[name] = [params[name], value]
        pos = element.end()
    if pos == len(rest):
        return sd, ""
    if pos == 0 or rest[pos] != " ":
        return {}, rest
    return sd, rest[pos + 1 :]


def _parse_3164(
    text: str, start: int, event: dict[str, Any], received: float, assume_tz: tzinfo
) -> None:
    stamp_end, utc = _leading_timestamp(text, start, received, assume_tz)
    stamped = utc is not None
    if utc is not None:
        event["timestamp"] = utc
        start = stamp_end + 1
    tag = _TAG.match(text, start)
    if tag is None and stamped:
        # Without a timestamp a leading word is message text; after one, it is the host.
        space = text.find(" ", start)
        if space > start:
            event["hostname"] = text[start:space]
            start = space + 1
            tag = _TAG.match(text, start)
        elif space < 0 and start < len(text):
            event["hostname"] = text[start:]
            start = len(text)
    if tag is not None:
        event["app_name"] = tag.group(1)
        if tag.group(2) is not None:
            event["procid"] = tag.group(2)
        start = tag.end()
    _set_message(event, text[start:])


def _leading_timestamp(
    text: str, start: int, received: float, assume_tz: tzinfo
) -> tuple[int, str | None]:
    """A BSD or ISO timestamp at ``start``: where it ends and its UTC form, or (start, None)."""
    utc: str | None = None
    end = start
    bsd = _BSD.match(text, start)
    if bsd is not None:
        if bsd.group(1) in _MONTHS:
            utc, end = _bsd_to_utc(bsd, received, assume_tz), bsd.end()
    else:
        iso = _ISO.match(text, start)
        if iso is not None:
            utc, end = _iso_to_utc(iso, assume_tz), iso.end()
    # A timestamp glued to more text was not a timestamp: the text stays whole.
    if utc is None or (end < len(text) and text[end] != " "):
        return start, None
    return end, utc


def _set_message(event: dict[str, Any], message: str) -> None:
    if message.startswith(_BOM):
        message = message[1:]
    if not message:
        return
    body = message.strip()
    if body.startswith("@cee:"):
        body = body[5:].lstrip()
    if body.startswith("{") and body.endswith("}"):
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            event["message"] = value
            return
    event["message"] = message


# Calendar arithmetic by hand, with the per-day parts cached: datetime objects and padded
# formatting cost more than the rest of a parse together, and a stream's timestamps share a
# handful of dates.


def _iso_to_utc(match: re.Match[str], assume_tz: tzinfo) -> str | None:
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    days = _days(int(year), int(month), int(day))
    secs = _seconds(int(hour), int(minute), int(second))
    if days is None or secs is None:
        return None
    if offset in ("Z", "z", "+00:00", "-00:00") or (offset is None and assume_tz is UTC):
        return _format(days * 86400 + secs, fraction)
    if offset is None:
        shift = _zone_offset(assume_tz, days * 86400 + secs)
    else:
        shift = int(offset[1:3]) * 3600 + int(offset[4:6]) * 60
        shift = shift if offset[0] == "+" else -shift
    return _format(days * 86400 + secs - shift, fraction)


def _bsd_to_utc(match: re.Match[str], received: float, assume_tz: tzinfo) -> str | None:
    month_name, day, hour, minute, second, fraction = match.groups()
    secs = _seconds(int(hour), int(minute), int(second))
    if secs is None:
        return None
    month, day_of_month = _MONTHS[month_name], int(day)
    received_year = _civil_date(int(received // 86400))[0]
    best: int | None = None
    # The receive year first: it is the answer unless the message is months away from now.
    for year in (received_year, received_year - 1, received_year + 1):
        days = _days(year, month, day_of_month)
        if days is None:
            continue
        epoch = days * 86400 + secs
        if assume_tz is not UTC:
            epoch -= _zone_offset(assume_tz, epoch)
        if best is None or abs(epoch - received) < abs(best - received):
            best = epoch
        if abs(best - received) < _SAFE_YEAR_DISTANCE_SECS:
            break
    return None if best is None else _format(best, fraction)


def _seconds(hour: int, minute: int, second: int) -> int | None:
    """Seconds into the day, a leap second read as :59; None if not a time of day."""
    if hour > 23 or minute > 59 or second > 60:
        return None
    return hour * 3600 + minute * 60 + min(second, 59)


@lru_cache(maxsize=512)
def _days(year: int, month: int, day: int) -> int | None:
    """Days from 1970-01-01 to a real date (proleptic Gregorian), or None."""
    if not (1 <= month <= 12 and 1 <= year <= 9999):
        return None
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= (29 if month == 2 and leap else _MONTH_DAYS[month]):
        return None
    # days_from_civil, H. Hinnant's algorithm.
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


@lru_cache(maxsize=512)
def _civil_date(days: int) -> tuple[int, str]:
    """The year and the "YYYY-MM-DD" of a day number; civil_from_days, inverse of _days."""
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + (3 if shifted_month < 10 else -9)
    year = year_of_era + era * 400 + (month <= 2)
    return year, f"{year:04d}-{month:02d}-{day:02d}"


def _zone_offset(zone: tzinfo, local_epoch: int) -> int:
    """UTC offset in seconds of ``zone`` at a local wall-clock time given as epoch."""
    wall = datetime(1970, 1, 1) + timedelta(seconds=local_epoch)
    offset = zone.utcoffset(wall)
    return int(offset.total_seconds()) if offset is not None else 0


def _format(epoch: int, fraction: str | None) -> str:
    days, secs = divmod(epoch, 86400)
    return (
        f"{_civil_date(days)[1]}T{_TWO_DIGITS[secs // 3600]}:{_TWO_DIGITS[secs // 60 % 60]}"
        f":{_TWO_DIGITS[secs % 60]}{fraction or ''}Z"
    )
