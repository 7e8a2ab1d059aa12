"""The loader's tiny JSON Schema validator agrees with the `jsonschema` package on manifests."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from loader_seed import build_manifest, small_repo

from model_cache_loader.schema import SchemaUnsupported, Validator, manifest_validator

pytestmark = pytest.mark.unit

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "manifest.schema.json"
COMMIT = "a" * 40


def valid_manifest() -> dict[str, Any]:
    return build_manifest("model-cache-test", "models", "org/model", "main", COMMIT, small_repo())


def _set(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(manifest: dict[str, Any]) -> None:
        node: Any = manifest
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return mutate


def _delete(path: list[str | int]) -> Callable[[dict[str, Any]], None]:
    def mutate(manifest: dict[str, Any]) -> None:
        node: Any = manifest
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return mutate


# name -> (mutation, expected valid?)
MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], bool]] = {
    "unchanged": (lambda m: None, True),
    "schema_version 2": (_set(["schema_version"], 2), False),
    "schema_version true": (_set(["schema_version"], True), False),
    "schema_version 1.0": (_set(["schema_version"], 1.0), True),
    "repo_type dataset": (_set(["repo_type"], "dataset"), False),
    "missing commit": (_delete(["commit"]), False),
    "short commit": (_set(["commit"], "abc"), False),
    "uppercase commit": (_set(["commit"], "A" * 40), False),
    "extra top-level property": (_set(["extra"], 1), False),
    "repo_id with space": (_set(["repo_id"], "org/a b"), False),
    "repo_id too long": (_set(["repo_id"], "a" * 97), False),
    "repo_id no org": (_set(["repo_id"], "gpt2"), True),
    "empty revision": (_set(["revision"], ""), False),
    "source ftp": (_set(["source"], "ftp://x"), False),
    "created_at no Z": (_set(["created_at"], "2026-11-30T12:00:00"), False),
    "created_at fraction": (_set(["created_at"], "2026-11-30T12:00:00.123Z"), True),
    "bucket uppercase": (_set(["bucket"], "Bucket"), False),
    "prefix absolute": (_set(["prefix"], "/models/x/snapshots/" + COMMIT + "/"), False),
    "total_size negative": (_set(["total_size"], -1), False),
    "total_size string": (_set(["total_size"], "12"), False),
    "total_size float integral": (_set(["total_size"], 12.0), True),
    "total_size float": (_set(["total_size"], 12.5), False),
    "files not array": (_set(["files"], {}), False),
    "files empty": (_set(["files"], []), True),
    "file missing sha256": (_delete(["files", 0, "sha256"]), False),
    "file extra property": (_set(["files", 0, "mode"], "0644"), False),
    "file path absolute": (_set(["files", 0, "path"], "/etc/passwd"), False),
    "file path backslash": (_set(["files", 0, "path"], "a\\b"), False),
    "file path NUL": (_set(["files", 0, "path"], "a\x00b"), False),
    "file path empty segment": (_set(["files", 0, "path"], "a//b"), False),
    "file path dotdot (schema allows; reader rejects)": (_set(["files", 0, "path"], "../x"), True),
    "file path empty": (_set(["files", 0, "path"], ""), False),
    "file size bool": (_set(["files", 0, "size"], False), False),
    "file lfs string": (_set(["files", 0, "lfs"], "true"), False),
    "file lfs int": (_set(["files", 0, "lfs"], 1), False),
    "file git_oid short": (_set(["files", 0, "git_oid"], "0" * 39), False),
    "file sha256 uppercase": (_set(["files", 0, "sha256"], "F" * 64), False),
    "file key empty": (_set(["files", 0, "key"], ""), False),
    "file version_id null": (_set(["files", 0, "version_id"], None), True),
    "file version_id string": (_set(["files", 0, "version_id"], "v1"), True),
    "file version_id number": (_set(["files", 0, "version_id"], 3), False),
    "file crc64nvme list": (_set(["files", 0, "crc64nvme"], []), False),
    "file not object": (_set(["files", 0], "model.safetensors"), False),
    "manifest is a list": (lambda m: None, True),  # replaced below by a non-object document
}


@pytest.fixture(scope="module")
def reference() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    return validator_class(schema)


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_agrees_with_jsonschema(name: str, reference: jsonschema.protocols.Validator) -> None:
    """GIVEN a manifest mutated one way WHEN both validators judge it THEN they agree, as expected."""
    manifest = copy.deepcopy(valid_manifest())
    mutate, expected_valid = MUTATIONS[name]
    mutate(manifest)
    document: Any = [manifest] if name == "manifest is a list" else manifest
    if name == "manifest is a list":
        expected_valid = False
    ours = manifest_validator().errors(document)
    theirs = list(reference.iter_errors(document))
    assert (not ours) == (not theirs), f"ours={ours} theirs={[e.message for e in theirs]}"
    assert (not ours) == expected_valid, ours


def test_the_package_ships_the_repo_schema_file() -> None:
    """GIVEN the schema inside the loader package WHEN compared THEN it is the repo's schemas/ file."""
    shipped = Path(__file__).resolve().parents[2] / "loader/src/model_cache_loader/manifest.schema.json"
    assert json.loads(shipped.read_text()) == json.loads(SCHEMA_PATH.read_text())
    assert manifest_validator().schema == json.loads(SCHEMA_PATH.read_text())


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "oneOf": [{"type": "string"}]},
        {"properties": {"a": {"format": "date-time"}}},
        {"$ref": "https://example.com/other.json"},
        {"$ref": "#/$defs/missing"},
        {"type": "tuple"},
    ],
)
def test_unknown_keywords_are_refused(schema: dict[str, Any]) -> None:
    """GIVEN a schema using something the validator does not implement WHEN loaded THEN it refuses it."""
    with pytest.raises(SchemaUnsupported):
        Validator(schema).errors({"a": 1})


def test_errors_name_the_place() -> None:
    """GIVEN a bad file entry WHEN validated THEN the error names the path into the document."""
    manifest = valid_manifest()
    manifest["files"][1]["size"] = -5
    errors = manifest_validator().errors(manifest)
    assert errors == [".files[1].size: -5 is less than the minimum 0"]
