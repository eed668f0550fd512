"""The objects of one batch while rules change them, and the path edits rules make.

Two modes. For the global policy the batch's parsed objects belong to the batch alone, so
edits change them in place: no copies at all. For a sink's policy the objects are shared
with the other sinks, so the first edit of an event copies each container on the way to the
change (copy on write) and later edits of the same event change those copies in place: an
event is copied at most once per container however many rules change it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from forwarder.events import ENVELOPE_FIELDS, parse_object
from forwarder.policy.conditions import MISSING, json_equal, value_at

if TYPE_CHECKING:
    from forwarder.policy.scan import RawScan

__all__ = ["Edits", "Obj"]

Obj = dict[str, Any]


class Edits:
    """A batch's objects and what became of them.

    Arguments:
        objs: the parsed objects, one per event; replaced or changed as rules run.
        raws: per event, JSON bytes holding every string its object holds, or None once a
            change may have added text the bytes lack (pattern redaction then scans it).
        in_place: the objects belong to this batch alone and may be changed directly.
        partial: the events whose ``objs`` entry is a view (:mod:`forwarder.policy.view`):
            read by conditions, parsed in full from ``raws`` before any edit.

    ``scan`` is the search of the batch's bytes that pattern redaction makes once, on its
    first use, and every later redact rule of the batch reuses. ``envelope`` holds the events
    whose top-level time or host fields an edit may have changed: only theirs are read again.
    ``spliced`` holds the events still seen through views whose only edits were new top-level
    fields appended to their bytes (``raws``, and their views, show them).
    """

    __slots__ = ("_owned", "changed", "envelope", "objs", "partial", "raws", "scan", "spliced")

    def __init__(
        self,
        objs: list[Obj],
        raws: list[bytes | None],
        *,
        in_place: bool,
        partial: set[int] | None = None,
    ) -> None:
        self.objs = objs
        self.raws = raws
        self.partial: set[int] = partial or set()
        self.changed: set[int] = set()
        self.envelope: set[int] = set()
        self.spliced: set[int] = set()
        self.scan: RawScan | None = None
        # Event index -> {id: container} of the copies made for it; keeping the containers
        # referenced keeps their ids from being reused while the batch runs.
        self._owned: dict[int, dict[int, Any]] | None = None if in_place else {}

    def full(self, indexes: Iterable[int]) -> None:
        """Parse in full those of ``indexes`` still seen through views: before editing them."""
        partial = self.partial
        if partial:
            objs, raws = self.objs, self.raws
            for i in indexes:
                if i in partial:
                    raw = raws[i]
                    # Only an edit drops an event's bytes, and an edit parses it in full first.
                    assert raw is not None
                    objs[i] = parse_object(raw)
                    partial.discard(i)

    def needing(
        self, selected: list[int], parts: tuple[str, ...], value: Any = MISSING
    ) -> list[int]:
        """``selected`` without the events whose views show that an edit at ``parts`` has
        nothing to do (no value there; with ``value``, that value is there already), the
        others parsed in full. The policies' views hold every path their edits name."""
        partial = self.partial
        if not partial:
            return selected
        objs = self.objs
        # A view holds a key exactly when the event does, and an object on the way to a read
        # path is an object in both; most edits name a field one or two keys deep.
        if value is not MISSING:
            kept = [
                i
                for i in selected
                if i not in partial or not json_equal(value_at(objs[i], parts), value)
            ]
        elif len(parts) == 1:
            key = parts[0]
            kept = [i for i in selected if i not in partial or key in objs[i]]
        elif len(parts) == 2:
            outer, inner = parts
            kept = [
                i
                for i in selected
                if i not in partial or (type(d := objs[i].get(outer)) is dict and inner in d)
            ]
        else:
            kept = [
                i for i in selected if i not in partial or value_at(objs[i], parts) is not MISSING
            ]
        self.full(kept)
        return kept

    @property
    def in_place(self) -> bool:
        """Whether edits change the objects directly (they belong to this batch alone)."""
        return self._owned is None

    def writable(self, i: int, d: Obj) -> Obj:
        """``d`` (a dict inside event ``i``) or a copy of it that edits may change."""
        owned = self._owned
        if owned is None:
            return d
        mine = owned.get(i)
        if mine is None:
            mine = owned[i] = {}
        elif id(d) in mine:
            return d
        copy = dict(d)
        mine[id(copy)] = copy
        return copy

    def _fresh(self, i: int) -> Obj:
        new: Obj = {}
        if self._owned is not None:
            self._owned.setdefault(i, {})[id(new)] = new
        return new

    def _parent(self, i: int, parts: tuple[str, ...]) -> Obj:
        """The writable dict holding ``parts[-1]``, every dict on the way made writable;
        the path up to it must exist and hold dicts, and the event be parsed in full (its
        callers see to it)."""
        self._note_envelope(parts, (i,))
        if self._owned is None:
            node = self.objs[i]
            for part in parts[:-1]:
                node = node[part]
            self.changed.add(i)
            return node
        node = top = self.writable(i, self.objs[i])
        for part in parts[:-1]:
            child = self.writable(i, node[part])
            node[part] = child
            node = child
        self.objs[i] = top
        self.changed.add(i)
        return node

    def set(self, i: int, parts: tuple[str, ...], value: Any) -> bool:
        """Put ``value`` at ``parts``, creating dicts on the way. False, and no change, when
        a value on the way is not a dict or the value is already there."""
        if self.partial:
            self.full((i,))
        node: Any = self.objs[i]
        depth = 0
        for part in parts[:-1]:
            child = node.get(part, MISSING)
            if child is MISSING:
                break
            if type(child) is not dict:
                return False
            node = child
            depth += 1
        else:
            current = node.get(parts[-1], MISSING)
            if current is not MISSING and json_equal(current, value):
                return False
        node = self._parent(i, parts[: depth + 1])
        for part in parts[depth:-1]:
            child = self._fresh(i)
            node[part] = child
            node = child
        node[parts[-1]] = value
        return True

    def pop(self, i: int, parts: tuple[str, ...]) -> Any:
        """Remove the value at ``parts`` and return it; :data:`MISSING` when absent."""
        if self.partial:
            self.full((i,))
        holder = _holder(self.objs[i], parts)
        if holder is None or parts[-1] not in holder:
            return MISSING
        return self._parent(i, parts).pop(parts[-1])

    def update(self, i: int, parts: tuple[str, ...], change: Callable[[Any], Any]) -> None:
        """Replace the value at ``parts`` by ``change(value)``; nothing when absent."""
        if self.partial:
            self.full((i,))
        holder = _holder(self.objs[i], parts)
        if holder is None:
            return
        value = holder.get(parts[-1], MISSING)
        if value is not MISSING:
            self._parent(i, parts)[parts[-1]] = change(value)

    # The *_many methods do the same to many events. In place, the holders of the last key
    # are found with one comprehension and changed directly; on copies, event by event.

    def set_many(
        self,
        selected: list[int],
        parts: tuple[str, ...],
        value: Any,
        *,
        fresh: bool,
        splice: bool = False,
    ) -> list[int]:
        """:meth:`set` on each selected event (a deep copy of ``value`` each when ``fresh``);
        returns the events written. ``splice``: the value adds no text that pattern
        redaction must see, so events seen through views that lack ``parts[0]`` may get it
        appended to their bytes instead of being parsed and re-encoded."""
        written: list[int] = []
        if splice and self.partial and parts[0] not in ENVELOPE_FIELDS:
            written, selected = self._splice(selected, parts, value)
        selected = self.needing(selected, parts, value)
        key = parts[-1]
        self._note_envelope(parts, selected)
        for i, holder in self._holders(selected, parts):
            if holder is not None:
                current = holder.get(key, MISSING)
                if current is not MISSING and json_equal(current, value):
                    continue
                holder[key] = copy.deepcopy(value) if fresh else value
                self.changed.add(i)
                written.append(i)
            elif self.set(i, parts, copy.deepcopy(value) if fresh else value):
                written.append(i)
        return written

    def _splice(
        self, selected: list[int], parts: tuple[str, ...], value: Any
    ) -> tuple[list[int], list[int]]:
        """Append ``parts`` = ``value`` to the bytes of the selected view events lacking
        ``parts[0]``; returns (those events, the others). The object then
        holds what a parse, the set and a re-encode would give, in the same key order (a new
        key goes last), with the rest of its bytes as they came."""
        partial, objs, raws = self.partial, self.objs, self.raws
        top = parts[0]
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        member = orjson.dumps({top: nested})[1:-1]
        written: list[int] = []
        others: list[int] = []
        in_place = self.in_place
        for i in selected:
            view = objs[i]
            raw = raws[i]
            if i not in partial or top in view or raw is None:
                others.append(i)
                continue
            body = raw.rstrip()
            inner = body[:-1].rstrip()
            # A line's bytes are one JSON object: it ends with its closing brace, and the
            # byte before it is its opening brace only when it is empty.
            raws[i] = inner + (member if inner.endswith(b"{") else b"," + member) + b"}"
            if not in_place:
                # The view is shared with the other sinks' policies.
                view = objs[i] = dict(view)
            view[top] = copy.deepcopy(nested) if type(nested) in (dict, list) else nested
            self.spliced.add(i)
            written.append(i)
        return written, others

    def pop_many(self, selected: list[int], parts: tuple[str, ...]) -> None:
        """:meth:`pop` on each selected event."""
        selected = self.needing(selected, parts)
        key = parts[-1]
        self._note_envelope(parts, selected)
        for i, holder in self._holders(selected, parts):
            if holder is None:
                self.pop(i, parts)
            elif key in holder:
                del holder[key]
                self.changed.add(i)

    def update_many(
        self, selected: list[int], parts: tuple[str, ...], change: Callable[[Any], Any]
    ) -> None:
        """:meth:`update` on each selected event."""
        selected = self.needing(selected, parts)
        key = parts[-1]
        self._note_envelope(parts, selected)
        for i, holder in self._holders(selected, parts):
            if holder is None:
                self.update(i, parts, change)
                continue
            value = holder.get(key, MISSING)
            if value is not MISSING:
                holder[key] = change(value)
                self.changed.add(i)

    def _holders(self, selected: list[int], parts: tuple[str, ...]) -> list[tuple[int, Any]]:
        """(event, the dict holding ``parts[-1]`` when it may be changed in place, else None);
        events whose way to it is not all dicts are left out, except absent ones when
        ``parts`` is deep (a set creates them), which come with None."""
        objs = self.objs
        if self._owned is not None:
            return [(i, None) for i in selected]
        if len(parts) == 1:
            return [(i, objs[i]) for i in selected]
        if len(parts) == 2:
            outer = parts[0]
            return [
                (i, d if d is not MISSING else None)
                for i in selected
                if type(d := objs[i].get(outer, MISSING)) is dict or d is MISSING
            ]
        return [(i, _holder(objs[i], parts)) for i in selected]

    def move_many(self, selected: list[int], parts: tuple[str, ...], new: str) -> None:
        """In place only: rename key ``parts[-1]`` to ``new`` in the dict holding it, on each
        selected event that has it; a value ``new`` held is replaced, in its position."""
        assert self._owned is None
        selected = self.needing(selected, parts)
        old = parts[-1]
        self._note_envelope(parts, selected)
        self._note_envelope((*parts[:-1], new), selected)
        changed = self.changed
        for i, holder in self._holders(selected, parts):
            if holder is not None and old in holder:
                holder[new] = holder.pop(old)
                changed.add(i)

    def _note_envelope(self, parts: tuple[str, ...], events: Iterable[int]) -> None:
        """An edit at ``parts`` may change these events' time or host (top-level fields)."""
        if parts[0] in ENVELOPE_FIELDS:
            self.envelope.update(events)

    def replace(self, i: int, obj: Obj) -> None:
        """Event ``i`` is now ``obj`` (built from fresh containers where it differs)."""
        self.partial.discard(i)
        self.objs[i] = obj
        self.changed.add(i)
        self.envelope.add(i)


def settable(obj: Obj, parts: tuple[str, ...]) -> bool:
    """Whether a value can be put at ``parts``: nothing on the way is a non-dict."""
    node: Any = obj
    for part in parts[:-1]:
        node = node.get(part, MISSING)
        if node is MISSING:
            return True
        if type(node) is not dict:
            return False
    return True


def _holder(obj: Obj, parts: tuple[str, ...]) -> Obj | None:
    """The dict that holds ``parts[-1]``, or None when the way is absent or not dicts."""
    node: Any = obj
    for part in parts[:-1]:
        node = node.get(part)
        if type(node) is not dict:
            return None
    return node
