"""The very ASL in statemachine/ runs end to end in moto's Step Functions engine.

Real HTTP throughout: moto's server (S3, Step Functions, Lambda/ECS APIs) and the Hub double;
Lambda invocations run the real handlers in-process and ECS RunTask runs the copier as a local
process (tests/pipeline/sfn_harness.py says exactly what is routed and how).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import jsonschema
import pytest
from conftest import REGION, MotoEndpoint, all_keys, failed_clean_problems, incomplete_uploads, unique_name
from sfn_harness import MIB, Router, Stack, create_stack, executing_state_machines, install_routes, refresh_children

from model_cache.contract import layout
from model_cache_devtools import modelgen

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def router(aws: MotoEndpoint, hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    with executing_state_machines(aws):
        yield install_routes(monkeypatch, aws)


def request(repo_id: str, **fields: Any) -> dict[str, Any]:
    return {"repo_id": repo_id, "revision": "main", "include": [], "exclude": [], "force": False, **fields}


def failure_of(execution: dict[str, Any]) -> tuple[str, str]:
    return execution.get("error", ""), execution.get("cause", "")


def published_keys(s3: Any, stack: Stack, repo_id: str) -> list[str]:
    return all_keys(s3, stack.bucket, layout.repo_prefix(stack.prefix, repo_id))


def test_multi_file_model_with_a_split_file_is_published_with_a_valid_manifest(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any, manifest_schema: dict[str, Any]
) -> None:
    # GIVEN the nested fixture repo (11 MiB file + many small ones) and 5 MiB parts and units
    stack = create_stack(aws, router, bucket, part_size=5 * MIB, unit_size=5 * MIB)
    # WHEN a minimal request (defaults filled in by the ASL) runs through the state machine
    execution = stack.run({"repo_id": modelgen.NESTED})
    # THEN it succeeds, the large file was copied as several units, and the manifest is valid
    assert execution["status"] == "SUCCEEDED", failure_of(execution)
    large_units = [c for c in router.calls("copy_unit") if c.event["path"] == modelgen.NESTED_LARGE_FILE_PATH]
    assert len(large_units) == 3
    assert all(call.error is None for call in router.invocations)
    root_manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=layout.root_manifest_key(stack.prefix, modelgen.NESTED))["Body"].read()
    )
    jsonschema.validate(root_manifest, manifest_schema)
    paths = {entry["path"] for entry in root_manifest["files"]}
    assert {modelgen.NESTED_LARGE_FILE_PATH, modelgen.NESTED_LFS_WEIGHT_PATH, "sub/dir/file.txt"} <= paths
    for entry in root_manifest["files"]:
        body = s3.get_object(Bucket=bucket, Key=entry["key"])["Body"].read()
        assert len(body) == entry["size"]
    assert incomplete_uploads(s3, bucket) == []
    assert all_keys(s3, bucket, stack.work_prefix) == [], "work files are cleaned up after success"
    # AND a second run of the same commit costs no copy work
    copies_before = len(router.calls("copy_unit"))
    again = stack.run({"repo_id": modelgen.NESTED})
    assert again["status"] == "SUCCEEDED", failure_of(again)
    assert len(router.calls("copy_unit")) == copies_before


@pytest.mark.parametrize(
    ("repo_id", "error", "cause_mentions"),
    [("test-org/does-not-exist", "RepoNotFound", "does-not-exist"), (modelgen.GATED, "GatedRepo", modelgen.GATED)],
)
def test_missing_or_gated_repo_fails_with_a_clear_cause_and_publishes_nothing(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any, repo_id: str, error: str, cause_mentions: str
) -> None:
    # GIVEN a repo the Hub does not have, or a gated one and no token
    stack = create_stack(aws, router, bucket)
    # WHEN it is requested
    execution = stack.run(request(repo_id))
    # THEN the execution fails with the domain error's name and a cause that names the repo
    assert execution["status"] == "FAILED"
    assert execution["error"] == error
    assert cause_mentions in json.loads(execution["cause"])["errorMessage"]
    # AND the domain error was not retried, no unit copied anything, and nothing is left in the bucket
    # (the Hub lists a gated repo without a token, so its refusal comes from the first file reads)
    assert len(router.calls("plan")) == 1
    assert all(call.error == error for call in router.calls("copy_unit"))
    assert failed_clean_problems(s3, bucket) == []
    assert incomplete_uploads(s3, bucket) == []


def test_hash_mismatch_fails_and_leaves_no_incomplete_upload(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any, hub: Any
) -> None:
    # GIVEN the Hub serves the large file with one byte flipped in its second part
    stack = create_stack(aws, router, bucket)
    hub.faults.add(modelgen.NESTED, modelgen.NESTED_LARGE_FILE_PATH, kind="corrupt", offset=5 * MIB + 17, times=None)
    # WHEN the repo is requested
    execution = stack.run(request(modelgen.NESTED))
    # THEN it fails with IntegrityError, after cleanup ran
    assert execution["status"] == "FAILED", execution
    assert execution["error"] == "IntegrityError", failure_of(execution)
    assert [call.event.get("failed") for call in router.calls("cleanup")] == [True]
    # AND no upload is left open, no manifest or ref exists, and no unverified repo file is left behind
    assert incomplete_uploads(s3, bucket) == []
    assert failed_clean_problems(s3, bucket, prefix=layout.repo_prefix(stack.prefix, modelgen.NESTED)) == []
    hub.faults.clear()
    assert all_keys(s3, bucket, stack.work_prefix) == []


def test_a_file_above_the_fargate_threshold_takes_the_fargate_branch(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any
) -> None:
    # GIVEN a Fargate threshold of 8 MiB: the nested repo's 11 MiB file is "huge"
    stack = create_stack(aws, router, bucket, part_size=5 * MIB, unit_size=5 * MIB, fargate_threshold=8 * MIB)
    # WHEN the repo is requested
    execution = stack.run(request(modelgen.NESTED))
    # THEN the huge file went to ECS RunTask (the copier process), the rest to Lambda, and it succeeds
    assert [run.event["path"] for run in router.copier_runs] == [modelgen.NESTED_LARGE_FILE_PATH]
    assert all(run.returncode == 0 for run in router.copier_runs), [run.stderr for run in router.copier_runs]
    assert execution["status"] == "SUCCEEDED", failure_of(execution)
    assert modelgen.NESTED_LARGE_FILE_PATH not in {call.event["path"] for call in router.calls("copy_unit")}
    assert router.calls("copy_unit"), "the small files still go to Lambda"
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=layout.root_manifest_key(stack.prefix, modelgen.NESTED))["Body"].read()
    )
    large = next(entry for entry in manifest["files"] if entry["path"] == modelgen.NESTED_LARGE_FILE_PATH)
    assert s3.head_object(Bucket=bucket, Key=large["key"])["ContentLength"] == modelgen.NESTED_LARGE_FILE_SIZE


def test_a_stack_without_the_copier_refuses_a_huge_file_at_plan_naming_the_parameter(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any
) -> None:
    # GIVEN a stack deployed without the Fargate copier (empty CopierImageUri) and an 8 MiB threshold
    stack = create_stack(
        aws, router, bucket, part_size=5 * MIB, unit_size=5 * MIB, fargate_threshold=8 * MIB, copier=False
    )
    # WHEN the nested repo (an 11 MiB file) is requested
    execution = stack.run(request(modelgen.NESTED))
    # THEN Plan refuses it before any copy: CopierNotConfigured, naming the file and the parameter to set
    assert execution["status"] == "FAILED"
    assert execution["error"] == "CopierNotConfigured", failure_of(execution)
    assert modelgen.NESTED_LARGE_FILE_PATH in execution["cause"]
    assert "CopierImageUri" in execution["cause"]
    # AND nothing was copied or published
    assert router.copier_runs == []
    assert router.calls("copy_unit") == []
    assert all_keys(s3, bucket, stack.prefix) == []


def test_schedule_refreshes_tracked_models_and_an_unchanged_model_does_no_copy_work(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN one tracked model (the TrackedModels parameter) and an empty bucket
    monkeypatch.setenv("TRACKED_MODELS", modelgen.MULTI_FORMAT)
    stack = create_stack(aws, router, bucket)
    schedule_input = json.loads((stack_events() / "schedule_refresh.json").read_text())
    # WHEN the schedule's input starts the state machine
    first = stack.run(schedule_input)
    # THEN the tracked model is cached (default selection: safetensors, not the other formats)
    assert first["status"] == "SUCCEEDED", failure_of(first)
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=layout.root_manifest_key(stack.prefix, modelgen.MULTI_FORMAT))["Body"].read()
    )
    assert "model.safetensors" in {entry["path"] for entry in manifest["files"]}
    copies_after_first = len(router.calls("copy_unit"))
    assert copies_after_first > 0
    # WHEN the schedule fires again and the model's commit has not moved
    second = stack.run(schedule_input)
    # THEN the model (now both tracked and found in the bucket) is planned once and copied never
    assert second["status"] == "SUCCEEDED", failure_of(second)
    tracked = router.calls("tracked_models")
    assert len(tracked) == 2
    assert len(router.calls("plan")) == 2
    assert len(router.calls("copy_unit")) == copies_after_first
    # AND the refresh's state holds where the list is and its count, not the list or the children's results
    assert json.loads(second["output"])["tracked"]["count"] == 1
    children = refresh_children(stack)
    assert sorted(children.values()) == [(modelgen.MULTI_FORMAT, "SUCCEEDED")] * 2


def stack_events() -> Any:
    from conftest import EVENTS_DIR

    return EVENTS_DIR


def test_gated_repo_with_the_token_secret_is_cached_and_the_token_appears_nowhere(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the Hub token in a Secrets Manager secret, named to the handlers by ARN only
    secrets = boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws.url)
    arn = secrets.create_secret(Name=unique_name("hf-token"), SecretString=modelgen.GATED_TOKEN)["ARN"]
    monkeypatch.setenv("HF_TOKEN_SECRET_ARN", arn)
    monkeypatch.setenv("HF_TOKEN_CACHE_SECONDS", "0")
    stack = create_stack(aws, router, bucket)
    # WHEN the gated repo is requested
    execution_arn = stack.start(request(modelgen.GATED))
    execution = stack.wait(execution_arn)
    # THEN it is cached
    assert execution["status"] == "SUCCEEDED", failure_of(execution)
    manifest_key = layout.root_manifest_key(stack.prefix, modelgen.GATED)
    manifest = s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read().decode()
    # AND the token is in no execution input, output or event, no task event, and not in the manifest
    assert modelgen.GATED_TOKEN not in json.dumps(stack.history(execution_arn), default=str)
    assert modelgen.GATED_TOKEN not in json.dumps([call.event for call in router.invocations])
    assert modelgen.GATED_TOKEN not in manifest


def test_a_lambda_timeout_is_reported_as_lambda_unknown_and_retried(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any
) -> None:
    # GIVEN a stack whose publish Lambda runs out of time once (the runtime's payload has no errorType)
    stack = create_stack(aws, router, bucket)
    router.lambda_timeouts["publish"] = 1
    # WHEN a request runs through the state machine
    execution = stack.run({"repo_id": modelgen.TINY_MODEL})
    history = stack.history(execution["executionArn"])
    # THEN Step Functions reported the timeout as Lambda.Unknown, as AWS names it ...
    failed = [event["taskFailedEventDetails"]["error"] for event in history if "taskFailedEventDetails" in event]
    assert failed == ["Lambda.Unknown"]
    # AND the Retry that names it ran publish again, so the model is published
    assert execution["status"] == "SUCCEEDED", failure_of(execution)
    assert [call.error for call in router.calls("publish")] == ["Task timed out", None]
    assert s3.head_object(Bucket=bucket, Key=layout.root_manifest_key(stack.prefix, modelgen.TINY_MODEL))
