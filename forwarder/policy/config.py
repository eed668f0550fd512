"""Policy rules as users write them in YAML: conditions (``when``) and one action (``then``).

Every model is frozen and rejects unknown keys. Regexes compile here, at load time, so a bad
one stops start-up instead of surprising the hot path. Errors raised inside a rule carry the
rule's name (``(rule 'redact-secrets')``); :data:`PolicyRules` names unnamed rules
``rule-<index>`` and rejects duplicate names, because drop counts are reported by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from forwarder.policy.redact import PATTERNS, combined_pattern

__all__ = [
    "ActionConfig",
    "ConditionConfig",
    "PolicyRuleConfig",
    "PolicyRules",
    "RedactConfig",
    "SampleConfig",
    "SinkPolicyRules",
    "parse_rules",
    "route_targets",
]

ACTION_KEYS = ("drop", "route", "redact", "set", "rename", "remove", "sample")
_NUMBERED_BACKREF = re.compile(r"(?<!\\)(?:\\\\)*\\[1-9]")
# YAML keys that are Python builtins live under another attribute name.
_ATTRS = {"set": "set_"}


def _check_path(path: str) -> str:
    if not path or any(not part for part in path.split(".")):
        raise ValueError(f"invalid field path {path!r}: use dotted keys like 'actor.ip'")
    return path


def _check_regex(pattern: str) -> str:
    # Compiled inside a group, the way the redaction alternation embeds it, so a pattern
    # that cannot be embedded (a global flag such as a leading "(?i)") fails here.
    try:
        compiled = re.compile(f"(?:{pattern})")
    except re.error as exc:
        raise ValueError(
            f"invalid regex {pattern!r}: {exc} (use scoped flags like '(?i:...)')"
        ) from None
    if compiled.search("") is not None:
        raise ValueError(f"regex {pattern!r} matches the empty string")
    # Group numbers shift once the regex sits in an alternation; names do not.
    if _NUMBERED_BACKREF.search(pattern):
        raise ValueError(f"regex {pattern!r}: use (?P<name>...) and (?P=name), not \\1")
    return pattern


def _check_pattern_name(name: str) -> str:
    if name not in PATTERNS:
        known = ", ".join(PATTERNS)
        raise ValueError(f"unknown pattern {name!r}, expected one of {known}")
    return name


FieldPath = Annotated[str, AfterValidator(_check_path)]
RegexStr = Annotated[str, AfterValidator(_check_regex)]
PatternName = Annotated[str, AfterValidator(_check_pattern_name)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConditionConfig(_Model):
    """A test on one event: ``field`` with one or more operators (all must hold), or exactly
    one combinator: ``all`` / ``any`` (lists of conditions) or ``not`` (one condition).

    Arguments:
        field: dotted path into the event, e.g. ``resource.sensitivity``.
        equals: the value must equal this (``equals: null`` matches an explicit null).
        in: the value must equal one of these.
        regex: the value must be a string that this regex matches (``re.search``).
        exists: true: the path is present; false: it is absent.
        gt, gte, lt, lte: the value must be a number beyond this bound.
    """

    field: FieldPath | None = None
    equals: Any = None
    in_: tuple[Any, ...] | None = Field(None, alias="in", min_length=1)
    regex: RegexStr | None = None
    exists: bool | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    all_: tuple[ConditionConfig, ...] | None = Field(None, alias="all")
    any_: tuple[ConditionConfig, ...] | None = Field(None, alias="any")
    not_: ConditionConfig | None = Field(None, alias="not")

    @property
    def operators(self) -> list[str]:
        """The field operators given, by their YAML names."""
        names = ("equals", "in", "regex", "exists", "gt", "gte", "lt", "lte")
        attrs = ("equals", "in_", "regex", "exists", "gt", "gte", "lt", "lte")
        return [n for n, a in zip(names, attrs, strict=True) if a in self.model_fields_set]

    @model_validator(mode="after")
    def _one_shape(self) -> ConditionConfig:
        combinators = [
            name
            for name, attr in (("all", "all_"), ("any", "any_"), ("not", "not_"))
            if attr in self.model_fields_set
        ]
        operators = self.operators
        if combinators:
            if len(combinators) > 1 or self.field is not None or operators:
                raise ValueError(
                    f"a condition with {combinators[0]!r} takes no other keys; "
                    "nest conditions under all/any instead"
                )
            if self.all_ == () or self.any_ == ():
                raise ValueError(f"{combinators[0]!r} needs at least one condition")
        elif self.field is None:
            raise ValueError("a condition needs 'field' and an operator, or all/any/not")
        elif not operators:
            raise ValueError(
                "a field condition needs an operator: equals, in, regex, exists, gt, gte, lt, lte"
            )
        return self


class RedactConfig(_Model):
    """What to redact and how.

    Arguments:
        fields: dotted paths whose whole value is replaced.
        patterns: built-in patterns found inside every string value of the event.
        regex: user regexes, found like the patterns.
        with: ``mask`` (``"[REDACTED]"``) or ``hash`` (``"sha256:<16 hex>"``, keyed HMAC).
    """

    fields: tuple[FieldPath, ...] = ()
    patterns: tuple[PatternName, ...] = ()
    regex: tuple[RegexStr, ...] = ()
    with_: Literal["mask", "hash"] = Field("mask", alias="with")

    @model_validator(mode="after")
    def _something(self) -> RedactConfig:
        if not (self.fields or self.patterns or self.regex):
            raise ValueError("redact needs at least one of fields, patterns, regex")
        try:
            re.compile(combined_pattern(self.patterns, self.regex))
        except re.error as exc:
            # Each regex compiled on its own; together they clash (a repeated group name).
            raise ValueError(f"regex: these regexes cannot be combined: {exc}") from None
        return self


class SampleConfig(_Model):
    """Keep one event in ``rate``.

    Arguments:
        rate: keep 1 in this many events (1 keeps all).
        key: dotted path whose value decides, the same for every event with that value; without
            it a counter decides.
    """

    rate: int = Field(ge=1)
    key: FieldPath | None = None


class ActionConfig(_Model):
    """Exactly one action; ``then: drop`` in YAML is the short form of ``{drop: true}``."""

    drop: Literal[True] | None = None
    route: tuple[str, ...] | None = Field(None, min_length=1)
    redact: RedactConfig | None = None
    set_: dict[FieldPath, Any] | None = Field(None, alias="set", min_length=1)
    rename: dict[FieldPath, FieldPath] | None = Field(None, min_length=1)
    remove: tuple[FieldPath, ...] | None = Field(None, min_length=1)
    sample: SampleConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        present = [key for key in ACTION_KEYS if key in data]
        if len(present) > 1:
            raise ValueError(
                f"one action per rule, got {' and '.join(present)}: split them into rules"
            )
        if not present:
            got = ", ".join(map(str, data)) or "nothing"
            raise ValueError(f"expected one action ({', '.join(ACTION_KEYS)}), got {got}")
        return data

    @property
    def kind(self) -> str:
        """The action's YAML key."""
        return next(k for k in ACTION_KEYS if getattr(self, _ATTRS.get(k, k)) is not None)


class PolicyRuleConfig(_Model):
    """One rule: when the condition holds (always, without ``when``), do the action.

    Arguments:
        name: shown in drop counts and errors; default ``rule-<index>``.
        when: the condition.
        then: ``drop`` or a mapping with one action key.
    """

    name: str | None = Field(None, min_length=1)
    when: ConditionConfig | None = None
    then: ActionConfig

    @field_validator("then", mode="before")
    @classmethod
    def _short_drop(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value != "drop":
                raise ValueError(
                    f"unknown action {value!r}: 'drop' or a mapping such as {{route: [...]}}"
                )
            return {"drop": True}
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _name_errors(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            name = data.get("name") if isinstance(data, dict) else None
            if not isinstance(name, str) or not name:
                raise
            raise _renamed(exc, lambda _loc: name) from None


def _message(err: Any) -> str:
    """A short lower-case message: pydantic's wording, minus its 'Value error' prefix."""
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


def _renamed(exc: ValidationError, rule_of: Any) -> ValidationError:
    """``exc`` with ``(rule 'name')`` after each message; ``rule_of(loc)`` gives the name."""
    details: list[InitErrorDetails] = []
    for err in exc.errors():
        if err["type"] == "policy_rule":
            details.append(_detail(err, err["ctx"]["message"], err["ctx"]["rule"]))
        else:
            details.append(_detail(err, _message(err), rule_of(err["loc"])))
    return ValidationError.from_exception_data(exc.title, details)


def _detail(err: Any, message: str, rule: str) -> InitErrorDetails:
    error = PydanticCustomError(
        "policy_rule", "{message} (rule '{rule}')", {"message": message, "rule": rule}
    )
    return {"type": error, "loc": err["loc"], "input": err["input"]}


def _rules_validator(*, routes: bool) -> WrapValidator:
    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            rules: tuple[PolicyRuleConfig, ...] = handler(value)
        except ValidationError as exc:
            # Named rules already name themselves; unnamed ones are called by their index.
            raise _renamed(exc, lambda loc: f"rule-{loc[0]}" if loc else "policy") from None
        named: list[PolicyRuleConfig] = []
        problems: list[InitErrorDetails] = []
        seen: set[str] = set()
        for index, rule in enumerate(rules):
            name = rule.name or f"rule-{index}"
            if name in seen:
                problems.append(_problem((index, "name"), name, "duplicate rule name"))
            if not routes and rule.then.route is not None:
                problems.append(
                    _problem(
                        (index, "then", "route"),
                        name,
                        "a sink's policy cannot route; route in the global policy",
                    )
                )
            seen.add(name)
            named.append(rule if rule.name else rule.model_copy(update={"name": name}))
        if problems:
            raise ValidationError.from_exception_data("policy", problems)
        return tuple(named)

    return WrapValidator(validate)


def _problem(loc: tuple[int | str, ...], rule: str, message: str) -> InitErrorDetails:
    return _detail({"loc": loc, "input": None}, message, rule)


PolicyRules = Annotated[tuple[PolicyRuleConfig, ...], _rules_validator(routes=True)]
"""The global ``policy:`` list: every rule named (``rule-<index>`` by default), names unique."""

SinkPolicyRules = Annotated[tuple[PolicyRuleConfig, ...], _rules_validator(routes=False)]
"""A sink's ``policy:`` list: as :data:`PolicyRules`, without ``route`` actions."""


_GLOBAL_RULES: TypeAdapter[tuple[PolicyRuleConfig, ...]] = TypeAdapter(PolicyRules)
_SINK_RULES: TypeAdapter[tuple[PolicyRuleConfig, ...]] = TypeAdapter(SinkPolicyRules)


def parse_rules(data: Any, *, sink: bool = False) -> tuple[PolicyRuleConfig, ...]:
    """Validate a ``policy:`` list as loaded from YAML (a sink's list when ``sink``); raises
    pydantic's ``ValidationError`` with locations relative to the list."""
    return (_SINK_RULES if sink else _GLOBAL_RULES).validate_python(data)


def route_targets(rules: Sequence[PolicyRuleConfig]) -> Iterator[tuple[int, int, str]]:
    """Every sink name a route action names, as ``(rule index, list index, sink)``, so the
    caller can report ``policy.<i>.then.route.<j>: unknown sink`` against its sinks."""
    for i, rule in enumerate(rules):
        for j, sink in enumerate(rule.then.route or ()):
            yield i, j, sink
