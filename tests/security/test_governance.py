"""Who may ask for what, and how much: each rule of the platform's request policy refuses with its own named
error, before anything is written (model_cache.pipeline.governance, set by the template's parameters).

The Plan task runs against the Hub double and moto's S3; the request Lambda against moto's SQS-shaped events
and Step Functions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from conftest import LambdaContext, MotoEndpoint, incomplete_uploads, load_event, shared_test_module

from model_cache.contract import errors
from model_cache.pipeline import steps, work_files
from model_cache_devtools.local_pipeline import Router, create_stack, executing_state_machines

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
    for item in steps.unit_items(work_files.load_plan(s3, planned)):
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


MOTO_SENDER_ID = "AIDAIT2UOQQY3AUEKVGXU"  # moto's SQS gives every message this SenderId


@pytest.fixture
def slots(
    request_handler: tuple[ModuleType, str], s3: Any, bucket: str, aws: MotoEndpoint, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, str, Any, str, str]]:
    """The request Lambda as the template wires it for MaxExecutionsInFlight: the slots in the cache bucket, a
    real request queue with a dead-letter queue (maxReceiveCount 1) to defer to, its own role's id as the
    SenderId moto gives every message, and no deferral delay (the backoff itself is tested on its own).
    Yields (module, state machine ARN, sqs client, queue URL, dead-letter queue URL)."""
    from model_cache.pipeline import request_message

    module, arn = request_handler
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=aws.url)
    dlq = sqs.create_queue(QueueName=f"{bucket}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
    queue = sqs.create_queue(QueueName=f"{bucket}-requests", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    monkeypatch.setenv("MODEL_CACHE_BUCKET", bucket)
    monkeypatch.setenv(request_message.REQUEST_QUEUE_URL_ENV, queue)
    monkeypatch.setenv(request_message.REQUEST_ROLE_ID_ENV, MOTO_SENDER_ID)
    monkeypatch.setattr(request_message, "DEFER_FLOOR_SECONDS", 0)
    monkeypatch.setattr(request_message, "DEFER_BASE_SECONDS", 0)
    yield module, arn, sqs, queue, dlq
    for execution in boto3.client("stepfunctions", region_name="us-east-1", endpoint_url=aws.url).list_executions(
        stateMachineArn=arn, statusFilter="RUNNING"
    )["executions"]:
        boto3.client("stepfunctions", region_name="us-east-1", endpoint_url=aws.url).stop_execution(
            executionArn=execution["executionArn"]
        )


def redeliver(module: ModuleType, sqs: Any, queue: str) -> tuple[dict[str, Any], dict[str, str]]:
    """What Lambda's SQS event source does once: receive the queue's one message, invoke the handler with it,
    delete it unless reported failed. Returns the handler's answer and the message's attributes."""
    received = sqs.receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
    ).get("Messages", [])
    assert len(received) == 1, received
    message = received[0]
    record = {
        **load_event("sqs_requests.json")["Records"][0],
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message["Attributes"],
        "messageAttributes": {
            name: {"stringValue": value["StringValue"], "dataType": value["DataType"]}
            for name, value in message.get("MessageAttributes", {}).items()
        },
    }
    response = module.handler({"Records": [record]}, LambdaContext())
    if not response["batchItemFailures"]:
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    attributes = {name: value["StringValue"] for name, value in message.get("MessageAttributes", {}).items()}
    return response, attributes


def queued(sqs: Any, queue: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_a_request_beyond_the_limit_is_deferred_never_sent_to_the_dead_letter_queue(
    slots: tuple[ModuleType, str, Any, str, str], sfn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a bound of one execution in flight, one running, and a queue whose second receive goes to the DLQ
    WHEN another sender's request is delivered again and again while the slot stays taken
    THEN no delivery is a failure: each sends the request back with a delay, counting its deferrals and keeping
    its sender, the DLQ stays empty; and when the slot frees the request starts as its original sender."""
    module, arn, sqs, queue, dlq = slots
    monkeypatch.setenv("MODEL_CACHE_MAX_EXECUTIONS", "1")
    first = module.handler({"Records": [sqs_record({"repo_id": "org/one"}, "AIDAONE", "m1")]}, LambdaContext())
    assert first == {"batchItemFailures": []}

    refused = module.handler({"Records": [sqs_record({"repo_id": "org/two"}, "AIDATWO", "m2")]}, LambdaContext())
    assert refused == {"batchItemFailures": []}
    for deferrals in range(1, 6):
        response, attributes = redeliver(module, sqs, queue)
        assert response == {"batchItemFailures": []}
        assert attributes == {"model-cache-sender": "AIDATWO", "model-cache-deferrals": str(deferrals)}
        assert queued(sqs, dlq) == 0
        assert queued(sqs, queue) == 1
    assert [item["repo_id"] for item in started_inputs(sfn, arn)] == ["org/one"]

    running = sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]
    sfn.stop_execution(executionArn=running[0]["executionArn"])
    response, _ = redeliver(module, sqs, queue)
    assert response == {"batchItemFailures": []}
    assert queued(sqs, queue) == 0
    started = {item["repo_id"]: item["requested_by"] for item in started_inputs(sfn, arn)}
    assert started == {"org/one": "AIDAONE", "org/two": "AIDATWO"}


def test_a_request_the_running_execution_covers_is_absorbed_at_the_limit(
    slots: tuple[ModuleType, str, Any, str, str], sfn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a bound of one execution in flight, taken by org/one  WHEN org/one is requested again by another
    sender  THEN the running execution absorbs it: nothing deferred, nothing started."""
    module, arn, sqs, queue, _ = slots
    monkeypatch.setenv("MODEL_CACHE_MAX_EXECUTIONS", "1")
    module.handler({"Records": [sqs_record({"repo_id": "org/one"}, "AIDAONE", "m1")]}, LambdaContext())
    again = module.handler({"Records": [sqs_record({"repo_id": "org/one"}, "AIDATHREE", "m3")]}, LambdaContext())
    assert again == {"batchItemFailures": []}
    assert queued(sqs, queue) == 0
    assert [item["repo_id"] for item in started_inputs(sfn, arn)] == ["org/one"]


def test_one_sender_cannot_hold_every_slot(
    slots: tuple[ModuleType, str, Any, str, str], sfn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a bound of four executions in flight  WHEN one sender floods four requests and then another sender
    asks for one  THEN the first sender holds two slots (its share), its other two are deferred, and the second
    sender's request starts at once."""
    module, arn, sqs, queue, _ = slots
    monkeypatch.setenv("MODEL_CACHE_MAX_EXECUTIONS", "4")
    flood = [sqs_record({"repo_id": f"org/flood-{n}"}, f"AROAFLOOD0000000000:pod-{n}", f"f{n}") for n in range(4)]
    assert module.handler({"Records": flood}, LambdaContext()) == {"batchItemFailures": []}
    other = module.handler({"Records": [sqs_record({"repo_id": "org/other"}, "AIDAOTHER", "o1")]}, LambdaContext())
    assert other == {"batchItemFailures": []}
    assert sorted(item["repo_id"] for item in started_inputs(sfn, arn)) == ["org/flood-0", "org/flood-1", "org/other"]
    assert queued(sqs, queue) == 2


def test_a_sender_cannot_forge_the_deferral_attributes(
    slots: tuple[ModuleType, str, Any, str, str], sfn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN force reserved to the platform  WHEN a team sends force with the deferral attributes naming the
    platform as its sender  THEN the attributes are ignored (its SenderId is not the request Lambda's role):
    ForceNotAllowed, an item failure, and nothing starts."""
    module, arn, _, _, _ = slots
    monkeypatch.setenv("MODEL_CACHE_FORCE_SENDERS", PLATFORM)
    forged = sqs_record({"repo_id": "org/model", "force": True}, "AROATEAM0000000000:mallory", "forged")
    forged["messageAttributes"] = {
        "model-cache-sender": {"stringValue": f"{PLATFORM}:ops", "dataType": "String"},
        "model-cache-deferrals": {"stringValue": "1", "dataType": "Number"},
    }
    assert module.handler({"Records": [forged]}, LambdaContext()) == {
        "batchItemFailures": [{"itemIdentifier": "forged"}]
    }
    assert started_inputs(sfn, arn) == []


def test_the_limit_is_exact_under_concurrent_request_lambdas(
    slots: tuple[ModuleType, str, Any, str, str], sfn: Any, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a bound of three executions in flight  WHEN eight request Lambdas accept eight different requests
    at the same instant  THEN exactly three executions start and five are refused for capacity (each slot is
    taken by a conditional write on the ledger, so two Lambdas never take the last slot twice)."""
    from model_cache.pipeline.request_message import accept_request

    _, arn, _, _, _ = slots
    monkeypatch.setenv("MODEL_CACHE_MAX_EXECUTIONS", "3")
    barrier = threading.Barrier(8)

    def one(n: int) -> str:
        barrier.wait()
        try:
            return accept_request(json.dumps({"repo_id": f"org/race-{n}"}), f"AIDASENDER{n}", s3=s3).outcome
        except errors.TooManyExecutions:
            return "refused"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = sorted(pool.map(one, range(8)))
    assert outcomes == ["accepted"] * 3 + ["refused"] * 5
    assert len(sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]) == 3


def test_a_start_the_listing_does_not_show_yet_still_holds_its_slot(s3: Any, bucket: str) -> None:
    """GIVEN ListExecutions lagging (AWS documents it as eventually consistent: it shows nothing yet)
    WHEN two slots are taken under a bound of two  THEN a third is refused; once its execution is described as
    ended, a slot is free again."""
    from model_cache.pipeline import inflight

    ended: set[str] = set()
    ledger = inflight.InFlightLedger(
        s3, bucket, inflight.ledger_key("_model-cache-work"), limit=2, running=set, ended=ended.__contains__
    )
    ledger.take("first", "AIDAONE")
    ledger.take("second", "AIDATWO")
    with pytest.raises(inflight.Full, match="2 executions are in flight"):
        ledger.take("third", "AIDATHREE")
    ended.add("first")
    ledger.take("third", "AIDATHREE")


@pytest.mark.parametrize("deferrals", [0, 1, 3, 5, 30])
def test_the_deferral_delay_is_full_jitter_under_a_doubling_ceiling(deferrals: int) -> None:
    """GIVEN n deferrals so far  WHEN the next delay is drawn many times  THEN every draw lies in
    [15 s, min(900 s, 30 s x 2^n)] and the draws spread over that range (not a fixed value)."""
    import random

    from model_cache.pipeline.request_message import defer_delay

    rng = random.Random(deferrals)
    ceiling = min(900, 30 * 2**deferrals)
    draws = [defer_delay(deferrals, rng) for _ in range(500)]
    assert min(draws) >= 15
    assert max(draws) <= ceiling
    assert max(draws) - min(draws) >= (ceiling - 15) * 0.8


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
    for item in steps.unit_items(work_files.load_plan(s3, planned)):
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
