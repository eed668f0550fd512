"""Batches in flight, out-of-order acks, and the delivered position they add up to.

Batches are read in file order but finish in any order (several requests in flight). The
delivered position only moves over the contiguous prefix of acked batches, so a restart
re-sends a straggler rather than skipping it.
"""

from __future__ import annotations

from itertools import count

from forwarder.buffers.disk.segment import Segment
from forwarder.buffers.disk.state import Position
from forwarder.events import Event


class Ticket:
    """A batch in flight: its place in read order, its size, and where it ends on disk."""

    __slots__ = ("end", "events", "nbytes", "seq")

    def __init__(self, seq: int, events: list[Event], nbytes: int, end: Position) -> None:
        self.seq = seq
        self.events = events
        self.nbytes = nbytes  # record bytes
        self.end = end


class Ledger:
    """What is in flight, and how far delivery has got without a gap."""

    def __init__(self, delivered: Position | None = None) -> None:
        self.delivered = delivered
        self.events = 0  # in flight
        self.nbytes = 0  # in flight, record bytes
        self._inflight: dict[int, Ticket] = {}
        self._acked: dict[int, Ticket] = {}
        self._seqs = count()
        self._next = 0  # oldest batch not yet acked

    def issue(self, events: list[Event], nbytes: int, end: Position) -> Ticket:
        ticket = Ticket(next(self._seqs), events, nbytes, end)
        self._inflight[ticket.seq] = ticket
        self.events += len(events)
        self.nbytes += nbytes
        return ticket

    def ack(self, token: object) -> tuple[bool, bool]:
        """Settle a batch: (it was in flight, the delivered position moved)."""
        if not isinstance(token, Ticket) or self._inflight.pop(token.seq, None) is None:
            return False, False
        self.events -= len(token.events)
        self.nbytes -= token.nbytes
        self._acked[token.seq] = token
        moved = False
        while self._next in self._acked:
            self.delivered = self._acked.pop(self._next).end
            self._next += 1
            moved = True
        return True, moved

    def in_flight(self) -> list[Event]:
        """Events of every batch in flight, oldest batch first."""
        return [event for seq in sorted(self._inflight) for event in self._inflight[seq].events]


def skip_gap(segments: dict[int, Segment], position: Position) -> Position:
    """Move a position at the end of intact records past the damage that follows, so a
    restart does not find and count that damage again."""
    segment = segments.get(position.segment)
    if segment is None:
        return position
    for begin, end in segment.spans:
        if end > position.offset:
            return Position(segment.id, max(begin, position.offset))
    return position


def delivered_segments(
    segments: dict[int, Segment], position: Position, current: Segment | None
) -> list[Segment]:
    """Segments wholly before ``position``, except the one still being written."""
    return [
        s
        for s in segments.values()
        if s is not current
        and (
            s.id < position.segment or (s.id == position.segment and position.offset >= s.last_end)
        )
    ]
