"""Views: an event's fields that policies read, decoded at ingest instead of the whole object.

A policy that only tests a few fields of most events (drop this action, route that kind,
redact a field few events have) does not need each event as a dict. A view is a dict of just
the fields the policies read, built by msgspec in the same pass that validates the line, so
an event no rule changes is never parsed in full nor re-encoded: it travels as the bytes it
came with. The engine parses an event in full only when a rule is about to change it
(:meth:`forwarder.policy.edits.Edits.full`).

A view holds, for every path read, exactly what the full object holds there: every object
on the way to a read path is decoded as an object with only the keys read below it, and a
path read whole keeps its whole value. A line where an object on the way is something else
(``"actor": "bob"`` when ``actor.user`` is read) does not fit; ingest parses that event in
full instead. The time and host fields are always part of a view: ingest reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from itertools import count
from typing import TYPE_CHECKING, Any, TypedDict

import msgspec

from forwarder.events import ENVELOPE_FIELDS

if TYPE_CHECKING:
    from forwarder.policy.engine import Policy

__all__ = ["ViewDecoder", "decoder_for", "view_decoder"]

Path = tuple[str, ...]
# key -> the keys read below it, or None when its whole value is read.
_Tree = dict[str, "_Tree | None"]
_names = count()


class ViewDecoder:
    """Decodes a line into the view of ``paths`` (and the envelope fields).

    Arguments:
        paths: the field paths the policies read.

    ``decode`` raises msgspec's ``ValidationError`` for valid JSON the view cannot hold (not
    an object, or a non-object on the way to a read path) and ``DecodeError`` for the rest.
    """

    def __init__(self, paths: frozenset[Path]) -> None:
        self.paths = paths
        tree: _Tree = {}
        for path in paths | {(name,) for name in ENVELOPE_FIELDS}:
            _insert(tree, path)
        self.decode: Callable[[bytes], dict[str, Any]] = msgspec.json.Decoder(
            _typed_dict(tree)
        ).decode

    def covers(self, paths: Iterable[Path]) -> bool:
        """Whether views from this decoder hold every one of ``paths``."""
        return all(_covered(self.paths, path) for path in paths)


def decoder_for(policies: Iterable[Policy]) -> ViewDecoder | None:
    """The decoder for events these policies will read, or None when one of them changes
    every event: each is then parsed in full anyway, and a view first would add its cost."""
    policies = list(policies)
    if not policies or any(policy.changes_every_event for policy in policies):
        return None
    return view_decoder(frozenset().union(*(policy.reads for policy in policies)))


@lru_cache(maxsize=16)
def view_decoder(paths: frozenset[Path]) -> ViewDecoder:
    """The decoder for ``paths``, built once per set (a reload usually keeps the set)."""
    return ViewDecoder(paths)


def _insert(tree: _Tree, path: Path) -> None:
    # In any order of insertion a path read whole ends up a leaf, holding all below it.
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if child is None:
            return  # an ancestor is read whole: it holds this path already
        node = child
    node[path[-1]] = None


def _covered(paths: frozenset[Path], path: Path) -> bool:
    return any(path[:n] in paths for n in range(1, len(path) + 1)) or (
        len(path) == 1 and path[0] in ENVELOPE_FIELDS
    )


def _typed_dict(tree: _Tree) -> Any:
    # total=False: a key the line lacks is absent from the view, as from the full object.
    fields = {key: Any if sub is None else _typed_dict(sub) for key, sub in tree.items()}
    return TypedDict(f"View{next(_names)}", fields, total=False)  # type: ignore[operator]
