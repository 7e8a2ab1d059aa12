"""A manifest that lies about a file's size cannot fill the node's disk, and a planted symlink is never followed.

Against moto's S3 server with the loader's ordinary boto3 client; the manifests are tampered the way someone
with write access to the bucket could (tests/loader/loader_seed.py `manifest_override`).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from loader_seed import build_manifest, commit_for, seed_snapshot

from model_cache_loader import IntegrityError, pull
from model_cache_loader.errors import CacheWriteError
from model_cache_loader.hfcache import TMP_SUFFIX

pytestmark = pytest.mark.integration

REPO = "tamper-org/model"
WEIGHT = "model.safetensors"


def files() -> dict[str, bytes]:
    return {"config.json": b'{"model_type": "tiny"}\n', WEIGHT: os.urandom(256 * 1024)}


def tampered(bucket: str, content: dict[str, bytes], size: int) -> dict[str, Any]:
    manifest = build_manifest(bucket, "models", REPO, "main", commit_for(content), content)
    lied = copy.deepcopy(manifest)
    for entry in lied["files"]:
        if entry["path"] == WEIGHT:
            entry["size"] = size
    lied["total_size"] = sum(entry["size"] for entry in lied["files"])
    return lied


def leftovers(cache: Path) -> list[tuple[str, int]]:
    return [(p.name, p.stat().st_size) for p in cache.rglob(f"*{TMP_SUFFIX}")]


def test_a_manifest_claiming_more_than_the_disk_holds_is_refused_before_any_allocation(
    s3: Any, bucket: str, hf_cache: Path
) -> None:
    """GIVEN a manifest that says the weight is 2^60 bytes  WHEN the loader pulls  THEN it refuses with
    CacheWriteError naming the bytes needed and free, before a file is created or a byte allocated."""
    content = files()
    seed_snapshot(s3, bucket, REPO, content, manifest_override=tampered(bucket, content, 2**60))
    with pytest.raises(CacheWriteError, match=r"needs 1,152,921,504,606,846,9\d\d bytes but .* free"):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error")
    assert leftovers(hf_cache) == []


def test_a_big_size_that_is_not_the_objects_is_found_before_its_space_is_reserved(
    s3: Any, bucket: str, hf_cache: Path
) -> None:
    """GIVEN a manifest that says the 256 KiB weight is 512 MiB (it fits the disk)  WHEN the loader pulls
    THEN it asks S3 for the object's real size first and fails with IntegrityError naming both sizes; no
    512 MiB staging file is left behind."""
    content = files()
    seed_snapshot(s3, bucket, REPO, content, manifest_override=tampered(bucket, content, 512 * 1024 * 1024))
    with pytest.raises(IntegrityError, match=r"is 262144 bytes, the manifest says 536870912; nothing was allocated"):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error")
    assert [size for _, size in leftovers(hf_cache) if size >= 512 * 1024 * 1024] == []


def test_a_symlink_planted_at_a_staging_path_is_not_followed(
    s3: Any, bucket: str, hf_cache: Path, tmp_path: Path
) -> None:
    """GIVEN a resumable download's journal and, at its staging path, a symlink to another file  WHEN the loader
    pulls  THEN it never writes through the link: the other file keeps its bytes, and the pull still completes."""
    content = files()
    seeded = seed_snapshot(s3, bucket, REPO, content)
    victim = tmp_path / "victim"
    victim.write_bytes(b"v" * len(content[WEIGHT]))  # the blob's size, so the journal's resume would adopt it
    blobs = hf_cache / "models--tamper-org--model" / "blobs"
    blobs.mkdir(parents=True)
    blob = seeded.blob_name(WEIGHT)
    (blobs / f"{blob}{TMP_SUFFIX}").symlink_to(victim)
    header = {"part_size": 64 * 1024, "sha256": seeded.entry(WEIGHT)["sha256"], "size": len(content[WEIGHT])}
    (blobs / f"{blob}.loader-parts").write_text(json.dumps(header) + "\n0\n")  # part 0 done: resume the rest
    result = pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error")
    assert victim.read_bytes() == b"v" * len(content[WEIGHT])
    assert (result.path / WEIGHT).read_bytes() == content[WEIGHT]
