"""Integrity of the pipeline under concurrency and faults: no run can damage a published snapshot.

Each test names a defect a review reproduced on the transfer path (issue 11) and tries to break the
guarantee that fixes it: two executions of one commit interleaved task by task, an older commit that
publishes last, a write that fails between the manifest and the refs, a stalled Hub, a retried task.
Everything runs against real servers: moto's S3 (directly or through the S3 fault proxy) and the Hub
double. Interleavings that must land between two S3 requests are placed with boto3's own event hooks
on the client that makes the request, so the moment is exact and the request still goes to S3.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import (
    REGION,
    MotoEndpoint,
    failed_clean_problems,
    incomplete_uploads,
    load_event,
    shared_test_module,
)
from reliability_support import (
    FAULT_REPO,
    PART_SIZE,
    SEED,
    WEIGHT,
    FaultTable,
    RetryLog,
    attempt,
    check_bucket,
    new_bucket,
)

from model_cache.adapters import hubapi
from model_cache.adapters.s3 import s3_client
from model_cache.contract import errors, layout
from model_cache.pipeline import steps
from model_cache.pipeline.engine import sync
from model_cache_devtools.hub import HubServer
from model_cache_devtools.s3proxy import S3Proxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ops = shared_test_module("ops_support", "tests/operations/ops_support.py")

# The weight (3 parts) whole in one unit, verified in-stream; the small files in a second unit.
WHOLE = {"part_size": PART_SIZE, "unit_size": 4 * PART_SIZE, "unit_concurrency": 1, "layout": "split"}
# The weight split over 3 units: finalize verifies it by reading it back.
SPLIT = {"part_size": PART_SIZE, "unit_size": PART_SIZE, "unit_concurrency": 1, "layout": "split"}


def plan_event(bucket: str, name: str, options: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"repo_id": FAULT_REPO, "bucket": bucket, "plan_id": name, "options": options, **fields}


def run_to_published(s3: Any, event: dict[str, Any]) -> dict[str, Any]:
    """One execution's tasks in order, as the state machine runs them on its success path."""
    planned = steps.plan(event, s3=s3)
    if planned["status"] == "already_published":
        return planned
    for item in planned["units"]:
        steps.copy_unit(item, s3=s3)
    published = steps.publish(steps.finalize(steps.complete_files(planned, s3=s3), s3=s3), s3=s3)
    steps.cleanup({**planned, "failed": False}, s3=s3)
    return published


def head_etags(s3: Any, bucket: str, manifest: dict[str, Any]) -> dict[str, str]:
    return {entry["key"]: s3.head_object(Bucket=bucket, Key=entry["key"])["ETag"] for entry in manifest["files"]}


def read_manifest(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return dict(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def ref_of(s3: Any, bucket: str, repo_id: str, revision: str = "main") -> str:
    return bytes(s3.get_object(Bucket=bucket, Key=layout.ref_key("models", repo_id, revision))["Body"].read()).decode()


# ---------------------------------------------------------------------------------------------
# 1 + 2: a second execution of a published commit
# ---------------------------------------------------------------------------------------------


def weight_first_repo(hub_root: Path) -> str:
    """A repo whose multipart weight sorts before its small file, so finalize completes the weight and
    only then meets the small file's unit."""
    return str(ops.make_repo(hub_root, {"a-weights.safetensors": ops.default_files()[ops.BIG_FILE], "b.json": b"{}"}))


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_second_execution_failing_in_finalize_never_deletes_the_first_ones_published_objects(
    hub: HubServer, hub_root: Path, s3: Any, versioned: bool
) -> None:
    """GIVEN execution B planned a commit, then execution A copied and published it
    WHEN B runs only its weight unit (its small-file unit timed out), B's finalize runs (as ExplainCopyFailure
    runs it) and fails on the missing unit, and B's Catch cleanup runs
    THEN every object A's manifest names is still there, A's own version (same ETag), with A's bytes;
    nothing of B is left open.
    (Failed on 93eecbe, unversioned: B completed over A's weight, then deleted the key without a version id.)"""
    repo_id = weight_first_repo(hub_root)
    bucket = new_bucket(s3, versioned=versioned)
    event = {"repo_id": repo_id, "bucket": bucket, "options": WHOLE}
    planned_b = steps.plan({**event, "plan_id": "exec-b"}, s3=s3)
    published_a = run_to_published(s3, {**event, "plan_id": "exec-a"})
    manifest_a = read_manifest(s3, bucket, published_a["manifest_key"])
    etags_before = head_etags(s3, bucket, manifest_a)

    weight_unit = next(item for item in planned_b["units"] if item["path"] == "a-weights.safetensors")
    steps.copy_unit(weight_unit, s3=s3)
    with pytest.raises(errors.TransferError, match="without a result"):
        steps.finalize(steps.complete_files(planned_b, s3=s3), s3=s3)
    steps.cleanup({**planned_b, "failed": True}, s3=s3)

    state = check_bucket(s3, bucket)
    assert state.problems == []
    assert state.open_uploads == 0
    assert head_etags(s3, bucket, manifest_a) == etags_before
    assert read_manifest(s3, bucket, published_a["manifest_key"]) == manifest_a


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_a_second_run_never_replaces_a_published_object_with_unverified_bytes(
    fault_hub_endpoint: HubServer, s3: Any, hub_retries: RetryLog, versioned: bool
) -> None:
    """GIVEN A published the commit; B planned it before, with the weight split across units (verified by
    read-back), and the Hub serves B one flipped byte of the weight
    WHEN B's finalize completes its uploads  THEN at no moment does the published key hold other bytes
    than A's (the object is checked right after every CompleteMultipartUpload B makes), B adopts A's
    verified object, and the manifest is unchanged.
    (Failed on 93eecbe: B completed its unverified bytes onto the published key before reading them back.)"""
    bucket = new_bucket(s3, versioned=versioned)
    planned_b = steps.plan(plan_event(bucket, "exec-b", SPLIT), s3=s3)
    published_a = run_to_published(s3, plan_event(bucket, "exec-a", SPLIT))
    manifest_a = read_manifest(s3, bucket, published_a["manifest_key"])
    weight = next(entry for entry in manifest_a["files"] if entry["path"] == WEIGHT)

    fault_hub_endpoint.faults.add(FAULT_REPO, WEIGHT, kind="corrupt", offset=PART_SIZE + 17, times=1)
    for item in planned_b["units"]:
        steps.copy_unit(item, s3=s3)
    observer = boto3.client("s3", region_name=REGION)
    seen: list[str] = []

    def after_complete(**_: Any) -> None:
        body = observer.get_object(Bucket=bucket, Key=weight["key"])["Body"].read()
        seen.append(hashlib.sha256(body).hexdigest())

    client_b = s3_client()
    client_b.meta.events.register("after-call.s3.CompleteMultipartUpload", after_complete)
    finalized = steps.finalize(steps.complete_files(planned_b, s3=client_b), s3=client_b)
    steps.publish(finalized, s3=client_b)
    steps.cleanup({**planned_b, "failed": False}, s3=client_b)

    assert seen, "B completed no upload"
    assert set(seen) == {weight["sha256"]}, "a reader saw unverified bytes at a published key"
    if versioned:  # every key's current version is still the one A's manifest names
        current = {e["key"]: s3.head_object(Bucket=bucket, Key=e["key"])["VersionId"] for e in manifest_a["files"]}
        assert current == {entry["key"]: entry["version_id"] for entry in manifest_a["files"]}
    assert read_manifest(s3, bucket, published_a["manifest_key"]) == manifest_a
    assert check_bucket(s3, bucket).problems == []
    assert incomplete_uploads(s3, bucket) == []


def copy_then_finalize(s3: Any, planned: dict[str, Any], units: list[dict[str, Any]]) -> dict[str, Any]:
    for item in units:
        steps.copy_unit(item, s3=s3)
    return steps.finalize(steps.complete_files(planned, s3=s3), s3=s3)


def test_the_fault_table_row_second_execution_fails_in_finalize(hub: HubServer, hub_root: Path, s3: Any) -> None:
    """GIVEN a first execution published the commit and a second one, planned before that, goes to finalize
    with a unit that never ran, or with the weight split across units and one unit served a flipped byte,
    on versioned and unversioned buckets, from a fixed seed  THEN the second fails clean or adopts the first's
    verified objects, and corrupted 0, orphaned 0 in every trial."""
    rng = random.Random(SEED + 111)
    repo_id = weight_first_repo(hub_root)
    table = FaultTable("second execution fails in finalize after the first published")
    for trial in range(8):
        versioned = trial % 2 == 0
        split = rng.random() < 0.5
        bucket = new_bucket(s3, versioned=versioned)
        hub.faults.clear()
        event = {"repo_id": repo_id, "bucket": bucket, "options": SPLIT if split else WHOLE}
        planned_b = steps.plan({**event, "plan_id": "exec-b"}, s3=s3)
        run_to_published(s3, {**event, "plan_id": "exec-a"})
        units = planned_b["units"]
        if split:
            offset = rng.randrange(3 * PART_SIZE)
            hub.faults.add(repo_id, "a-weights.safetensors", kind="corrupt", offset=offset, times=None)
        else:
            units = [unit for unit in units if unit["path"] != "b.json"]
        outcome = attempt(copy_then_finalize, s3, planned_b, units)
        hub.faults.clear()
        steps.cleanup({**planned_b, "failed": outcome.error is not None}, s3=s3)
        state = check_bucket(s3, bucket)
        table.bucket_trial(state, recovered=outcome.error is None, note=f"versioned={versioned} split={split}")
        assert state.problems == [], f"trial {trial}: {state.problems}"
        assert state.open_uploads == 0
    table.write()


# ---------------------------------------------------------------------------------------------
# 5: refs only move forward
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def moving_repo(hub: HubServer, hub_root: Path) -> str:
    """A repo of our own in the Hub double's root: writing a file moves its main to a new commit."""
    return str(ops.make_repo(hub_root))


def move_main(hub_root: Path, repo_id: str, text: str) -> None:
    ops.write_files(hub_root, repo_id, {"README.md": text.encode()})


def test_an_older_commit_that_publishes_last_never_moves_refs_back(
    moving_repo: str, hub_root: Path, s3: Any, bucket: str
) -> None:
    """GIVEN execution X copied and verified commit c1 of main, then main moved to c2 at the Hub and
    execution Y published c2  WHEN X publishes last  THEN refs/main and manifest.json still name c2;
    c1 is published under manifests/c1.json and reachable by commit.
    (Failed on 93eecbe: X's unconditional write moved refs/main back to c1.)"""
    event = {"repo_id": moving_repo, "bucket": bucket, "plan_id": "exec-x", "options": {"part_size": PART_SIZE}}
    planned_x = steps.plan(event, s3=s3)
    for item in planned_x["units"]:
        steps.copy_unit(item, s3=s3)
    finalized_x = steps.finalize(steps.complete_files(planned_x, s3=s3), s3=s3)
    move_main(hub_root, moving_repo, "# moved on\n")
    newer = sync(moving_repo, bucket=bucket, part_size=PART_SIZE, s3=s3)
    assert newer.commit != planned_x["commit"]

    published_x = steps.publish(finalized_x, s3=s3)
    steps.cleanup({**planned_x, "failed": False}, s3=s3)

    assert published_x["ref_key"] is None
    assert ref_of(s3, bucket, moving_repo) == newer.commit
    root = read_manifest(s3, bucket, layout.root_manifest_key("models", moving_repo))
    assert root["commit"] == newer.commit
    assert read_manifest(s3, bucket, planned_x["manifest_key"])["commit"] == planned_x["commit"]
    assert check_bucket(s3, bucket).problems == []


@pytest.mark.parametrize("moment", ["before the ref write", "before the manifest.json write"])
def test_interleaved_publishes_leave_refs_main_and_manifest_json_on_the_head_commit(
    moving_repo: str, hub_root: Path, s3: Any, bucket: str, moment: str
) -> None:
    """GIVEN execution X publishing commit c1 while it is main's head  WHEN, right before X's conditional
    write of refs/main (or of manifest.json), main moves to c2 at the Hub and execution Y publishes c2
    THEN X's write loses its condition, X re-reads, sees c2 and the Hub's new head, and stops: refs/main
    and manifest.json both name c2.
    (Failed on 93eecbe: X's unconditional writes left refs/main or manifest.json on c1.)"""
    event = {"repo_id": moving_repo, "bucket": bucket, "plan_id": "exec-x", "options": {"part_size": PART_SIZE}}
    planned_x = steps.plan(event, s3=s3)
    for item in planned_x["units"]:
        steps.copy_unit(item, s3=s3)
    finalized_x = steps.finalize(steps.complete_files(planned_x, s3=s3), s3=s3)
    target = (
        layout.ref_key("models", moving_repo, "main")
        if moment == "before the ref write"
        else layout.root_manifest_key("models", moving_repo)
    )
    newer: list[Any] = []

    def before_put(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == target and not newer:
            move_main(hub_root, moving_repo, "# moved on while X was publishing\n")
            newer.append(sync(moving_repo, bucket=bucket, part_size=PART_SIZE, s3=s3))

    client_x = s3_client()
    client_x.meta.events.register("before-parameter-build.s3.PutObject", before_put)
    steps.publish(finalized_x, s3=client_x)
    steps.cleanup({**planned_x, "failed": False}, s3=s3)

    assert newer, f"X never wrote {target}"
    assert ref_of(s3, bucket, moving_repo) == newer[0].commit
    assert read_manifest(s3, bucket, layout.root_manifest_key("models", moving_repo))["commit"] == newer[0].commit
    assert check_bucket(s3, bucket).problems == []


def test_the_fault_table_row_older_commit_publishes_last(
    moving_repo: str, hub_root: Path, s3: Any, hub_retries: RetryLog
) -> None:
    """GIVEN two executions of main, planned at commits c1 and c2, publishing in a seeded order  THEN refs/main
    and manifest.json end on the Hub's head, both snapshots are published, corrupted 0 and orphaned 0."""
    rng = random.Random(SEED + 112)
    table = FaultTable("older commit publishes last")
    for trial in range(4):
        bucket = new_bucket(s3, versioned=trial % 2 == 0)
        move_main(hub_root, moving_repo, f"# trial {trial} c1\n")
        runs = {}
        for name in ("old", "new"):
            event = {"repo_id": moving_repo, "bucket": bucket, "plan_id": f"exec-{name}-{trial}"}
            planned = steps.plan({**event, "options": {"part_size": PART_SIZE}}, s3=s3)
            for item in planned["units"]:
                steps.copy_unit(item, s3=s3)
            runs[name] = (planned, steps.finalize(steps.complete_files(planned, s3=s3), s3=s3))
            if name == "old":
                move_main(hub_root, moving_repo, f"# trial {trial} c2\n")
        order = ["old", "new"] if rng.random() < 0.75 else ["new", "old"]
        for name in order:
            planned, finalized = runs[name]
            steps.publish(finalized, s3=s3)
            steps.cleanup({**planned, "failed": False}, s3=s3)
        state = check_bucket(s3, bucket)
        head = runs["new"][0]["commit"]
        table.bucket_trial(state, recovered=True, note=" then ".join(order))
        assert ref_of(s3, bucket, moving_repo) == head
        assert read_manifest(s3, bucket, layout.root_manifest_key("models", moving_repo))["commit"] == head
        assert state.problems == []
        assert state.open_uploads == 0
    table.write()


# ---------------------------------------------------------------------------------------------
# Publish order: a write that fails between manifests/{commit}.json and refs/*
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def proxied_s3(s3_proxy: S3Proxy) -> Any:
    return boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=s3_proxy.url,
        config=boto3.session.Config(retries={"mode": "standard", "max_attempts": 3}),
    )


def test_publish_writes_the_manifest_before_any_ref_and_a_ref_before_manifest_json(
    fault_hub_endpoint: HubServer, s3: Any, s3_proxy: S3Proxy, proxied_s3: Any, hub_retries: RetryLog
) -> None:
    """GIVEN a copied and verified snapshot  WHEN it is published through the S3 proxy  THEN the proxy saw
    the write of manifests/{commit}.json before the write of refs/main, and refs/main before manifest.json."""
    bucket = new_bucket(s3)
    planned = steps.plan(plan_event(bucket, "exec-order", WHOLE), s3=s3)
    for item in planned["units"]:
        steps.copy_unit(item, s3=s3)
    finalized = steps.finalize(steps.complete_files(planned, s3=s3), s3=s3)
    s3_proxy.requests.clear()
    steps.publish(finalized, s3=proxied_s3)
    writes = [entry.path.split("?")[0] for entry in s3_proxy.requests if entry.operation == "PutObject"]
    order = [
        next(i for i, path in enumerate(writes) if path.endswith(suffix))
        for suffix in (f"manifests/{planned['commit']}.json", "/refs/main", "/manifest.json")
    ]
    assert order == sorted(order), writes


def test_a_write_that_fails_between_manifest_and_refs_publishes_the_snapshot_and_no_ref(
    fault_hub_endpoint: HubServer, s3: Any, s3_proxy: S3Proxy, proxied_s3: Any, hub_retries: RetryLog
) -> None:
    """GIVEN the S3 proxy refuses (403) every write of refs/*  WHEN a verified snapshot is published, and
    then the publish task runs again with the proxy healthy  THEN the first publish fails with AccessDenied
    leaving manifests/{commit}.json published and no ref (every file it names is there), and the retry
    points refs/main and manifest.json at it; corrupted 0, orphaned 0 (a fault-table row)."""
    table = FaultTable("write fails between manifest and refs")
    for trial in range(3):
        bucket = new_bucket(s3, versioned=trial != 1)
        planned = steps.plan(plan_event(bucket, f"exec-deny-{trial}", WHOLE), s3=s3)
        for item in planned["units"]:
            steps.copy_unit(item, s3=s3)
        finalized = steps.finalize(steps.complete_files(planned, s3=s3), s3=s3)
        s3_proxy.faults.clear()
        s3_proxy.faults.add("PutObject", "deny", times=1, key="*/refs/*")
        with pytest.raises(errors.AccessDenied):
            steps.publish(finalized, s3=proxied_s3)
        state = check_bucket(s3, bucket)
        assert state.manifests == [planned["manifest_key"]]
        assert state.problems == []
        steps.publish(finalized, s3=proxied_s3)
        steps.cleanup({**planned, "failed": False}, s3=s3)
        state = check_bucket(s3, bucket)
        table.bucket_trial(state, recovered=True, note="publish retried")
        assert ref_of(s3, bucket, FAULT_REPO) == planned["commit"]
        assert state.problems == []
        assert state.open_uploads == 0
    s3_proxy.faults.clear()
    table.write()


# ---------------------------------------------------------------------------------------------
# 6: a stalled Hub API
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def short_hub_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_CACHE_HUB_TIMEOUT", "1.5")  # far from the 60 s stall, far above a busy answer
    monkeypatch.setattr(hubapi, "API_RETRY_BASE_SECONDS", 0.01)


def test_a_stalled_hub_api_fails_resolve_instead_of_hanging(
    fault_hub_endpoint: HubServer, short_hub_timeout: None
) -> None:
    """GIVEN the Hub's API stalls 60 s before answering, every time  WHEN the revision is resolved
    THEN resolve gives up with a TransferError naming the Hub, after its few timed-out attempts.
    (Failed on 93eecbe: model_info had no timeout and waited for the stall; the test's timeout ended it.)"""
    stall = fault_hub_endpoint.faults.add(FAULT_REPO, kind="stall", seconds=60, endpoint="api", times=None)
    with pytest.raises(errors.TransferError, match="could not reach the Hub"):
        hubapi.resolve(FAULT_REPO, "main")
    assert stall.fired == hubapi.API_ATTEMPTS


def test_the_fault_table_row_hub_api_stalls_during_resolve(
    fault_hub_endpoint: HubServer, s3: Any, short_hub_timeout: None, hub_retries: RetryLog
) -> None:
    """GIVEN the Hub's API stalls 60 s on 1 or 2 calls (recovered by the next attempt) or on every call
    (failed clean), seeded  WHEN the model is synced  THEN corrupted 0 and orphaned 0."""
    rng = random.Random(SEED + 113)
    table = FaultTable("Hub API stalls during resolve")
    for _ in range(6):
        bucket = new_bucket(s3)
        fault_hub_endpoint.faults.clear()
        stalls = rng.choice([1, 2, None])
        fault_hub_endpoint.faults.add(FAULT_REPO, kind="stall", seconds=60, endpoint="api", times=stalls)
        outcome = attempt(sync, FAULT_REPO, bucket=bucket, part_size=PART_SIZE, s3=s3)
        fault_hub_endpoint.faults.clear()
        state = check_bucket(s3, bucket)
        table.bucket_trial(state, recovered=outcome.error is None, note=f"stalls={stalls}")
        assert (outcome.error is None) == (stalls is not None), outcome.error
        assert state.problems == []
        assert state.open_uploads == 0
        if outcome.error is not None:
            assert failed_clean_problems(s3, bucket) == []
    table.write()


# ---------------------------------------------------------------------------------------------
# 7: selection is part of what "published" means
# ---------------------------------------------------------------------------------------------


def test_a_narrow_request_does_not_seal_the_commit(moving_repo: str, s3: Any, bucket: str) -> None:
    """GIVEN a commit cached for include=["*.json"] only  WHEN the whole model is requested  THEN it is copied
    (not "already published"), manifests/{commit}.json becomes the union with the narrow entry unchanged,
    and its selection says so; a second narrow request is then already published.
    (Failed on 93eecbe: the whole-model request got the one-file manifest.)"""
    narrow = sync(moving_repo, bucket=bucket, part_size=PART_SIZE, include=["*.json"], s3=s3)
    narrow_manifest = read_manifest(s3, bucket, narrow.manifest_key)
    assert [entry["path"] for entry in narrow_manifest["files"]] == ["config.json"]
    assert narrow_manifest["selection"] == {"include": ["*.json"], "exclude": []}

    full = sync(moving_repo, bucket=bucket, part_size=PART_SIZE, s3=s3)
    assert full.status == "published"
    manifest = read_manifest(s3, bucket, full.manifest_key)
    assert {entry["path"] for entry in manifest["files"]} == set(ops.default_files())
    assert next(e for e in manifest["files"] if e["path"] == "config.json") == narrow_manifest["files"][0]
    assert manifest["selection"] == {"include": [], "exclude": []}
    assert manifest["created_at"] == narrow_manifest["created_at"]
    assert sync(moving_repo, bucket=bucket, include=["*.md"], s3=s3).status == "already_published"
    assert check_bucket(s3, bucket).problems == []


def test_concurrent_runs_with_different_selections_publish_the_union(moving_repo: str, s3: Any, bucket: str) -> None:
    """GIVEN two executions of one commit planned together, one for *.json and one for *.md  WHEN both copy,
    then both publish  THEN manifests/{commit}.json names both files with the entries each run verified,
    the second publish replaced it only by a superset, and refs/main names the commit.
    (Failed on 93eecbe: the second publish overwrote the "immutable" manifest with its own one file.)"""
    runs = []
    for name, pattern in (("json", "*.json"), ("md", "*.md")):
        event = {"repo_id": moving_repo, "bucket": bucket, "plan_id": f"exec-{name}", "include": [pattern]}
        planned = steps.plan({**event, "options": {"part_size": PART_SIZE}}, s3=s3)
        for item in planned["units"]:
            steps.copy_unit(item, s3=s3)
        runs.append((planned, steps.finalize(steps.complete_files(planned, s3=s3), s3=s3)))
    for planned, finalized in runs:
        steps.publish(finalized, s3=s3)
        steps.cleanup({**planned, "failed": False}, s3=s3)
    manifest = read_manifest(s3, bucket, runs[0][0]["manifest_key"])
    assert sorted(entry["path"] for entry in manifest["files"]) == ["README.md", "config.json"]
    assert manifest["selection"] == {"include": ["*.json", "*.md"], "exclude": []}
    assert check_bucket(s3, bucket).problems == []


# ---------------------------------------------------------------------------------------------
# 9: a retried Plan task; the finalize retry guard
# ---------------------------------------------------------------------------------------------


def uploads_of(s3: Any, bucket: str) -> set[str]:
    return {upload["UploadId"] for upload in incomplete_uploads(s3, bucket)}


def test_a_retried_plan_task_starts_no_second_set_of_uploads(
    fault_hub_endpoint: HubServer, s3: Any, hub_retries: RetryLog
) -> None:
    """GIVEN a Plan task that stored its plan and started its uploads, whose result was lost
    WHEN Step Functions retries it (same plan id), then the execution goes on  THEN the retry answers the
    same plan with the same uploads, and at the end no upload is left open (fault-table row).
    (Failed on 93eecbe: the retry started new uploads and orphaned the first attempt's.)"""
    table = FaultTable("a Plan task retried")
    for trial in range(3):
        bucket = new_bucket(s3, versioned=trial != 1)
        event = plan_event(bucket, f"exec-retried-{trial}", SPLIT if trial else WHOLE)
        first = steps.plan(event, s3=s3)
        started = uploads_of(s3, bucket)
        second = steps.plan(event, s3=s3)
        assert uploads_of(s3, bucket) == started
        assert second == first
        for item in second["units"]:
            steps.copy_unit(item, s3=s3)
        steps.publish(steps.finalize(steps.complete_files(second, s3=s3), s3=s3), s3=s3)
        steps.cleanup({**second, "failed": False}, s3=s3)
        state = check_bucket(s3, bucket)
        table.bucket_trial(state, recovered=True, note=f"trial {trial}")
        assert state.problems == []
        assert state.open_uploads == 0
    table.write()


@pytest.mark.parametrize("options", [WHOLE, SPLIT], ids=["verified in-stream", "verified by read-back"])
def test_a_retried_finalize_accepts_a_completed_object_only_if_it_is_its_own(
    fault_hub_endpoint: HubServer, s3: Any, hub_retries: RetryLog, options: dict[str, int]
) -> None:
    """GIVEN a run whose weight parts are uploaded, whose upload is gone (aborted), and whose key now holds
    another object of the same size  WHEN finalize completes the upload  THEN it does not take that object
    for its own (ETag and size differ from its parts'), and does not adopt it either (its bytes are not the
    file's): IntegrityError, the object untouched (not deleted: this run did not write it), nothing published."""
    bucket = new_bucket(s3, versioned=False)
    planned = steps.plan(plan_event(bucket, "exec-etag", options), s3=s3)
    for item in planned["units"]:
        steps.copy_unit(item, s3=s3)
    plan = json.loads(s3.get_object(Bucket=bucket, Key=planned["plan_key"])["Body"].read())
    weight = next(entry for entry in plan["files"] if entry["path"] == WEIGHT)
    s3.abort_multipart_upload(Bucket=bucket, Key=weight["key"], UploadId=weight["upload_id"])
    other = b"\x5a" * weight["size"]
    s3.put_object(Bucket=bucket, Key=weight["key"], Body=other)

    with pytest.raises(errors.IntegrityError, match=r"already holds other bytes|left untouched"):
        steps.finalize(steps.complete_files(planned, s3=s3), s3=s3)
    steps.cleanup({**planned, "failed": True}, s3=s3)

    assert s3.get_object(Bucket=bucket, Key=weight["key"])["Body"].read() == other
    assert check_bucket(s3, bucket).manifests == []


# ---------------------------------------------------------------------------------------------
# StartExecution failures are not duplicates
# ---------------------------------------------------------------------------------------------


def test_a_throttled_start_execution_is_a_failed_item_not_a_duplicate(
    request_handler: tuple[Any, str],
    aws: MotoEndpoint,
    sfn: Any,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GIVEN Step Functions answers StartExecution with ThrottlingException or AccessDeniedException (what is
    left after botocore's own retries)  WHEN the request Lambda handles a valid SQS message  THEN the message
    is reported in batchItemFailures (SQS delivers it again), never acknowledged as a duplicate; and its
    redelivery, with Step Functions healthy, starts the execution (fault-table row: no message lost)."""
    from botocore.stub import Stubber

    from model_cache.pipeline import request_message

    handler, arn = request_handler
    table = FaultTable("StartExecution throttled")
    for trial, code in enumerate(["ThrottlingException", "AccessDeniedException", "ThrottlingException"]):
        client = boto3.client("stepfunctions", region_name=REGION, endpoint_url=aws.url)
        stubber = Stubber(client)
        stubber.add_client_error("start_execution", service_error_code=code, http_status_code=400)
        stubber.activate()
        body = json.dumps({"repo_id": FAULT_REPO, "requested_by": f"trial-{trial}"})
        record = dict(load_event("sqs_requests.json")["Records"][0], messageId=f"m-{trial}", body=body)
        with monkeypatch.context() as patch:
            patch.setattr(request_message, "_stepfunctions", lambda client=client: client)
            first = handler.handler({"Records": [record]}, lambda_context)
        assert first == {"batchItemFailures": [{"itemIdentifier": f"m-{trial}"}]}, code
        redelivered = handler.handler({"Records": [record]}, lambda_context)
        started = {e["name"] for e in sfn.list_executions(stateMachineArn=arn)["executions"]}
        name = request_message.parse_request(body).execution_name()
        lost = int(redelivered["batchItemFailures"] != [] or name not in started)
        table.trial(recovered=not lost, corrupted=lost, orphaned=0, note=code)
        assert lost == 0
    table.write()
