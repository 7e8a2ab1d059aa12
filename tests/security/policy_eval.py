"""Render a resource policy of template.yaml for one deployment, and evaluate its Deny statements for a request.

Only what our resource policies use, as IAM's policy-evaluation logic defines it: a request is denied when any
Deny statement matches its principal, action and resource and every one of its condition operators holds
(operators are ANDed; a key's values are ORed, negated operators hold when none match). Action and resource
patterns take `*` and `?`; ARN operators compare like StringLike. Nothing here grants: identity policies are
checked by the template tests, and moto does not enforce resource policies.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_VARIABLE = re.compile(r"\$\{([A-Za-z0-9:._]+)\}")


@dataclass
class Deployment:
    """Concrete values for the template's references: parameters, pseudo parameters, GetAtt and conditions."""

    values: dict[str, Any]
    conditions: dict[str, bool] = field(default_factory=dict)

    def render(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self.render(item) for item in value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return _NO_VALUE if value["Ref"] == "AWS::NoValue" else self.values[value["Ref"]]
        if set(value) == {"Fn::GetAtt"}:
            return self.values[".".join(value["Fn::GetAtt"])]
        if set(value) == {"Fn::Sub"}:
            sub = value["Fn::Sub"]
            text, local = (
                (sub, {}) if isinstance(sub, str) else (sub[0], {k: self.render(v) for k, v in sub[1].items()})
            )
            return _VARIABLE.sub(lambda m: str(local.get(m.group(1), self.values.get(m.group(1)))), text)
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return self.render(when_true if self.conditions[name] else when_false)
        rendered = {key: self.render(item) for key, item in value.items()}
        return {key: item for key, item in rendered.items() if item is not _NO_VALUE}


_NO_VALUE = object()


@dataclass(frozen=True)
class Request:
    principal_arn: str
    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)  # aws:SecureTransport, aws:PrincipalTag/..., ...

    def key(self, name: str) -> str | None:
        if name == "aws:PrincipalArn":
            return self.principal_arn
        return self.context.get(name)


def _like(value: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def _holds(operator: str, actual: str | None, expected: list[str]) -> bool:
    if operator in ("StringEquals", "ArnEquals"):
        return actual is not None and actual in expected
    if operator in ("StringNotEquals", "ArnNotEquals"):
        return actual is None or actual not in expected
    if operator in ("StringLike", "ArnLike"):
        return actual is not None and any(_like(actual, pattern) for pattern in expected)
    if operator in ("StringNotLike", "ArnNotLike"):
        return actual is None or not any(_like(actual, pattern) for pattern in expected)
    if operator == "Bool":
        return actual is not None and actual.lower() in [str(value).lower() for value in expected]
    raise ValueError(f"condition operator {operator} is not one our policies use")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def matches(statement: dict[str, Any], request: Request) -> bool:
    principal = statement.get("Principal")
    if principal not in ("*", {"AWS": "*"}):
        arns = _as_list(principal.get("AWS", [])) if isinstance(principal, dict) else []
        if request.principal_arn not in arns:
            return False
    if not any(_like(request.action.lower(), action.lower()) for action in _as_list(statement["Action"])):
        return False
    if not any(_like(request.resource, resource) for resource in _as_list(statement["Resource"])):
        return False
    for operator, keys in statement.get("Condition", {}).items():
        for name, expected in keys.items():
            if not _holds(operator, request.key(name), [str(value) for value in _as_list(expected)]):
                return False
    return True


def denied(policy: dict[str, Any], request: Request) -> list[str]:
    """The Sids of the Deny statements that deny `request` (empty: this policy does not deny it)."""
    return [
        str(statement.get("Sid"))
        for statement in _as_list(policy["Statement"])
        if statement.get("Effect") == "Deny" and matches(statement, request)
    ]
