"""The loader tests' manifest builder, reused by the corpus to write tampered manifests."""

from __future__ import annotations

from typing import Any

from conftest import shared_test_module


def build_manifest(
    bucket: str, prefix: str, repo_id: str, revision: str, commit: str, files: dict[str, bytes]
) -> dict[str, Any]:
    manifest: dict[str, Any] = shared_test_module("loader_seed", "tests/loader/loader_seed.py").build_manifest(
        bucket, prefix, repo_id, revision, commit, files
    )
    return manifest
