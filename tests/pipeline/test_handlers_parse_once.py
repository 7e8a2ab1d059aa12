"""The Lambda handlers are thin: each parses its event once, at the edge, into its typed task
(`model_cache.pipeline.events`) and hands that object to one core function in `steps`.

Not a unit test: the handlers' Tracer opens the X-Ray daemon's UDP socket when its module loads.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import LambdaContext, load_event

from model_cache.pipeline import steps
from model_cache.pipeline.events import (
    CleanupTask,
    CompleteFileTask,
    CopyUnitTask,
    FinalizeTask,
    PlanRequest,
    PublishTask,
)
from model_cache_devtools.local_pipeline import load_function_module

pytestmark = pytest.mark.integration

# Every key any handler reads from its core function's result.
_RESULT = {
    "status": "ok",
    "repo_id": "org/name",
    "revision": "main",
    "commit": "0" * 40,
    "unit_count": 1,
    "total_bytes": 1,
    "bytes": 1,
    "hub_bytes": 1,
    "s3_copy_bytes": 0,
    "parts": 1,
    "seconds": 0.1,
    "read_back": False,
    "files": 1,
    "verified_by_read_back": 0,
    "aborted_uploads": 0,
    "deleted_work_files": 0,
}


@pytest.mark.parametrize(
    ("folder", "core_function", "sample", "task_type"),
    [
        ("plan", "plan", "plan.json", PlanRequest),
        ("copy_unit", "copy_unit", "copy_unit.json", CopyUnitTask),
        ("finalize", "complete_file", "complete_file.json", CompleteFileTask),
        ("finalize", "finalize", "finalize.json", FinalizeTask),
        ("publish", "publish", "publish.json", PublishTask),
        ("cleanup", "cleanup", "cleanup_after_failure.json", CleanupTask),
    ],
)
def test_every_handler_hands_its_core_function_a_parsed_task(
    monkeypatch: pytest.MonkeyPatch, folder: str, core_function: str, sample: str, task_type: Any
) -> None:
    # GIVEN a handler whose core function only records what it is given
    handler = load_function_module(folder)
    given: list[Any] = []

    def record(task: Any, **_: Any) -> dict[str, Any]:
        given.append(task)
        return dict(_RESULT)

    monkeypatch.setattr(steps, core_function, record)
    monkeypatch.setattr(handler, "hub_token", lambda: None, raising=False)
    # WHEN the handler gets the sample event
    handler.handler(load_event(sample), LambdaContext())
    # THEN the core function got the parsed task, equal to parsing the event once
    assert given == [task_type.from_event(load_event(sample))]
    assert isinstance(given[0], task_type)
