"""`model-cache verify` over moto's S3 server: a synced snapshot is clean; an overwritten byte, a deleted
object and a stray object are each reported as drift, and the CLI exits non-zero."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from ops_support import BIG_FILE, PART_SIZE, make_repo, manifest_at, read

from model_cache.cli import main as cli
from model_cache.contract import errors, layout
from model_cache.operations.audit import audit_snapshot
from model_cache.pipeline.engine import sync

pytestmark = pytest.mark.integration


@pytest.fixture
def synced(hub: Any, hub_root: Path, s3: Any, bucket: str) -> dict[str, Any]:
    """A fresh repo synced into the bucket; returns its manifest."""
    repo_id = make_repo(hub_root)
    result = sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=4, s3=s3)
    return manifest_at(s3, bucket, result.manifest_key)


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue() + err.getvalue()


def entry(manifest: dict[str, Any], path: str) -> dict[str, Any]:
    return next(item for item in manifest["files"] if item["path"] == path)


def test_a_freshly_synced_snapshot_has_no_drift_quick_or_deep(s3: Any, bucket: str, synced: dict[str, Any]) -> None:
    """GIVEN a snapshot just synced  WHEN verify runs quick and --deep  THEN both are clean, deep hashed every byte."""
    quick = audit_snapshot(s3, bucket, synced["repo_id"])
    deep = audit_snapshot(s3, bucket, synced["repo_id"], deep=True)

    assert quick.clean, quick.drift
    assert deep.clean, deep.drift
    assert quick.files_checked == deep.files_checked == len(synced["files"])
    assert deep.bytes_hashed == synced["total_size"]
    code, text = run_cli("verify", synced["repo_id"], "--bucket", bucket, "--deep")
    assert code == 0, text
    assert "no drift" in text


def test_an_overwritten_byte_is_found(s3: Any, bucket: str, synced: dict[str, Any]) -> None:
    """GIVEN a synced snapshot  WHEN one byte of the big file is flipped (same size, new object version)
    THEN the quick check reports the replaced version, the deep check the wrong sha256, and the CLI exits 4."""
    item = entry(synced, BIG_FILE)
    data = bytearray(read(s3, bucket, item["key"]))
    data[len(data) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=item["key"], Body=bytes(data))

    quick = audit_snapshot(s3, bucket, synced["repo_id"])
    deep = audit_snapshot(s3, bucket, synced["repo_id"], deep=True)

    assert [(d.kind, d.key) for d in quick.drift] == [("replaced", item["key"])]
    assert ("wrong_hash", item["key"]) in [(d.kind, d.key) for d in deep.drift]
    assert "sha256" in next(d.detail for d in deep.drift if d.kind == "wrong_hash")
    code, text = run_cli("verify", synced["repo_id"], "--bucket", bucket, "--deep")
    assert code == errors.IntegrityError.exit_code
    assert "wrong_hash" in text
    assert BIG_FILE in text


def test_a_byte_flipped_without_a_new_version_is_found_by_the_deep_check(s3: Any, hub_root: Path, hub: Any) -> None:
    """GIVEN a snapshot in an unversioned bucket (no version ids to compare)  WHEN a regular file's content is
    replaced by same-size bytes  THEN only --deep can tell, and it names the sha256 and git blob id mismatch."""
    name = f"model-cache-ops-unversioned-{hub_root.name[-6:].lower()}"
    s3.create_bucket(Bucket=name)
    repo_id = make_repo(hub_root)
    result = sync(repo_id, bucket=name, part_size=PART_SIZE, concurrency=2, s3=s3)
    manifest = manifest_at(s3, name, result.manifest_key)
    item = entry(manifest, "README.md")
    s3.put_object(Bucket=name, Key=item["key"], Body=b"# ops test repX\n")

    assert audit_snapshot(s3, name, repo_id).clean  # same size, no versions, no stored checksum on the new object
    deep = audit_snapshot(s3, name, repo_id, deep=True)
    assert [(d.kind, d.key) for d in deep.drift] == [("wrong_hash", item["key"])]
    assert "git blob sha1" in deep.drift[0].detail


def test_a_deleted_object_is_reported_missing(s3: Any, bucket: str, synced: dict[str, Any]) -> None:
    """GIVEN a synced snapshot  WHEN one file's object is deleted  THEN verify reports it missing and exits 6."""
    item = entry(synced, "tokenizer/vocab.txt")
    s3.delete_object(Bucket=bucket, Key=item["key"])

    report = audit_snapshot(s3, bucket, synced["repo_id"], deep=True)

    assert [(d.kind, d.key) for d in report.drift] == [("missing", item["key"])]
    code, text = run_cli("verify", synced["repo_id"], "--bucket", bucket, "--json")
    assert code == errors.IntegrityError.exit_code
    assert json.loads(text)["drift"][0]["kind"] == "missing"


def test_a_stray_object_under_the_snapshot_prefix_is_reported(s3: Any, bucket: str, synced: dict[str, Any]) -> None:
    """GIVEN a synced snapshot  WHEN someone adds an object under its snapshot prefix
    THEN verify reports it as extra (a reader syncing the prefix would pick it up)."""
    stray = f"{synced['prefix']}notes/stray.txt"
    s3.put_object(Bucket=bucket, Key=stray, Body=b"not from the Hub")

    report = audit_snapshot(s3, bucket, synced["repo_id"])

    assert [(d.kind, d.key) for d in report.drift] == [("extra", stray)]


def test_a_wrong_size_and_a_bad_hash_file_are_reported(s3: Any, bucket: str, synced: dict[str, Any]) -> None:
    """GIVEN a synced snapshot  WHEN a file is truncated and the `hash` file rewritten
    THEN verify reports the wrong size and the bad hash file."""
    item = entry(synced, "config.json")
    s3.put_object(Bucket=bucket, Key=item["key"], Body=b"{}")
    hash_key = layout.hash_key("models", synced["repo_id"], synced["commit"])
    s3.put_object(Bucket=bucket, Key=hash_key, Body=b"0" * 40)

    kinds = {(d.kind, d.key) for d in audit_snapshot(s3, bucket, synced["repo_id"]).drift}

    assert ("wrong_size", item["key"]) in kinds
    assert ("bad_hash_file", hash_key) in kinds


def test_verify_by_commit_and_an_unknown_revision(s3: Any, bucket: str, synced: dict[str, Any]) -> None:
    """GIVEN a synced snapshot  WHEN verify names it by commit id, and then by a revision never cached
    THEN the first is clean and the second fails with RevisionNotFound's exit code and the fix."""
    code, text = run_cli("verify", f"{synced['repo_id']}@{synced['commit']}", "--bucket", bucket)
    assert code == 0, text
    code, text = run_cli("verify", f"{synced['repo_id']}@v9", "--bucket", bucket)
    assert code == errors.RevisionNotFound.exit_code
    assert "not cached" in text
