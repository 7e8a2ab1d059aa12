"""`metrics.counted_failure`: the handlers' one way to count and log a task's domain error."""

from __future__ import annotations

from typing import Any

import pytest

from model_cache.adapters.task_metrics import counted_failure
from model_cache.contract import errors

pytestmark = pytest.mark.unit


class RecordingMetrics:
    def __init__(self) -> None:
        self.added: list[tuple[str, str, float]] = []

    def add_metric(self, *, name: str, unit: Any, value: float) -> None:
        self.added.append((name, str(unit.value), value))


class RecordingLogger:
    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []

    def error(self, message: str, *, extra: dict[str, Any]) -> None:
        self.errors.append((message, extra))


def test_a_domain_error_is_counted_logged_and_raised_unchanged() -> None:
    # GIVEN a task that fails with a domain error
    metrics, logger = RecordingMetrics(), RecordingLogger()
    failure = errors.GatedRepo("the Hub refused org/model: set HF_TOKEN")
    # WHEN it runs inside counted_failure
    with pytest.raises(errors.GatedRepo) as raised, counted_failure("plan", logger, metrics):
        raise failure
    # THEN the very error goes on, one TaskFailures count is added and the reason is logged by class
    assert raised.value is failure
    assert metrics.added == [("TaskFailures", "Count", 1)]
    assert logger.errors == [("plan failed", {"error": "GatedRepo", "reason": str(failure)})]


def test_the_metric_name_can_be_the_functions_own() -> None:
    # GIVEN the gc function, whose alarm watches GcFailures
    metrics, logger = RecordingMetrics(), RecordingLogger()
    # WHEN its collection fails with a domain error
    with pytest.raises(errors.AccessDenied), counted_failure("gc", logger, metrics, metric_name="GcFailures"):
        raise errors.AccessDenied("access denied to bucket 'b'")
    # THEN GcFailures is counted instead of TaskFailures
    assert metrics.added == [("GcFailures", "Count", 1)]
    assert [message for message, _ in logger.errors] == ["gc failed"]


def test_other_exceptions_and_success_are_not_counted() -> None:
    # GIVEN a service error (the runtime reports it) and a block that succeeds
    metrics, logger = RecordingMetrics(), RecordingLogger()
    # WHEN each runs inside counted_failure
    with pytest.raises(TimeoutError), counted_failure("copy", logger, metrics):
        raise TimeoutError("socket timed out")
    with counted_failure("copy", logger, metrics):
        pass
    # THEN nothing is counted or logged
    assert metrics.added == []
    assert logger.errors == []
