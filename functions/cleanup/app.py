"""Cleanup task: abort open uploads, remove what a failed run wrote, delete the plan's work files.

Runs on every way out of the copy (success and Catch); `failed` and `error` say which.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from model_cache.adapters.task_metrics import add_failure_by_cause, counted_failure
from model_cache.pipeline import steps
from model_cache.pipeline.events import CleanupTask

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = CleanupTask.from_event(event)  # never refuses: cleanup runs on every way out
    with counted_failure("cleanup", logger, metrics):
        result = steps.cleanup(task)
    logger.info(
        "cleanup done",
        extra={key: result[key] for key in ("status", "aborted_uploads", "deleted_work_files")},
    )
    if task.failed:
        metrics.add_metric(name="ExecutionsCleanedAfterFailure", unit=MetricUnit.Count, value=1)
        # Every failed execution passes through here once, with the failing state's Error: one count per cause.
        add_failure_by_cause(metrics, task.error)
    return result
