"""Ctrl-C stops a transfer within about one part (issue 23, row 10), for both CLIs.

Each CLI runs as its own process over a throttled link, gets SIGINT once its first part is in, and
must stop: no new part starts, the parts in flight end, exit 130. What is left is what a kill
leaves: the loader's journalled parts (the next pull resumes them), and for `model-cache sync`
nothing published and no upload open (its cleanup aborts the uploads of the run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import failed_clean_problems, incomplete_uploads, seed_snapshot

from model_cache_devtools import modelgen

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
EXIT_INTERRUPTED = 130
SYNC_OPTIONS = ("--concurrency", "2", "--part-size", "5MiB")


@pytest.fixture(autouse=True)
def children_take_ctrl_c() -> Any:
    """A shell starts a background job with SIGINT ignored, a child inherits that across exec, and
    Python then installs no KeyboardInterrupt handler: the CLI under test would never see Ctrl-C.
    While this module's tests start their CLIs, SIGINT is caught here, so each child starts with the
    default disposition, as it has under a terminal."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    """Poll `condition` until it holds (a readiness wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def journal_parts(journal: Path) -> int:
    try:
        return max(0, len(journal.read_text().splitlines()) - 1)  # the first line is the header
    except OSError:
        return 0


def test_ctrl_c_stops_a_loader_pull_within_about_one_part(s3: Any, bucket: str, s3_proxy: Any, tmp_path: Path) -> None:
    """GIVEN a 64 MiB blob behind an S3 link of 4 MiB/s per connection, pulled in 1 MiB parts on 2 streams
    WHEN the loader gets SIGINT as soon as its first part is journalled
    THEN it exits 130 having journalled a handful of the 64 parts (not all of them), with no blob
    renamed into place, and the next pull resumes from the journal and verifies."""
    body = os.urandom(64 * MIB)
    seeded = seed_snapshot(s3, bucket, "org/interrupted", {"model.safetensors": body})
    s3_proxy.bandwidth_limit = 4 * MIB
    cache = tmp_path / "hf"
    blobs = cache / "models--org--interrupted" / "blobs"
    name = seeded.blob_name("model.safetensors")
    journal = blobs / f"{name}.loader-parts"
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_proxy.url, "HF_HUB_CACHE": str(cache)}
    argv = ["pull", "org/interrupted", "--bucket", bucket, "--fallback", "error", "-q"]
    process = subprocess.Popen(
        [sys.executable, "-m", "model_cache_loader", *argv, "--concurrency", "2", "--part-size-mib", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: journal_parts(journal) >= 1 or process.poll() is not None, "the first part")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in err
    assert 1 <= journal_parts(journal) <= 8
    assert not (blobs / name).exists()

    s3_proxy.bandwidth_limit = None
    not_quiet = [arg for arg in argv if arg != "-q"]  # -q keeps only errors; the resume is logged at INFO
    resumed = subprocess.run(
        [sys.executable, "-m", "model_cache_loader", *not_quiet], env=env, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming a cut download" in resumed.stderr
    assert (blobs / name).read_bytes() == body


def test_ctrl_c_stops_a_sync_within_about_one_part(hub: Any, aws: Any, s3: Any, bucket: str) -> None:
    """GIVEN the 48 MiB weight of test-org/big served by the Hub at 2 MiB/s per connection
    WHEN `model-cache sync` (5 MiB parts, 2 streams) gets SIGINT once the first part has come in
    THEN it exits 130 having read far less than the file from the Hub, with nothing published and
    no multipart upload left open."""
    hub.faults.add(modelgen.BIG, kind="bandwidth", bytes_per_second=2 * MIB, times=None)
    hub.requests.clear()
    env = {**os.environ, "HF_ENDPOINT": hub.url, "AWS_ENDPOINT_URL": aws.url}
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("model-cache")), "sync", modelgen.BIG, "--bucket", bucket, *SYNC_OPTIONS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def weight_bytes() -> int:
        return sum(r.bytes_sent for r in hub.requests.snapshot() if r.file and r.file.endswith(".safetensors"))

    try:
        wait_for(lambda: weight_bytes() >= 5 * MIB or process.poll() is not None, "the first part from the Hub")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()

    assert process.returncode == EXIT_INTERRUPTED, err
    assert weight_bytes() <= 24 * MIB
    assert incomplete_uploads(s3, bucket) == []
    assert failed_clean_problems(s3, bucket, hub.url) == []
