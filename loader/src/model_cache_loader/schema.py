"""A small JSON Schema validator for exactly the keywords the manifest schema uses.

The loader's only required dependency is boto3, so it cannot rely on the `jsonschema` package;
it still validates against the very schema file the pipeline writes against (shipped in the
wheel as manifest.schema.json). A keyword this validator does not know is refused outright
rather than silently ignored, so a schema change that needs more cannot slip through; the tests
check that it agrees with `jsonschema` on a corpus of valid and invalid manifests.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

# Keywords that only annotate: they never make an instance invalid.
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "title", "description", "$comment", "examples", "default"})
_ASSERTIONS = frozenset(
    {
        "type",
        "const",
        "enum",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "pattern",
        "minimum",
        "minLength",
        "maxLength",
        "$ref",
    }
)


class SchemaUnsupported(Exception):
    """The schema uses a keyword or construct this validator does not implement."""


def _is_type(instance: Any, type_name: str) -> bool:
    if type_name == "object":
        return isinstance(instance, dict)
    if type_name == "array":
        return isinstance(instance, list)
    if type_name == "string":
        return isinstance(instance, str)
    if type_name == "boolean":
        return isinstance(instance, bool)
    if type_name == "null":
        return instance is None
    if type_name == "integer":
        if isinstance(instance, bool):
            return False
        return isinstance(instance, int) or (
            isinstance(instance, float) and math.isfinite(instance) and instance.is_integer()
        )
    if type_name == "number":
        return isinstance(instance, int | float) and not isinstance(instance, bool)
    raise SchemaUnsupported(f"unknown JSON Schema type {type_name!r}")


def _json_equal(left: Any, right: Any) -> bool:
    """JSON equality: 1 == 1.0, but True != 1 (Python's == conflates booleans and numbers)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_json_equal(a, b) for a, b in zip(left, right, strict=True))
    return bool(type(left) is type(right) or (isinstance(left, int | float) and isinstance(right, int | float))) and (
        left == right
    )


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _where(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) or "(root)"


class Validator:
    """Validate instances against one schema document (with `$ref`s into its own `#/$defs`)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._check_supported(schema)

    def _check_supported(self, node: Any) -> None:
        if not isinstance(node, dict):
            if isinstance(node, bool):
                raise SchemaUnsupported("boolean sub-schemas are not supported")
            return
        unknown = set(node) - _ANNOTATIONS - _ASSERTIONS
        if unknown:
            raise SchemaUnsupported(f"schema keyword(s) {sorted(unknown)} are not supported by the loader's validator")
        for key in ("properties", "$defs"):
            for sub in node.get(key, {}).values():
                self._check_supported(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                self._check_supported(node[key])
        if "$ref" in node:
            self._resolve(node["$ref"])

    def _resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise SchemaUnsupported(f"$ref {ref!r}: only references inside the schema ('#/...') are supported")
        node: Any = self.schema
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise SchemaUnsupported(f"$ref {ref!r} does not resolve inside the schema")
            node = node[part]
        if not isinstance(node, dict):
            raise SchemaUnsupported(f"$ref {ref!r} does not point at a schema object")
        return node

    def errors(self, instance: Any) -> list[str]:
        """Every violation, as 'where: what' strings; empty when the instance is valid."""
        return list(self._errors(instance, self.schema, ()))

    def _errors(self, instance: Any, schema: dict[str, Any], path: tuple[str | int, ...]) -> Iterator[str]:
        where = _where(path)
        if "$ref" in schema:
            yield from self._errors(instance, self._resolve(schema["$ref"]), path)
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(instance, t) for t in types):
                yield f"{where}: expected {' or '.join(types)}, got {type(instance).__name__} {instance!r:.60}"
                return
        if "const" in schema and not _json_equal(instance, schema["const"]):
            yield f"{where}: must be {schema['const']!r}, got {instance!r:.60}"
        if "enum" in schema and not any(_json_equal(instance, option) for option in schema["enum"]):
            yield f"{where}: must be one of {schema['enum']!r}, got {instance!r:.60}"
        if isinstance(instance, str):
            if "minLength" in schema and len(instance) < schema["minLength"]:
                yield f"{where}: shorter than {schema['minLength']} characters"
            if "maxLength" in schema and len(instance) > schema["maxLength"]:
                yield f"{where}: longer than {schema['maxLength']} characters"
            if "pattern" in schema and not _compiled(schema["pattern"]).search(instance):
                yield f"{where}: {instance!r:.80} does not match {schema['pattern']!r}"
        if _is_type(instance, "number") and "minimum" in schema and instance < schema["minimum"]:
            yield f"{where}: {instance} is less than the minimum {schema['minimum']}"
        if isinstance(instance, dict):
            for name in schema.get("required", []):
                if name not in instance:
                    yield f"{where}: missing required property {name!r}"
            properties: dict[str, Any] = schema.get("properties", {})
            additional = schema.get("additionalProperties", True)
            for name, value in instance.items():
                if name in properties:
                    yield from self._errors(value, properties[name], (*path, name))
                elif additional is False:
                    yield f"{where}: unexpected property {name!r}"
                elif isinstance(additional, dict):
                    yield from self._errors(value, additional, (*path, name))
        if isinstance(instance, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(instance):
                yield from self._errors(item, schema["items"], (*path, index))


@cache
def manifest_validator() -> Validator:
    """The validator for manifest.schema.json as shipped inside this package."""
    text = resources.files("model_cache_loader").joinpath("manifest.schema.json").read_text(encoding="utf-8")
    return Validator(json.loads(text))
