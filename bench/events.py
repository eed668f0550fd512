"""Deterministic synthetic audit events for the benchmark.

Each event is one JSON object of about 500 bytes with nested fields, the shape an identity or
API gateway emits. The n-th event of a seed is always the same bytes, and its ``id`` is its
index, so a receiver can tell lost and duplicated events apart without keeping the load.

Only the top-level object has an ``"id"`` key (nested keys are ``uid``, ``session`` ...):
receivers find ids with a bytes regex instead of a JSON parse per event.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import orjson

__all__ = [
    "EncodedLoad",
    "hec_bodies",
    "iter_events",
    "ndjson_bodies",
    "ndjson_parts",
    "stamp",
]

_ACTIONS = (
    "user.login",
    "user.logout",
    "user.password_change",
    "role.grant",
    "role.revoke",
    "secret.read",
    "secret.write",
    "policy.update",
    "token.issue",
    "file.download",
)
_OUTCOMES = ("success", "success", "success", "failure", "denied")
_USERS = tuple(
    f"{first}.{last}"
    for first in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
    for last in ("smith", "jones", "novak", "garcia")
)
_ROLES = (["admin"], ["dev"], ["dev", "oncall"], ["auditor"], ["sre", "admin"], ["viewer"])
_SERVICES = ("auth-api", "billing", "vault-proxy", "console", "scim-sync", "gateway")
_REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-2")
_METHODS = ("GET", "POST", "PUT", "DELETE")
_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15",
    "python-requests/2.31.0",
    "terraform-provider/5.42.0 (+https://www.terraform.io)",
)
_KINDS = ("project", "secret", "policy", "user", "bucket")
# Epoch seconds of the first event; later events advance by a few milliseconds each.
_EPOCH = 1_733_300_000.0


def _event(rng: random.Random, index: int) -> dict[str, object]:
    bits = rng.getrandbits(64)
    kind = _KINDS[bits % 5]
    resource_no = (bits >> 8) & 0xFFFF
    outcome = _OUTCOMES[(bits >> 24) % 5]
    return {
        "id": f"{index:010d}",
        "time": round(_EPOCH + index * 0.003, 3),
        "type": "audit",
        "action": _ACTIONS[(bits >> 28) % 10],
        "outcome": outcome,
        "severity": 5 if outcome == "success" else 3,
        "actor": {
            "user": _USERS[(bits >> 32) % 32],
            "uid": 1000 + ((bits >> 37) & 0x3FF),
            "roles": _ROLES[(bits >> 47) % 6],
            "session": f"{rng.getrandbits(64):016x}",
        },
        "client": {
            "ip": f"10.{(bits >> 16) & 0xFF}.{(bits >> 40) & 0xFF}.{(bits >> 50) & 0xFF}",
            "port": 1024 + ((bits >> 20) & 0xEFFF),
            "user_agent": _AGENTS[(bits >> 58) % 4],
        },
        "target": {
            "kind": kind,
            "resource": f"/api/v1/{kind}s/{resource_no}",
            "tenant": f"t-{(bits >> 44) & 0xFF:04d}",
        },
        "request": {
            "method": _METHODS[(bits >> 54) % 4],
            "status": 200 if outcome == "success" else 403,
            "duration_ms": round(((bits >> 12) & 0xFFF) / 40.0, 2),
        },
        "labels": {
            "env": "prod",
            "region": _REGIONS[(bits >> 60) % 3],
            "service": _SERVICES[(bits >> 36) % 6],
        },
    }


def iter_events(count: int, *, seed: int = 1, first_id: int = 0) -> Iterator[bytes]:
    """Yield ``count`` encoded events (no newline) with ids ``first_id`` onwards.

    Arguments:
        count: number of events.
        seed: the same seed always yields the same bytes.
        first_id: id of the first event; a receiver counts ids to find losses.
    """
    rng = random.Random(seed * 1_000_003 + first_id)
    dumps = orjson.dumps
    for index in range(first_id, first_id + count):
        yield dumps(_event(rng, index))


def stamp(event: bytes, sent_ns: int) -> bytes:
    """The event with a ``"sent_ns"`` field (epoch nanoseconds) for latency runs, placed
    right after ``id`` so that ``id`` stays the first key."""
    after_id = event.index(b",") + 1
    return event[:after_id] + b'"sent_ns":%d,' % sent_ns + event[after_id:]


@dataclass(frozen=True)
class EncodedLoad:
    """A load encoded ahead of time so sending it costs only socket writes.

    Arguments:
        parts: one list of byte blocks per connection or client; each block holds whole
            events.
        events: number of events across all parts.
        payload_bytes: bytes of the events themselves, newlines included, without any
            envelope a protocol adds (the MiB/s figure uses this).
    """

    parts: list[list[bytes]]
    events: int
    payload_bytes: int


def ndjson_parts(
    events: Sequence[bytes], *, parts: int = 1, block_bytes: int = 1 << 20
) -> EncodedLoad:
    """NDJSON for ``parts`` TCP connections: contiguous slices of ``events`` in blocks of
    about ``block_bytes`` (bytes), so a sender makes a few large writes."""
    encoded: list[list[bytes]] = []
    total = 0
    count = len(events)
    for part in range(parts):
        blocks: list[bytes] = []
        lines: list[bytes] = []
        size = 0
        for event in events[count * part // parts : count * (part + 1) // parts]:
            lines.append(event)
            size += len(event) + 1
            if size >= block_bytes:
                blocks.append(b"\n".join(lines) + b"\n")
                total += size
                lines, size = [], 0
        if lines:
            blocks.append(b"\n".join(lines) + b"\n")
            total += size
        encoded.append(blocks)
    return EncodedLoad(parts=encoded, events=count, payload_bytes=total)


def _bodies(
    events: Sequence[bytes], parts: int, batch_events: int, prefix: bytes, suffix: bytes
) -> EncodedLoad:
    bodies = [
        b"".join([prefix + event + suffix for event in events[first : first + batch_events]])
        for first in range(0, len(events), batch_events)
    ]
    payload = sum(len(event) + 1 for event in events)
    # Bodies are dealt round-robin so every client carries the same share.
    encoded = [bodies[part::parts] for part in range(parts)]
    return EncodedLoad(parts=encoded, events=len(events), payload_bytes=payload)


def hec_bodies(events: Sequence[bytes], *, parts: int = 1, batch_events: int = 500) -> EncodedLoad:
    """Splunk HEC request bodies (``{"event":...}`` objects, one per line) of
    ``batch_events`` events each, dealt to ``parts`` clients."""
    return _bodies(events, parts, batch_events, b'{"event":', b"}\n")


def ndjson_bodies(
    events: Sequence[bytes], *, parts: int = 1, batch_events: int = 500
) -> EncodedLoad:
    """NDJSON request bodies for ``POST /v1/events`` of ``batch_events`` events each."""
    return _bodies(events, parts, batch_events, b"", b"\n")
