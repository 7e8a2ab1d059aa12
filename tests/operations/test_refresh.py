"""Incremental refresh over real HTTP (the Hub double) and moto's S3 server: when a branch moves, only new
or changed files come from the Hub; unchanged ones are copied inside S3 from the snapshot refs/{revision}
named, and the new snapshot is published byte-identical with the old one left intact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
from botocore.config import Config
from conftest import REGION, all_keys, failed_clean_problems, incomplete_uploads
from ops_support import BIG_FILE, PART_SIZE, default_files, make_repo, manifest_at, read, ref_commit, write_files

from model_cache.contract import errors, layout
from model_cache.operations.audit import audit_snapshot
from model_cache.pipeline import finalize, plan, prepare, steps
from model_cache.pipeline.engine import sync
from model_cache.pipeline.events import PlanRequest
from model_cache.pipeline.plan import MiB

pytestmark = pytest.mark.integration


def hub_file_bytes(hub: Any, repo_id: str) -> dict[str, int]:
    """Body bytes the Hub double sent per repo file (resolve and CDN GETs) since the log was cleared."""
    sent: dict[str, int] = {}
    for record in hub.requests.matching(repo_id=repo_id, method="GET"):
        # 200/206 are file bodies; a resolve URL's 302 to the CDN carries only a short redirect body.
        if record.endpoint in ("resolve", "cdn") and record.file and record.status in (200, 206):
            sent[record.file] = sent.get(record.file, 0) + record.bytes_sent
    return sent


def assert_published_like_the_hub(hub: Any, s3: Any, bucket: str, repo_id: str, manifest_schema: Any) -> dict[str, Any]:
    """The manifest refs/main names is schema-valid, lists the Hub's files, and every object equals the Hub's bytes."""
    snapshot = hub.repo_info(repo_id)
    assert ref_commit(s3, bucket, repo_id) == snapshot.commit
    manifest = manifest_at(s3, bucket, layout.manifest_key("models", repo_id, snapshot.commit))
    jsonschema.validate(manifest, manifest_schema)
    assert manifest_at(s3, bucket, layout.root_manifest_key("models", repo_id)) == manifest
    assert {entry["path"] for entry in manifest["files"]} == set(snapshot.files)
    for entry in manifest["files"]:
        assert entry["key"] == layout.file_key("models", repo_id, snapshot.commit, entry["path"])
        assert read(s3, bucket, entry["key"]) == hub.read_file(repo_id, entry["path"]), entry["path"]
        assert read(s3, bucket, entry["key"], entry["version_id"]) == hub.read_file(repo_id, entry["path"])
        assert entry["sha256"] == snapshot.files[entry["path"]].sha256
        assert entry["crc64nvme"]
    assert audit_snapshot(s3, bucket, repo_id, deep=True).clean
    assert incomplete_uploads(s3, bucket) == []
    return manifest


@pytest.fixture
def first_sync(hub: Any, hub_root: Path, s3: Any, bucket: str) -> dict[str, Any]:
    repo_id = make_repo(hub_root)
    result = sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=4, s3=s3)
    return {"repo_id": repo_id, "commit": result.commit, "manifest": manifest_at(s3, bucket, result.manifest_key)}


@pytest.mark.parametrize("changed", ["config.json", BIG_FILE])
def test_a_refresh_after_one_file_changed_fetches_only_that_file(
    hub: Any, hub_root: Path, s3: Any, bucket: str, first_sync: dict[str, Any], manifest_schema: Any, changed: str
) -> None:
    """GIVEN a synced repo  WHEN one file changes at the Hub (main moves) and the repo is synced again
    THEN the Hub sends exactly that file's bytes and nothing else; the other files are copied inside S3;
    the new snapshot is byte-identical to the Hub, schema-valid and verified; refs/main and manifest.json
    moved; the old snapshot (manifest and every file) is intact."""
    repo_id = first_sync["repo_id"]
    new_bytes = default_files(seed=1)[changed][:-7] + b"CHANGED"
    write_files(hub_root, repo_id, {changed: new_bytes})
    hub.requests.clear()

    result = sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=4, s3=s3)

    assert result.status == "published"
    assert result.commit != first_sync["commit"]
    assert hub_file_bytes(hub, repo_id) == {changed: len(new_bytes)}
    assert result.copied_bytes == len(new_bytes)
    assert result.reused_files == len(first_sync["manifest"]["files"]) - 1
    assert result.reused_bytes == result.total_bytes - len(new_bytes)
    manifest = assert_published_like_the_hub(hub, s3, bucket, repo_id, manifest_schema)
    assert next(e for e in manifest["files"] if e["path"] == changed)["size"] == len(new_bytes)
    old = first_sync["manifest"]
    assert manifest_at(s3, bucket, layout.manifest_key("models", repo_id, first_sync["commit"])) == old
    assert audit_snapshot(s3, bucket, repo_id, first_sync["commit"], deep=True).clean
    for entry in old["files"]:
        if entry["path"] == changed:
            assert read(s3, bucket, entry["key"]) != new_bytes


def test_a_big_unchanged_file_is_copied_with_upload_part_copy(
    hub: Any,
    hub_root: Path,
    s3: Any,
    bucket: str,
    first_sync: dict[str, Any],
    manifest_schema: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GIVEN a synced repo and a CopyObject limit lowered below its 12 MiB file (standing in for 5 GiB)
    WHEN another file changes and the repo is refreshed
    THEN the big file is copied as a 3-part UploadPartCopy upload (S3 checks its full CRC64NVME at completion),
    its bytes never come from the Hub, and the snapshot is published byte-identical."""
    monkeypatch.setattr(plan, "COPY_OBJECT_LIMIT", 8 * MiB)
    monkeypatch.setattr(plan, "COPY_PART_SIZE", 5 * MiB)
    repo_id = first_sync["repo_id"]
    write_files(hub_root, repo_id, {"README.md": b"# ops test repo, edited\n"})
    hub.requests.clear()

    prepared = prepare.prepare_plan(s3, PlanRequest.create(repo_id, "main", bucket=bucket))
    assert isinstance(prepared, plan.Plan)
    big = prepared.file(BIG_FILE)
    assert big.copy_from is not None
    assert big.multipart
    assert big.part_count == 3
    finalize.cleanup_plan(s3, prepared)
    result = sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=4, s3=s3)

    assert set(hub_file_bytes(hub, repo_id)) == {"README.md"}
    assert result.reused_files == 4
    manifest = assert_published_like_the_hub(hub, s3, bucket, repo_id, manifest_schema)
    old_big = next(e for e in first_sync["manifest"]["files"] if e["path"] == BIG_FILE)
    assert next(e for e in manifest["files"] if e["path"] == BIG_FILE)["crc64nvme"] == old_big["crc64nvme"]


def test_a_refresh_through_the_state_machine_tasks_runs_copy_from_units_on_lambda(
    hub: Any, hub_root: Path, s3: Any, bucket: str, first_sync: dict[str, Any], manifest_schema: Any
) -> None:
    """GIVEN a synced repo whose README changed  WHEN the state machine's tasks run (plan -> every Map item
    through copy_unit -> finalize -> publish -> cleanup)
    THEN the plan has a `copy-from` unit on the Lambda runner for the unchanged files and a Hub unit for the
    README; the copy unit reads nothing from the Hub; nothing is read back; the snapshot is published."""
    repo_id = first_sync["repo_id"]
    write_files(hub_root, repo_id, {"README.md": b"# ops test repo, edited again\n"})
    planned = steps.plan({"repo_id": repo_id, "bucket": bucket, "options": {"part_size": PART_SIZE}}, s3=s3)
    assert planned["status"] == "planned"
    kinds = sorted((item["kind"], item["runner"]) for item in planned["units"])
    assert kinds == [("copy-from", "lambda"), ("hub", "lambda")]
    assert planned["copy_units"] == 1
    assert planned["reused_files"] == 4
    hub.requests.clear()

    results = [steps.copy_unit(item, s3=s3) for item in planned["units"]]

    copy_result = next(r for r in results if r["kind"] == "copy-from")
    assert copy_result["hub_bytes"] == 0
    assert copy_result["s3_copy_bytes"] == planned["reused_bytes"]
    assert set(hub_file_bytes(hub, repo_id)) == {"README.md"}
    finalized = steps.finalize(steps.complete_files(planned, s3=s3), s3=s3)
    assert finalized["verified_by_read_back"] == 0
    assert steps.publish(finalized, s3=s3)["status"] == "published"
    steps.cleanup(planned, s3=s3)
    assert_published_like_the_hub(hub, s3, bucket, repo_id, manifest_schema)
    assert not all_keys(s3, bucket, "_model-cache-work/")


def test_a_tampered_previous_object_is_never_copied_the_verified_version_is(
    hub: Any, hub_root: Path, s3: Any, bucket: str, first_sync: dict[str, Any], manifest_schema: Any
) -> None:
    """GIVEN a synced repo on a versioned bucket whose config.json key was overwritten after publishing (a new,
    unverified version)  WHEN the README changes and the repo is refreshed
    THEN config.json is copied from the version the manifest verified, never from the altered one, and the new
    snapshot holds the Hub's bytes."""
    repo_id = first_sync["repo_id"]
    config = next(e for e in first_sync["manifest"]["files"] if e["path"] == "config.json")
    s3.put_object(Bucket=bucket, Key=config["key"], Body=b'{"tampered": 1}')
    write_files(hub_root, repo_id, {"README.md": b"# ops test repo, tampered case\n"})
    hub.requests.clear()

    result = sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=4, s3=s3)

    assert set(hub_file_bytes(hub, repo_id)) == {"README.md"}
    assert result.reused_files == 4
    assert_published_like_the_hub(hub, s3, bucket, repo_id, manifest_schema)


def test_a_tampered_previous_object_on_an_unversioned_bucket_is_fetched_from_the_hub(
    hub: Any, hub_root: Path, s3: Any, first_sync: dict[str, Any], manifest_schema: Any
) -> None:
    """GIVEN the same repo synced into an unversioned bucket, its config.json overwritten in place
    WHEN it is refreshed  THEN config.json no longer matches its recorded checksum, so it comes from the Hub."""
    repo_id = first_sync["repo_id"]
    plain = f"plain-{first_sync['commit'][:12]}"
    s3.create_bucket(Bucket=plain)
    sync(repo_id, bucket=plain, part_size=PART_SIZE, concurrency=4, s3=s3)
    key = layout.file_key("models", repo_id, hub.repo_info(repo_id).commit, "config.json")
    s3.put_object(Bucket=plain, Key=key, Body=b'{"tampered": 1}')
    write_files(hub_root, repo_id, {"README.md": b"# ops test repo, tampered unversioned case\n"})
    hub.requests.clear()

    result = sync(repo_id, bucket=plain, part_size=PART_SIZE, concurrency=4, s3=s3)

    assert set(hub_file_bytes(hub, repo_id)) == {"README.md", "config.json"}
    assert result.reused_files == 3
    assert_published_like_the_hub(hub, s3, plain, repo_id, manifest_schema)


def test_force_fetches_everything_from_the_hub(
    hub: Any, hub_root: Path, s3: Any, bucket: str, first_sync: dict[str, Any]
) -> None:
    """GIVEN a synced repo whose README changed  WHEN it is synced with force
    THEN every file comes from the Hub (force means "do not trust the bucket")."""
    repo_id = first_sync["repo_id"]
    write_files(hub_root, repo_id, {"README.md": b"# ops test repo, forced\n"})
    hub.requests.clear()

    result = sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=4, force=True, s3=s3)

    assert result.reused_files == 0
    assert set(hub_file_bytes(hub, repo_id)) == {e["path"] for e in first_sync["manifest"]["files"]}


def test_refreshing_an_unchanged_model_costs_one_hub_api_call_and_a_few_s3_reads(
    hub: Any, s3: Any, s3_proxy: Any, bucket: str, first_sync: dict[str, Any]
) -> None:
    """GIVEN a synced repo that has not changed at the Hub  WHEN it is synced again through the S3 proxy
    THEN the Hub sees one API call and no file download, and S3 sees only GETs of the manifest, the ref and
    manifest.json (no write, no listing, no copy)."""
    repo_id = first_sync["repo_id"]
    proxied = boto3.client(
        "s3", region_name=REGION, endpoint_url=s3_proxy.url, config=Config(s3={"addressing_style": "path"})
    )
    hub.requests.clear()
    s3_proxy.requests.clear()

    result = sync(repo_id, bucket=bucket, part_size=PART_SIZE, s3=proxied)

    assert result.status == "already_published"
    hub_calls = [(r.method, r.endpoint) for r in hub.requests.matching(repo_id=repo_id)]
    assert hub_calls == [("GET", "api")]
    # three small reads, and the run's claim for gc (model_cache.pipeline.claims): written, its folder listed, released
    assert s3_proxy.requests.operations() == [
        "PutObject",
        "ListObjectsV2",
        "GetObject",
        "GetObject",
        "GetObject",
        "DeleteObject",
    ]


def test_verify_and_cost_see_the_refreshed_and_the_old_snapshot(
    hub: Any, hub_root: Path, s3: Any, bucket: str, first_sync: dict[str, Any]
) -> None:
    """GIVEN a repo refreshed once (two snapshots)  WHEN cost and gc --keep 0 --older-than 0 run
    THEN cost counts one current and one old snapshot; gc deletes only the old one, and the current one
    still verifies deep; a refresh after that fetches only what changed even though the old one is gone."""
    from model_cache.operations.cost import estimate
    from model_cache.operations.gc import collect

    repo_id = first_sync["repo_id"]
    write_files(hub_root, repo_id, {"README.md": b"# ops test repo, v2\n"})
    second = sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=4, s3=s3)

    report = estimate(s3, bucket)
    assert sorted(snap.current for snap in report.snapshots) == [False, True]
    gc_report = collect(s3, bucket, repo_ids=[repo_id], keep=0, older_than_days=0)
    assert [(d.commit, d.action) for d in gc_report.decisions if d.action == "delete"] == [
        (first_sync["commit"], "delete")
    ]
    assert all_keys(s3, bucket, layout.snapshot_prefix("models", repo_id, first_sync["commit"])) == []
    assert audit_snapshot(s3, bucket, repo_id, second.commit, deep=True).clean
    write_files(hub_root, repo_id, {"README.md": b"# ops test repo, v3\n"})
    hub.requests.clear()
    third = sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=4, s3=s3)
    assert set(hub_file_bytes(hub, repo_id)) == {"README.md"}
    assert third.reused_files == 4


def test_a_previous_manifest_pointing_outside_the_repo_is_never_copied_from(
    hub: Any, hub_root: Path, s3: Any, bucket: str, first_sync: dict[str, Any]
) -> None:
    """GIVEN a previous manifest edited so a file's key points into another repo's folder
    WHEN the repo is refreshed  THEN that file is fetched from the Hub, never copied from the foreign key."""
    repo_id = first_sync["repo_id"]
    manifest = dict(first_sync["manifest"])
    foreign = "models/other-org--other/snapshots/" + "0" * 40 + "/config.json"
    files = [dict(e, key=foreign) if e["path"] == "config.json" else e for e in manifest["files"]]
    s3.put_object(
        Bucket=bucket,
        Key=foreign,
        Body=read(s3, bucket, layout.file_key("models", repo_id, first_sync["commit"], "config.json")),
    )
    s3.put_object(
        Bucket=bucket,
        Key=layout.manifest_key("models", repo_id, first_sync["commit"]),
        Body=json.dumps({**manifest, "files": files}).encode(),
    )
    write_files(hub_root, repo_id, {"README.md": b"# ops test repo, foreign case\n"})
    hub.requests.clear()

    result = sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=4, s3=s3)

    assert set(hub_file_bytes(hub, repo_id)) == {"README.md", "config.json"}
    assert result.reused_files == 3


def test_a_delete_marker_on_a_source_after_planning_does_not_fail_the_copy(
    hub: Any, hub_root: Path, s3: Any, bucket: str, first_sync: dict[str, Any]
) -> None:
    """GIVEN a refresh planned to copy the unchanged files, on a versioned bucket  WHEN a delete marker lands on
    one source object before its copy (the verified version is still there)  THEN the copy, pinned by version id,
    succeeds and the new snapshot publishes with that file's bytes.
    (Failed on 94042d4: the copy named the key only and failed with 'run the refresh again'.)"""
    repo_id = first_sync["repo_id"]
    write_files(hub_root, repo_id, {"README.md": b"# ops test repo, delete marker case\n"})
    planned = steps.plan({"repo_id": repo_id, "bucket": bucket, "options": {"part_size": PART_SIZE}}, s3=s3)
    vocab = next(e for e in first_sync["manifest"]["files"] if e["path"] == "tokenizer/vocab.txt")
    s3.delete_object(Bucket=bucket, Key=vocab["key"])  # no version id: a delete marker

    for item in planned["units"]:
        steps.copy_unit(item, s3=s3)
    published = steps.publish(steps.finalize(steps.complete_files(planned, s3=s3), s3=s3), s3=s3)
    steps.cleanup({**planned, "failed": False}, s3=s3)

    manifest = manifest_at(s3, bucket, published["manifest_key"])
    entry = next(e for e in manifest["files"] if e["path"] == "tokenizer/vocab.txt")
    assert read(s3, bucket, entry["key"], entry["version_id"]) == b"hello\nworld\n"
    assert incomplete_uploads(s3, bucket) == []


def test_a_source_version_deleted_between_plan_and_copy_fails_clean(
    hub: Any, hub_root: Path, s3: Any, bucket: str, first_sync: dict[str, Any]
) -> None:
    """GIVEN a refresh planned to copy the unchanged files  WHEN one source's verified version is deleted for good
    before its copy  THEN the copy unit fails with IntegrityError naming the fix, cleanup leaves no unverified
    object or open upload, and refs/main still names the old commit."""
    repo_id = first_sync["repo_id"]
    write_files(hub_root, repo_id, {"README.md": b"# ops test repo, vanishing case\n"})
    planned = steps.plan({"repo_id": repo_id, "bucket": bucket, "options": {"part_size": PART_SIZE}}, s3=s3)
    vocab = next(e for e in first_sync["manifest"]["files"] if e["path"] == "tokenizer/vocab.txt")
    s3.delete_object(Bucket=bucket, Key=vocab["key"], VersionId=vocab["version_id"])
    copy_item = next(item for item in planned["units"] if item["kind"] == "copy-from")

    with pytest.raises(errors.IntegrityError, match="run the refresh again"):
        steps.copy_unit(copy_item, s3=s3)
    steps.cleanup({**planned, "failed": True}, s3=s3)

    assert failed_clean_problems(s3, bucket, prefix=layout.snapshot_prefix("models", repo_id, planned["commit"])) == []
    assert incomplete_uploads(s3, bucket) == []
    assert ref_commit(s3, bucket, repo_id) == first_sync["commit"]


def test_a_refresh_after_a_file_was_deleted_fetches_nothing_from_the_hub(
    hub: Any, hub_root: Path, s3: Any, bucket: str, first_sync: dict[str, Any], manifest_schema: Any
) -> None:
    """GIVEN a synced repo  WHEN a file is deleted at the Hub (main moves, every remaining file unchanged)
    THEN the refresh downloads no file at all, copies every remaining file inside S3, and publishes a
    snapshot without the deleted file."""
    repo_id = first_sync["repo_id"]
    (hub_root / repo_id / "tokenizer" / "vocab.txt").unlink()
    hub.requests.clear()

    result = sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=4, s3=s3)

    assert hub_file_bytes(hub, repo_id) == {}
    assert result.copied_bytes == 0
    assert result.reused_files == len(first_sync["manifest"]["files"]) - 1
    manifest = assert_published_like_the_hub(hub, s3, bucket, repo_id, manifest_schema)
    assert "tokenizer/vocab.txt" not in {entry["path"] for entry in manifest["files"]}


def test_a_copy_whose_checksum_differs_from_the_recorded_one_fails_and_is_cleaned_up(
    hub: Any, hub_root: Path, s3: Any, bucket: str, first_sync: dict[str, Any]
) -> None:
    """GIVEN a refresh planned to copy the unchanged files, with one source's recorded CRC64NVME altered in the
    stored plan (standing in for a copy that came out different)
    WHEN the copy-from unit runs  THEN it fails with IntegrityError naming the file; the bad copy is deleted
    where its check failed, only verified copies stay; nothing is published and refs/main still names the old commit."""
    repo_id = first_sync["repo_id"]
    write_files(hub_root, repo_id, {"README.md": b"# ops test repo, checksum case\n"})
    planned = steps.plan({"repo_id": repo_id, "bucket": bucket, "options": {"part_size": PART_SIZE}}, s3=s3)
    stored_plan = json.loads(read(s3, bucket, planned["plan_key"]))
    config = next(f for f in stored_plan["files"] if f["path"] == "config.json")
    config["copy_from"]["crc64nvme"] = "AAAAAAAAAAA="
    s3.put_object(Bucket=bucket, Key=planned["plan_key"], Body=json.dumps(stored_plan).encode())
    copy_item = next(item for item in planned["units"] if item["kind"] == "copy-from")

    with pytest.raises(errors.IntegrityError, match=r"config\.json"):
        steps.copy_unit(copy_item, s3=s3)
    steps.cleanup({**planned, "failed": True}, s3=s3)

    assert failed_clean_problems(s3, bucket, prefix=layout.snapshot_prefix("models", repo_id, planned["commit"])) == []
    assert all_keys(s3, bucket, layout.manifest_key("models", repo_id, planned["commit"])) == []
    assert incomplete_uploads(s3, bucket) == []
    assert ref_commit(s3, bucket, repo_id) == first_sync["commit"]
