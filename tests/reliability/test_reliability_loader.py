"""Loader faults: a pull SIGKILLed mid-download and restarted, and the cache's disk filling up.

Real processes and real HTTP: `python -m model_cache_loader pull` against moto through the S3 proxy
(a per-connection bandwidth cap makes a download last long enough to be killed mid-way), then the
restart in-process. The full disk is a real small tmpfs mounted over the cache directory (this
suite runs as root; where mounting is refused, a pwrite that raises ENOSPC after a byte budget
stands in, and the test says so in its row). After every trial no blob in the cache may differ
from its name's digest, and no snapshot link may dangle.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import seed_snapshot
from reliability_support import SEED, FaultTable, MiB, check_loader_cache, new_bucket

from model_cache_devtools.s3proxy import S3Proxy
from model_cache_loader import pull
from model_cache_loader.errors import CacheWriteError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRIALS = 5
REPO = "rel-org/pulled"
WEIGHT = "model.safetensors"
PULL = [sys.executable, "-m", "model_cache_loader", "pull", "-q"]


def model_files(rng: random.Random, size: int) -> dict[str, bytes]:
    return {WEIGHT: rng.randbytes(size), "config.json": b'{"model_type": "llama"}\n'}


def blobs_dir(cache: Path) -> Path:
    return cache / f"models--{REPO.replace('/', '--')}" / "blobs"


def test_loader_killed_mid_download_then_restarted(s3: Any, s3_proxy: S3Proxy, tmp_path: Path) -> None:
    """GIVEN `model-cache-loader pull` SIGKILLed after a random number of finished parts (in some trials
    a byte of the partial file is then flipped, as a torn write would leave it)
    WHEN the pull runs again THEN it resumes, every blob verifies, the snapshot holds the exact bytes,
    and no temporary file is left."""
    rng = random.Random(SEED + 41)
    table = FaultTable("loader SIGKILLed mid-download, then restarted")
    for trial in range(TRIALS):
        bucket = new_bucket(s3)
        files = model_files(rng, 5 * MiB)
        seeded = seed_snapshot(s3, bucket, REPO, files)
        cache = tmp_path / f"cache-{trial}"
        journal = blobs_dir(cache) / f"{seeded.blob_name(WEIGHT)}.loader-parts"
        partial = blobs_dir(cache) / f"{seeded.blob_name(WEIGHT)}.loader-incomplete"
        parts_before_kill = rng.randint(1, 3)
        s3_proxy.bandwidth_limit = 1 * MiB
        victim = subprocess.Popen(
            [*PULL, REPO, "--bucket", bucket, "--cache-dir", str(cache), "--concurrency", "2", "--part-size-mib", "1"],
            env={**os.environ, "AWS_ENDPOINT_URL": s3_proxy.url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while victim.poll() is None and time.monotonic() < deadline:
                if journal.exists() and len(journal.read_text().splitlines()) > parts_before_kill:
                    victim.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.02)
            assert victim.wait(timeout=30) == -signal.SIGKILL, "the pull finished before it was killed"
        finally:
            if victim.poll() is None:
                victim.kill()
                victim.wait()
        s3_proxy.bandwidth_limit = None
        torn = rng.random() < 0.5
        if torn:
            with partial.open("r+b") as handle:  # a finished part's byte, flipped after the fact
                handle.seek(rng.randrange(MiB))
                byte = handle.read(1)
                handle.seek(-1, os.SEEK_CUR)
                handle.write(bytes([byte[0] ^ 0xFF]))
        assert check_loader_cache(cache) == []

        result = pull(REPO, bucket=bucket, cache_dir=cache, part_size=MiB, fallback="error")

        problems = check_loader_cache(cache)
        table.trial(
            recovered=True, corrupted=len(problems), orphaned=0, note=f"after {parts_before_kill} parts, torn={torn}"
        )
        assert problems == []
        assert result.source == "s3"
        for path, content in files.items():
            assert (result.path / path).read_bytes() == content
        assert not [p.name for p in blobs_dir(cache).iterdir() if ".loader-" in p.name]
    table.write()
    assert table.row.recovered == TRIALS


@contextlib.contextmanager
def small_disk(where: Path, size: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A `size`-byte filesystem at `where`: a real tmpfs, or (when mount is refused) os.pwrite failing
    with ENOSPC once `size` bytes are written. Yields which one it is."""
    where.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, check=False
    )
    if mounted.returncode == 0:
        try:
            yield "tmpfs"
        finally:
            subprocess.run(["umount", "-l", str(where)], check=False)
        return
    budget = [size]
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if budget[0] < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget[0] -= len(data)
        return real_pwrite(fd, data, offset)

    with monkeypatch.context() as patch:
        patch.setattr(os, "pwrite", pwrite)
        yield "ENOSPC pwrite"


def test_loader_disk_full(s3: Any, aws: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN a cache directory on a filesystem smaller than the model (random size, so the disk fills
    at a random offset) WHEN the model is pulled THEN CacheWriteError names the full disk and the fix,
    with no Hub fallback and no blob that is not verified; WHEN the space is there and the pull runs
    again THEN it completes with the exact bytes."""
    rng = random.Random(SEED + 51)
    table = FaultTable("loader disk full (tmpfs)")
    for trial in range(TRIALS):
        bucket = new_bucket(s3)
        files = model_files(rng, 6 * MiB)
        seed_snapshot(s3, bucket, REPO, files)
        cache = tmp_path / f"disk-{trial}"
        size = rng.randrange(1 * MiB, 5 * MiB) // 4096 * 4096
        with small_disk(cache, size, monkeypatch) as how:
            with pytest.raises(CacheWriteError, match="free space") as failure:
                pull(REPO, bucket=bucket, cache_dir=cache, part_size=MiB, concurrency=2, fallback="hub")
            assert "S3" not in str(failure.value).split(":")[0]
            problems = check_loader_cache(cache)
            finished = [p for p in blobs_dir(cache).iterdir() if ".loader-" not in p.name]
        table.trial(recovered=False, corrupted=len(problems), orphaned=0, note=f"{how} of {size} B")
        assert problems == []
        assert all(p.stat().st_size in {len(c) for c in files.values()} for p in finished)

        result = pull(REPO, bucket=bucket, cache_dir=tmp_path / f"roomy-{trial}", part_size=MiB, fallback="error")
        assert (result.path / WEIGHT).read_bytes() == files[WEIGHT]
        assert check_loader_cache(tmp_path / f"roomy-{trial}") == []
    table.write()
    assert table.row.failed_clean == TRIALS
