"""`model-cache-loader pull` as an init container runs it: exit codes, summary, progress lines."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from loader_seed import seed_snapshot, small_repo

from model_cache_loader.cli import ProgressDisplay, main
from model_cache_loader.transfer import Progress

REPO = "test-org/cli"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_cache_loader", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.integration
def test_pull_prints_the_path_and_a_summary(s3: Any, bucket: str, hf_cache: Path) -> None:
    """GIVEN a cached model WHEN the CLI pulls it THEN exit 0, stdout is the snapshot path, stderr a summary."""
    seeded = seed_snapshot(s3, bucket, REPO, small_repo())
    done = run_cli("pull", REPO, "--bucket", bucket, "--emf")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(hf_cache / "models--test-org--cli" / "snapshots" / seeded.commit)
    assert "model-cache-loader: s3: 6 files" in done.stderr
    assert seeded.commit in done.stderr
    emf = json.loads(done.stdout.strip().splitlines()[0])
    assert emf["Source"] == "s3"
    log_lines = [
        json.loads(line.split(" model_cache_loader ", 1)[1]) for line in done.stderr.splitlines() if '"event"' in line
    ]
    assert [line["source"] for line in log_lines] == ["s3"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("setup", "args", "code", "message"),
    [
        ("empty", ["--fallback", "error"], 3, "not cached"),
        ("tampered", [], 4, "has a '.' or '..' segment"),
        ("unreachable", ["--fallback", "error"], 7, "unreachable"),
        ("empty", ["--concurrency", "0"], 2, "concurrency must be"),
    ],
)
def test_exit_codes(s3: Any, bucket: str, hf_cache: Path, setup: str, args: list[str], code: int, message: str) -> None:
    """GIVEN a miss, a tampered manifest, S3 down or a bad option WHEN the CLI runs THEN its documented exit code."""
    env = {}
    if setup == "tampered":
        seeded = seed_snapshot(s3, bucket, REPO, small_repo())
        manifest = json.loads(json.dumps(seeded.manifest))
        manifest["files"][0]["path"] = "a/../../../../etc/cron.d/x"
        manifest["files"][0]["key"] = manifest["prefix"] + manifest["files"][0]["path"]
        seed_snapshot(s3, bucket, REPO, small_repo(), manifest_override=manifest)
    if setup == "unreachable":
        env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    done = run_cli("pull", REPO, "--bucket", bucket, "-q", *args, env=env)
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert done.stdout == ""


@pytest.mark.unit
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN an invalid repo id or unknown option WHEN parsed THEN exit code 2 with a message."""
    assert main(["pull", "not a repo id", "--bucket", "b", "-q"]) == 2
    assert "is not a Hub model id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["pull", "org/name", "--verify", "md5"])
    assert exited.value.code == 2


@pytest.mark.unit
def test_progress_display_prints_plain_lines_when_not_a_tty() -> None:
    """GIVEN a non-TTY stream WHEN bytes arrive THEN plain lines show bytes, percentage, rate and ETA."""
    progress = Progress()
    progress.total = 10 * 2**20
    stream = io.StringIO()
    printed = threading.Event()
    original_write = stream.write

    def write(text: str) -> int:
        count = original_write(text)
        if text.startswith("5.0 MiB"):
            printed.set()
        return count

    stream.write = write  # type: ignore[method-assign]
    with ProgressDisplay(progress, stream, interval=0.01):
        progress.add(5 * 2**20)
        assert printed.wait(10)
    lines = stream.getvalue().splitlines()
    assert lines
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("5.0 MiB / 10.0 MiB (50%)")
    assert "MB/s" in lines[-1]
    assert "ETA" in lines[-1]
