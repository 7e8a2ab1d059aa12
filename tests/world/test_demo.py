"""`make demo`, whole, as the newcomer runs it: `python -m model_cache_devtools.demo` in its own process.

A subprocess because the demo owns its world: it starts its own Hub double and moto server, sets
the process's AWS/HF environment and patches moto, none of which may leak into the test session.
The synthetic repo is shrunk (MODEL_CACHE_DEMO_SYNTHETIC_MB) so the run takes seconds, not minutes.
What it leaves on disk (the demo Hub's files, the pulled HF cache with the loader's copy of the
published manifest) is what the assertions check, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import REPO_ROOT

from model_cache_devtools import demo, modelgen

SYNTHETIC_MB = 24
DEMO_DEADLINE_SECONDS = 240


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    demo_dir = tmp_path_factory.mktemp("demo")
    env = {
        **os.environ,
        demo.DEMO_DIR_ENV: str(demo_dir),
        demo.SYNTHETIC_MB_ENV: str(SYNTHETIC_MB),
        "PYTHONUNBUFFERED": "1",
    }
    # A deadline for a hung run, not a timing assertion.
    completed = subprocess.run(
        [sys.executable, "-m", "model_cache_devtools.demo"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_DEADLINE_SECONDS,
        check=False,
    )
    return completed, demo_dir


def output_of(run: subprocess.CompletedProcess[str]) -> str:
    return f"--- stdout\n{run.stdout[-6000:]}\n--- stderr\n{run.stderr[-4000:]}"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_runs_every_stage_and_ends_with_generated_text(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """GIVEN a fresh demo dir and a small synthetic repo
    WHEN `python -m model_cache_devtools.demo` runs
    THEN it exits 0, prints every stage with its seconds, the state machine execution SUCCEEDED via the
    request queue, the synthetic repo synced with its size, the re-sync copied nothing, the first pull came
    from S3 and the second from the local cache, and the last line is non-empty generated text."""
    run, _ = demo_run
    assert run.returncode == 0, output_of(run)
    out = run.stdout
    for number, (title, _stage) in enumerate(demo.STAGES, start=1):
        assert f"=== {number}. {title}" in out, f"stage {number} missing\n{output_of(run)}"
        assert re.search(rf"--- {re.escape(title)}: \d+\.\d s", out), f"stage {number} not timed"
    assert "request Lambda: started execution " in out
    assert "Step Functions (moto's engine): SUCCEEDED" in out
    assert re.search(
        r"states: .*Plan -> .*CopyUnits -> AnyFilesToComplete\? -> (CompleteFiles -> )?Finalize -> Publish", out
    ), output_of(run)
    assert f"synced {demo.SYNTHETIC_REPO}@main: 2 files, {SYNTHETIC_MB}.0 MiB" in out
    assert "nothing copied" in out
    assert "Hub requests for the re-run: 1 " in out
    assert re.search(r"^source s3: 10 files", out, re.MULTILINE), output_of(run)
    assert re.search(r"^source local: 0 bytes downloaded", out, re.MULTILINE), output_of(run)
    last_line = out.rstrip("\n").splitlines()[-1]
    assert last_line.startswith("generated: ")
    assert last_line.removeprefix("generated: ").strip(), "the generated text is empty"


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_pulls_the_published_snapshot_byte_for_byte(
    demo_run: tuple[subprocess.CompletedProcess[str], Path], manifest_schema: dict[str, Any]
) -> None:
    """GIVEN the demo has run
    WHEN reading the HF cache it pulled into and the manifest the loader kept (the published one, read from S3)
    THEN the manifest is valid against the schema and names the tiny model at main; the snapshot holds exactly
    its files, each byte-identical to the demo Hub's file and matching the manifest's size and sha256."""
    run, demo_dir = demo_run
    assert run.returncode == 0, output_of(run)
    repo_cache = demo_dir / "hf-cache" / "models--tiny-org--tiny-llm"
    commit = (repo_cache / "refs" / "main").read_text()
    manifest = json.loads((repo_cache / ".model-cache-loader" / "manifests" / f"{commit}.json").read_text())
    jsonschema.validate(manifest, manifest_schema)
    assert (manifest["repo_id"], manifest["revision"], manifest["commit"]) == (modelgen.TINY_MODEL, "main", commit)
    assert manifest["bucket"] == demo.BUCKET
    assert f"commit {commit[:12]}" in run.stdout

    snapshot = repo_cache / "snapshots" / commit
    hub_repo = modelgen.repo_dir(demo_dir / "hub", modelgen.TINY_MODEL)
    pulled = sorted(str(path.relative_to(snapshot)) for path in snapshot.rglob("*") if path.is_file())
    assert pulled == sorted(entry["path"] for entry in manifest["files"])
    for entry in manifest["files"]:
        local = snapshot / entry["path"]
        assert local.is_symlink(), f"{entry['path']} is not an HF cache link to a blob"
        assert local.read_bytes() == (hub_repo / entry["path"]).read_bytes(), entry["path"]
        assert local.stat().st_size == entry["size"]
        assert sha256_of(local) == entry["sha256"]
    assert {"model-00001-of-00002.safetensors", "tokenizer.json", "config.json"} <= set(pulled)
    # The pipeline pins every version and records every CRC, so the default check was CRC64NVME, and says so.
    assert all(entry["version_id"] and entry["crc64nvme"] for entry in manifest["files"])
    blobs = {entry["sha256"] if entry["lfs"] else entry["git_oid"] for entry in manifest["files"]}
    assert f"verified by crc64nvme ({len(blobs)} blobs)" in run.stdout, output_of(run)
