"""IAM's policy evaluation, as the offline world enforces it (docs/architecture.md section 4, amended).

moto evaluates no resource policy and no permissions boundary, ignores the conditions of identity
policies, and answers a missing key 404 to anyone; so a least-privilege template passed every test
while its roles could not work on AWS. This module is the part of AWS's authorization the world
needs, each rule from the IAM User Guide:

- "Policy evaluation logic" (reference_policies_evaluation-logic): an explicit Deny in any
  applicable policy wins; otherwise a request is allowed when an identity-based policy allows it and
  the principal's permissions boundary (if it has one) allows it too, or when a resource-based policy
  of the same account allows the principal; everything else is an implicit deny.
- "Cross-account policy evaluation logic": a principal of another account needs both its own
  identity policy and the resource policy to allow.
- "IAM JSON policy elements: Condition operators": operators in one Condition block are ANDed, the
  values of one key are ORed; a negated operator (StringNotEquals, ArnNotLike, ...) holds when the
  key is absent; a positive operator on an absent key does not hold; `...IfExists` holds on absence.
  `*` and `?` are wildcards in StringLike/ArnLike and in Action and Resource.
- "Permissions boundaries for IAM entities": a boundary never grants, it only limits what the
  identity policies grant.

`Deployment` renders template.yaml's intrinsic functions for one set of parameters, so the world
evaluates the very statements CloudFormation would create, never a copy written by hand.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_VARIABLE = re.compile(r"\$\{([A-Za-z0-9:._]+)\}")
_NO_VALUE = object()


class PolicyError(ValueError):
    """A policy uses an element or operator the world does not evaluate: refused, never guessed."""


# ---------------------------------------------------------------------------------------------
# Rendering template.yaml for one deployment
# ---------------------------------------------------------------------------------------------


@dataclass
class Deployment:
    """Concrete values for the template's references: parameters, pseudo parameters, Ref and GetAtt
    of resources, and the template's Conditions evaluated from those values."""

    values: dict[str, Any]
    conditions: dict[str, bool] = field(default_factory=dict)

    def evaluate_conditions(self, definitions: Mapping[str, Any]) -> None:
        """Evaluate the template's Conditions section (Fn::Equals/Not/And/Or, Condition) in order of need."""
        pending = dict(definitions)

        def decide(name: str) -> bool:
            if name not in self.conditions:
                self.conditions[name] = bool(self._condition(pending[name], decide))
            return self.conditions[name]

        for name in pending:
            decide(name)

    def _condition(self, node: Any, decide: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((function, argument),) = node.items()
            if function == "Condition":
                return decide(argument)
            if function == "Fn::Equals":
                left, right = (self.render(value) for value in argument)
                return _text(left) == _text(right)
            if function == "Fn::Not":
                return not self._condition(argument[0], decide)
            if function == "Fn::And":
                return all(self._condition(item, decide) for item in argument)
            if function == "Fn::Or":
                return any(self._condition(item, decide) for item in argument)
        return self.render(node)

    def render(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self.render(item) for item in value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((function, argument),) = value.items()
            if function == "Ref":
                return _NO_VALUE if argument == "AWS::NoValue" else self._value(argument)
            if function == "Fn::GetAtt":
                name = ".".join(argument) if isinstance(argument, list) else argument
                return self._value(name)
            if function == "Fn::Sub":
                text, local = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
                bound = {key: self.render(item) for key, item in local.items()}
                return _VARIABLE.sub(
                    lambda m: _text(bound[m.group(1)] if m.group(1) in bound else self._value(m.group(1))), text
                )
            if function == "Fn::If":
                name, when_true, when_false = argument
                return self.render(when_true if self.conditions[name] else when_false)
            if function == "Fn::Join":
                separator, items = argument
                return separator.join(_text(item) for item in self._list(items))
            if function == "Fn::Split":
                separator, text = argument
                return str(self.render(text)).split(separator)
            if function == "Fn::FindInMap":
                return self._value(mapping_key(*(_text(self.render(item)) for item in argument)))
            if function == "Fn::Select":
                index, items = argument
                return self._list(items)[int(self.render(index))]
        rendered = {key: self.render(item) for key, item in value.items()}
        return {key: item for key, item in rendered.items() if item is not _NO_VALUE}

    def _list(self, items: Any) -> list[Any]:
        rendered = self.render(items)
        return rendered if isinstance(rendered, list) else [rendered]

    def _value(self, name: str) -> Any:
        if name not in self.values:
            raise PolicyError(f"the deployment has no value for {name!r}")
        return self.values[name]


def mapping_key(map_name: str, top_key: str, key: str) -> str:
    """Where a Fn::FindInMap value sits among a Deployment's values."""
    return f"Fn::FindInMap/{map_name}/{top_key}/{key}"


def _text(value: Any) -> str:
    return ",".join(str(item) for item in value) if isinstance(value, list) else str(value)


# ---------------------------------------------------------------------------------------------
# Evaluating policies
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One authorization decision: who, which action on which resource, and the request context."""

    principal_arn: str
    action: str
    resource: str
    context: Mapping[str, str | list[str]] = field(default_factory=dict)

    def key(self, name: str) -> list[str] | None:
        """A context key's values, or None when the request does not carry it (keys are case-insensitive)."""
        if name.lower() == "aws:principalarn":
            return [self.principal_arn]
        for key, value in self.context.items():
            if key.lower() == name.lower():
                return value if isinstance(value, list) else [value]
        return None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _like(value: str, pattern: str) -> bool:
    # fnmatch's [...] is a character class; IAM has none, so brackets match themselves.
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


_STRING: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda actual, expected: actual == expected,
    "StringEqualsIgnoreCase": lambda actual, expected: actual.lower() == expected.lower(),
    "StringLike": _like,
    "ArnEquals": lambda actual, expected: actual == expected,
    "ArnLike": _like,
    "Bool": lambda actual, expected: actual.lower() == str(expected).lower(),
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


def condition_holds(operator: str, actual: list[str] | None, expected: list[str]) -> bool:
    """One operator on one key (IAM User Guide, "Condition operators")."""
    if operator.startswith("ForAnyValue:") or operator.startswith("ForAllValues:"):
        raise PolicyError(f"condition operator {operator} is not evaluated by the offline world")
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if base == "Null":
        return (actual is None) == (str(expected[0]).lower() == "true")
    if actual is None:
        return if_exists or base in _NEGATED
    if base in _NEGATED:
        compare = _STRING[_NEGATED[base]]
        return not any(compare(value, pattern) for value in actual for pattern in expected)
    if base in _STRING:
        compare = _STRING[base]
        return any(compare(value, pattern) for value in actual for pattern in expected)
    raise PolicyError(f"condition operator {operator} is not evaluated by the offline world")


def _principal_matches(statement: Mapping[str, Any], principal_arn: str, account: str) -> bool:
    if "NotPrincipal" in statement:
        raise PolicyError("NotPrincipal is not evaluated by the offline world")
    principal = statement.get("Principal")
    if principal is None:
        return True  # an identity-based policy: the principal is the one it is attached to
    if principal == "*":
        return True
    arns = [str(item) for item in as_list(principal.get("AWS", []))] if isinstance(principal, dict) else []
    account_root = f"arn:aws:iam::{account}:root"
    return any(arn == "*" or arn == principal_arn or arn in (account, account_root) for arn in arns)


def statement_matches(statement: Mapping[str, Any], request: Request, account: str) -> bool:
    if not _principal_matches(statement, request.principal_arn, account):
        return False
    action = request.action.lower()
    if "Action" in statement:
        if not any(_like(action, str(pattern).lower()) for pattern in as_list(statement["Action"])):
            return False
    elif "NotAction" in statement:
        if any(_like(action, str(pattern).lower()) for pattern in as_list(statement["NotAction"])):
            return False
    else:
        raise PolicyError(f"statement {statement.get('Sid')} has neither Action nor NotAction")
    if "Resource" in statement:
        if not any(_like(request.resource, str(pattern)) for pattern in as_list(statement["Resource"])):
            return False
    elif "NotResource" in statement:
        if any(_like(request.resource, str(pattern)) for pattern in as_list(statement["NotResource"])):
            return False
    elif statement.get("Principal") is None:
        raise PolicyError(f"identity statement {statement.get('Sid')} has no Resource")
    for operator, keys in statement.get("Condition", {}).items():
        for name, expected in keys.items():
            if not condition_holds(operator, request.key(name), [str(value) for value in as_list(expected)]):
                return False
    return True


def matching(policies: Iterable[Mapping[str, Any]], request: Request, effect: str, account: str) -> list[str]:
    """The Sids (or indexes) of the statements with `effect` that match `request`."""
    found = []
    for policy in policies:
        for index, statement in enumerate(as_list(policy.get("Statement", []))):
            if statement.get("Effect") == effect and statement_matches(statement, request, account):
                found.append(str(statement.get("Sid", index)))
    return found


def account_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 else ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # "allowed by X", "explicit deny in Y", "no statement allows", ...

    def __bool__(self) -> bool:
        return self.allowed


def evaluate(
    request: Request,
    *,
    identity: Iterable[Mapping[str, Any]],
    boundary: Mapping[str, Any] | None = None,
    resource_policy: Mapping[str, Any] | None = None,
    resource_account: str,
) -> Decision:
    """IAM's decision for `request` (IAM User Guide, "Policy evaluation logic")."""
    identity = list(identity)
    principal_account = account_of(request.principal_arn)
    resource_policies = [resource_policy] if resource_policy else []
    boundaries = [boundary] if boundary else []
    for kind, policies in (("identity", identity), ("boundary", boundaries), ("resource", resource_policies)):
        denied = matching(policies, request, "Deny", resource_account)
        if denied:
            return Decision(False, f"explicit deny in the {kind} policy ({', '.join(denied)})")
    identity_allows = matching(identity, request, "Allow", principal_account)
    boundary_allows = not boundaries or bool(matching(boundaries, request, "Allow", principal_account))
    resource_allows = matching(resource_policies, request, "Allow", resource_account)
    if principal_account != resource_account:
        if identity_allows and boundary_allows and resource_allows:
            return Decision(True, f"allowed across accounts by {identity_allows} and {resource_allows}")
        return Decision(False, "another account's principal needs both its identity policy and the resource policy")
    if resource_allows and boundary_allows:
        return Decision(True, f"allowed by the resource policy ({', '.join(resource_allows)})")
    if identity_allows and not boundary_allows:
        return Decision(False, "the permissions boundary does not allow it")
    if identity_allows:
        return Decision(True, f"allowed by the identity policy ({', '.join(identity_allows)})")
    return Decision(False, "no statement allows it (implicit deny)")
