"""The small pieces of model_cache_devtools.local_pipeline and the demo that need no servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from model_cache_devtools import demo, local_pipeline

pytestmark = pytest.mark.unit


class Target:
    existing = "original"


def test_patches_undo_restores_attributes_and_environment_in_reverse_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN an attribute that exists, one that does not, a set variable and an unset one
    monkeypatch.setenv("LOCAL_PIPELINE_SET", "before")
    monkeypatch.delenv("LOCAL_PIPELINE_UNSET", raising=False)
    patches = local_pipeline.Patches()
    # WHEN each is patched (one twice) and then undone
    patches.setattr(Target, "existing", "first")
    patches.setattr(Target, "existing", "second")
    patches.setattr(Target, "added", "new")
    patches.setenv("LOCAL_PIPELINE_SET", "after")
    patches.setenv("LOCAL_PIPELINE_UNSET", "now set")
    assert (Target.existing, os.environ["LOCAL_PIPELINE_UNSET"]) == ("second", "now set")
    patches.undo()
    # THEN everything is as before, the added attribute and variable gone
    assert Target.existing == "original"
    assert not hasattr(Target, "added")
    assert os.environ["LOCAL_PIPELINE_SET"] == "before"
    assert "LOCAL_PIPELINE_UNSET" not in os.environ


def test_repo_root_is_the_checkout_and_an_explicit_wrong_root_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN no override THEN the checkout holding the ASL and functions/ is found
    monkeypatch.delenv(local_pipeline.REPO_ROOT_ENV, raising=False)
    local_pipeline.repo_root.cache_clear()
    try:
        assert local_pipeline.repo_root() == REPO_ROOT
        assert local_pipeline.asl_path() == REPO_ROOT / "statemachine" / "model_cache.asl.json"
        # WHEN the override names a folder that is not a checkout THEN the error names the variable and folder
        monkeypatch.setenv(local_pipeline.REPO_ROOT_ENV, str(tmp_path))
        local_pipeline.repo_root.cache_clear()
        with pytest.raises(local_pipeline.LocalPipelineError, match=local_pipeline.REPO_ROOT_ENV) as raised:
            local_pipeline.repo_root()
        assert str(tmp_path) in str(raised.value)
    finally:
        local_pipeline.repo_root.cache_clear()


def test_execution_arn_and_states_entered() -> None:
    # GIVEN a stack's state machine ARN and an execution history with a Map iteration
    stack = local_pipeline.Stack(moto=None, router=local_pipeline.Router(), bucket="b")  # type: ignore[arg-type]
    stack.state_machine_arn = "arn:aws:states:us-east-1:123456789012:stateMachine:model-cache-1"
    history = [
        {"type": "ExecutionStarted"},
        {"type": "ChoiceStateEntered", "stateEnteredEventDetails": {"name": "Refresh?"}},
        {"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": "Plan"}},
        {"type": "TaskStateExited", "stateExitedEventDetails": {"name": "Plan"}},
        {"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": "CopyUnit"}},
    ]
    # THEN the execution ARN is the one Step Functions gives a named execution, and the states are in order
    assert stack.execution_arn("req-1") == "arn:aws:states:us-east-1:123456789012:execution:model-cache-1:req-1"
    assert local_pipeline.states_entered(history) == ["Refresh?", "Plan", "CopyUnit"]
    # AND a request queue that was never created is a clear error
    with pytest.raises(local_pipeline.LocalPipelineError, match="no request queue"):
        stack.send_request("org/model")


@pytest.mark.parametrize(("value", "problem"), [("lots", "not a whole number"), ("0", "at least 1 MiB")])
def test_demo_synthetic_size_must_be_a_positive_number_of_mib(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    # GIVEN a bad MODEL_CACHE_DEMO_SYNTHETIC_MB THEN the demo refuses it, naming the variable
    monkeypatch.setenv(demo.SYNTHETIC_MB_ENV, value)
    with pytest.raises(demo.DemoError, match=problem) as raised:
        demo.synthetic_size_from_env()
    assert demo.SYNTHETIC_MB_ENV in str(raised.value)
    # AND a good one is MiB
    monkeypatch.setenv(demo.SYNTHETIC_MB_ENV, "3")
    assert demo.synthetic_size_from_env() == 3 * 1024 * 1024
