"""The request Lambda: SQS batch -> one deduplicated execution per valid request, item failures for the rest.

Against moto's real SQS and Step Functions APIs (the executions are recorded, not run: the state
machine itself is covered by test_state_machine.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from conftest import REGION, LambdaContext, MotoEndpoint, load_event, unique_name
from sfn_harness import ASL_PATH, load_handler_module, render_asl, render_module

pytestmark = pytest.mark.integration


class RecordsHandler(logging.Handler):
    """Collects the handler's structured log lines (Powertools' JSON formatter) for assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def request_app(aws: MotoEndpoint, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, str]:
    sfn = boto3.client("stepfunctions", region_name=REGION, endpoint_url=aws.url)
    names = render_module.template_substitution_names(render_module.REPO_ROOT / "template.yaml")
    definition = render_asl(ASL_PATH.read_text(), {name: render_module.placeholder_value(name) for name in names})
    arn = sfn.create_state_machine(
        name=unique_name("model-cache"),
        definition=definition,
        roleArn="arn:aws:iam::123456789012:role/model-cache-states",
        type="STANDARD",
    )["stateMachineArn"]
    monkeypatch.setenv("STATE_MACHINE_ARN", arn)
    return load_handler_module("request"), arn


@pytest.fixture
def logs(request_app: tuple[ModuleType, str]) -> Iterator[RecordsHandler]:
    module, _ = request_app
    handler = RecordsHandler()
    handler.setFormatter(module.logger.registered_formatter)
    module.logger.addHandler(handler)
    try:
        yield handler
    finally:
        module.logger.removeHandler(handler)


def executions(arn: str, aws: MotoEndpoint) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions", region_name=REGION, endpoint_url=aws.url)
    found = []
    for listed in sfn.list_executions(stateMachineArn=arn)["executions"]:
        described = sfn.describe_execution(executionArn=listed["executionArn"])
        found.append({"name": listed["name"], "input": json.loads(described["input"])})
    return found


def test_sample_batch_starts_one_execution_per_request_and_reports_malformed_ones(
    request_app: tuple[ModuleType, str], logs: RecordsHandler, aws: MotoEndpoint
) -> None:
    # GIVEN the sample batch: bare id, id@rev, JSON, a duplicate bare id, malformed JSON, an invalid id
    module, arn = request_app
    event = load_event("sqs_requests.json")
    records = event["Records"]
    # WHEN the request Lambda handles it
    response = module.handler(event, LambdaContext(function_name="model-cache-request"))
    # THEN the malformed JSON and the invalid id (and only they) are reported as item failures
    assert response == {
        "batchItemFailures": [{"itemIdentifier": records[4]["messageId"]}, {"itemIdentifier": records[5]["messageId"]}]
    }
    # AND three executions exist: phi-2 (default selection, once despite the duplicate),
    # TinyLlama@main, and phi-2 with an include list (another selection, another execution)
    started = executions(arn, aws)
    by_input = sorted((e["input"]["repo_id"], e["input"]["revision"], tuple(e["input"]["include"])) for e in started)
    assert by_input == [
        ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "main", ()),
        ("microsoft/phi-2", "main", ()),
        ("microsoft/phi-2", "main", ("*.safetensors", "*.json", "tokenizer*")),
    ]
    assert all(len(e["name"]) <= 80 for e in started)
    # AND every rejection is logged with its message id and the reason
    rejected = {line["message_id"]: line["reason"] for line in logs.lines if line["message"] == "request rejected"}
    assert set(rejected) == {records[4]["messageId"], records[5]["messageId"]}
    assert "not valid JSON" in rejected[records[4]["messageId"]]
    assert "not a repo id" in rejected[records[5]["messageId"]]


def test_duplicate_from_another_sender_collapses_and_the_requester_is_the_senders_id_not_the_body(
    request_app: tuple[ModuleType, str], logs: RecordsHandler, aws: MotoEndpoint
) -> None:
    # GIVEN the same repo requested by two senders (two roles), each body claiming to be someone else
    module, arn = request_app
    event = load_event("sqs_requests.json")
    first, second = (dict(event["Records"][0]), dict(event["Records"][1]))
    first["attributes"] = {**first["attributes"], "SenderId": "AROATEAMA0000000000:alice"}
    second["attributes"] = {**second["attributes"], "SenderId": "AROATEAMB0000000000:bob"}
    first["body"] = json.dumps({"repo_id": "org/model", "requested_by": "the-platform-team"})
    second["body"] = json.dumps({"repo_id": "org/model", "requested_by": "team-b"})
    # WHEN both arrive
    response = module.handler({"Records": [first, second]}, LambdaContext())
    # THEN both succeed (Step Functions answered ExecutionAlreadyExists for the second) and one execution runs,
    # recording the first sender's SenderId (which SQS sets), never what a body says
    assert response == {"batchItemFailures": []}
    started = executions(arn, aws)
    assert [e["input"]["requested_by"] for e in started] == ["AROATEAMA0000000000:alice"]
    assert [line["message_id"] for line in logs.lines if line["message"] == "request deduplicated-running"] == [
        second["messageId"]
    ]


def test_malformed_messages_end_in_the_dead_letter_queue(
    request_app: tuple[ModuleType, str], aws: MotoEndpoint
) -> None:
    # GIVEN a real queue with a DLQ after 2 receives (template: maxReceiveCount), one good and one bad message
    module, arn = request_app
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=aws.url)
    dlq_url = sqs.create_queue(QueueName=unique_name("requests-dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=unique_name("requests"),
        Attributes={
            "VisibilityTimeout": "0",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
        },
    )["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody="org/good-model@v1")
    sqs.send_message(QueueUrl=queue_url, MessageBody='{"repo_id": "org/bad--name"}')
    # WHEN the Lambda poller delivers batches until the queue is empty (it deletes only the successes)
    for _ in range(5):
        received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"])
        messages = received.get("Messages", [])
        if not messages:
            break
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m["Attributes"],
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:requests",
                    "awsRegion": REGION,
                }
                for m in messages
            ]
        }
        failed = {item["itemIdentifier"] for item in module.handler(event, LambdaContext())["batchItemFailures"]}
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    # THEN the malformed message is in the DLQ, the good one started an execution, the queue is empty
    dead = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    assert [m["Body"] for m in dead] == ['{"repo_id": "org/bad--name"}']
    assert [(e["input"]["repo_id"], e["input"]["revision"]) for e in executions(arn, aws)] == [("org/good-model", "v1")]
    assert sqs.receive_message(QueueUrl=queue_url).get("Messages", []) == []
