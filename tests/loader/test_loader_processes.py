"""Real processes: several pulls racing for one model on one node, and a pull killed mid-download.

S3 is reached through model_cache_devtools.s3proxy with a per-connection bandwidth cap, so a
download lasts long enough for the processes to overlap and for a kill to land mid-way; the proxy's
request log counts the bytes S3 really sent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loader_seed import seed_snapshot

from model_cache_devtools.s3proxy import S3Proxy
from model_cache_loader import pull

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = "test-org/raced"
KIB = 1024
MIB = 1024 * KIB


@pytest.fixture
def proxy(aws: Any) -> Iterator[S3Proxy]:
    with S3Proxy(aws.url) as running:
        yield running


def loader_command(bucket: str, cache: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "model_cache_loader",
        "pull",
        REPO,
        "--bucket",
        bucket,
        "--cache-dir",
        str(cache),
        *extra,
    ]


def loader_env(proxy: S3Proxy) -> dict[str, str]:
    return {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "MODEL_CACHE_LOG_LEVEL": "INFO"}


def snapshot_bytes_sent(proxy: S3Proxy) -> int:
    return sum(r.bytes_out for r in proxy.requests.of("GetObject") if "/snapshots/" in r.path)


def test_racing_processes_download_once_and_share(s3: Any, bucket: str, proxy: S3Proxy, tmp_path: Path) -> None:
    """GIVEN three processes pulling one model into one cache at once
    WHEN they race THEN one downloads, the others wait and reuse: S3 sends each byte once, every blob is right."""
    files = {"model.safetensors": os.urandom(6 * MIB), "config.json": b'{"a": 1}\n'}
    seed_snapshot(s3, bucket, REPO, files)
    proxy.bandwidth_limit = 1 * MIB  # per connection: 2 connections -> about 3 s of download
    cache = tmp_path / "hub-cache"
    proxy.requests.clear()

    racers = [
        subprocess.Popen(
            loader_command(
                bucket, cache, "--concurrency", "2", "--part-size-mib", "1"
            ),  # not -q: the summary line names the source
            env=loader_env(proxy),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in racers]

    assert [code for code, _, _ in outcomes] == [0, 0, 0], [err for _, _, err in outcomes]
    paths = {out.strip() for _, out, _ in outcomes}
    assert len(paths) == 1
    sources = sorted(err.rsplit("model-cache-loader: ", 1)[1].split(":", 1)[0] for _, _, err in outcomes)
    assert sources == ["local", "local", "s3"]
    assert snapshot_bytes_sent(proxy) == sum(len(c) for c in files.values())
    snapshot = Path(paths.pop())
    for path, content in files.items():
        assert (snapshot / path).read_bytes() == content
    blobs = sorted(p.name for p in (cache / "models--test-org--raced" / "blobs").iterdir())
    assert not [name for name in blobs if "incomplete" in name or "parts" in name]


def test_a_killed_download_resumes(s3: Any, bucket: str, proxy: S3Proxy, tmp_path: Path) -> None:
    """GIVEN a pull SIGKILLed mid-download WHEN pulled again THEN it resumes from the finished parts
    and the blob is verified whole; nothing of the dead process is left behind."""
    content = os.urandom(4 * MIB)
    seeded = seed_snapshot(s3, bucket, REPO, {"model.safetensors": content})
    name = seeded.blob_name("model.safetensors")
    cache = tmp_path / "hub-cache"
    blobs = cache / "models--test-org--raced" / "blobs"
    journal = blobs / f"{name}.loader-parts"
    proxy.bandwidth_limit = 512 * KIB  # 1 MiB parts over 2 connections: about 2 s a part, 4 s in all

    victim = subprocess.Popen(
        loader_command(bucket, cache, "--concurrency", "2", "--part-size-mib", "1", "-q"),
        env=loader_env(proxy),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and victim.poll() is None:
            if journal.exists() and len(journal.read_text().splitlines()) > 1:
                break
            time.sleep(0.05)
        assert victim.poll() is None, "the pull finished before it could be killed"
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
        if victim.stderr:
            victim.stderr.close()

    finished_parts = len(journal.read_text().splitlines()) - 1
    assert finished_parts >= 1
    assert not (blobs / name).exists()
    assert (blobs / f"{name}.loader-incomplete").exists()

    proxy.bandwidth_limit = None
    proxy.requests.clear()
    result = pull(REPO, bucket=bucket, cache_dir=cache, part_size=1 * MIB)
    assert (result.path / "model.safetensors").read_bytes() == content
    assert result.bytes_downloaded <= len(content) - finished_parts * MIB
    assert sorted(p.name for p in blobs.iterdir()) == [name]
