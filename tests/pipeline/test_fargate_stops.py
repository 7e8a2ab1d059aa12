"""A Fargate unit whose task stops without the copier's verdict runs again; the copier's own failure does not.

The very ASL in moto's engine; ECS RunTask runs the copier as a local process, and `Router.fargate_stops`
makes the next tasks stop as ECS reports a task that could not start (`TaskFailedToStart`:
CannotPullContainerError, ResourceInitializationError) or was stopped by ECS (`ServiceSchedulerInitiated`:
host maintenance). `local_pipeline` fails `runTask.sync` with `States.TaskFailed` and the task's description
as the cause, as Step Functions does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import MotoEndpoint, failed_clean_problems, incomplete_uploads, shared_test_module
from sfn_harness import MIB, Router, create_stack, executing_state_machines, install_routes

from model_cache.contract import layout
from model_cache_devtools import modelgen

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
support = shared_test_module("reliability_support", "tests/reliability/reliability_support.py")

PULL = {"StopCode": "TaskFailedToStart", "StoppedReason": "CannotPullContainerError: pull access denied (timeout)"}
ENI = {"StopCode": "TaskFailedToStart", "StoppedReason": "ResourceInitializationError: unable to create ENI"}
MAINTENANCE = {"StopCode": "ServiceSchedulerInitiated", "StoppedReason": "Task stopped for host maintenance"}


@pytest.fixture
def router(aws: MotoEndpoint, hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    with executing_state_machines(aws):
        yield install_routes(monkeypatch, aws)


def run_nested(router: Router, aws: MotoEndpoint, bucket: str) -> dict[str, Any]:
    # The nested repo's 11 MiB file is "huge" with an 8 MiB threshold: one Fargate unit.
    stack = create_stack(aws, router, bucket, part_size=5 * MIB, unit_size=5 * MIB, fargate_threshold=8 * MIB)
    return stack.run({"repo_id": modelgen.NESTED})


def test_a_task_that_could_not_start_or_was_stopped_by_ecs_runs_again(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any
) -> None:
    """GIVEN the Fargate unit's first three tasks stop: image pull, ENI, host maintenance  WHEN the repo is
    requested  THEN the unit runs a fourth time, the copier copies it, and the model is published.
    (Failed on dfd7a7c: the first stop failed the multi-hour run at once.)"""
    router.fargate_stops.extend([PULL, ENI, MAINTENANCE])
    execution = run_nested(router, aws, bucket)
    assert execution["status"] == "SUCCEEDED", (execution.get("error"), execution.get("cause"))
    assert len(router.task_outcomes) == 4
    assert [run.event["attempt"] for run in router.copier_runs] == [3]
    assert all(run.returncode == 0 for run in router.copier_runs)
    s3.head_object(Bucket=bucket, Key=layout.root_manifest_key("models", modelgen.NESTED))
    table = support.FaultTable("Fargate task stops before the copier (pull, ENI, maintenance)")
    table.bucket_trial(support.check_bucket(s3, bucket), recovered=True, note="3 stops, then copied")
    table.write()


def test_a_task_that_keeps_failing_to_start_fails_clean_after_three_retries(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any
) -> None:
    """GIVEN every task of the Fargate unit fails to start  WHEN the repo is requested  THEN the unit is tried
    four times in all, never copies, and the execution fails with States.TaskFailed; nothing is published
    and no upload is left open."""
    router.fargate_stops.extend([PULL] * 10)
    execution = run_nested(router, aws, bucket)
    assert execution["status"] == "FAILED"
    assert len(router.task_outcomes) == 4
    assert router.copier_runs == []
    assert incomplete_uploads(s3, bucket) == []
    assert failed_clean_problems(s3, bucket) == []
    table = support.FaultTable("Fargate task never starts")
    table.bucket_trial(support.check_bucket(s3, bucket), recovered=False, note="4 tries, then failed clean")
    table.write()


def test_the_copiers_own_failure_is_not_run_again(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any, hub: Any
) -> None:
    """GIVEN the Hub serves the huge file with a flipped byte, so the copier's in-stream check fails and it
    exits non-zero  WHEN the repo is requested  THEN the task is not run again (one copier run), and the
    execution fails with the copier's own IntegrityError; nothing is published."""
    hub.faults.add(modelgen.NESTED, modelgen.NESTED_LARGE_FILE_PATH, kind="corrupt", offset=6 * MIB, times=None)
    try:
        execution = run_nested(router, aws, bucket)
    finally:
        hub.faults.clear()
    assert execution["status"] == "FAILED"
    assert execution["error"] == "IntegrityError", execution.get("cause")
    assert len(router.copier_runs) == 1
    assert router.copier_runs[0].returncode != 0
    assert incomplete_uploads(s3, bucket) == []
