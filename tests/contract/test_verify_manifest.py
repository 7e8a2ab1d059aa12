"""verify: sha256 / git blob sha1 / size checks; manifest: built manifests validate against the shared schema."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from model_cache.adapters.hubapi import HubFile
from model_cache.contract import manifest
from model_cache.contract.errors import IntegrityError
from model_cache.contract.manifest import FileRecord
from model_cache.pipeline.verify import FileHasher, git_blob_sha1, hash_chunks

pytestmark = pytest.mark.unit
DATA = b"hello world\n" * 1000


def test_git_blob_sha1_matches_git(tmp_path: Path) -> None:
    """GIVEN some bytes WHEN hashed as a git blob THEN the id equals `git hash-object`'s (if git is installed)."""
    path = tmp_path / "f"
    path.write_bytes(DATA)
    try:
        expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not installed")
    assert git_blob_sha1(DATA) == expected.stdout.strip()


def test_regular_file_verified_by_blob_id_in_chunks() -> None:
    """GIVEN a regular file's blob id WHEN fed in chunks THEN it verifies and yields sha256 and a CRC64NVME."""
    hub_file = HubFile(path="a.txt", size=len(DATA), git_oid=git_blob_sha1(DATA), lfs_sha256=None)
    digests = hash_chunks(hub_file, [DATA[:100], DATA[100:5000], DATA[5000:]])
    assert digests.sha256 == hashlib.sha256(DATA).hexdigest()
    assert digests.crc64nvme


@pytest.mark.parametrize(
    ("hub_file", "message"),
    [
        (HubFile("w.bin", len(DATA), "0" * 40, hashlib.sha256(DATA + b"x").hexdigest()), "sha256"),
        (HubFile("a.txt", len(DATA), "0" * 40, None), "blob"),
        (HubFile("a.txt", len(DATA) + 1, git_blob_sha1(DATA), None), "bytes"),
    ],
)
def test_mismatches_name_the_file(hub_file: HubFile, message: str) -> None:
    """GIVEN a wrong sha256, blob id or size WHEN verified THEN IntegrityError names the file and the check."""
    hasher = FileHasher(hub_file)
    hasher.update(DATA)
    with pytest.raises(IntegrityError, match=message) as raised:
        hasher.verify()
    assert hub_file.path in str(raised.value)


def record(path: str = "model.safetensors", **overrides: Any) -> FileRecord:
    values: dict[str, Any] = {
        "path": path,
        "size": 10,
        "sha256": "d" * 64,
        "git_oid": "e" * 40,
        "lfs": True,
        "key": f"models/org--name/snapshots/{'a' * 40}/{path}",
        "version_id": None,
        "crc64nvme": "AAAAAAAAAAA=",
    }
    values.update(overrides)
    return FileRecord(**values)


def build(files: list[FileRecord], **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "repo_id": "org/name",
        "revision": "main",
        "commit": "a" * 40,
        "source": "https://huggingface.co",
        "bucket": "cache-bucket",
        "prefix": "models",
        "files": files,
    }
    arguments.update(overrides)
    return manifest.build(**arguments)


def test_built_manifest_is_valid_against_the_schema_file(manifest_schema: dict[str, Any]) -> None:
    """GIVEN verified records WHEN a manifest is built THEN the shared schema accepts it; files sorted, total summed."""
    built = build([record("b.json", lfs=False), record("a/model.safetensors")])
    jsonschema.validate(built, manifest_schema)
    assert [f["path"] for f in built["files"]] == ["a/model.safetensors", "b.json"]
    assert built["total_size"] == 20
    assert built["prefix"] == f"models/org--name/snapshots/{'a' * 40}/"


@pytest.mark.parametrize(
    ("files", "overrides", "where"),
    [
        ([record(sha256="nothex")], {}, "files/0/sha256"),
        ([record()], {"commit": "short"}, "commit"),
        ([record()], {"bucket": "Bad_Bucket"}, "bucket"),
    ],
)
def test_invalid_manifest_is_refused_before_writing(
    files: list[FileRecord], overrides: dict[str, Any], where: str
) -> None:
    """GIVEN a value the schema forbids WHEN building THEN IntegrityError names where."""
    with pytest.raises(IntegrityError, match=where):
        build(files, **overrides)
