"""`model-cache request` and `model-cache status` against moto's SQS, CloudFormation and Step Functions."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from conftest import REGION, MotoEndpoint, unique_name

from model_cache.cli.main import main

pytestmark = pytest.mark.integration

STACK_TEMPLATE = {
    "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
    "Outputs": {"RequestQueueUrl": {"Value": {"Ref": "Queue"}}},
}
PASS_MACHINE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def received(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def test_request_sends_the_validated_json_message_to_the_queue(sqs: Any) -> None:
    # GIVEN the stack's queue
    queue_url = sqs.create_queue(QueueName=unique_name("requests"))["QueueUrl"]
    # WHEN a repo@rev is requested with a selection
    code, out, err = run_cli(
        "request", "org/model@v2", "--queue-url", queue_url, "--include", "*.json", "--requested-by", "team-a"
    )
    # THEN the queue holds the 3.3 JSON message, and the user is told how to follow it
    assert (code, err) == (0, "")
    assert received(sqs, queue_url) == [
        {
            "repo_id": "org/model",
            "revision": "v2",
            "include": ["*.json"],
            "exclude": [],
            "force": False,
            "requested_by": "team-a",
        }
    ]
    assert "model-cache status org/model" in out


def test_request_finds_the_queue_from_the_stack_outputs(aws: MotoEndpoint, sqs: Any) -> None:
    # GIVEN a deployed stack whose outputs name the queue
    cloudformation = boto3.client("cloudformation", region_name=REGION, endpoint_url=aws.url)
    stack = unique_name("model-cache")
    cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(STACK_TEMPLATE))
    queue_url = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"][0]["OutputValue"]
    # WHEN a bare id is requested by stack name
    code, _, err = run_cli("request", "gpt2", "--stack-name", stack)
    # THEN it lands on that queue with the defaults
    assert (code, err) == (0, "")
    assert [(m["repo_id"], m["revision"]) for m in received(sqs, queue_url)] == [("gpt2", "main")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["request", "org/bad--name", "--queue-url", "http://unused"], "not a Hub model id"),
        (["request", "org/model"], "--queue-url or --stack-name"),
        (["status"], "--state-machine-arn or --stack-name"),
    ],
)
@pytest.mark.usefixtures("aws")
def test_bad_requests_fail_before_anything_is_sent(argv: list[str], message: str) -> None:
    code, out, err = run_cli(*argv)
    assert code == 2
    assert message in err
    assert out == ""


def test_status_lists_recent_executions_filtered_by_repo(aws: MotoEndpoint, sfn: Any) -> None:
    # GIVEN a state machine with executions for two repos
    arn = sfn.create_state_machine(
        name=unique_name("model-cache"),
        definition=PASS_MACHINE,
        roleArn="arn:aws:iam::123456789012:role/model-cache-states",
    )["stateMachineArn"]
    for name, repo in (("one", "org/a"), ("two", "org/b"), ("three", "org/a")):
        sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps({"repo_id": repo, "revision": "main"}))
    # WHEN status is asked for one repo
    code, out, err = run_cli("status", "org/a", "--state-machine-arn", arn, "--json")
    # THEN only that repo's executions are listed, with their state
    assert (code, err) == (0, "")
    rows = json.loads(out)
    assert sorted(row["name"] for row in rows) == ["one", "three"]
    assert {row["repo_id"] for row in rows} == {"org/a"}
    assert all(row["status"] for row in rows)
    # AND the plain listing names every execution
    code, out, _ = run_cli("status", "--state-machine-arn", arn)
    assert code == 0
    assert all(name in out for name in ("one", "two", "three"))
