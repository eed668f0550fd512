"""The policy stage: filter, route, redact, enrich and sample events, a batch at a time.

``Policy.compile(rules)`` once at start-up, then ``policy.apply(events)`` on each batch from
the sources (the global ``policy:``) and ``policy.apply_copy(events)`` for a sink's own
``policy:``, whose changes must not reach the other sinks.
"""

from __future__ import annotations

from forwarder.policy.config import (
    PolicyRuleConfig,
    PolicyRules,
    SinkPolicyRules,
    parse_rules,
    route_targets,
)
from forwarder.policy.engine import Policy, PolicyOutcome

__all__ = [
    "Policy",
    "PolicyOutcome",
    "PolicyRuleConfig",
    "PolicyRules",
    "SinkPolicyRules",
    "parse_rules",
    "route_targets",
]
