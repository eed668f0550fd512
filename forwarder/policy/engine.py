"""The compiled policy: rules in order over a batch of events, in one synchronous pass.

Per event, rules run in order. ``drop`` and ``sample`` end the event's run, ``route`` narrows
the set of sinks it may reach (an empty set drops it), transforms change it. An event whose
object changed gets its bytes re-encoded once, after the last rule, whatever the number of
rules that changed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from forwarder.events import Event
from forwarder.policy.actions import Redact, Remove, Rename, Sampler, SetFields, Transform
from forwarder.policy.conditions import Predicate, compile_condition
from forwarder.policy.config import PolicyRuleConfig

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
    when: Predicate | None
    transform: Transform | None = None
    sinks: frozenset[str] | None = None
    sampler: Sampler | None = None


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
        kept: list[Event] = []
        routes: list[frozenset[str] | None] = []
        dropped: dict[str, int] = {}
        for event in events:
            original = event.parsed()
            obj = original
            # The event's bytes hold every string obj holds until a transform adds text;
            # pattern redaction uses them to clear most events in one scan.
            raw: bytes | None = event.raw
            route: frozenset[str] | None = None
            dropped_by: str | None = None
            for rule in rules:
                if rule.when is not None and not rule.when(obj):
                    continue
                transform = rule.transform
                if transform is not None:
                    new = transform.apply(obj, raw)
                    if new is not obj and transform.adds_text:
                        raw = None
                    obj = new
                elif rule.sinks is not None:
                    route = rule.sinks if route is None else route & rule.sinks
                    if not route:
                        dropped_by = rule.name
                        break
                # What is left is drop (no sampler) or sample.
                elif rule.sampler is None or not rule.sampler.keep(obj):
                    dropped_by = rule.name
                    break
            if dropped_by is not None:
                dropped[dropped_by] = dropped.get(dropped_by, 0) + 1
                continue
            if obj is not original:
                if copy:
                    event = Event(b"", event.source, event.received, event.meta)
                event.replace_object(obj)
            kept.append(event)
            routes.append(route)
        return PolicyOutcome(kept, routes, dropped)


def _compile_rule(index: int, rule: PolicyRuleConfig, hash_key: bytes | None) -> _Rule:
    name = rule.name or f"rule-{index}"
    when = compile_condition(rule.when) if rule.when is not None else None
    then = rule.then
    if then.drop:
        return _Rule(name, when)
    if then.route is not None:
        return _Rule(name, when, sinks=frozenset(then.route))
    if then.sample is not None:
        return _Rule(name, when, sampler=Sampler(then.sample))
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
    return _Rule(name, when, transform=transform)
