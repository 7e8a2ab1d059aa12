"""Integrity of the loader under S3 faults and concurrency: it never trusts bytes it did not verify.

The model is published by the real engine (the fault Hub's 12 MiB weight and two small files) into
moto, and the loader reads it through the S3 fault proxy, which cuts, resets or flips a GET body of
one key at a chosen byte. After every trial every blob in the cache must hash to its name
(`check_loader_cache`), and the pulled files must be the Hub's bytes.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import REGION
from reliability_support import (
    FAULT_REPO,
    FILE_SIZES,
    PART_SIZE,
    SEED,
    SMALL_FILES,
    WEIGHT,
    FaultTable,
    RetryLog,
    check_loader_cache,
    new_bucket,
)

from model_cache.pipeline.engine import sync
from model_cache_devtools.hub import HubServer
from model_cache_devtools.s3proxy import S3Proxy
from model_cache_loader import pull
from model_cache_loader.errors import IntegrityError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KIB = 1024
LOADER_PART = 1024 * KIB  # the 12 MiB weight in 13 ranged GETs


@pytest.fixture
def published(fault_hub_endpoint: HubServer, s3: Any, hub_retries: RetryLog) -> str:
    """A versioned bucket holding FAULT_REPO as the engine publishes it."""
    bucket = new_bucket(s3, versioned=True)
    sync(FAULT_REPO, bucket=bucket, part_size=PART_SIZE, s3=s3)
    return bucket


@pytest.fixture
def proxy_client(s3_proxy: S3Proxy) -> Any:
    s3_proxy.faults.clear()
    s3_proxy.requests.clear()
    return boto3.client("s3", region_name=REGION, endpoint_url=s3_proxy.url)


def hub_bytes(hub: HubServer, path: str) -> bytes:
    import httpx2

    response = httpx2.get(f"{hub.url}/{FAULT_REPO}/resolve/main/{path}", follow_redirects=True)
    response.raise_for_status()
    return bytes(response.content)


def weight_key(s3: Any, bucket: str) -> str:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="models/")["Contents"]
    return str(next(item["Key"] for item in listed if "/snapshots/" in item["Key"] and item["Key"].endswith(WEIGHT)))


def pull_via(client: Any, bucket: str, cache: Path, *, concurrency: int = 4, **options: Any) -> Any:
    return pull(
        FAULT_REPO,
        bucket=bucket,
        cache_dir=cache,
        s3_client=client,
        part_size=LOADER_PART,
        concurrency=concurrency,
        **options,
    )


def assert_pulled_the_hub_bytes(result: Any, hub: HubServer, cache: Path) -> None:
    assert check_loader_cache(cache) == []
    for path in (WEIGHT, *SMALL_FILES):
        assert (
            hashlib.sha256((result.path / path).read_bytes()).digest() == hashlib.sha256(hub_bytes(hub, path)).digest()
        )


# ---------------------------------------------------------------------------------------------
# 2: the version the manifest verified
# ---------------------------------------------------------------------------------------------


def test_the_loader_reads_the_version_the_manifest_verified(
    fault_hub_endpoint: HubServer, published: str, s3: Any, hf_cache: Path
) -> None:
    """GIVEN a published snapshot on a versioned bucket, and then other bytes written over its weight's key
    (a newer version nobody verified)  WHEN a pod pulls with fallback=error  THEN it gets the verified bytes:
    every GET names the manifest's version id.
    (Failed on 93eecbe: the loader read the latest version and raised IntegrityError.)"""
    key = weight_key(s3, published)
    s3.put_object(Bucket=published, Key=key, Body=b"\0" * FILE_SIZES[WEIGHT])
    result = pull(FAULT_REPO, bucket=published, cache_dir=hf_cache, fallback="error", part_size=LOADER_PART)
    assert result.source == "s3"
    assert_pulled_the_hub_bytes(result, fault_hub_endpoint, hf_cache)


def test_a_manifest_that_grew_into_a_superset_is_read_again(
    fault_hub_endpoint: HubServer, s3: Any, hub_retries: RetryLog, tmp_path: Path
) -> None:
    """GIVEN a pod pulled the model while the commit was cached for include=["*.json"] only (its local manifest
    copy names one file)  WHEN the whole model is cached at the same commit (the manifest becomes the union)
    and the pod pulls again  THEN it reads the manifest again and gets every file, the weight included."""
    bucket = new_bucket(s3, versioned=True)
    sync(FAULT_REPO, bucket=bucket, part_size=PART_SIZE, include=["*.json"], s3=s3)
    narrow = pull(FAULT_REPO, bucket=bucket, cache_dir=tmp_path / "cache", fallback="error")
    assert not (narrow.path / WEIGHT).exists()
    sync(FAULT_REPO, bucket=bucket, part_size=PART_SIZE, s3=s3)
    full = pull(FAULT_REPO, bucket=bucket, cache_dir=tmp_path / "cache", fallback="error", part_size=LOADER_PART)
    assert full.commit == narrow.commit
    assert full.source == "s3"
    assert_pulled_the_hub_bytes(full, fault_hub_endpoint, tmp_path / "cache")


# ---------------------------------------------------------------------------------------------
# 3 + 4: a body cut, reset or served with other bytes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verify", ["auto", "sha256"], ids=["default-crc64nvme-pinned", "sha256"])
def test_a_retry_that_serves_other_bytes_is_never_renamed_into_a_blob(
    fault_hub_endpoint: HubServer, published: str, s3_proxy: S3Proxy, proxy_client: Any, tmp_path: Path, verify: str
) -> None:
    """GIVEN S3 resets the weight's first GET after 512 KiB, and the retry's answer has one byte flipped
    WHEN the loader pulls (one stream), with the default check (the pipeline pinned every version, so
    CRC64NVME) or sha256
    THEN the flipped byte is caught (the retry asks only for bytes not yet received
    and checked, so every byte on disk is checked), the weight is fetched once more, and every blob hashes
    to its name.
    (Failed on 93eecbe: the retry restarted at the part's first byte and rewrote bytes already hashed, so
    a blob holding the flipped byte was renamed into blobs/<sha256>.)"""
    s3_proxy.faults.add("GetObject", "reset", key=f"*/{WEIGHT}", offset=512 * KIB)
    s3_proxy.faults.add("GetObject", "flip", key=f"*/{WEIGHT}", offset=100)
    # One stream: the reset lands on the first part, whose bytes are checked in-stream as they arrive.
    result = pull_via(proxy_client, published, tmp_path / "cache", fallback="error", concurrency=1, verify=verify)
    assert s3_proxy.faults.pending() == 0
    assert result.source == "s3"
    assert_pulled_the_hub_bytes(result, fault_hub_endpoint, tmp_path / "cache")


def test_an_s3_body_cut_mid_get_resumes_from_the_first_missing_byte(
    fault_hub_endpoint: HubServer, published: str, s3_proxy: S3Proxy, proxy_client: Any, tmp_path: Path
) -> None:
    """GIVEN S3 ends the weight's first GET body early (a clean premature end, no reset) after 300 KiB
    WHEN the loader pulls  THEN the cut is retried as a transient fault from the first missing byte, the
    pull succeeds from S3, and S3 sent each byte of the weight once.
    (Failed on 93eecbe: the short body was an IntegrityError that neither retried nor fell back.)"""
    s3_proxy.faults.add("GetObject", "cut", key=f"*/{WEIGHT}", offset=300 * KIB)
    result = pull_via(proxy_client, published, tmp_path / "cache", fallback="error")
    assert result.source == "s3"
    sent = sum(
        entry.bytes_out for entry in s3_proxy.requests.of("GetObject") if entry.path.split("?")[0].endswith(WEIGHT)
    )
    assert sent == FILE_SIZES[WEIGHT]
    assert_pulled_the_hub_bytes(result, fault_hub_endpoint, tmp_path / "cache")


def test_s3_that_keeps_serving_bad_bytes_falls_back_to_the_hub_and_says_why(
    fault_hub_endpoint: HubServer,
    published: str,
    s3_proxy: S3Proxy,
    proxy_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """GIVEN S3 flips a byte of the weight in every answer  WHEN the loader pulls with fallback=hub  THEN it
    downloads from the Hub, logs the mismatch as the reason, and keeps no wrong blob; with fallback=error the
    same pull raises IntegrityError."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    s3_proxy.faults.add("GetObject", "flip", key=f"*/{WEIGHT}", offset=4321, times=1000)
    with pytest.raises(IntegrityError, match="do not match the manifest"):
        pull_via(proxy_client, published, tmp_path / "strict", fallback="error")
    assert check_loader_cache(tmp_path / "strict") == []
    with caplog.at_level("WARNING", logger="model_cache_loader"):
        result = pull_via(proxy_client, published, tmp_path / "cache", fallback="hub")
    assert result.source == "hub"
    assert "do not match the manifest" in (result.reason or "")
    assert any("from the Hugging Face Hub" in record.getMessage() for record in caplog.records)
    assert_pulled_the_hub_bytes(result, fault_hub_endpoint, tmp_path / "cache")


def test_the_fault_table_rows_for_s3_bodies(
    fault_hub_endpoint: HubServer, published: str, s3_proxy: S3Proxy, proxy_client: Any, tmp_path: Path
) -> None:
    """GIVEN, from a fixed seed, the weight's GETs cut or reset at a random byte 1-3 times, or a reset followed
    by a retry that serves one flipped byte  WHEN the loader pulls each time into a fresh cache  THEN every
    pull ends from S3 with verified blobs: corrupted 0, orphaned 0 (no blob that differs from its name)."""
    rng = random.Random(SEED + 114)
    cut_row = FaultTable("S3 body cut mid-GET for the loader")
    flip_row = FaultTable("retry serves different bytes (loader)")
    for trial in range(10):
        s3_proxy.faults.clear()
        cache = tmp_path / f"cache-{trial}"
        flip = trial % 2 == 1
        for _ in range(1 if flip else rng.randint(1, 3)):
            kind = rng.choice(["cut", "reset"])
            s3_proxy.faults.add("GetObject", kind, key=f"*/{WEIGHT}", offset=rng.randrange(LOADER_PART))
        if flip:
            s3_proxy.faults.add("GetObject", "flip", key=f"*/{WEIGHT}", offset=rng.randrange(512 * KIB))
        result = pull_via(proxy_client, published, cache, fallback="error")
        problems = check_loader_cache(cache)
        (flip_row if flip else cut_row).trial(recovered=result.source == "s3", corrupted=len(problems), orphaned=0)
        assert problems == []
        assert result.source == "s3"
        assert_pulled_the_hub_bytes(result, fault_hub_endpoint, cache)
    cut_row.write()
    flip_row.write()


# ---------------------------------------------------------------------------------------------
# 8: two threads and two processes pulling one model
# ---------------------------------------------------------------------------------------------


def test_two_threads_pulling_one_model_in_one_process_never_race(
    fault_hub_endpoint: HubServer, published: str, tmp_path: Path
) -> None:
    """GIVEN one process and a cache whose blobs and snapshot are on disk but whose ref and manifest copy
    are not (a node cache a new pod finds)  WHEN two threads pull the model at the same moment, 80 rounds
    THEN no call fails: each writer stages the ref and the manifest copy in a file of its own.
    (Failed on 93eecbe: both threads staged in the same per-process file; os.replace raised FileNotFoundError.)"""
    cache = tmp_path / "cache"
    pull(FAULT_REPO, bucket=published, cache_dir=cache, fallback="error", part_size=LOADER_PART)
    repo_dir = cache / f"models--{FAULT_REPO.replace('/', '--')}"
    rounds = 80
    failures: list[BaseException] = []
    gate = threading.Barrier(3)

    def worker() -> None:
        for _ in range(rounds):
            gate.wait()
            try:
                pull(FAULT_REPO, bucket=published, cache_dir=cache, fallback="error", part_size=LOADER_PART)
            except Exception as exc:
                failures.append(exc)
            gate.wait()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for _ in range(rounds):
        (repo_dir / "refs" / "main").unlink(missing_ok=True)
        shutil.rmtree(repo_dir / ".model-cache-loader", ignore_errors=True)
        gate.wait()  # both threads pull now
        gate.wait()  # both are done
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert check_loader_cache(cache) == []


def pull_into(results: list[Any], bucket: str, cache: Path) -> None:
    results.append(pull(FAULT_REPO, bucket=bucket, cache_dir=cache, fallback="error"))


def test_the_fault_table_row_two_threads_and_two_processes(
    fault_hub_endpoint: HubServer, published: str, tmp_path: Path
) -> None:
    """GIVEN a fresh cache per trial  WHEN two loader processes pull the model at once, then two threads
    pull it at once  THEN all succeed and every blob hashes to its name."""
    table = FaultTable("two threads and two processes pulling one model")
    for trial in range(3):
        cache = tmp_path / f"cache-{trial}"
        command = [sys.executable, "-m", "model_cache_loader", "pull", FAULT_REPO, "--bucket", published]
        command += ["--cache-dir", str(cache), "--fallback", "error"]
        processes = [subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.PIPE, text=True) for _ in "ab"]
        statuses = [process.wait(timeout=120) for process in processes]
        results: list[Any] = []
        threads = [threading.Thread(target=pull_into, args=(results, published, cache)) for _ in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        problems = check_loader_cache(cache)
        recovered = statuses == [0, 0] and len(results) == 2
        table.trial(recovered=recovered, corrupted=len(problems), orphaned=0, note=f"trial {trial}")
        assert statuses == [0, 0]
        assert len(results) == 2
        assert problems == []
    table.write()


# ---------------------------------------------------------------------------------------------
# 9: short writes and durability
# ---------------------------------------------------------------------------------------------


def test_a_short_write_is_written_again_not_taken_for_done(
    fault_hub_endpoint: HubServer, published: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN os.pwrite writes at most 1,000 bytes a call (as it may on a signal or a nearly full disk)
    WHEN the loader pulls  THEN every blob holds every byte (each short write is continued at its offset);
    a fault-table row over seeded write limits.
    (Failed on 93eecbe: pwrite's count was ignored, the hash ran on the bytes in memory, and a blob with
    zeros where the unwritten bytes belonged was renamed into place.)"""
    real_pwrite = os.pwrite
    rng = random.Random(SEED + 115)
    table = FaultTable("a short write (loader)")
    for trial in range(3):
        limit = rng.choice([1000, 4096, 65_537])
        monkeypatch.setattr(os, "pwrite", lambda fd, data, offset, limit=limit: real_pwrite(fd, data[:limit], offset))
        cache = tmp_path / f"cache-{trial}"
        result = pull(FAULT_REPO, bucket=published, cache_dir=cache, fallback="error", part_size=LOADER_PART)
        monkeypatch.setattr(os, "pwrite", real_pwrite)
        problems = check_loader_cache(cache)
        table.trial(recovered=result.source == "s3", corrupted=len(problems), orphaned=0, note=f"limit {limit}")
        assert problems == []
        assert_pulled_the_hub_bytes(result, fault_hub_endpoint, cache)
    table.write()


def test_a_blob_is_fsynced_before_its_rename(
    fault_hub_endpoint: HubServer, published: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN the loader's os.fsync and os.replace calls recorded  WHEN it pulls  THEN each blob's temporary
    file was fsynced before it was renamed to its final name, so a node crash cannot leave a zero-filled
    blob of the right size that the size-only completeness check would accept.
    (Failed on 93eecbe: no fsync at all.)"""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source: Any, target: Any, **kwargs: Any) -> None:
        events.append(("replace", str(source)))
        real_replace(source, target, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    pull(FAULT_REPO, bucket=published, cache_dir=tmp_path / "cache", fallback="error", part_size=LOADER_PART)
    monkeypatch.undo()
    renamed = [path for kind, path in events if kind == "replace" and path.endswith(".loader-incomplete")]
    assert len(renamed) == 3
    for path in renamed:
        assert events.index(("fsync", path)) < events.index(("replace", path))
