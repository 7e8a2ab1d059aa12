"""Who may ask for what, and how much: each rule of the platform's request policy refuses with its own named
error, before anything is written (model_cache.governance, set by the template's parameters).

The Plan task runs against the Hub double and moto's S3; the request Lambda against moto's SQS-shaped events
and Step Functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import LambdaContext, MotoEndpoint, incomplete_uploads, load_event, shared_test_module

from model_cache import errors, steps
from model_cache.devtools.local_pipeline import Router, create_stack, executing_state_machines

pytestmark = pytest.mark.integration

ops = shared_test_module("ops_support", "tests/operations/ops_support.py")
sfn_harness = shared_test_module("sfn_harness", "tests/pipeline/sfn_harness.py")
PLATFORM = "AROAPLATFORM00000000"


def untouched(s3: Any, bucket: str) -> None:
    versions = s3.list_object_versions(Bucket=bucket)
    assert versions.get("Versions", []) == []
    assert versions.get("DeleteMarkers", []) == []
    assert incomplete_uploads(s3, bucket) == []


@pytest.fixture
def repo(hub_root: Path, hf_endpoint: str) -> str:
    """ops-org/repo-*: a 12 MiB weight and small files (ops_support.default_files)."""
    return str(ops.make_repo(hub_root))


@pytest.mark.parametrize(
    ("environment", "event", "error", "names"),
    [
        pytest.param(
            {"MODEL_CACHE_ALLOWED_ORGS": "meta-llama, mistralai"},
            {},
            errors.RepoNotAllowed,
            ["ops-org", "meta-llama"],
            id="org not allowed",
        ),
        pytest.param({"MODEL_CACHE_DENIED_ORGS": "OPS-ORG"}, {}, errors.RepoNotAllowed, ["deny list"], id="org denied"),
        pytest.param(
            {"MODEL_CACHE_MAX_REPO_BYTES": str(10 * 1024 * 1024)},
            {},
            errors.QuotaExceeded,
            ["bytes", "10,485,760"],
            id="too many bytes",
        ),
        pytest.param(
            {"MODEL_CACHE_MAX_REPO_FILES": "2"},
            {},
            errors.QuotaExceeded,
            ["files", "more than this cache's 2"],
            id="too many files",
        ),
        pytest.param(
            {"MODEL_CACHE_FORCE_SENDERS": PLATFORM},
            {"force": True, "requested_by": "AROATEAM0000000000:alice"},
            errors.ForceNotAllowed,
            ["force: true is reserved"],
            id="force from a team",
        ),
    ],
)
def test_the_plan_task_refuses_what_the_policy_forbids_and_writes_nothing(
    repo: str,
    s3: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str],
    event: dict[str, Any],
    error: type[errors.ModelCacheError],
    names: list[str],
) -> None:
    """GIVEN a policy rule the request breaks  WHEN the Plan task runs  THEN it fails with the rule's own error
    naming the repo and the rule, and the bucket holds no object, version, claim or upload."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(error) as refused:
        steps.plan({"repo_id": repo, "bucket": bucket, **event}, s3=s3)
    for name in names:
        assert name in str(refused.value)
    untouched(s3, bucket)


def test_within_the_policy_the_request_is_cached_and_the_manifest_names_its_requester(
    repo: str, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN every rule set, and the platform's principal forcing a copy  WHEN the tasks run  THEN the repo is
    published and its manifest records the requester the execution was started for."""
    monkeypatch.setenv("MODEL_CACHE_ALLOWED_ORGS", "ops-org")
    monkeypatch.setenv("MODEL_CACHE_DENIED_ORGS", "other-org")
    monkeypatch.setenv("MODEL_CACHE_MAX_REPO_BYTES", str(1024**3))
    monkeypatch.setenv("MODEL_CACHE_MAX_REPO_FILES", "100")
    monkeypatch.setenv("MODEL_CACHE_FORCE_SENDERS", PLATFORM)
    planned = steps.plan({"repo_id": repo, "bucket": bucket, "force": True, "requested_by": f"{PLATFORM}:ops"}, s3=s3)
    for item in steps.unit_items(steps.load_plan(s3, planned)):
        steps.copy_unit(item, s3=s3)
    published = steps.publish(steps.finalize(steps.complete_files(planned, s3=s3), s3=s3), s3=s3)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=published["manifest_key"])["Body"].read())
    assert manifest["requested_by"] == f"{PLATFORM}:ops"
    steps.cleanup(planned, s3=s3)


def sqs_record(body: dict[str, Any], sender: str, message_id: str) -> dict[str, Any]:
    record = dict(load_event("sqs_requests.json")["Records"][0])
    return {
        **record,
        "messageId": message_id,
        "body": json.dumps(body),
        "attributes": {**record["attributes"], "SenderId": sender},
    }


def started_inputs(sfn: Any, arn: str) -> list[dict[str, Any]]:
    listed = sfn.list_executions(stateMachineArn=arn)["executions"]
    return [json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"]) for e in listed]


def test_the_request_lambda_refuses_force_and_unlisted_orgs_to_the_dead_letter_queue(
    request_handler: tuple[ModuleType, str], sfn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a policy with an org allow list and force reserved to the platform  WHEN a team sends force, another
    asks for an org outside the list, and the platform sends force  THEN the first two are item failures (SQS
    sends them to the DLQ after maxReceiveCount) and start nothing; only the platform's starts, as its sender."""
    module, arn = request_handler
    monkeypatch.setenv("MODEL_CACHE_ALLOWED_ORGS", "org")
    monkeypatch.setenv("MODEL_CACHE_FORCE_SENDERS", PLATFORM)
    records = [
        sqs_record({"repo_id": "org/model", "force": True}, "AROATEAM0000000000:alice", "team-force"),
        sqs_record({"repo_id": "elsewhere/model"}, "AROATEAM0000000000:alice", "other-org"),
        sqs_record({"repo_id": "org/model", "force": True}, f"{PLATFORM}:ops", "platform-force"),
    ]
    response = module.handler({"Records": records}, LambdaContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": "team-force"}, {"itemIdentifier": "other-org"}]}
    assert [(item["repo_id"], item["force"], item["requested_by"]) for item in started_inputs(sfn, arn)] == [
        ("org/model", True, f"{PLATFORM}:ops")
    ]


def test_executions_in_flight_are_bounded_and_a_request_beyond_waits_on_the_queue(
    request_handler: tuple[ModuleType, str], sfn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a bound of one execution in flight and one running  WHEN another repo is requested  THEN it is an
    item failure (TooManyExecutions: the message comes back after the visibility timeout) and nothing starts;
    a request the running execution covers is still absorbed by it."""
    module, arn = request_handler
    monkeypatch.setenv("MODEL_CACHE_MAX_EXECUTIONS", "1")
    first = module.handler({"Records": [sqs_record({"repo_id": "org/one"}, "AIDAONE", "m1")]}, LambdaContext())
    assert first == {"batchItemFailures": []}
    again = [sqs_record({"repo_id": "org/two"}, "AIDATWO", "m2"), sqs_record({"repo_id": "org/one"}, "AIDATHREE", "m3")]
    response = module.handler({"Records": again}, LambdaContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert [item["repo_id"] for item in started_inputs(sfn, arn)] == ["org/one"]


@pytest.fixture
def router(aws: MotoEndpoint, hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    with executing_state_machines(aws):
        yield sfn_harness.install_routes(monkeypatch, aws)


def test_a_request_over_quota_ends_the_execution_at_plan_failed(
    repo: str, router: Router, aws: MotoEndpoint, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a quota of 2 files  WHEN the repo is requested through the deployed ASL  THEN the execution fails with
    QuotaExceeded (a domain error: never retried), no unit runs and nothing is written."""
    monkeypatch.setenv("MODEL_CACHE_MAX_REPO_FILES", "2")
    stack = create_stack(aws, router, bucket)
    execution = stack.run({"repo_id": repo})
    assert execution["status"] == "FAILED"
    assert execution["error"] == "QuotaExceeded", execution.get("cause")
    assert len(router.calls("plan")) == 1
    assert router.calls("copy_unit") == []
    untouched(s3, bucket)


def copied_and_verified(s3: Any, planned: dict[str, Any]) -> dict[str, Any]:
    """The tasks between Plan and Publish, run in order: every unit copied, files completed and verified."""
    for item in steps.unit_items(steps.load_plan(s3, planned)):
        steps.copy_unit(item, s3=s3)
    return steps.finalize(steps.complete_files(planned, s3=s3), s3=s3)


def published_paths(s3: Any, bucket: str, published: dict[str, Any]) -> list[str]:
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=published["manifest_key"])["Body"].read())
    return sorted(entry["path"] for entry in manifest["files"])


def test_narrow_requests_cannot_add_up_past_the_repo_quota(
    repo: str, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a quota of 3 files per repo and a 5-file repo  WHEN it is requested one narrow selection at a time
    THEN the requests that keep the manifest within 3 files publish, and the one that would take it to 4 is
    refused at Plan with QuotaExceeded naming the manifest, before it claims or writes anything."""
    monkeypatch.setenv("MODEL_CACHE_MAX_REPO_FILES", "3")
    published: dict[str, Any] = {}
    for include in (["config.json", "README.md"], ["extra.safetensors"]):
        planned = steps.plan({"repo_id": repo, "bucket": bucket, "include": include}, s3=s3)
        published = steps.publish(copied_and_verified(s3, planned), s3=s3)
        steps.cleanup(planned, s3=s3)
    assert published_paths(s3, bucket, published) == ["README.md", "config.json", "extra.safetensors"]
    before = s3.list_object_versions(Bucket=bucket)

    with pytest.raises(errors.QuotaExceeded, match=r"the manifest this request would publish has 4 files"):
        steps.plan({"repo_id": repo, "bucket": bucket, "include": ["tokenizer/*"]}, s3=s3)
    after = s3.list_object_versions(Bucket=bucket)
    assert after.get("Versions") == before.get("Versions")
    assert after.get("DeleteMarkers") == before.get("DeleteMarkers")
    assert incomplete_uploads(s3, bucket) == []


def test_concurrent_narrow_requests_cannot_publish_past_the_repo_quota(
    repo: str, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a quota of 3 files and two narrow requests of 2 files each, both planned before either publishes
    (each fits when planned)  WHEN both publish  THEN the first publishes and the second is refused with
    QuotaExceeded at Publish, so the manifest never holds more than the quota."""
    monkeypatch.setenv("MODEL_CACHE_MAX_REPO_FILES", "3")
    first = steps.plan({"repo_id": repo, "bucket": bucket, "include": ["config.json", "README.md"]}, s3=s3)
    second = steps.plan({"repo_id": repo, "bucket": bucket, "include": ["extra.safetensors", "tokenizer/*"]}, s3=s3)
    first_verified, second_verified = copied_and_verified(s3, first), copied_and_verified(s3, second)

    published = steps.publish(first_verified, s3=s3)
    with pytest.raises(errors.QuotaExceeded, match=r"has 4 files, more than this cache's 3"):
        steps.publish(second_verified, s3=s3)
    assert published_paths(s3, bucket, published) == ["README.md", "config.json"]
    for planned in (first, second):
        steps.cleanup(planned, s3=s3)
