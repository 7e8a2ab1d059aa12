"""The failure path after the copy Map explains without finalizing: the very ASL in moto's engine.

When a copy unit dies without a word (a Lambda timeout or out of memory: no result file), the Map fails
with a cause that says nothing; ExplainCopyFailure must then name the unit, and must neither complete an
upload nor read a file back (finalize's work, which on this path replaced the real cause with a secondary
one and kept running beside the cleanup).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MotoEndpoint, incomplete_uploads, shared_test_module
from sfn_harness import Router, create_stack, executing_state_machines, install_routes

from model_cache.contract import errors
from model_cache.pipeline import steps
from model_cache.pipeline.events import CopyUnitTask
from model_cache.pipeline.plan import MiB

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ops = shared_test_module("ops_support", "tests/operations/ops_support.py")
WEIGHT = "a-weights.safetensors"


@pytest.fixture
def router(aws: MotoEndpoint, hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    with executing_state_machines(aws):
        yield install_routes(monkeypatch, aws)


def test_a_unit_that_dies_without_a_result_is_named_and_nothing_is_finalized(
    router: Router, aws: MotoEndpoint, hub_root: Path, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a repo whose 12 MiB weight is split over three units and whose small file is a fourth, and the
    small file's unit killed before it writes any result (as a Lambda timeout kills it)
    WHEN the execution runs  THEN it fails with TransferError naming that unit and "without a result", the
    explain step completed no upload (the weight never became an object), and no upload is left open.
    (Failed on 94042d4: ExplainCopyFailure ran the real finalize, which completed and read back the weight and
    failed with the secondary "was never copied" error.)"""
    repo_id = ops.make_repo(hub_root, {WEIGHT: ops.default_files()[ops.BIG_FILE], "b.json": b"{}"})
    real_copy_unit = steps.copy_unit
    killed: list[int] = []

    def copy_unit(task: CopyUnitTask, **kwargs: Any) -> Any:
        if task.path == "b.json":
            killed.append(task.unit_id)
            raise TimeoutError("Task timed out after 900.00 seconds")
        return real_copy_unit(task, **kwargs)

    monkeypatch.setattr(steps, "copy_unit", copy_unit)
    stack = create_stack(aws, router, bucket, part_size=5 * MiB, unit_size=5 * MiB)

    execution = stack.run({"repo_id": repo_id})

    assert execution["status"] == "FAILED"
    assert execution["error"] == "TransferError", execution.get("cause")
    assert killed, "the small file's unit never ran"
    assert f"copy unit(s) {killed[0]} (b.json" in execution["cause"]
    assert "without a result" in execution["cause"]
    # The Map fails as on AWS (local_pipeline.patch_map_run_failure_threshold): no file is completed, and the
    # one finalize call is ExplainCopyFailure's, in explain mode.
    assert [(call.event.get("explain"), call.error is not None) for call in router.calls("finalize")] == [(True, True)]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="models/").get("Contents", [])
    assert [item["Key"] for item in listed if item["Key"].endswith(WEIGHT)] == []
    assert incomplete_uploads(s3, bucket) == []


def test_finalize_in_explain_mode_completes_nothing_even_when_every_unit_has_a_result(
    hub: Any, hub_root: Path, s3: Any, bucket: str
) -> None:
    """GIVEN a plan whose every unit copied (the Map failed for another reason, e.g. a state-size limit)
    WHEN ExplainCopyFailure's event reaches finalize (explain: true, the Map's error)  THEN it raises a
    TransferError quoting the Map's error, and no upload was completed: the weight is not an object."""
    repo_id = ops.make_repo(hub_root, {WEIGHT: ops.default_files()[ops.BIG_FILE], "b.json": b"{}"})
    planned = steps.plan({"repo_id": repo_id, "bucket": bucket, "options": {"part_size": 5 * MiB}}, s3=s3)
    for item in planned["units"]:
        steps.copy_unit(item, s3=s3)
    map_error = {"Error": "States.ExceedToleratedFailureThreshold", "Cause": "The specified tolerated failure ..."}

    with pytest.raises(errors.TransferError, match="ExceedToleratedFailureThreshold"):
        steps.finalize({**planned, "explain": True, "map_error": map_error}, s3=s3)

    listed = s3.list_objects_v2(Bucket=bucket, Prefix="models/").get("Contents", [])
    assert [item["Key"] for item in listed if item["Key"].endswith(WEIGHT)] == []
    steps.cleanup({**planned, "failed": True}, s3=s3)
    assert incomplete_uploads(s3, bucket) == []
