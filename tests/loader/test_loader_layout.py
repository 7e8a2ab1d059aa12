"""The S3 layout and the repo-id rules have one owner, the loader, and the core uses exactly it; other small pieces."""

from __future__ import annotations

import json

import pytest
from loader_seed import build_manifest, small_repo

from model_cache.contract import ids as core_ids
from model_cache.contract import layout as core
from model_cache.contract.errors import InvalidRequest
from model_cache_loader import layout as ours
from model_cache_loader.api import select_bucket
from model_cache_loader.errors import ManifestError, UsageError
from model_cache_loader.manifest import check_repo_path, parse_manifest

pytestmark = pytest.mark.unit

REPO_IDS = [
    "gpt2",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "tiny-org/tiny-llm",
    "meta-llama/Llama-3.1-8B-Instruct",
    "a/b",
    "Org_1/name.with.dots",
    "x" * 96,
]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_the_core_layout_is_the_loaders() -> None:
    """GIVEN the core's layout module WHEN each name it exports is looked up THEN it is the loader's own object,
    not a copy that could drift, and a copy of FileRecord is not kept either."""
    from model_cache.contract.manifest import FileRecord
    from model_cache_loader.manifest import ManifestFile

    assert core.__all__
    copies = [name for name in core.__all__ if getattr(core, name) is not getattr(ours, name)]
    assert copies == []
    assert FileRecord is ManifestFile


@pytest.mark.parametrize("repo_id", REPO_IDS)
@pytest.mark.parametrize("prefix", ["models", "", "/nested/prefix/", "cache"])
def test_keys_agree_with_the_core_layout(repo_id: str, prefix: str) -> None:
    """GIVEN a repo id and prefix WHEN both packages compute every key THEN they are identical."""
    assert ours.repo_slug(repo_id) == core.repo_slug(repo_id)
    assert ours.repo_prefix(prefix, repo_id) == core.repo_prefix(prefix, repo_id)
    assert ours.snapshot_prefix(prefix, repo_id, COMMIT) == core.snapshot_prefix(prefix, repo_id, COMMIT)
    assert ours.file_key(prefix, repo_id, COMMIT, "a/b.json") == core.file_key(prefix, repo_id, COMMIT, "a/b.json")
    assert ours.manifest_key(prefix, repo_id, COMMIT) == core.manifest_key(prefix, repo_id, COMMIT)
    assert ours.ref_key(prefix, repo_id, "v1.0") == core.ref_key(prefix, repo_id, "v1.0")
    assert ours.root_manifest_key(prefix, repo_id) == core.root_manifest_key(prefix, repo_id)
    assert ours.DEFAULT_PREFIX == core.DEFAULT_PREFIX


@pytest.mark.parametrize(
    "text", [*REPO_IDS, "org/name@v1.0", f"org/name@{COMMIT}", "bad--id", "a/b/c", "", "org/name@", "-x", "é/x"]
)
def test_repo_ref_parsing_agrees_with_the_core(text: str) -> None:
    """GIVEN a repo reference WHEN both packages parse it THEN they accept or refuse it alike."""
    try:
        core_repo, core_rev = core_ids.parse_repo_ref(text)
        core_ok = True
    except InvalidRequest:
        core_ok = False
    try:
        repo, rev = ours.parse_repo_ref(text)
        ok = True
    except UsageError:
        ok = False
    assert ok == core_ok
    if ok:
        assert (repo, rev) == (core_repo, core_rev or "main")


def test_hf_folder_name_is_huggingface_hubs() -> None:
    """GIVEN repo ids WHEN named for the HF cache THEN the name is huggingface_hub's repo_folder_name."""
    from huggingface_hub.file_download import repo_folder_name

    for repo_id in REPO_IDS:
        assert ours.hf_repo_folder(repo_id) == repo_folder_name(repo_id=repo_id, repo_type="model")


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        ("plain-bucket", "eu-west-1", "plain-bucket"),
        ("us-east-1=cache-b1,eu-west-1=cache-b2", "eu-west-1", "cache-b2"),
        (" us-east-1 = cache-b1 , eu-west-1=cache-b2 ", "us-east-1", "cache-b1"),
        ("us-east-1=cache-b1,eu-west-1=cache-b2", "ap-south-1", None),
        (None, "us-east-1", None),
        ("", "us-east-1", None),
    ],
)
def test_bucket_selection_by_region(value: str | None, region: str, expected: str | None) -> None:
    """GIVEN MODEL_CACHE_BUCKET and AWS_REGION WHEN selecting THEN the region's bucket (or none) is chosen."""
    assert select_bucket(value, region) == expected


@pytest.mark.parametrize("value", ["us-east-1=", "us-east-1=cache-b1,cache-b2", "=cache-b1"])
def test_malformed_bucket_lists_are_refused(value: str) -> None:
    with pytest.raises(UsageError, match="region=bucket"):
        select_bucket(value, "us-east-1")


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/etc/passwd", "absolute"),
        ("../../etc/passwd", "'..' segment"),
        ("a/../../b", "'..' segment"),
        ("a/./b", "'.' or '..' segment"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("", "empty"),
        ("a\nb", "control character"),
        ("cafe\u0301.txt", "NFC"),
    ],
)
def test_unsafe_paths_are_refused(path: str, problem: str) -> None:
    """GIVEN a manifest path that could escape the snapshot WHEN checked THEN a clear error names why."""
    with pytest.raises(ManifestError, match=problem):
        check_repo_path(path)


def test_safe_nested_unicode_path_is_accepted() -> None:
    assert check_repo_path("docs/r\u00e9sum\u00e9.txt") == "docs/r\u00e9sum\u00e9.txt"


def _manifest_bytes(**changes: object) -> bytes:
    manifest = build_manifest("model-cache-test", "models", "org/model", "main", COMMIT, small_repo())
    manifest.update(changes)
    return json.dumps(manifest).encode()


def test_manifest_with_traversal_path_is_refused() -> None:
    """GIVEN a schema-valid manifest whose path climbs out WHEN parsed THEN ManifestError names the path."""
    manifest = build_manifest("model-cache-test", "models", "org/model", "main", COMMIT, small_repo())
    manifest["files"][0]["path"] = "../../outside"
    manifest["files"][0]["key"] = manifest["prefix"] + "../../outside"
    with pytest.raises(ManifestError, match=r"'\.\./\.\./outside' has a '\.' or '\.\.' segment"):
        parse_manifest(json.dumps(manifest).encode(), source="test")


def test_manifest_key_outside_the_snapshot_is_refused() -> None:
    """GIVEN a manifest pointing a file at another object WHEN parsed THEN it is refused."""
    manifest = build_manifest("model-cache-test", "models", "org/model", "main", COMMIT, small_repo())
    manifest["files"][0]["key"] = "models/other--repo/snapshots/" + COMMIT + "/config.json"
    with pytest.raises(ManifestError, match="is not"):
        parse_manifest(json.dumps(manifest).encode(), source="test")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"total_size": NaN}', "not valid JSON"),
        (_manifest_bytes(total_size=1), "total_size 1 is not the sum"),
        (_manifest_bytes(schema_version=2), "fails manifest.schema.json"),
    ],
)
def test_bad_manifests_are_refused(body: bytes, match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        parse_manifest(body, source="test")


def test_a_good_manifest_parses_with_blob_names() -> None:
    """GIVEN a valid manifest WHEN parsed THEN LFS files use sha256 blob names and others the git oid."""
    manifest = parse_manifest(_manifest_bytes(), source="test")
    by_path = {f.path: f for f in manifest.files}
    assert by_path["model.safetensors"].blob_name == by_path["model.safetensors"].sha256
    assert by_path["config.json"].blob_name == by_path["config.json"].git_oid
