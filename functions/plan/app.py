"""Plan task: resolve the revision at the Hub, select and split the files, start the uploads.

The state machine passes the request plus bucket, prefix, work prefix, plan id and sizing; the
result is the small summary of docs/contributing/internals.md ("State machine task I/O"), never the plan itself.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from model_cache.adapters.task_metrics import counted_failure
from model_cache.adapters.tokens import hub_token
from model_cache.pipeline import steps
from model_cache.pipeline.events import PlanRequest

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with counted_failure("plan", logger, metrics):
        result = steps.plan(PlanRequest.from_event(event), token=hub_token())
    logger.info(
        "planned",
        extra={key: result[key] for key in ("status", "repo_id", "revision", "commit", "unit_count", "total_bytes")},
    )
    metrics.add_metric(name="UnitsPlanned", unit=MetricUnit.Count, value=result["unit_count"])
    if result["status"] == "already_published":
        metrics.add_metric(name="AlreadyCached", unit=MetricUnit.Count, value=1)
    if result["status"] == "skipped_gated":
        logger.warning(
            "gated model skipped by the scheduled refresh: the stack has no Hub token (HfTokenSecretArn)",
            extra={"repo_id": result["repo_id"]},
        )
        metrics.add_metric(name="RefreshSkippedGated", unit=MetricUnit.Count, value=1)
    return result
