"""The snapshot manifest (docs/architecture.md 3.2): build it and validate it against the shared JSON Schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from model_cache.contract import errors, layout
from model_cache_loader.manifest import ManifestFile

SCHEMA_VERSION = 1


# One copied and verified file, as the manifest lists it: the loader's record of a manifest entry, the
# contract's one owner (the pipeline writes what the pods read).
FileRecord = ManifestFile


@cache
def schema() -> dict[str, Any]:
    text = resources.files("model_cache").joinpath("manifest.schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def validate(manifest: dict[str, Any]) -> None:
    """Raise IntegrityError naming the first violation of schemas/manifest.schema.json."""
    validator = jsonschema.Draft202012Validator(schema())
    problems = sorted(validator.iter_errors(manifest), key=lambda error: list(error.absolute_path))
    if problems:
        first = problems[0]
        where = "/".join(str(part) for part in first.absolute_path) or "(root)"
        raise errors.IntegrityError(f"manifest is invalid at {where}: {first.message}")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(
    *,
    repo_id: str,
    revision: str,
    commit: str,
    source: str,
    bucket: str,
    prefix: str,
    files: list[FileRecord],
    created_at: str | None = None,
    selection: dict[str, list[str]] | None = None,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """The manifest dict, files sorted by path, validated before it is returned."""
    ordered = sorted(files, key=lambda record: record.path)
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "repo_id": repo_id,
        "repo_type": "model",
        "revision": revision,
        "commit": commit,
        "source": source,
        "created_at": created_at or utc_now(),
        "bucket": bucket,
        "prefix": layout.snapshot_prefix(prefix, repo_id, commit),
        "total_size": sum(record.size for record in ordered),
        "files": [record.to_json() for record in ordered],
    }
    if selection is not None:
        manifest["selection"] = {"include": list(selection["include"]), "exclude": list(selection["exclude"])}
    if requested_by is not None:
        manifest["requested_by"] = requested_by
    validate(manifest)
    return manifest


def dumps(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8")
