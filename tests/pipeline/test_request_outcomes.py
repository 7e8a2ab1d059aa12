"""Requests are deduplicated by outcome, not by name: the real request handler against the very ASL in
moto's Step Functions engine, with the Hub double.

A request's execution name is deterministic (a commit: for 90 days; a branch: per clock hour), and Step
Functions keeps a taken name for 90 days whatever that execution did. These tests send the same message
again after the first execution failed, after the branch moved, and after the snapshot was deleted, and
expect a new execution each time; and a repeat of a request whose result stands to start nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import LambdaContext, MotoEndpoint, load_event, shared_test_module
from sfn_harness import Router, Stack, create_stack, executing_state_machines, install_routes

from model_cache.contract import layout
from model_cache.pipeline.plan import MiB
from model_cache_devtools.local_pipeline import load_handler_module

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ops = shared_test_module("ops_support", "tests/operations/ops_support.py")
support = shared_test_module("reliability_support", "tests/reliability/reliability_support.py")


def record_row(kind: str, s3: Any, bucket: str, *, recovered: bool) -> None:
    """One fault-table row for this test's scenario (written by make reliability-figures)."""
    table = support.FaultTable(kind)
    table.bucket_trial(support.check_bucket(s3, bucket), recovered=recovered)
    table.write()


@pytest.fixture
def router(aws: MotoEndpoint, hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    with executing_state_machines(aws):
        yield install_routes(monkeypatch, aws)


@pytest.fixture
def stack(router: Router, aws: MotoEndpoint, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Stack:
    created = create_stack(aws, router, bucket, part_size=5 * MiB, unit_size=5 * MiB)
    monkeypatch.setenv("STATE_MACHINE_ARN", created.state_machine_arn)
    monkeypatch.setenv("MODEL_CACHE_BUCKET", bucket)
    monkeypatch.setenv("MODEL_CACHE_PREFIX", created.prefix)
    return created


@pytest.fixture
def request_app() -> ModuleType:
    return load_handler_module("request")


def send(app: ModuleType, body: str, message_id: str = "m-1") -> dict[str, Any]:
    record = dict(load_event("sqs_requests.json")["Records"][0], messageId=message_id, body=body)
    response: dict[str, Any] = app.handler({"Records": [record]}, LambdaContext())
    return response


def executions(stack: Stack) -> list[dict[str, Any]]:
    listed = stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]
    return sorted(listed, key=lambda execution: execution["startDate"])


def settle(stack: Stack) -> list[dict[str, Any]]:
    """Every execution of the stack, each waited for until it left RUNNING (a deadline, not a timing check)."""
    return [stack.wait(execution["executionArn"]) for execution in executions(stack)]


def test_a_pinned_request_runs_again_after_its_first_execution_failed(
    stack: Stack, request_app: ModuleType, hub: Any, hub_root: Path, s3: Any, bucket: str
) -> None:
    """GIVEN a request pinned to a commit whose first execution FAILED (the Hub answered 503 throughout)
    WHEN the same message is sent again  THEN a second execution starts under a new name and publishes it.
    (Failed on 94042d4: ExecutionAlreadyExists was taken for success; nothing ran for 90 days.)"""
    repo_id = ops.make_repo(hub_root)
    commit = hub.repo_info(repo_id).commit
    body = f"{repo_id}@{commit}"
    hub.faults.add(repo_id, None, kind="status", status=503, times=None)
    assert send(request_app, body) == {"batchItemFailures": []}
    assert [execution["status"] for execution in settle(stack)] == ["FAILED"]
    hub.faults.clear()

    assert send(request_app, body, "m-2") == {"batchItemFailures": []}

    ended = settle(stack)
    assert [execution["status"] for execution in ended] == ["FAILED", "SUCCEEDED"]
    assert ended[1]["name"] == ended[0]["name"] + "-r1"
    s3.head_object(Bucket=bucket, Key=layout.manifest_key(stack.prefix, repo_id, commit))
    record_row("request repeated after its execution failed", s3, bucket, recovered=True)


def test_a_branch_request_within_the_hour_runs_again_when_the_branch_moved(
    stack: Stack, request_app: ModuleType, hub: Any, hub_root: Path, s3: Any, bucket: str
) -> None:
    """GIVEN a request for main that succeeded this hour  WHEN main moves at the Hub and the same message is
    sent again  THEN it is not collapsed into the finished execution: a new one moves refs/main to the new commit.
    (Failed on 94042d4: acknowledged, nothing ran, refs/main stayed on the old commit.)"""
    repo_id = ops.make_repo(hub_root)
    assert send(request_app, repo_id) == {"batchItemFailures": []}
    assert [execution["status"] for execution in settle(stack)] == ["SUCCEEDED"]
    ops.write_files(hub_root, repo_id, {"README.md": b"# moved on\n"})
    moved = hub.repo_info(repo_id).commit

    assert send(request_app, repo_id, "m-2") == {"batchItemFailures": []}

    assert [execution["status"] for execution in settle(stack)] == ["SUCCEEDED", "SUCCEEDED"]
    assert ops.ref_commit(s3, bucket, repo_id) == moved
    record_row("request repeated after its branch moved", s3, bucket, recovered=True)


def test_a_request_whose_result_stands_is_deduplicated_and_one_gc_removed_runs_again(
    stack: Stack, request_app: ModuleType, hub: Any, hub_root: Path, s3: Any, bucket: str
) -> None:
    """GIVEN a request for main that succeeded  WHEN it is sent again unchanged  THEN no execution starts
    (deduplicated-succeeded); WHEN its snapshot's manifest is then deleted (as gc does) and it is sent again
    THEN a new execution publishes it again."""
    repo_id = ops.make_repo(hub_root)
    send(request_app, repo_id)
    settle(stack)
    assert len(executions(stack)) == 1
    assert send(request_app, repo_id, "m-2") == {"batchItemFailures": []}
    assert len(executions(stack)) == 1

    commit = ops.ref_commit(s3, bucket, repo_id)
    s3.delete_object(Bucket=bucket, Key=layout.manifest_key(stack.prefix, repo_id, commit))
    assert send(request_app, repo_id, "m-3") == {"batchItemFailures": []}

    assert [execution["status"] for execution in settle(stack)] == ["SUCCEEDED", "SUCCEEDED"]
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=layout.manifest_key(stack.prefix, repo_id, commit))["Body"].read()
    )
    assert manifest["commit"] == commit
    record_row("request repeated after gc removed its snapshot", s3, bucket, recovered=True)
