"""gc: a snapshot that a ref or manifest.json names is never deleted, whatever the retention; of the
others, exactly those beyond the newest `keep` and older than `older_than` go, manifest first."""

from __future__ import annotations

import io
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from conftest import REGION, all_keys, load_event
from hypothesis import given, settings
from hypothesis import strategies as st
from ops_support import load_handler, put_manifest

from model_cache.cli import main as cli
from model_cache.contract import errors, layout
from model_cache.contract import manifest as manifest_mod
from model_cache.contract.manifest import FileRecord
from model_cache.operations import gc
from model_cache.operations.gc import ORPHAN_GRACE_DAYS, SnapshotInfo, collect, decide

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def commit_id(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(40))


def expected_deletions(snapshots: list[SnapshotInfo], protected: set[str], keep: int, older_than: float) -> set[str]:
    """The retention rule, written out independently of gc.decide."""
    free = sorted(
        (s for s in snapshots if s.commit not in protected and s.published),
        key=lambda s: (s.created_at, s.commit),
        reverse=True,
    )
    doomed = {s.commit for s in free[keep:] if NOW - s.created_at >= timedelta(days=older_than)}
    orphan_age = timedelta(days=max(older_than, ORPHAN_GRACE_DAYS))
    doomed |= {
        s.commit
        for s in snapshots
        if not s.published and s.commit not in protected and NOW - s.created_at >= orphan_age
    }
    return doomed


# ---------------------------------------------------------------------------------------------
# The rule itself (pure)
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(
    ages=st.lists(st.tuples(st.floats(0, 400), st.booleans()), min_size=0, max_size=12),
    protect_mask=st.lists(st.booleans(), min_size=12, max_size=12),
    keep=st.integers(0, 5),
    older_than=st.floats(0, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_decide_never_deletes_a_named_snapshot_and_deletes_exactly_the_expired_ones(
    ages: list[tuple[float, bool]], protect_mask: list[bool], keep: int, older_than: float, seed: int
) -> None:
    """GIVEN any set of snapshots (published or not, any age), any named subset, any keep / older-than
    WHEN gc decides  THEN no named snapshot is deleted, and the deleted set is exactly the retention rule's."""
    rng = random.Random(seed)
    snapshots = [
        SnapshotInfo("org/name", commit_id(rng), published, NOW - timedelta(days=age), bytes=1, objects=1)
        for age, published in ages
    ]
    protected = {s.commit: ["refs/main"] for s, flag in zip(snapshots, protect_mask, strict=False) if flag}

    decisions = decide(snapshots, protected, keep=keep, older_than_days=older_than, now=NOW)

    deleted = {d.commit for d in decisions if d.action == "delete"}
    assert not deleted & set(protected)
    assert deleted == expected_deletions(snapshots, set(protected), keep, older_than)
    assert sorted(d.commit for d in decisions) == sorted(s.commit for s in snapshots)


@pytest.mark.unit
@pytest.mark.parametrize(("keep", "older_than"), [(-1, 1), (1, -0.5), (True, 1), (1, "7")])
def test_bad_retention_is_refused_with_the_reason(keep: Any, older_than: Any) -> None:
    """GIVEN a negative or non-numeric keep / older-than  WHEN gc decides  THEN InvalidRequest names the option."""
    with pytest.raises(errors.InvalidRequest, match=r"keep|older_than"):
        decide([], {}, keep=keep, older_than_days=older_than, now=NOW)


# ---------------------------------------------------------------------------------------------
# Over moto's S3 server
# ---------------------------------------------------------------------------------------------


def put_snapshot(s3: Any, bucket: str, repo_id: str, commit: str, created_at: datetime, *, published: bool) -> None:
    """Files (and, when published, a schema-valid manifest) of one snapshot, as the engine lays them out."""
    records = []
    for path in ("model.safetensors", "config.json"):
        key = layout.file_key("models", repo_id, commit, path)
        body = f"{commit}:{path}".encode()
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        records.append(FileRecord(path, len(body), "0" * 64, "1" * 40, path.endswith("tensors"), key, None, None))
    s3.put_object(Bucket=bucket, Key=layout.hash_key("models", repo_id, commit), Body=commit.encode())
    if published:
        put_manifest(s3, bucket, repo_id, commit, records, created_at=created_at.strftime("%Y-%m-%dT%H:%M:%SZ"))


def point(s3: Any, bucket: str, repo_id: str, ref: str, commit: str) -> None:
    s3.put_object(Bucket=bucket, Key=layout.ref_key("models", repo_id, ref), Body=commit.encode())


def snapshot_keys(s3: Any, bucket: str, repo_id: str, commit: str) -> list[str]:
    files: list[str] = all_keys(s3, bucket, layout.snapshot_prefix("models", repo_id, commit))
    manifest: list[str] = all_keys(s3, bucket, layout.manifest_key("models", repo_id, commit))
    return files + manifest


@pytest.mark.integration
@pytest.mark.parametrize("seed", range(6))
def test_gc_over_s3_keeps_every_named_snapshot_and_removes_the_right_ones(s3: Any, bucket: str, seed: int) -> None:
    """GIVEN two repos with 6-8 snapshots each at random ages, random refs (branches, tags, manifest.json),
    one unpublished leftover, and a random keep / older-than
    WHEN gc runs (after a dry run)
    THEN the dry run deleted nothing; every named snapshot is intact (manifest and all files); each deleted one
    is wholly gone; the survivors are exactly what the retention rule keeps."""
    rng = random.Random(seed)
    keep, older_than = rng.randint(0, 3), rng.choice([0.0, 5.0, 30.0])
    expected: dict[str, set[str]] = {}
    everything: dict[str, list[str]] = {}
    for _ in range(2):
        repo_id = f"gc-org/repo-{uuid.uuid4().hex[:8]}"
        infos = []
        for _ in range(rng.randint(6, 8)):
            commit, age = commit_id(rng), rng.uniform(0, 90)
            put_snapshot(s3, bucket, repo_id, commit, NOW - timedelta(days=age), published=True)
            infos.append(SnapshotInfo(repo_id, commit, True, NOW - timedelta(days=age)))
        # The unpublished leftover's age comes from S3's LastModified: that is "now" in moto, so it is young.
        leftover = commit_id(rng)
        put_snapshot(s3, bucket, repo_id, leftover, NOW, published=False)
        named = rng.sample([i.commit for i in infos], 3)
        point(s3, bucket, repo_id, "main", named[0])
        point(s3, bucket, repo_id, "v1.0", named[1])
        root = manifest_mod.dumps({"commit": named[2], "revision": "main"})
        s3.put_object(Bucket=bucket, Key=layout.root_manifest_key("models", repo_id), Body=root)
        expected[repo_id] = expected_deletions(infos, set(named), keep, older_than)
        everything[repo_id] = [i.commit for i in infos] + [leftover]
    before = set(all_keys(s3, bucket))

    dry = collect(s3, bucket, keep=keep, older_than_days=older_than, dry_run=True, now=NOW)
    assert set(all_keys(s3, bucket)) == before
    report = collect(s3, bucket, keep=keep, older_than_days=older_than, now=NOW)

    assert [d.to_json() for d in dry.decisions] == [d.to_json() for d in report.decisions]
    for repo_id, commits in everything.items():
        deleted = {d.commit for d in report.decisions if d.repo_id == repo_id and d.action == "delete"}
        assert deleted == expected[repo_id]
        names = gc.protected_commits(s3, bucket, "models", repo_id)
        assert not deleted & set(names)
        for commit in commits:
            keys = snapshot_keys(s3, bucket, repo_id, commit)
            if commit in deleted:
                assert keys == [], f"{commit} was only partly deleted: {keys}"
            else:
                assert len(keys) == (4 if commit != commits[-1] else 3), f"{commit} lost files: {keys}"
    assert report.deleted_snapshots == sum(len(v) for v in expected.values())


@pytest.mark.integration
def test_gc_deletes_the_manifest_before_the_files(s3: Any, s3_proxy: Any, bucket: str) -> None:
    """GIVEN an old unreferenced snapshot  WHEN gc deletes it through the S3 proxy
    THEN the manifest's DeleteObject reaches S3 before the DeleteObjects of its files (a reader never finds
    a manifest whose files are gone), and only current versions are deleted (no version ids sent)."""
    repo_id = f"gc-org/order-{uuid.uuid4().hex[:8]}"
    rng = random.Random(7)
    old, current = commit_id(rng), commit_id(rng)
    put_snapshot(s3, bucket, repo_id, old, NOW - timedelta(days=40), published=True)
    put_snapshot(s3, bucket, repo_id, current, NOW - timedelta(days=1), published=True)
    point(s3, bucket, repo_id, "main", current)
    proxied = boto3.client(
        "s3", region_name=REGION, endpoint_url=s3_proxy.url, config=Config(s3={"addressing_style": "path"})
    )
    s3_proxy.requests.clear()

    report = collect(proxied, bucket, repo_ids=[repo_id], keep=0, older_than_days=7, now=NOW)

    assert [d.commit for d in report.decisions if d.action == "delete"] == [old]
    # gc's own mark under the work prefix (model_cache.pipeline.claims) is not part of the snapshot's order.
    deletes = [
        (r.operation, r.method, r.path)
        for r in s3_proxy.requests
        if r.method in ("DELETE", "POST") and "/_model-cache-work/" not in r.path
    ]
    manifest_key = layout.manifest_key("models", repo_id, old)
    assert deletes[0][0] == "DeleteObject"
    assert manifest_key in deletes[0][2]
    assert [op for op, _, _ in deletes[1:]] == ["DeleteObjects"]
    assert all("versionId" not in path for _, _, path in deletes)
    versions = s3.list_object_versions(Bucket=bucket, Prefix=layout.snapshot_prefix("models", repo_id, old))
    assert versions.get("DeleteMarkers"), "a versioned bucket keeps the bytes as noncurrent versions"
    assert snapshot_keys(s3, bucket, repo_id, current)


@pytest.mark.integration
def test_a_ref_that_moves_onto_a_doomed_snapshot_during_gc_saves_it(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN an old unreferenced snapshot that gc has planned to delete
    WHEN a ref is pointed at it between gc's scan and its delete (a rollback by hand)
    THEN gc reads the names again, keeps it and says why."""
    repo_id = f"gc-org/race-{uuid.uuid4().hex[:8]}"
    rng = random.Random(11)
    old, current = commit_id(rng), commit_id(rng)
    put_snapshot(s3, bucket, repo_id, old, NOW - timedelta(days=40), published=True)
    put_snapshot(s3, bucket, repo_id, current, NOW, published=True)
    point(s3, bucket, repo_id, "main", current)
    real_scan = gc.scan_snapshots

    def scan_then_roll_back(*args: Any) -> list[SnapshotInfo]:
        found = real_scan(*args)
        point(s3, bucket, repo_id, "rollback", old)
        return found

    monkeypatch.setattr(gc, "scan_snapshots", scan_then_roll_back)

    report = collect(s3, bucket, repo_ids=[repo_id], keep=0, older_than_days=1, now=NOW)

    decision = next(d for d in report.decisions if d.commit == old)
    assert decision.action == "keep"
    assert "refs/rollback" in decision.reason
    assert len(snapshot_keys(s3, bucket, repo_id, old)) == 4


@pytest.mark.integration
def test_gc_cli_dry_run_prints_the_plan_and_deletes_nothing(s3: Any, bucket: str) -> None:
    """GIVEN an old unreferenced snapshot and a named one  WHEN `model-cache gc --dry-run --json` runs, then gc
    THEN the dry run lists the deletion without deleting; the real run deletes it and keeps the named one."""
    repo_id = f"gc-org/cli-{uuid.uuid4().hex[:8]}"
    rng = random.Random(3)
    old, current = commit_id(rng), commit_id(rng)
    # created_at of "now minus 400 days" relative to the real clock, since the CLI uses it.
    long_ago = datetime.now(UTC) - timedelta(days=400)
    put_snapshot(s3, bucket, repo_id, old, long_ago, published=True)
    put_snapshot(s3, bucket, repo_id, current, long_ago, published=True)
    point(s3, bucket, repo_id, "main", current)
    out = io.StringIO()

    code = cli.main(["gc", repo_id, "--bucket", bucket, "--keep", "0", "--dry-run", "--json"], out=out)

    assert code == 0
    plan = json.loads(out.getvalue())
    assert plan["dry_run"] is True
    assert {(d["commit"], d["action"]) for d in plan["decisions"]} == {(old, "delete"), (current, "keep")}
    assert len(snapshot_keys(s3, bucket, repo_id, old)) == 4
    out = io.StringIO()
    assert cli.main(["gc", repo_id, "--bucket", bucket, "--keep", "0"], out=out) == 0
    assert "deleted 1 snapshot(s)" in out.getvalue()
    assert snapshot_keys(s3, bucket, repo_id, old) == []
    assert len(snapshot_keys(s3, bucket, repo_id, current)) == 4


@pytest.mark.integration
def test_the_scheduled_gc_handler_uses_the_configured_retention_and_reports_what_it_deleted(
    s3: Any, bucket: str, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN the gc Lambda configured with GC_KEEP=0 and GC_OLDER_THAN_DAYS=30, a named snapshot and two
    unreferenced ones (one 400 days old, one 1 day old)
    WHEN the schedule event arrives (after a manual dry run)
    THEN only the 400-day-old one is deleted; the dry run deleted nothing; a malformed override fails with
    InvalidRequest."""
    repo_id = f"gc-org/lambda-{uuid.uuid4().hex[:8]}"
    rng = random.Random(5)
    named, old, young = commit_id(rng), commit_id(rng), commit_id(rng)
    now = datetime.now(UTC)
    put_snapshot(s3, bucket, repo_id, named, now - timedelta(days=500), published=True)
    put_snapshot(s3, bucket, repo_id, old, now - timedelta(days=400), published=True)
    put_snapshot(s3, bucket, repo_id, young, now - timedelta(days=1), published=True)
    point(s3, bucket, repo_id, "main", named)
    monkeypatch.setenv("MODEL_CACHE_BUCKET", bucket)
    monkeypatch.setenv("GC_KEEP", "0")
    monkeypatch.setenv("GC_OLDER_THAN_DAYS", "30")
    handler = load_handler("gc")

    dry = handler.handler({"dry_run": True, "repos": [repo_id]}, lambda_context)
    assert dry["status"] == "dry_run"
    assert [d["commit"] for d in dry["deletions"]] == [old]
    assert len(snapshot_keys(s3, bucket, repo_id, old)) == 4
    result = handler.handler(load_event("gc_schedule.json"), lambda_context)

    assert result["status"] == "collected"
    assert [d["commit"] for d in result["deletions"] if d["repo_id"] == repo_id] == [old]
    assert snapshot_keys(s3, bucket, repo_id, old) == []
    assert len(snapshot_keys(s3, bucket, repo_id, named)) == 4
    assert len(snapshot_keys(s3, bucket, repo_id, young)) == 4
    with pytest.raises(errors.InvalidRequest, match="dry_run"):
        handler.handler({"dry_run": "yes"}, lambda_context)
