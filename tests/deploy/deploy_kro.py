"""A small, faithful-enough model of how kro reads a ResourceGraphDefinition, for the deploy tests.

kro is a Go controller we cannot run here, so these helpers reproduce the parts of its behaviour the
RGD relies on, with cel-python standing in for cel-go:

- SimpleSchema field definitions (`type | marker=value ...`) and their defaults;
- `${...}` expressions: found with brace matching that skips CEL string literals; a value that is
  exactly one expression keeps the expression's type, an expression embedded in a larger string
  must yield a string;
- rendering an instance: resources in dependency order, `includeWhen` evaluated against the
  schema, a resource that references an excluded resource excluded too, and every included
  resource visible to later expressions as its rendered template plus a synced status.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel

REPO_ROOT = Path(__file__).resolve().parents[2]
RGD_PATH = REPO_ROOT / "deploy" / "kro" / "ray-service.yaml"

SCALAR_TYPES = {"string", "integer", "boolean", "float", "number", "object"}
# kro's SimpleSchema markers we use (pkg/simpleschema markers.go: `pattern` becomes the CRD's OpenAPI
# pattern, which the API server checks on every instance before kro sees it).
KNOWN_MARKERS = {"required", "default", "description", "enum", "minimum", "maximum", "immutable", "pattern"}
_MARKER_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')

# What an ACK controller reports once it has created the AWS resource.
SAMPLE_ACCOUNT = "123456789012"


class KroModelError(AssertionError):
    """The RGD breaks a rule kro enforces."""


def load_rgd(path: Path = RGD_PATH) -> dict[str, Any]:
    with path.open() as handle:
        document = yaml.safe_load(handle)
    if not isinstance(document, dict):
        raise KroModelError(f"{path} is not a YAML mapping")
    return document


# ---------------------------------------------------------------------------------------------
# SimpleSchema
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaField:
    path: str  # dotted, under spec
    type: str
    markers: dict[str, str]

    @property
    def required(self) -> bool:
        return self.markers.get("required") == "true"

    def default_value(self) -> Any:
        """The default as a typed value (JSON syntax, as kro parses it), or None without one."""
        if "default" not in self.markers:
            return None
        return json.loads(self.markers["default"])


def parse_field(path: str, definition: str) -> SchemaField:
    type_part, _, marker_part = definition.partition("|")
    field_type = type_part.strip()
    markers: dict[str, str] = {}
    consumed = 0
    for match in _MARKER_RE.finditer(marker_part):
        if marker_part[consumed : match.start()].strip():
            raise KroModelError(f"{path}: cannot parse markers {marker_part!r}")
        markers[match.group(1)] = match.group(2)
        consumed = match.end()
    if marker_part[consumed:].strip():
        raise KroModelError(f"{path}: cannot parse markers {marker_part!r}")
    return SchemaField(path=path, type=field_type, markers=markers)


def schema_fields(spec_schema: Mapping[str, Any], prefix: str = "") -> Iterator[SchemaField]:
    for name, definition in spec_schema.items():
        path = f"{prefix}{name}"
        if isinstance(definition, Mapping):
            yield from schema_fields(definition, f"{path}.")
        elif isinstance(definition, str):
            yield parse_field(path, definition)
        else:
            raise KroModelError(f"{path}: a SimpleSchema field is a string or a mapping, got {definition!r}")


def is_valid_type(field_type: str) -> bool:
    if field_type in SCALAR_TYPES:
        return True
    if field_type.startswith("[]"):
        return is_valid_type(field_type[2:])
    if field_type.startswith("map[string]"):
        return is_valid_type(field_type[len("map[string]") :])
    return False


def value_matches_type(value: Any, field_type: str) -> bool:
    if field_type == "string":
        return isinstance(value, str)
    if field_type == "boolean":
        return isinstance(value, bool)
    if field_type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if field_type in ("float", "number"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return field_type == "object" and isinstance(value, dict)


def schema_defaults(rgd: Mapping[str, Any]) -> dict[str, Any]:
    """The instance spec kro's CRD defaulting produces from an empty spec (fields without a default absent)."""
    spec: dict[str, Any] = {}
    for field in schema_fields(rgd["spec"]["schema"]["spec"]):
        default = field.default_value()
        if default is None:
            continue
        node = spec
        *parents, leaf = field.path.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = default
    return spec


def field_types(rgd: Mapping[str, Any]) -> dict[str, str]:
    return {field.path: field.type for field in schema_fields(rgd["spec"]["schema"]["spec"])}


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ---------------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    source: str  # the CEL text between ${ and }
    start: int  # offset of "${" in the enclosing string
    end: int  # offset just past the closing "}"


def find_expressions(text: str) -> list[Expression]:
    """Every ${...} in `text`, matching braces and skipping CEL string literals."""
    found: list[Expression] = []
    index = 0
    while True:
        start = text.find("${", index)
        if start < 0:
            return found
        depth = 0
        position = start + 1
        quote: str | None = None
        while position < len(text):
            char = text[position]
            if quote:
                if char == "\\":
                    position += 1
                elif char == quote:
                    quote = None
            elif char in "\"'":
                quote = char
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    break
            position += 1
        else:
            raise KroModelError(f"unterminated ${{ in {text[start : start + 60]!r}")
        found.append(Expression(source=text[start + 2 : position], start=start, end=position + 1))
        index = position + 1


def is_standalone(text: str) -> bool:
    """True when the whole value is exactly one expression (kro keeps its type)."""
    expressions = find_expressions(text)
    return len(expressions) == 1 and expressions[0].start == 0 and expressions[0].end == len(text)


def walk_strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, value) for every string value in a template; keys must not hold expressions."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if "${" in str(key):
                raise KroModelError(f"{path}: kro does not evaluate expressions in keys ({key!r})")
            yield from walk_strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for position, value in enumerate(node):
            yield from walk_strings(value, f"{path}[{position}]")
    elif isinstance(node, str):
        yield path, node


_ENV = celpy.Environment()


def compile_cel(source: str) -> Any:
    """Parse a CEL expression; raises celpy's CELParseError when it is not CEL."""
    return _ENV.compile(source)


def _cel_string(value: Any) -> celtypes.StringType:
    # cel-go's string(true) is "true"; cel-python's would be Python's "True".
    if isinstance(value, celtypes.BoolType):
        return celtypes.StringType("true" if value else "false")
    return celtypes.StringType(value)


def evaluate(source: str, activation: Mapping[str, Any]) -> Any:
    program = _ENV.program(compile_cel(source), functions={"string": _cel_string})
    return program.evaluate({name: json_to_cel(value) for name, value in activation.items()})


def to_python(value: Any) -> Any:
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        return {to_python(key): to_python(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_python(item) for item in value]
    return value


def references(source: str, names: set[str]) -> set[str]:
    """Top-level identifiers of `source` among `names` (a resource id or `schema`)."""
    without_literals = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', source)
    found = set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)\s*\.", without_literals))
    return found & names


def render_value(text: str, activation: Mapping[str, Any]) -> Any:
    if is_standalone(text):
        return to_python(evaluate(find_expressions(text)[0].source, activation))
    pieces: list[str] = []
    cursor = 0
    for expression in find_expressions(text):
        result = evaluate(expression.source, activation)
        if not isinstance(result, str) or isinstance(result, celtypes.BoolType):
            raise KroModelError(
                f"${{{expression.source}}} is embedded in a string but yields {type(result).__name__}, not string"
            )
        pieces.extend((text[cursor : expression.start], str(result)))
        cursor = expression.end
    pieces.append(text[cursor:])
    return "".join(pieces)


def render_node(node: Any, activation: Mapping[str, Any]) -> Any:
    if isinstance(node, Mapping):
        return {key: render_node(value, activation) for key, value in node.items()}
    if isinstance(node, list):
        return [render_node(value, activation) for value in node]
    if isinstance(node, str) and "${" in node:
        return render_value(node, activation)
    return node


# ---------------------------------------------------------------------------------------------
# Rendering an instance
# ---------------------------------------------------------------------------------------------


def sample_status(resource_id: str, rendered: Mapping[str, Any]) -> dict[str, Any]:
    """The status a healthy controller reports: synced, and for ACK resources an ARN."""
    status: dict[str, Any] = {"conditions": [{"type": "ACK.ResourceSynced", "status": "True"}]}
    api_version = str(rendered.get("apiVersion", ""))
    if api_version.endswith(".services.k8s.aws/v1alpha1"):
        kind = str(rendered["kind"]).lower()
        name = rendered.get("spec", {}).get("name") or rendered["metadata"]["name"]
        status["ackResourceMetadata"] = {
            "arn": f"arn:aws:iam::{SAMPLE_ACCOUNT}:{kind}/{name}",
            "ownerAccountID": SAMPLE_ACCOUNT,
        }
    return status


def instance_schema(rgd: Mapping[str, Any], spec: Mapping[str, Any], namespace: str = "team-ml") -> dict[str, Any]:
    return {
        "apiVersion": f"{rgd['spec']['schema']['group']}/{rgd['spec']['schema']['apiVersion']}",
        "kind": rgd["spec"]["schema"]["kind"],
        "metadata": {"name": "demo-instance", "namespace": namespace, "uid": "00000000-0000-0000-0000-000000000000"},
        "spec": deep_merge(schema_defaults(rgd), spec),
    }


@dataclass
class Rendered:
    included: dict[str, dict[str, Any]]
    excluded: set[str]


def render_instance(rgd: Mapping[str, Any], spec: Mapping[str, Any], namespace: str = "team-ml") -> Rendered:
    """What kro would create for an instance with this spec (merged over the schema defaults)."""
    resources = {resource["id"]: resource for resource in rgd["spec"]["resources"]}
    names = set(resources) | {"schema"}
    dependencies: dict[str, set[str]] = {}
    for resource_id, resource in resources.items():
        refs: set[str] = set()
        for _, text in walk_strings(resource["template"]):
            for expression in find_expressions(text):
                refs |= references(expression.source, names)
        dependencies[resource_id] = refs - {"schema", resource_id}

    activation: dict[str, Any] = {"schema": instance_schema(rgd, spec, namespace)}
    included: dict[str, dict[str, Any]] = {}
    excluded: set[str] = set()
    pending = list(resources)
    while pending:
        ready = [rid for rid in pending if dependencies[rid] <= (set(included) | excluded)]
        if not ready:
            raise KroModelError(f"dependency cycle among {sorted(pending)}")
        for resource_id in ready:
            pending.remove(resource_id)
            resource = resources[resource_id]
            if dependencies[resource_id] & excluded:
                excluded.add(resource_id)
                continue
            conditions = [find_expressions(text)[0].source for text in resource.get("includeWhen", [])]
            if not all(bool(evaluate(condition, activation)) for condition in conditions):
                excluded.add(resource_id)
                continue
            rendered = render_node(resource["template"], activation)
            included[resource_id] = rendered
            activation[resource_id] = {**rendered, "status": sample_status(resource_id, rendered)}
    return Rendered(included=included, excluded=excluded)


def render_cache_role(
    bucket: str, prefix: str, account: str = SAMPLE_ACCOUNT, *, kms_key_arn: str = "", region: str = "us-east-1"
) -> dict[str, Any]:
    """The IAM Role (ACK) an instance with the cache on creates for its pods, for this bucket and prefix."""
    spec = {
        "modelCacheKmsKeyArn": kms_key_arn,
        "awsRegion": region,
        "name": "text-ml",
        "ingressHostname": "h",
        "rayServeFile": "s3://x/app.zip",
        "useModelCache": True,
        "modelCacheBucket": bucket,
        "modelCachePrefix": prefix,
        "clusterName": "c",
        "awsAccountId": account,
    }
    role: dict[str, Any] = render_instance(load_rgd(), spec).included["modelCacheRole"]
    return role
