"""verify="auto", the default: each file's check chosen by threat model (docs/explanation/security.md).

A file read at the version its manifest pins is the very object the pipeline compared with the
Hub's sha256 before publishing; what is left to catch is corruption on the way or on disk, and
S3's full-object CRC64NVME catches that at ~3% of sha256's CPU. A file read unpinned (a replica, a
manifest without version ids, S3's overwritable "null" version) may have been replaced since, so it
is checked by sha256. Each test corrupts the object and reads which check caught it, or reads the
verified marker a good pull leaves, over moto's real S3 server.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from loader_seed import Seeded, seed_snapshot
from safetensors.numpy import save

from model_cache.contract import layout
from model_cache_loader import IntegrityError, pull, transfer
from model_cache_loader.cli import main as cli_main
from model_cache_loader.hfcache import RepoCache
from model_cache_loader.memory import load_state_dict

pytestmark = pytest.mark.integration

REPO = "test-org/auto-check"
PART = 64 * 1024
WEIGHTS = "model.safetensors"


def weights() -> bytes:
    import numpy as np

    rng = np.random.default_rng(11)
    return save({f"w.{i}": rng.standard_normal((64, 64)).astype("<f4") for i in range(40)}, metadata={"format": "pt"})


def files() -> dict[str, bytes]:
    return {WEIGHTS: weights(), "config.json": b'{"model_type": "llama"}\n'}


def flipped(content: bytes) -> bytes:
    bad = bytearray(content)
    bad[-5] ^= 0x01
    return bytes(bad)


def republish_manifest(s3: Any, seeded: Seeded, **changes: Any) -> None:
    """Rewrite the published manifest with `changes` applied to it (file entries by `files_*`)."""
    manifest = json.loads(json.dumps(seeded.manifest))
    version = changes.pop("file_version_id", ...)
    manifest.update(changes)
    if version is not ...:
        for entry in manifest["files"]:
            entry["version_id"] = version
    body = json.dumps(manifest).encode()
    s3.put_object(
        Bucket=seeded.bucket, Key=layout.manifest_key(seeded.prefix, seeded.repo_id, seeded.commit), Body=body
    )
    s3.put_object(Bucket=seeded.bucket, Key=layout.root_manifest_key(seeded.prefix, seeded.repo_id), Body=body)


def marker_check(cache: Path, seeded: Seeded, path: str) -> str | None:
    """The check the verified marker says this file's blob passed."""
    return RepoCache(cache, REPO).recorded_check(seeded.blob_name(path))


# The ways a read is or is not pinned to the version the pipeline checked.
PINNED = "pinned"
UNPINNED = "no version ids"
NULL_VERSION = 'S3\'s "null" version'
REPLICA = "read from another bucket (a replica)"


# The check the default chooses for each way of reading.
CHECK_BY_READ = [(PINNED, "crc64nvme"), (UNPINNED, "sha256"), (NULL_VERSION, "sha256"), (REPLICA, "sha256")]


def seed_as(s3: Any, bucket: str, how: str, object_override: dict[str, bytes] | None = None) -> Seeded:
    seeded = seed_snapshot(
        s3, bucket, REPO, files(), with_crc=True, pin_versions=how != UNPINNED, object_override=object_override
    )
    if how == NULL_VERSION:
        republish_manifest(s3, seeded, file_version_id="null")
    if how == REPLICA:
        # The manifest names its own bucket; this one serves it as a replica would, at current versions.
        republish_manifest(s3, seeded, bucket="model-cache-primary")
    return seeded


@pytest.mark.parametrize(
    ("how", "expected"),
    CHECK_BY_READ,
)
def test_the_default_check_is_crc64nvme_only_for_a_read_pinned_to_the_checked_version(
    s3: Any, bucket: str, hf_cache: Path, how: str, expected: str
) -> None:
    # GIVEN a snapshot whose manifest records every file's CRC64NVME, read `how`
    seeded = seed_as(s3, bucket, how)
    # WHEN pulled with the default check
    result = pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", part_size=PART)
    # THEN every file has its bytes, and its blob was checked by `expected`
    assert result.source == "s3"
    for path, content in files().items():
        assert (result.path / path).read_bytes() == content
        assert marker_check(hf_cache, seeded, path) == expected, path


@pytest.mark.parametrize(
    ("how", "caught_by"),
    CHECK_BY_READ,
)
def test_a_flipped_bit_is_caught_by_the_chosen_check_and_nothing_kept(
    s3: Any, bucket: str, hf_cache: Path, how: str, caught_by: str
) -> None:
    # GIVEN an object with one bit flipped near its end, read `how`
    seed_as(s3, bucket, how, object_override={WEIGHTS: flipped(files()[WEIGHTS])})
    # WHEN pulled with the default check
    with pytest.raises(IntegrityError, match=rf"{WEIGHTS}: .* do not match the manifest's {caught_by} "):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", part_size=PART)
    # THEN no blob of it is kept
    blobs = hf_cache / f"models--{REPO.replace('/', '--')}" / "blobs"
    assert not [p.name for p in blobs.iterdir() if p.stat().st_size == len(files()[WEIGHTS])]


def test_without_awscrt_the_default_checks_sha256_and_says_nothing(
    s3: Any, bucket: str, hf_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a pinned snapshot, and a loader without awscrt (the wheel without its crc extra)
    seeded = seed_as(s3, bucket, PINNED)
    monkeypatch.setattr(transfer, "crc64nvme_available", lambda: False)
    # WHEN pulled with the default check
    with caplog.at_level(logging.INFO, logger="model_cache_loader"):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", part_size=PART)
    # THEN every blob is checked by sha256, with no warning (the default asked for no particular check)
    assert {marker_check(hf_cache, seeded, path) for path in files()} == {"sha256"}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_cli_default_is_auto_and_sha256_is_one_flag_away(s3: Any, bucket: str, hf_cache: Path) -> None:
    # GIVEN a pinned snapshot
    seeded = seed_as(s3, bucket, PINNED)
    args = ["pull", REPO, "--bucket", bucket, "--cache-dir", str(hf_cache), "--fallback", "error", "-q"]
    # WHEN pulled by the CLI without --verify THEN the blob is checked by crc64nvme
    assert cli_main(args) == 0
    assert marker_check(hf_cache, seeded, WEIGHTS) == "crc64nvme"
    # WHEN pulled again with --verify sha256-local THEN it is hashed again, by sha256
    assert cli_main([*args, "--verify", "sha256-local"]) == 0
    assert marker_check(hf_cache, seeded, WEIGHTS) == "sha256"


@pytest.mark.parametrize(("how", "caught_by"), [(PINNED, "CRC64NVME"), (UNPINNED, "sha256"), (REPLICA, "sha256")])
def test_to_memory_the_default_check_follows_the_pin_too(s3: Any, bucket: str, how: str, caught_by: str) -> None:
    # GIVEN an object with one bit flipped in its last tensor, read `how`
    seed_as(s3, bucket, how, object_override={WEIGHTS: flipped(files()[WEIGHTS])})
    # WHEN streamed to memory with the default check THEN the chosen check catches it
    with pytest.raises(IntegrityError, match=rf"{WEIGHTS}: {caught_by} "):
        load_state_dict(REPO, bucket=bucket, part_size=PART)


def test_asked_for_sha256_a_blob_checked_only_by_its_crc_is_hashed_again_not_fetched(
    s3: Any, bucket: str, hf_cache: Path
) -> None:
    # GIVEN a pinned snapshot pulled with the default check (its blobs marked crc64nvme)
    seeded = seed_as(s3, bucket, PINNED)
    pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", part_size=PART)
    assert marker_check(hf_cache, seeded, WEIGHTS) == "crc64nvme"
    # WHEN pulled again asking for sha256
    again = pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", part_size=PART, verify="sha256")
    # THEN the blob is hashed where it lies (nothing fetched) and marked sha256; the default takes either
    assert (again.source, again.bytes_downloaded) == ("local", 0)
    assert marker_check(hf_cache, seeded, WEIGHTS) == "sha256"
    assert pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error").source == "local"
