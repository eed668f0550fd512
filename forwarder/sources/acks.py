"""HEC ingest acknowledgement ids, per channel, as Splunk's indexer acknowledgement hands
them out: ``ackId`` counts from 0 per channel, and ``/ack`` reports an id true once, then
forgets it.

An id is issued only after :meth:`HttpSource.accept` returned, that is once the request's
events are committed in every target buffer (written to the file for a disk buffer), so an
issued id is already true: the ledger only has to remember which ids were issued and not
yet reported. Memory is bounded: the least recently used channels and, within a channel,
the oldest unreported ids are forgotten past the limits (a client asking about a forgotten
id reads false and re-sends, which is at-least-once, as with Splunk itself).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["AckLedger"]


class _Channel:
    __slots__ = ("next_id", "unreported")

    def __init__(self) -> None:
        self.next_id = 0
        self.unreported: dict[int, None] = {}  # insertion-ordered: oldest first


class AckLedger:
    """Ack ids of one HEC listener.

    Arguments:
        max_channels: channels remembered; the least recently used beyond this are dropped.
        max_ids_per_channel: unreported ids remembered per channel; the oldest are dropped.
    """

    def __init__(self, *, max_channels: int = 10_000, max_ids_per_channel: int = 100_000) -> None:
        self.max_channels = max_channels
        self.max_ids_per_channel = max_ids_per_channel
        self._channels: OrderedDict[str, _Channel] = OrderedDict()

    def issue(self, channel: str) -> int:
        """A new id on ``channel`` for a request whose events are committed."""
        state = self._touch(channel)
        ack_id = state.next_id
        state.next_id += 1
        state.unreported[ack_id] = None
        if len(state.unreported) > self.max_ids_per_channel:
            del state.unreported[next(iter(state.unreported))]
        return ack_id

    def query(self, channel: str, ids: list[int]) -> dict[str, bool]:
        """``{"id": status}`` for ``/ack``; an id reported true is forgotten."""
        state = self._channels.get(channel)
        if state is None:
            return {str(i): False for i in ids}
        self._channels.move_to_end(channel)
        answer: dict[str, bool] = {}
        for ack_id in ids:
            answer[str(ack_id)] = state.unreported.pop(ack_id, False) is None
        return answer

    @property
    def channels(self) -> int:
        return len(self._channels)

    def _touch(self, channel: str) -> _Channel:
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
            if len(self._channels) > self.max_channels:
                self._channels.popitem(last=False)
        else:
            self._channels.move_to_end(channel)
        return state
