"""verify="crc64nvme": blobs checked against the manifest's S3 full-object CRC64NVME instead of sha256.

Over moto's real S3 server; the last test publishes with the real engine from the Hub double, so the
value checked is the one the pipeline writes.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from loader_seed import Seeded, crc64nvme_of, seed_snapshot, small_repo

from model_cache_loader import IntegrityError, ManifestError, pull, transfer
from model_cache_loader.cli import main as cli_main
from model_cache_loader.transfer import BodyReader

REPO = "test-org/crc"
PART = 64 * 1024


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def blobs_dir(cache: Path, repo: str = REPO) -> Path:
    return cache / f"models--{repo.replace('/', '--')}" / "blobs"


def big_repo() -> dict[str, bytes]:
    """small_repo plus a weight of many 64 KiB parts (the part CRCs are combined) and an odd tail."""
    return {**small_repo(), "shard.safetensors": os.urandom(9 * PART + 321)}


def corrupt(content: bytes, at: int) -> bytes:
    bad = bytearray(content)
    bad[at] ^= 0x01
    return bytes(bad)


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "verify=crc64nvme" in r.getMessage()]


@pytest.mark.integration
@pytest.mark.parametrize("part_size", [PART, 16 * 1024 * 1024], ids=["ranged-parts", "whole-objects"])
def test_crc64nvme_pull_writes_the_same_bytes_and_layout(
    s3: Any, bucket: str, hf_cache: Path, caplog: pytest.LogCaptureFixture, part_size: int
) -> None:
    """GIVEN a snapshot whose manifest records every file's CRC64NVME
    WHEN pulled with verify='crc64nvme', in many ranged parts or whole
    THEN every file has its bytes, blobs carry their contract names, and no sha256 fallback is logged."""
    files = big_repo()
    seeded = seed_snapshot(s3, bucket, REPO, files, with_crc=True)

    with caplog.at_level(logging.INFO, logger="model_cache_loader"):
        result = pull(
            REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", verify="crc64nvme", part_size=part_size
        )

    assert result.source == "s3"
    for path, content in files.items():
        assert (result.path / path).read_bytes() == content, path
    assert tree(blobs_dir(hf_cache)) == sorted({seeded.blob_name(p) for p in files})
    assert fallback_warnings(caplog) == []


@pytest.mark.integration
@pytest.mark.parametrize("part_size", [PART, 16 * 1024 * 1024], ids=["ranged-parts", "whole-objects"])
def test_corrupted_object_is_caught_by_crc64nvme_and_nothing_kept(
    s3: Any, bucket: str, hf_cache: Path, part_size: int
) -> None:
    """GIVEN an object with one flipped bit in its last part, its manifest CRC that of the right bytes
    WHEN pulled with verify='crc64nvme'
    THEN IntegrityError names the file and the crc64nvme, and no blob or temporary file is kept."""
    files = big_repo()
    shard = files["shard.safetensors"]
    seeded = seed_snapshot(
        s3, bucket, REPO, files, with_crc=True, object_override={"shard.safetensors": corrupt(shard, len(shard) - 5)}
    )

    with pytest.raises(IntegrityError, match=r"shard\.safetensors.*do not match the manifest's crc64nvme"):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", verify="crc64nvme", part_size=part_size)

    left = tree(blobs_dir(hf_cache))
    assert seeded.blob_name("shard.safetensors") not in left
    assert not [name for name in left if "incomplete" in name or "parts" in name]


@pytest.mark.integration
def test_a_null_crc64nvme_falls_back_to_sha256_and_says_so(
    s3: Any, bucket: str, hf_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """GIVEN a manifest whose crc64nvme is null for every file, and one corrupted object
    WHEN pulled with verify='crc64nvme'
    THEN a log line says the files are verified by sha256 instead, and sha256 catches the corruption."""
    files = big_repo()
    shard = files["shard.safetensors"]
    seed_snapshot(s3, bucket, REPO, files, object_override={"shard.safetensors": corrupt(shard, 7)})

    with (
        caplog.at_level(logging.INFO, logger="model_cache_loader"),
        pytest.raises(IntegrityError, match=r"shard\.safetensors.*do not match the manifest's sha256"),
    ):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", verify="crc64nvme", part_size=PART)

    (warning,) = fallback_warnings(caplog)
    assert "records no crc64nvme" in warning
    assert "verifying them by sha256" in warning


@pytest.mark.integration
def test_only_the_files_without_a_crc64nvme_fall_back(
    s3: Any, bucket: str, hf_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """GIVEN a manifest with a CRC for every file but config.json
    WHEN pulled with verify='crc64nvme' THEN the pull succeeds and the log names config.json alone."""
    files = big_repo()
    seeded = seed_snapshot(s3, bucket, REPO, files, with_crc=True)
    manifest = json.loads(json.dumps(seeded.manifest))
    for entry in manifest["files"]:
        if entry["path"] == "config.json":
            entry["crc64nvme"] = None
    seed_snapshot(s3, bucket, REPO, files, manifest_override=manifest)

    with caplog.at_level(logging.INFO, logger="model_cache_loader"):
        result = pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", verify="crc64nvme")

    assert (result.path / "config.json").read_bytes() == files["config.json"]
    (warning,) = fallback_warnings(caplog)
    assert "1 file(s) (config.json)" in warning


@pytest.mark.integration
def test_without_awscrt_crc64nvme_falls_back_to_sha256(
    s3: Any, bucket: str, hf_cache: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN awscrt not importable (the `crc` extra not installed) and a corrupted object
    WHEN pulled with verify='crc64nvme'
    THEN a log line names the missing awscrt and the extra, and sha256 catches the corruption."""
    monkeypatch.setattr(transfer, "crc_checksums", None)
    files = big_repo()
    shard = files["shard.safetensors"]
    seed_snapshot(s3, bucket, REPO, files, with_crc=True, object_override={"shard.safetensors": corrupt(shard, 0)})

    with (
        caplog.at_level(logging.INFO, logger="model_cache_loader"),
        pytest.raises(IntegrityError, match="manifest's sha256"),
    ):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", verify="crc64nvme", part_size=PART)

    (warning,) = fallback_warnings(caplog)
    assert "awscrt" in warning
    assert "[crc] extra" in warning


@pytest.mark.integration
def test_a_malformed_crc64nvme_is_a_manifest_error_before_any_download(s3: Any, bucket: str, hf_cache: Path) -> None:
    """GIVEN a manifest whose crc64nvme is not base64 of 8 bytes
    WHEN pulled with verify='crc64nvme' THEN ManifestError names the file and the value, and no blob is written."""
    files = small_repo()
    seeded = seed_snapshot(s3, bucket, REPO, files, with_crc=True)
    manifest = json.loads(json.dumps(seeded.manifest))
    manifest["files"][0]["crc64nvme"] = "bm90IDggYnl0ZXM="  # base64 of 'not 8 bytes'
    seed_snapshot(s3, bucket, REPO, files, manifest_override=manifest)

    with pytest.raises(ManifestError, match=rf"{manifest['files'][0]['path']}: crc64nvme 'bm90IDggYnl0ZXM='"):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", verify="crc64nvme")
    assert tree(blobs_dir(hf_cache)) == []


@pytest.mark.integration
def test_resumed_parts_are_checked_by_the_crc_too(s3: Any, bucket: str, hf_cache: Path) -> None:
    """GIVEN a journal from a killed pull claiming parts 0-2, whose bytes on disk are garbage
    WHEN pulled with verify='crc64nvme'
    THEN the resumed blob fails its CRC, is downloaded once more from scratch, and ends up right."""
    content = os.urandom(6 * PART)
    files = {"model.safetensors": content}
    seeded = seed_snapshot(s3, bucket, REPO, files, with_crc=True)
    name = seeded.blob_name("model.safetensors")
    blobs = blobs_dir(hf_cache)
    blobs.mkdir(parents=True)
    (blobs / f"{name}.loader-incomplete").write_bytes(b"\x01" * len(content))
    header = json.dumps({"part_size": PART, "sha256": name, "size": len(content)}, sort_keys=True)
    (blobs / f"{name}.loader-parts").write_text(header + "\n0\n1\n2\n")

    result = pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", verify="crc64nvme", part_size=PART)

    assert result.bytes_downloaded == 3 * PART + 6 * PART  # the resumed attempt, then the whole blob again
    assert (result.path / "model.safetensors").read_bytes() == content
    assert tree(blobs) == [name]


@pytest.mark.integration
def test_good_resumed_parts_are_kept_and_read_back_for_the_crc(s3: Any, bucket: str, hf_cache: Path) -> None:
    """GIVEN a journal from a killed pull with parts 0-3 correctly on disk
    WHEN pulled with verify='crc64nvme' THEN only the other parts are fetched and the blob verifies."""
    content = os.urandom(10 * PART + 99)
    seeded = seed_snapshot(s3, bucket, REPO, {"model.safetensors": content}, with_crc=True)
    name = seeded.blob_name("model.safetensors")
    blobs = blobs_dir(hf_cache)
    blobs.mkdir(parents=True)
    (blobs / f"{name}.loader-incomplete").write_bytes(content[: 4 * PART] + b"\0" * (len(content) - 4 * PART))
    header = json.dumps({"part_size": PART, "sha256": name, "size": len(content)}, sort_keys=True)
    (blobs / f"{name}.loader-parts").write_text(header + "\n0\n1\n2\n3\n")

    result = pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", verify="crc64nvme", part_size=PART)

    assert result.bytes_downloaded == len(content) - 4 * PART
    assert (result.path / "model.safetensors").read_bytes() == content


@pytest.mark.integration
def test_cli_accepts_verify_crc64nvme(s3: Any, bucket: str, hf_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN a snapshot with CRCs WHEN `model-cache-loader pull --verify crc64nvme` runs
    THEN exit 0 and the snapshot path on stdout."""
    seeded = seed_snapshot(s3, bucket, REPO, small_repo(), with_crc=True)
    code = cli_main(["pull", REPO, "--bucket", bucket, "--verify", "crc64nvme", "--fallback", "error", "-q"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out == str(hf_cache / "models--test-org--crc" / "snapshots" / seeded.commit)


@pytest.mark.integration
def test_the_crc_the_pipeline_records_is_the_one_the_loader_checks(
    hub: Any, s3: Any, bucket: str, hf_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """GIVEN the nested fixture repo published by the real engine from the Hub double (its 11 MiB file
    a 3-part multipart upload, so its CRC is S3's full-object CRC of a composite upload)
    WHEN pulled with verify='crc64nvme'
    THEN every manifest entry carries a crc64nvme equal to the CRC64NVME of the Hub's bytes, no file falls
    back to sha256, and every pulled file equals the Hub's bytes."""
    from model_cache.pipeline.engine import sync
    from model_cache.pipeline.plan import MiB
    from model_cache_devtools import modelgen

    published = sync(modelgen.NESTED, bucket=bucket, part_size=5 * MiB, concurrency=4, s3=s3)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=published.manifest_key)["Body"].read())
    snapshot = hub.store.snapshot(modelgen.NESTED)

    def hub_bytes(path: str) -> bytes:
        entry = snapshot.files[path]
        return bytes(entry.read(0, entry.size))

    assert any(entry["size"] > 10 * MiB for entry in manifest["files"])
    for entry in manifest["files"]:
        assert entry["crc64nvme"] == crc64nvme_of(hub_bytes(entry["path"])), entry["path"]

    with caplog.at_level(logging.INFO, logger="model_cache_loader"):
        result = pull(modelgen.NESTED, bucket=bucket, cache_dir=hf_cache, fallback="error", verify="crc64nvme")

    assert result.source == "s3"
    assert result.commit == snapshot.commit
    assert fallback_warnings(caplog) == []
    for entry in manifest["files"]:
        assert (result.path / entry["path"]).read_bytes() == hub_bytes(entry["path"]), entry["path"]


class _PlainBody:
    """A body that is not botocore-over-urllib3: only read/readinto/close."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)
        self.closed = False

    def read(self, amount: int = -1) -> bytes:
        return self._stream.read(amount)

    def readinto(self, buffer: memoryview) -> int:
        return self._stream.readinto(buffer)

    def close(self) -> None:
        self.closed = True


@pytest.mark.unit
@pytest.mark.parametrize("extra", [b"", b"x"], ids=["exact", "longer"])
def test_body_reader_falls_back_to_the_bodys_own_readinto(extra: bytes) -> None:
    """GIVEN a body without urllib3/http.client underneath
    WHEN read through BodyReader THEN its own readinto gives the bytes, and at_end tells an exhausted
    body from one with bytes left."""
    data = bytes(range(256)) * 10
    reader = BodyReader(_PlainBody(data + extra))
    buffer = memoryview(bytearray(1000))
    got = bytearray()
    while len(got) < len(data):
        received = reader.readinto(buffer[: min(1000, len(data) - len(got))])
        assert received
        got += buffer[:received]
    assert bytes(got) == data
    assert reader.at_end() is (extra == b"")


@pytest.mark.integration
def test_body_reader_reads_real_bodies_and_returns_the_connection(seeded_big: Seeded, s3: Any) -> None:
    """GIVEN real GetObject bodies from moto WHEN read one after another through BodyReader
    THEN it takes the one-copy path, gives exactly the object's bytes, and hands the connection back
    to the pool each time, so five GETs in a row open at most one new connection."""
    key = seeded_big.entry("shard.safetensors")["key"]
    pool = s3._endpoint.http_session._manager.connection_from_url(s3.meta.endpoint_url)
    opened_before = pool.num_connections
    buffer = memoryview(bytearray(100_000))
    for _ in range(5):
        body = s3.get_object(Bucket=seeded_big.bucket, Key=key)["Body"]
        reader = BodyReader(body)
        assert reader.readinto != body.readinto  # the direct http.client path
        got = bytearray()
        while received := reader.readinto(buffer):
            got += buffer[:received]
        assert bytes(got) == seeded_big.files["shard.safetensors"]
        assert reader.at_end()
    assert pool.num_connections - opened_before <= 1


@pytest.fixture
def seeded_big(s3: Any, bucket: str) -> Seeded:
    return seed_snapshot(s3, bucket, REPO, big_repo(), with_crc=True)
