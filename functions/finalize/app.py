"""Finalize task, in two modes: complete one multipart file (an item of the CompleteFiles Map, with
`path`), or gather every file's verified record into files.json (the Finalize state).

Completing reads a file back only when it was split across units; a mismatch deletes what this run
wrote and fails with IntegrityError, so nothing is published. When a copy unit failed, finalize fails
first with that unit's own error (recorded by steps.copy_unit).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from model_cache.adapters.task_metrics import counted_failure
from model_cache.pipeline import steps
from model_cache.pipeline.events import CompleteFileTask, FinalizeTask

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if isinstance(event, dict) and "path" in event:
        with counted_failure("complete-file", logger, metrics):
            completed = steps.complete_file(CompleteFileTask.from_event(event))
        logger.info("file completed", extra=completed)
        metrics.add_metric(name="FilesReadBack", unit=MetricUnit.Count, value=int(completed["read_back"]))
        return completed
    with counted_failure("finalize", logger, metrics):
        result = steps.finalize(FinalizeTask.from_event(event))
    logger.info(
        "finalize done", extra={key: result[key] for key in ("status", "files", "total_bytes", "verified_by_read_back")}
    )
    metrics.add_metric(name="FilesVerified", unit=MetricUnit.Count, value=result["files"])
    return result
