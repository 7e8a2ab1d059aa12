"""Publish task: hash file, manifests/{commit}.json, refs/{revision}, manifest.json, in that order.

Runs only after finalize verified every file, so a reader that finds a manifest finds every file.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from model_cache.adapters.task_metrics import counted_failure
from model_cache.adapters.tokens import hub_token
from model_cache.pipeline import steps
from model_cache.pipeline.events import PublishTask

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with counted_failure("publish", logger, metrics):
        result = steps.publish(PublishTask.from_event(event), token=hub_token())
    logger.info(
        "publish done",
        extra={key: result[key] for key in ("status", "repo_id", "revision", "commit", "files", "total_bytes")},
    )
    metrics.add_metric(name="FilesPublished", unit=MetricUnit.Count, value=result["files"])
    metrics.add_metric(name="BytesPublished", unit=MetricUnit.Bytes, value=result["total_bytes"])
    return result
