"""steps.py driven exactly as the state machine drives it: plan -> each unit -> finalize -> publish -> cleanup."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
from conftest import all_keys, failed_clean_problems, incomplete_uploads, load_event

from model_cache.contract import errors, ids
from model_cache.pipeline import steps
from model_cache.pipeline.engine import sync
from model_cache.pipeline.plan import MiB
from model_cache_devtools import modelgen
from model_cache_loader import layout as rules

pytestmark = pytest.mark.integration

SMALL_UNITS = {"part_size": 8 * MiB, "unit_size": 16 * MiB, "unit_concurrency": 2, "layout": "split"}


def run_state_machine(event: dict[str, Any], s3: Any, token: str | None = None) -> dict[str, Any]:
    planned = steps.plan(event, token=token, s3=s3)
    json.dumps(planned)  # every result must be JSON for Step Functions
    if planned["status"] == "already_published":
        return planned
    items = json.loads(s3.get_object(Bucket=event["bucket"], Key=planned["units_key"])["Body"].read())
    assert items == planned["units"]
    for item in items:
        json.dumps(steps.copy_unit(item, token=token, s3=s3))
    finalized = steps.finalize(steps.complete_files(planned, s3=s3), s3=s3)
    assert (
        steps.finalize(steps.complete_files(planned, s3=s3), s3=s3) == finalized
    )  # a retried finalize finds its uploads already complete
    published = steps.publish(finalized, s3=s3)
    cleaned = steps.cleanup({**planned, "failed": False}, s3=s3)
    return {"plan": planned, "finalize": finalized, "publish": published, "cleanup": cleaned}


def comparable(manifest: dict[str, Any]) -> dict[str, Any]:
    files = [{k: v for k, v in f.items() if k not in ("version_id", "key")} for f in manifest["files"]]
    return {**{k: v for k, v in manifest.items() if k not in ("created_at", "bucket", "files")}, "files": files}


def test_steps_in_sequence_match_engine_sync(s3: Any, bucket: str, hub: Any, manifest_schema: Any) -> None:
    """GIVEN the big repo planned with 8 MiB parts and 16 MiB units (one file split over 3 units)
    WHEN plan, every unit, finalize, publish and cleanup run as separate tasks
    THEN the manifest equals the one engine.sync writes for the same repo, the split file was
    verified by reading it back, and nothing is left in the work prefix or open."""
    outputs = run_state_machine({"repo_id": modelgen.BIG, "bucket": bucket, "options": SMALL_UNITS}, s3)
    plan_out = outputs["plan"]
    assert plan_out["unit_count"] >= 3
    assert plan_out["lambda_units"] == plan_out["unit_count"]
    assert outputs["finalize"]["verified_by_read_back"] == 1
    assert outputs["publish"]["status"] == "published"
    by_steps = json.loads(s3.get_object(Bucket=bucket, Key=outputs["publish"]["manifest_key"])["Body"].read())
    jsonschema.validate(by_steps, manifest_schema)

    other = bucket + "-engine"
    s3.create_bucket(Bucket=other)
    engine_result = sync(modelgen.BIG, bucket=other, part_size=8 * MiB, s3=s3)
    by_engine = json.loads(s3.get_object(Bucket=other, Key=engine_result.manifest_key)["Body"].read())
    assert comparable(by_steps) == comparable(by_engine)
    assert incomplete_uploads(s3, bucket) == []
    assert [k for k in all_keys(s3, bucket) if k.startswith("_model-cache-work/")] == []
    assert len(json.dumps(plan_out)) < 8192


def test_second_execution_is_already_published(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN a published repo WHEN the plan task runs again THEN it says already_published and plans nothing."""
    run_state_machine({"repo_id": modelgen.NO_ORG, "bucket": bucket}, s3)
    again = steps.plan({"repo_id": modelgen.NO_ORG, "bucket": bucket}, s3=s3)
    assert again["status"] == "already_published"
    assert again["plan_key"] is None


def test_failed_unit_then_cleanup_leaves_nothing(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN a plan whose big file is corrupted at the Hub, so finalize's read-back fails
    WHEN the Catch path runs cleanup(failed=true) THEN no upload is open and no object remains."""
    hub.faults.add(modelgen.BIG, "model.safetensors", kind="corrupt", offset=30 * MiB, times=None)
    planned = steps.plan({"repo_id": modelgen.BIG, "bucket": bucket, "options": SMALL_UNITS}, s3=s3)
    for item in planned["units"]:
        steps.copy_unit(item, s3=s3)
    with pytest.raises(errors.IntegrityError, match="sha256"):
        steps.finalize(steps.complete_files(planned, s3=s3), s3=s3)
    cleaned = steps.cleanup({**planned, "failed": True}, s3=s3)
    assert cleaned["deleted_work_files"] > 0
    assert incomplete_uploads(s3, bucket) == []
    assert failed_clean_problems(s3, bucket) == []


def test_unit_failure_mid_plan_is_cleaned(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN a unit that fails permanently (the Hub answers 404) WHEN cleanup runs THEN every upload is aborted
    and the single-PUT files other units wrote are deleted."""
    planned = steps.plan({"repo_id": modelgen.NESTED, "bucket": bucket, "options": SMALL_UNITS}, s3=s3)
    hub.faults.add(modelgen.NESTED, modelgen.NESTED_LARGE_FILE_PATH, kind="status", status=404, times=None)
    failures = 0
    for item in planned["units"]:
        try:
            steps.copy_unit(item, s3=s3)
        except errors.EntryNotFound:
            failures += 1
    assert failures == 1
    steps.cleanup({**planned, "failed": True}, s3=s3)
    assert incomplete_uploads(s3, bucket) == []
    assert failed_clean_problems(s3, bucket) == []


def test_a_fargate_units_domain_error_is_what_finalize_fails_with(s3: Any, bucket: str, hub: Any, aws: Any) -> None:
    """GIVEN the big file on the Fargate runner and a Hub that answers 404 for it
    WHEN its unit fails in `python -m model_cache.pipeline.copier` (a real process) and finalize runs after the Map
    THEN finalize fails with the unit's own EntryNotFound naming the unit and the file, not a generic
    TransferError, and cleanup still leaves nothing behind."""
    options = {**SMALL_UNITS, "fargate_threshold": 32 * MiB}
    planned = steps.plan({"repo_id": modelgen.BIG, "bucket": bucket, "options": options}, s3=s3)
    fargate = next(item for item in planned["units"] if item["runner"] == "fargate")
    hub.faults.add(modelgen.BIG, fargate["path"], kind="status", status=404, times=None)
    for item in planned["units"]:
        if item["runner"] == "lambda":
            steps.copy_unit(item, s3=s3)
    done = subprocess.run(
        [sys.executable, "-m", "model_cache.pipeline.copier", "--event", json.dumps(fargate)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == errors.EntryNotFound.exit_code, done.stderr
    with pytest.raises(errors.EntryNotFound, match=rf"copy unit {fargate['unit_id']} \({fargate['path']}\)"):
        steps.finalize(steps.complete_files(planned, s3=s3), s3=s3)
    steps.cleanup({**planned, "failed": True}, s3=s3)
    assert incomplete_uploads(s3, bucket) == []
    assert failed_clean_problems(s3, bucket) == []


def test_fargate_unit_runs_through_the_copier_entrypoint(s3: Any, bucket: str, hub: Any, aws: Any) -> None:
    """GIVEN a Fargate threshold below the big file WHEN its unit runs as `python -m model_cache.pipeline.copier`
    (a real process, endpoints from the environment) THEN finalize verifies it in-stream and publish succeeds."""
    options = {**SMALL_UNITS, "fargate_threshold": 32 * MiB}
    planned = steps.plan({"repo_id": modelgen.BIG, "bucket": bucket, "options": options}, s3=s3)
    fargate = [item for item in planned["units"] if item["runner"] == "fargate"]
    assert len(fargate) == 1
    assert fargate[0]["bytes"] == modelgen.BIG_WEIGHT_SIZE
    for item in planned["units"]:
        if item["runner"] == "lambda":
            steps.copy_unit(item, s3=s3)
    done = subprocess.run(
        [sys.executable, "-m", "model_cache.pipeline.copier", "--event", json.dumps(fargate[0])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["unit_id"] == fargate[0]["unit_id"]
    finalized = steps.finalize(steps.complete_files(planned, s3=s3), s3=s3)
    assert finalized["verified_by_read_back"] == 0
    assert steps.publish(finalized, s3=s3)["status"] == "published"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"bucket": "b-ok-name"}, "repo_id"),
        ({"repo_id": "a/b", "bucket": "Bad_Bucket"}, "bucket"),
        ({"repo_id": "a/b", "bucket": "good-bucket", "options": {"part_size": 1024}}, "part_size"),
        ({"repo_id": "a/b", "bucket": "good-bucket", "plan_id": "../x"}, "plan_id"),
        ({"repo_id": "a/b", "bucket": "good-bucket", "include": [""]}, "include"),
    ],
)
def test_plan_rejects_bad_events(event: dict[str, Any], message: str, s3: Any) -> None:
    """GIVEN a malformed plan event WHEN planned THEN InvalidRequest names the field, before any request."""
    with pytest.raises(errors.InvalidRequest, match=message):
        steps.plan(event, s3=s3)


def test_the_token_is_never_in_a_result_a_work_file_or_a_log(
    s3: Any, bucket: str, hub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """GIVEN the gated repo and its token WHEN every task runs (work files kept until the end)
    THEN the token appears in no task result, no object in the bucket, and no log record."""
    caplog.set_level("DEBUG")
    token = modelgen.GATED_TOKEN
    planned = steps.plan({"repo_id": modelgen.GATED, "bucket": bucket, "options": SMALL_UNITS}, token=token, s3=s3)
    results = [planned]
    results += [steps.copy_unit(item, token=token, s3=s3) for item in planned["units"]]
    results.append(steps.finalize(steps.complete_files(planned, s3=s3), s3=s3))
    results.append(steps.publish(planned, s3=s3))
    assert results[-1]["status"] == "published"
    assert token not in json.dumps(results)
    for key in all_keys(s3, bucket):
        assert token.encode() not in s3.get_object(Bucket=bucket, Key=key)["Body"].read(), key
    assert token not in caplog.text
    steps.cleanup({**planned, "failed": False}, s3=s3)


def test_nested_repo_through_the_tasks_is_byte_identical(s3: Any, bucket: str, hub: Any, manifest_schema: Any) -> None:
    """GIVEN the nested repo (nested paths, a unicode name, an 11 MiB file) and 5 MiB parts and units
    WHEN run task by task THEN the 11 MiB file spans 3 units, and every published object equals the double's bytes."""
    options = {"part_size": 5 * MiB, "unit_size": 5 * MiB, "layout": "split"}
    outputs = run_state_machine({"repo_id": modelgen.NESTED, "bucket": bucket, "options": options}, s3)
    units = outputs["plan"]["units"]
    assert [u["path"] for u in units].count(modelgen.NESTED_LARGE_FILE_PATH) == 3
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=outputs["publish"]["manifest_key"])["Body"].read())
    jsonschema.validate(manifest, manifest_schema)
    snapshot = hub.store.snapshot(modelgen.NESTED)
    assert {f["path"] for f in manifest["files"]} == set(snapshot.files)
    for entry in manifest["files"]:
        served = snapshot.files[entry["path"]]
        stored = s3.get_object(Bucket=bucket, Key=entry["key"], VersionId=entry["version_id"])["Body"].read()
        assert stored == served.read(0, served.size), entry["path"]


def test_one_plan_event_has_its_repo_id_and_revision_validated_once(
    s3: Any, bucket: str, hub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN the sample plan event (events/plan.json) for a repo of the Hub double, and a count of every call of
    the repo-id and revision rules (model_cache_loader.layout, their one owner)
    WHEN the Plan task plans it, Hub listing, policy, claim and uploads included
    THEN each rule ran once: at the edge, where the event became a PlanRequest (issue 26: it was three times
    each, in the event parser, prepare_plan and the Hub client)."""
    calls: list[str] = []

    def counted(rule: Any) -> Any:
        def run(value: object) -> str | None:
            calls.append(rule.__name__)
            return rule(value)  # type: ignore[no-any-return]

        return run

    repo_id_rule, revision_rule = counted(rules.repo_id_problem), counted(rules.revision_problem)
    for module in (rules, ids):
        monkeypatch.setattr(module, "repo_id_problem", repo_id_rule)
        monkeypatch.setattr(module, "revision_problem", revision_rule)
    event = {**load_event("plan.json"), "repo_id": modelgen.NO_ORG, "bucket": bucket}
    planned = steps.plan(event, s3=s3)
    assert planned["status"] == "planned"
    assert sorted(calls) == ["repo_id_problem", "revision_problem"]
    steps.cleanup({**planned, "failed": True}, s3=s3)


def test_the_state_machines_request_gives_only_the_request_fields(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN the Plan task's event as the state machine sends it (events/plan_from_state_machine.json): the
    execution's input whole as `request`, here one that also names a bucket, a prefix and a plan id
    WHEN the Plan task plans it
    THEN the request's repo, revision and sender are planned, with the defaults for what it left out, in the
    stack's bucket, prefix and plan id: a sender cannot choose where the cache writes."""
    event = load_event("plan_from_state_machine.json")
    event["request"]["repo_id"] = f"{modelgen.NO_ORG}@main"
    event["bucket"] = bucket
    planned = steps.plan(event, s3=s3)
    assert (planned["repo_id"], planned["revision"], planned["bucket"], planned["prefix"]) == (
        modelgen.NO_ORG,
        "main",
        bucket,
        "models",
    )
    assert planned["plan_id"] == event["plan_id"]
    stored = json.loads(s3.get_object(Bucket=bucket, Key=planned["plan_key"])["Body"].read())
    assert (stored["requested_by"], stored["include"], stored["exclude"]) == ("team-nlp", [], [])
    steps.cleanup({**planned, "failed": True}, s3=s3)


@pytest.mark.parametrize("wrong_index", ["another file's", "past the plan's files"])
def test_a_completion_naming_the_wrong_file_index_is_refused(s3: Any, bucket: str, hub: Any, wrong_index: str) -> None:
    """GIVEN a planned repo and one of its CompleteFiles items
    WHEN the item's file_index is another file's, or past the end of the plan's files
    THEN complete_file refuses it with InvalidRequest naming the index and the path, before it completes
    anything, and cleanup still leaves nothing behind."""
    planned = steps.plan({"repo_id": modelgen.BIG, "bucket": bucket, "options": SMALL_UNITS}, s3=s3)
    item = json.loads(s3.get_object(Bucket=bucket, Key=planned["completions_key"])["Body"].read())[0]
    another_files = (item["file_index"] + 1) % planned["files"]
    index = another_files if wrong_index == "another file's" else planned["files"] + 5
    assert index != item["file_index"]
    with pytest.raises(errors.InvalidRequest, match=rf"file_index {index} is not the index of '{item['path']}'"):
        steps.complete_file({**item, "file_index": index}, s3=s3)
    assert incomplete_uploads(s3, bucket) != []  # the upload is still open: nothing was completed
    steps.cleanup({**planned, "failed": True}, s3=s3)
    assert incomplete_uploads(s3, bucket) == []
