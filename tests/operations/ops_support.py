"""Helpers for the operations tests: repos of our own in the Hub double's root, so a test can change a
file (the double then serves a new commit) without touching the shared fixture repos."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from model_cache.contract import layout
from model_cache.contract import manifest as manifest_mod
from model_cache.contract.manifest import FileRecord
from model_cache.pipeline.plan import MiB
from model_cache_devtools.local_pipeline import load_function_module
from model_cache_devtools.modelgen import deterministic_bytes, repo_dir

OPS_ORG = "ops-org"
PART_SIZE = 5 * MiB  # S3's minimum part size, so a 12 MiB file is a 3-part multipart upload
BIG_FILE = "model.safetensors"


def default_files(seed: int = 1) -> dict[str, bytes]:
    """A small model repo: a multipart LFS weight, a small LFS shard, regular text files, a nested file."""
    return {
        BIG_FILE: deterministic_bytes(12 * MiB + 123, seed),
        "extra.safetensors": deterministic_bytes(64 * 1024, seed + 1),
        "config.json": json.dumps({"model_type": "llama", "seed": seed}).encode(),
        "README.md": b"# ops test repo\n",
        "tokenizer/vocab.txt": b"hello\nworld\n",
    }


def make_repo(hub_root: Path, files: dict[str, bytes] | None = None) -> str:
    """A fresh repo `ops-org/<random>` served by the session's Hub double; returns its id."""
    repo_id = f"{OPS_ORG}/repo-{uuid.uuid4().hex[:10]}"
    write_files(hub_root, repo_id, files if files is not None else default_files())
    return repo_id


def write_files(hub_root: Path, repo_id: str, files: dict[str, bytes]) -> None:
    folder = repo_dir(hub_root, repo_id)
    for path, data in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def read(s3: Any, bucket: str, key: str, version_id: str | None = None) -> bytes:
    extra = {"VersionId": version_id} if version_id else {}
    return bytes(s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read())


def manifest_at(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return dict(json.loads(read(s3, bucket, key)))


def ref_commit(s3: Any, bucket: str, repo_id: str, revision: str = "main", prefix: str = "models") -> str:
    return read(s3, bucket, layout.ref_key(prefix, repo_id, revision)).decode()


def load_handler(folder: str) -> ModuleType:
    """functions/<folder>/app.py as a fresh module (every handler file is named app.py)."""
    return load_function_module(folder)


def put_manifest(
    s3: Any, bucket: str, repo_id: str, commit: str, records: list[FileRecord], created_at: str | None = None
) -> None:
    """A schema-valid manifests/{commit}.json (prefix `models`, revision main) declaring `records`."""
    manifest = manifest_mod.build(
        repo_id=repo_id,
        revision="main",
        commit=commit,
        source="https://huggingface.co",
        bucket=bucket,
        prefix="models",
        files=records,
        created_at=created_at,
    )
    s3.put_object(Bucket=bucket, Key=layout.manifest_key("models", repo_id, commit), Body=manifest_mod.dumps(manifest))
