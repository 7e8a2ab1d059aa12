"""Tracked-models task: the models a scheduled refresh covers.

TRACKED_MODELS (the template's parameter) plus every repo and ref already in the bucket; the
state machine then starts one child execution per model, and an unchanged commit ends at the
plan step with no copy work.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from model_cache.adapters.s3 import s3_client
from model_cache.contract.ids import validate_bucket, validate_plan_id, validate_prefix, validate_work_prefix
from model_cache.pipeline.plan import DEFAULT_WORK_PREFIX, new_plan_id
from model_cache.pipeline.tracked import write_tracked_list

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    bucket = validate_bucket(event.get("bucket"))
    prefix = validate_prefix(event.get("prefix", "models"))
    listed = write_tracked_list(
        s3_client(),
        bucket,
        prefix,
        os.environ.get("TRACKED_MODELS", ""),
        work_prefix=validate_work_prefix(event.get("work_prefix") or DEFAULT_WORK_PREFIX),
        run_id=validate_plan_id(event.get("run_id") or new_plan_id()),
        gated_prefix=validate_prefix(os.environ.get("MODEL_CACHE_GATED_PREFIX", "")) or None,
    )
    logger.info("tracked models listed", extra=listed)
    metrics.add_metric(name="TrackedModels", unit=MetricUnit.Count, value=listed["count"])
    return listed
