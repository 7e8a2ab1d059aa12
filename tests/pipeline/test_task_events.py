"""The tasks' typed events (`model_cache.pipeline.events`): each task's event is parsed once, at the handler's
edge, into a frozen object that names the stored plan; the core function takes that object as given.

The sample events are the ones in events/ (what `sam local invoke -e` takes, and what the ASL passes).
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import pytest
from conftest import load_event

from model_cache.contract import errors
from model_cache.pipeline import events, steps

pytestmark = pytest.mark.unit

TASK_OF_SAMPLE = {
    "copy_unit.json": events.CopyUnitTask,
    "copy_unit_fargate.json": events.CopyUnitTask,
    "complete_file.json": events.CompleteFileTask,
    "finalize.json": events.FinalizeTask,
    "publish.json": events.PublishTask,
    "cleanup_after_failure.json": events.CleanupTask,
    "cleanup_after_success.json": events.CleanupTask,
}


@pytest.mark.parametrize(("name", "task_type"), sorted(TASK_OF_SAMPLE.items()))
def test_each_sample_task_event_names_its_stored_plan(name: str, task_type: Any) -> None:
    # GIVEN a sample task event
    event = load_event(name)
    # WHEN it is parsed into its task
    task = task_type.from_event(event)
    # THEN the task names the plan the event names, and cannot be changed on the way in
    assert task.plan == events.PlanRef(bucket=event["bucket"], plan_key=event["plan_key"])
    with pytest.raises(FrozenInstanceError):
        task.plan = None


def test_the_copy_unit_task_keeps_the_fields_the_task_reads() -> None:
    # GIVEN the Lambda copy unit event WHEN parsed
    task = events.CopyUnitTask.from_event(load_event("copy_unit.json"))
    # THEN the unit, its first file and its file count are the event's
    assert (task.unit_id, task.path, task.files) == (3, "model-00001-of-00002.safetensors", 1)


def test_the_complete_file_task_keeps_the_path_and_its_index() -> None:
    task = events.CompleteFileTask.from_event(load_event("complete_file.json"))
    assert (task.path, task.file_index) == ("model-00001-of-00002.safetensors", 1)


def test_the_explain_mode_and_the_maps_error_reach_finalize() -> None:
    # GIVEN the event the ASL's ExplainCopyFailure state passes
    event = {**load_event("finalize.json"), "explain": True, "map_error": {"Error": "States.ExceedToleratedFailure"}}
    # WHEN parsed THEN both reach the task; the plain Finalize event explains nothing
    task = events.FinalizeTask.from_event(event)
    assert task.explain is True
    assert task.map_error == {"Error": "States.ExceedToleratedFailure"}
    assert events.FinalizeTask.from_event(load_event("finalize.json")).explain is False


def test_the_cleanup_task_keeps_the_failure_it_counts() -> None:
    failed = events.CleanupTask.from_event(load_event("cleanup_after_failure.json"))
    assert failed.failed is True
    assert failed.error["Error"] == "IntegrityError"
    assert events.CleanupTask.from_event(load_event("cleanup_after_success.json")).failed is False


@pytest.mark.parametrize(
    ("sample", "task_type"),
    [
        ("plan.json", events.PlanRequest),
        ("copy_unit.json", events.CopyUnitTask),
        ("complete_file.json", events.CompleteFileTask),
        ("finalize.json", events.FinalizeTask),
        ("publish.json", events.PublishTask),
        ("cleanup_after_failure.json", events.CleanupTask),
    ],
)
def test_a_parsed_task_is_passed_inward_as_is(sample: str, task_type: Any) -> None:
    # GIVEN a task already parsed at the edge WHEN the core parses it again THEN it is the same object, unchecked
    task = task_type.from_event(load_event(sample))
    assert task_type.from_event(task) is task


def _without(name: str, field: str) -> dict[str, Any]:
    event = dict(load_event(name))
    del event[field]
    return event


def _with(name: str, **fields: Any) -> dict[str, Any]:
    return {**load_event(name), **fields}


@pytest.mark.parametrize(
    ("task_type", "event", "named"),
    [
        (events.CopyUnitTask, _without("copy_unit.json", "unit_id"), "'unit_id'"),
        (events.CopyUnitTask, _with("copy_unit.json", unit_id=True), "'unit_id'"),
        (events.CopyUnitTask, _with("copy_unit.json", unit_id="3"), "'unit_id'"),
        (events.CopyUnitTask, _with("copy_unit.json", unit_id=-1), "'unit_id'"),
        (events.CopyUnitTask, _without("copy_unit.json", "plan_key"), "'plan_key'"),
        (events.CopyUnitTask, _with("copy_unit.json", bucket="Bad_Bucket"), "bucket"),
        (events.CompleteFileTask, _without("complete_file.json", "file_index"), "'file_index'"),
        (events.CompleteFileTask, _with("complete_file.json", file_index=False), "'file_index'"),
        (events.CompleteFileTask, _with("complete_file.json", path=7), "path must be a string"),
        (events.CompleteFileTask, _with("complete_file.json", path=""), "'path'"),
        (events.FinalizeTask, _with("finalize.json", plan_key=12), "plan_key must be a string"),
        (events.FinalizeTask, _without("finalize.json", "bucket"), "'bucket'"),
        (events.PublishTask, ["not", "an", "object"], "JSON object, got list"),
    ],
)
def test_a_bad_task_event_is_refused_naming_the_field(task_type: Any, event: Any, named: str) -> None:
    # GIVEN a task event with one field wrong WHEN parsed THEN InvalidRequest names that field
    with pytest.raises(errors.InvalidRequest, match=named):
        task_type.from_event(event)


@pytest.mark.parametrize(
    "event",
    [None, [], {}, {"plan_key": ""}, {"bucket": "Bad_Bucket", "plan_key": "k"}, {"failed": True, "error": {}}],
)
def test_cleanup_never_refuses_its_event(event: Any) -> None:
    # GIVEN an execution that failed before any plan was stored (so the event names none, or a bad one)
    # WHEN cleanup runs THEN it has nothing to clean, and says so without touching S3 (no client is built)
    assert events.CleanupTask.from_event(event).plan is None
    assert steps.cleanup(event) == {"status": "cleaned", "aborted_uploads": 0, "deleted_work_files": 0}
