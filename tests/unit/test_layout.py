"""The S3 layout contract (docs/architecture.md 3.1)."""

from __future__ import annotations

import pytest

from model_cache import layout

pytestmark = pytest.mark.unit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_keys_for_an_org_repo() -> None:
    repo = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert layout.repo_slug(repo) == "TinyLlama--TinyLlama-1.1B-Chat-v1.0"
    assert (
        layout.snapshot_prefix("models", repo, COMMIT)
        == f"models/TinyLlama--TinyLlama-1.1B-Chat-v1.0/snapshots/{COMMIT}/"
    )
    assert layout.file_key("models", repo, COMMIT, "a/b.json").endswith(f"/snapshots/{COMMIT}/a/b.json")
    assert (
        layout.hash_key("models", repo, COMMIT) == f"models/TinyLlama--TinyLlama-1.1B-Chat-v1.0/snapshots/{COMMIT}/hash"
    )
    assert (
        layout.manifest_key("models", repo, COMMIT)
        == f"models/TinyLlama--TinyLlama-1.1B-Chat-v1.0/manifests/{COMMIT}.json"
    )
    assert layout.ref_key("models", repo, "main") == "models/TinyLlama--TinyLlama-1.1B-Chat-v1.0/refs/main"
    assert layout.root_manifest_key("models", repo) == "models/TinyLlama--TinyLlama-1.1B-Chat-v1.0/manifest.json"


def test_repo_without_org_and_custom_prefixes() -> None:
    assert layout.repo_slug("gpt2") == "gpt2"
    assert layout.root_manifest_key("", "gpt2") == "gpt2/manifest.json"
    assert layout.root_manifest_key("/cache/models/", "gpt2") == "cache/models/gpt2/manifest.json"


def test_slug_round_trip() -> None:
    for repo in ["microsoft/phi-2", "gpt2", "a/b.c_d"]:
        assert layout.repo_id_from_slug(layout.repo_slug(repo)) == repo
