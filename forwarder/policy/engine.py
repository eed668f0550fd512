"""The compiled policy: rules in order over a batch of events, in one synchronous pass.

Rules run column-wise: each rule selects, from the events still in play, those its condition
holds for, then acts on all of them in one call. Per event the effect is the rules in order:
``drop`` and ``sample`` end the event's run, ``route`` narrows the set of sinks it may reach
(an empty set drops it), transforms change it. An event whose object changed gets its bytes
re-encoded once, after the last rule, whatever the number of rules that changed it.

Events that come with a view (:mod:`forwarder.policy.view`) are read through it and parsed in
full only when a rule is about to change them; the rest pass with their bytes untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from forwarder.events import Event, parse_object
from forwarder.policy.actions import Redact, Remove, Rename, Sampler, SetFields, Transform
from forwarder.policy.conditions import Selector, compile_selector, condition_paths
from forwarder.policy.config import PolicyRuleConfig
from forwarder.policy.edits import Edits

__all__ = ["Policy", "PolicyOutcome"]


@dataclass(slots=True)
class PolicyOutcome:
    """What a policy made of a batch.

    Arguments:
        kept: the events that survive, in their original order.
        routes: aligned with ``kept``: the sinks each event may reach, None for no restriction.
        dropped: rule name -> events that rule dropped (drop, sample, or a route that left no
            sink); rules that dropped nothing are absent.
    """

    kept: list[Event]
    routes: list[frozenset[str] | None]
    dropped: dict[str, int]


@dataclass(slots=True, frozen=True)
class _Rule:
    name: str
    when: Selector | None
    transform: Transform | None = None
    sinks: frozenset[str] | None = None
    sampler: Sampler | None = None
    # The field paths the rule reads (condition, sample key, the fields it edits).
    reads: frozenset[tuple[str, ...]] = frozenset()


class Policy:
    """Rules compiled once (paths split, regexes built), then applied to whole batches.

    Use :meth:`compile`; ``Policy()`` is the empty policy that keeps everything.
    """

    def __init__(self, rules: Sequence[_Rule] = ()) -> None:
        self._rules = tuple(rules)

    @classmethod
    def compile(cls, rules: Sequence[PolicyRuleConfig], *, hash_key: bytes | None = None) -> Policy:
        """Build from validated rules.

        Arguments:
            rules: in evaluation order; an unnamed rule is called ``rule-<index>``.
            hash_key: HMAC key for ``redact ... with: hash``; None: a random key per process.
        """
        return cls([_compile_rule(i, rule, hash_key) for i, rule in enumerate(rules)])

    def __len__(self) -> int:
        return len(self._rules)

    @property
    def names(self) -> list[str]:
        """Rule names in order."""
        return [rule.name for rule in self._rules]

    @property
    def reads(self) -> frozenset[tuple[str, ...]]:
        """Every field path the rules read: what a view of an event must hold for them."""
        return frozenset().union(*(rule.reads for rule in self._rules))

    @property
    def changes_every_event(self) -> bool:
        """Whether a rule sets fields on every event (whatever the event holds)."""
        return any(rule.when is None and type(rule.transform) is SetFields for rule in self._rules)

    def apply(self, events: list[Event]) -> PolicyOutcome:
        """Run the batch through the rules; changed events are updated in place (their
        ``obj`` and ``raw``). For events owned by this caller alone."""
        return self._run(events, copy=False)

    def apply_copy(self, events: list[Event]) -> PolicyOutcome:
        """As :meth:`apply`, leaving ``events`` untouched: a changed event comes back as a new
        :class:`Event`, an unchanged one as itself. For events other sinks share."""
        return self._run(events, copy=True)

    def _run(self, events: list[Event], *, copy: bool) -> PolicyOutcome:
        rules = self._rules
        if not rules:
            return PolicyOutcome(list(events), [None] * len(events), {})
        objs, partial = _objects(events)
        # The events' bytes hold every string their objects hold until a transform adds
        # text; pattern redaction uses them to clear most events in one scan.
        edits = Edits(objs, [event.raw for event in events], in_place=not copy, partial=partial)
        live = list(range(len(events)))
        routes: dict[int, frozenset[str]] = {}
        dropped: dict[str, int] = {}
        for rule in rules:
            if not live:
                break
            selected = live if rule.when is None else rule.when(objs, live)
            if not selected:
                continue
            if rule.transform is not None:
                rule.transform.apply(edits, selected)
                continue
            if rule.sinks is not None:
                gone = _route(routes, rule.sinks, selected)
            elif rule.sampler is not None:
                keep = rule.sampler.keep
                gone = [i for i in selected if not keep(objs[i])]
            else:
                gone = selected
            if gone:
                dropped[rule.name] = dropped.get(rule.name, 0) + len(gone)
                out = set(gone)
                live = [i for i in live if i not in out]
        kept: list[Event] = []
        for i in live:
            event = events[i]
            changed = i in edits.changed
            if changed or i in edits.spliced:
                if copy:
                    event = Event(
                        event.raw,
                        event.source,
                        event.received,
                        event.meta,
                        None,
                        event.time,
                        event.host,
                    )
                if changed:
                    event.replace_object(objs[i], envelope=i in edits.envelope)
                else:
                    raw = edits.raws[i]
                    assert raw is not None  # a splice leaves the event its bytes
                    event.raw = raw
                    # What the spliced fields' view (a copy when shared) now shows.
                    event.view = objs[i]
            kept.append(event)
        return PolicyOutcome(kept, [routes.get(i) for i in live], dropped)


def _objects(events: list[Event]) -> tuple[list[dict[str, Any]], set[int]]:
    """Per event its object, its view, or else its bytes parsed; and which are views."""
    objs: list[dict[str, Any]] = []
    partial: set[int] = set()
    for i, event in enumerate(events):
        if event.obj is not None:
            objs.append(event.obj)
        elif event.view is not None:
            objs.append(event.view)
            partial.add(i)
        else:
            objs.append(parse_object(event.raw))
    return objs, partial


def _route(
    routes: dict[int, frozenset[str]], sinks: frozenset[str], selected: list[int]
) -> list[int]:
    """Narrow the routes of ``selected`` to ``sinks``; the indexes left with no sink."""
    gone: list[int] = []
    for i in selected:
        route = routes.get(i)
        route = sinks if route is None else route & sinks
        if route:
            routes[i] = route
        else:
            gone.append(i)
    return gone


def _compile_rule(index: int, rule: PolicyRuleConfig, hash_key: bytes | None) -> _Rule:
    name = rule.name or f"rule-{index}"
    when = compile_selector(rule.when) if rule.when is not None else None
    reads = frozenset(condition_paths(rule.when)) if rule.when is not None else frozenset()
    then = rule.then
    if then.drop:
        return _Rule(name, when, reads=reads)
    if then.route is not None:
        return _Rule(name, when, sinks=frozenset(then.route), reads=reads)
    if then.sample is not None:
        key = then.sample.key
        if key is not None:
            reads |= {tuple(key.split("."))}
        return _Rule(name, when, sampler=Sampler(then.sample), reads=reads)
    transform: Transform
    if then.redact is not None:
        transform = Redact(then.redact, hash_key)
    elif then.set_ is not None:
        transform = SetFields(then.set_)
    elif then.rename is not None:
        transform = Rename(then.rename)
    else:
        assert then.remove is not None  # the config model guarantees exactly one action
        transform = Remove(then.remove)
    return _Rule(name, when, transform=transform, reads=reads | transform.paths)
