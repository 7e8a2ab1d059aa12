"""The Hub fallback is a second source under the S3 path's rules (issue 23, rows 1-4 and 11).

Each test takes a path the loader only takes when something has failed (an object gone from S3, a
Hub that serves a wrong byte or never answers) and tries to break the guarantee on it: the bytes
installed are the manifest's, at the commit S3 resolved, within a deadline, without holding the
node's lock across the Hub, and without leaving the failed S3 attempt's allocations behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loader_seed import Seeded, repo_files, seed_snapshot

from model_cache_devtools.modelgen import TINY_MODEL, repo_dir
from model_cache_loader import HubFallbackError, IntegrityError, UsageError, pull
from model_cache_loader.hfcache import TMP_SUFFIX, RepoCache

pytestmark = pytest.mark.integration

SHARD = "model-00001-of-00002.safetensors"


def delete_every_version(s3: Any, bucket: str, key: str) -> None:
    for version in s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])


def seed_at_hub_commit(s3: Any, bucket: str, hub: Any, hub_root: Path, repo_id: str = TINY_MODEL) -> Seeded:
    """Publish the repo at the commit the Hub double serves, as the pipeline would have."""
    return seed_snapshot(
        s3, bucket, repo_id, repo_files(repo_dir(hub_root, repo_id)), commit=hub.store.snapshot(repo_id).commit
    )


def seed_with_a_shard_gone(s3: Any, bucket: str, hub: Any, hub_root: Path, repo_id: str = TINY_MODEL) -> Seeded:
    """A published snapshot whose first shard has since disappeared: the S3 path misses mid-pull."""
    seeded = seed_at_hub_commit(s3, bucket, hub, hub_root, repo_id)
    delete_every_version(s3, bucket, seeded.entry(SHARD)["key"])
    return seeded


def blob_digest(cache: Path, repo_id: str, name: str) -> str:
    return hashlib.sha256(RepoCache(cache, repo_id).blob_path(name).read_bytes()).hexdigest()


# ---- row 1: the fallback's bytes are checked against the manifest ------------------------------


def test_a_corrupt_byte_from_the_hub_fallback_is_never_installed(
    s3: Any, bucket: str, hub: Any, hub_root: Path, hf_cache: Path
) -> None:
    """GIVEN a shard missing from S3 and a Hub that flips one byte of that shard
    WHEN the pod pulls (falling back to the Hub)
    THEN IntegrityError names the file, no blob carries the manifest's name, and once the Hub serves
    the right bytes the next pull installs exactly them (not `source=local` from a bad blob)."""
    seeded = seed_with_a_shard_gone(s3, bucket, hub, hub_root)
    entry = seeded.entry(SHARD)
    hub.faults.add(TINY_MODEL, SHARD, kind="corrupt", offset=entry["size"] // 2, times=None)

    with pytest.raises(IntegrityError, match=SHARD):
        pull(TINY_MODEL, bucket=bucket, cache_dir=hf_cache)
    assert not RepoCache(hf_cache, TINY_MODEL).blob_path(seeded.blob_name(SHARD)).exists()

    hub.faults.clear()
    result = pull(TINY_MODEL, bucket=bucket, cache_dir=hf_cache)
    assert result.source == "hub"
    assert blob_digest(hf_cache, TINY_MODEL, seeded.blob_name(SHARD)) == entry["sha256"]


def test_a_blob_of_the_right_size_is_not_trusted_without_a_check(s3: Any, bucket: str, hf_cache: Path) -> None:
    """GIVEN a complete pull whose blob was then replaced by wrong bytes of the same size (another
    writer of the cache, e.g. a huggingface_hub download that was never checked)
    WHEN pulled again
    THEN the loader does not serve it as `local`: it hashes it, fetches the blob again from S3, and the
    bytes on disk are the manifest's."""
    files = {"config.json": b"{}\n", "model.safetensors": bytes(range(256)) * 4096}
    seeded = seed_snapshot(s3, bucket, "org/size-is-not-proof", files)
    pull("org/size-is-not-proof", bucket=bucket, cache_dir=hf_cache, fallback="error")
    blob = RepoCache(hf_cache, "org/size-is-not-proof").blob_path(seeded.blob_name("model.safetensors"))
    replacement = blob.with_name("replacement")
    replacement.write_bytes(b"\xff" * blob.stat().st_size)
    replacement.replace(blob)

    result = pull("org/size-is-not-proof", bucket=bucket, cache_dir=hf_cache, fallback="error")

    assert result.source == "s3"
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == seeded.entry("model.safetensors")["sha256"]


# ---- row 2: the fallback fetches the commit S3 resolved ----------------------------------------


def private_copy_of_tiny(hub_root: Path) -> str:
    """A repo of its own on the Hub double (this test moves its branch)."""
    repo_id = f"tiny-org/pinned-{uuid.uuid4().hex[:8]}"
    shutil.copytree(repo_dir(hub_root, TINY_MODEL), repo_dir(hub_root, repo_id))
    return repo_id


def test_the_fallback_fetches_the_commit_s3_resolved_never_the_branch(
    s3: Any, bucket: str, hub: Any, hub_root: Path, hf_cache: Path, tmp_path: Path
) -> None:
    """GIVEN S3 holds main = c1 with a shard gone
    WHEN the pod falls back to the Hub
    THEN every Hub download names c1, not `main`; and after the Hub's main moves on to c2, a pod that
    falls back never installs c2 nor points refs/main at it (it fails clean: the double keeps only
    its newest commit)."""
    repo_id = private_copy_of_tiny(hub_root)
    seeded = seed_with_a_shard_gone(s3, bucket, hub, hub_root, repo_id)
    hub.requests.clear()

    result = pull(repo_id, bucket=bucket, cache_dir=hf_cache)

    assert (result.source, result.commit) == ("hub", seeded.commit)
    downloads = hub.requests.matching(repo_id=repo_id, endpoint="resolve")
    assert downloads
    assert all(f"/resolve/{seeded.commit}/" in record.path for record in downloads), [r.path for r in downloads]

    (repo_dir(hub_root, repo_id) / "added-after-c1.txt").write_text("the branch moved on\n")
    moved = hub.store.snapshot(repo_id).commit
    assert moved != seeded.commit
    other_cache = tmp_path / "other-node"
    with pytest.raises(HubFallbackError):
        pull(repo_id, bucket=bucket, cache_dir=other_cache)
    repo = RepoCache(other_cache, repo_id)
    assert repo.read_ref("main") in (None, seeded.commit)
    assert not repo.snapshot_dir(moved).exists()


# ---- row 3: a deadline, and no lock held across the Hub ----------------------------------------


class SilentHub:
    """A server that accepts connections and never answers: the Hub at its worst."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = threading.Event()
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            self.accepted.set()

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentHub]:
    server = SilentHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "600")
    try:
        yield server
    finally:
        server.close()


def test_a_hub_that_never_answers_ends_at_the_deadline(
    bucket: str, silent_hub: SilentHub, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a model not in S3 and a Hub that accepts and never answers
    WHEN pulled with a 2 s deadline
    THEN HubFallbackError names the deadline and its setting, and nothing was installed."""
    monkeypatch.setenv("MODEL_CACHE_HUB_DEADLINE", "2")
    with pytest.raises(HubFallbackError, match="MODEL_CACHE_HUB_DEADLINE"):
        pull(TINY_MODEL, bucket=bucket, cache_dir=hf_cache)
    assert silent_hub.accepted.is_set()
    assert not (RepoCache(hf_cache, TINY_MODEL).snapshots_dir).exists()


@pytest.mark.parametrize("pod_a_has", ["no manifest", "a manifest with a shard gone"])
def test_a_hung_fallback_does_not_hold_the_node_lock(
    s3: Any, bucket: str, hub: Any, hub_root: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch, pod_a_has: str
) -> None:
    """GIVEN pod A falling back to a Hub that never answers (its model is not in A's bucket at all, or its
    manifest is there with a shard gone, so the fallback fetches the manifest's files)
    WHEN pod B on the same node pulls the same model, which B's bucket holds
    THEN B's S3 hit completes while A is still waiting on the Hub: no lock spans A's network wait."""
    seed_at_hub_commit(s3, bucket, hub, hub_root)
    empty_bucket = f"{bucket}-empty"[:63]
    s3.create_bucket(Bucket=empty_bucket)
    if pod_a_has != "no manifest":
        s3.put_bucket_versioning(Bucket=empty_bucket, VersioningConfiguration={"Status": "Enabled"})
        seed_with_a_shard_gone(s3, empty_bucket, hub, hub_root)
    silent = SilentHub()
    outcome: dict[str, Any] = {}

    def pod_a() -> None:
        try:
            pull(TINY_MODEL, bucket=empty_bucket, cache_dir=hf_cache)
        except HubFallbackError as exc:
            outcome["a"] = exc

    def pod_b() -> None:
        outcome["b"] = pull(TINY_MODEL, bucket=bucket, cache_dir=hf_cache, fallback="error")

    monkeypatch.setenv("HF_ENDPOINT", silent.url)
    monkeypatch.setenv("MODEL_CACHE_HUB_DEADLINE", "300")
    a = threading.Thread(target=pod_a, daemon=True)
    a.start()
    try:
        assert silent.accepted.wait(60), "pod A never reached the Hub"
        b = threading.Thread(target=pod_b, daemon=True)
        b.start()
        b.join(120)
        assert not b.is_alive(), "pod B waited behind pod A's Hub fallback"
        assert outcome["b"].source == "s3"
        assert a.is_alive()
    finally:
        silent.close()  # A's connection is reset: its fallback fails and the thread ends
        a.join(60)
    assert not a.is_alive()


# ---- row 4: the failed S3 attempt's allocations are freed ---------------------------------------


def test_the_fallback_frees_what_the_failed_s3_attempt_allocated(
    s3: Any, bucket: str, hub: Any, hub_root: Path, hf_cache: Path
) -> None:
    """GIVEN a shard gone from S3 (its blob pre-allocated at full size before the GET missed)
    WHEN the pod falls back to the Hub
    THEN no `*.loader-incomplete` file or journal is left, and the blobs folder holds each blob once."""
    seeded = seed_with_a_shard_gone(s3, bucket, hub, hub_root)

    result = pull(TINY_MODEL, bucket=bucket, cache_dir=hf_cache)

    assert result.source == "hub"
    blobs = RepoCache(hf_cache, TINY_MODEL).blobs_dir
    leftovers = [p.name for p in blobs.iterdir() if p.name.endswith((TMP_SUFFIX, ".loader-parts"))]
    assert leftovers == []
    unique = {
        entry["sha256"] if entry["lfs"] else entry["git_oid"]: entry["size"] for entry in seeded.manifest["files"]
    }
    assert sum(p.stat().st_size for p in blobs.iterdir()) == sum(unique.values())


# ---- row 11: bad setup is exit 2 with the fix named ---------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("MODEL_CACHE_BUCKET", "s3://my-model-cache", "not a URI"),
        ("MODEL_CACHE_BUCKET", "us-east-1=s3://my-model-cache", "not a URI"),
        ("MODEL_CACHE_BUCKET", "My_Bucket", "not an S3 bucket name"),
        ("HF_HUB_CACHE", "{file}/hub", "HF_HUB_CACHE"),
    ],
)
def test_bad_setup_is_exit_2_naming_the_fix_never_a_fallback(
    hub: Any, tmp_path: Path, variable: str, value: str, needle: str
) -> None:
    """GIVEN a bucket given as a URI (or not a bucket name), or a cache directory that cannot be made
    WHEN the loader CLI pulls
    THEN it exits 2 naming the setting, without a traceback, and the Hub is never asked."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    env = {
        "MODEL_CACHE_BUCKET": "my-model-cache",
        "HF_HUB_CACHE": str(tmp_path / "cache"),
        "AWS_REGION": "us-east-1",
        variable: value.format(file=blocker),
    }
    hub.requests.clear()
    done = subprocess.run(
        [sys.executable, "-m", "model_cache_loader", "pull", TINY_MODEL],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == UsageError.exit_code, done.stderr
    assert needle in done.stderr
    assert "Traceback" not in done.stderr
    assert hub.requests.matching(repo_id=TINY_MODEL) == []
