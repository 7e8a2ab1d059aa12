"""Copy-unit task: stream one unit (a small file, or a byte range of whole parts) from the Hub into S3.

The event is one Map item read from the plan's units.json; the Fargate copier runs the same
`steps.copy_unit` on the same item for files too large for Lambda.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from model_cache.adapters.task_metrics import counted_failure
from model_cache.adapters.tokens import hub_token
from model_cache.pipeline import steps
from model_cache.pipeline.events import CopyUnitTask

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with counted_failure("copy", logger, metrics):
        task = CopyUnitTask.from_event(event)
        logger.append_keys(unit_id=task.unit_id, path=task.path)
        result = steps.copy_unit(task, token=hub_token())
    logger.info("unit copied", extra={key: result[key] for key in ("bytes", "parts", "seconds")})
    metrics.add_metric(name="BytesCopied", unit=MetricUnit.Bytes, value=result["bytes"])
    # Incremental refresh: bytes streamed from the Hub vs bytes copied inside S3 from the previous snapshot.
    metrics.add_metric(name="BytesFromHub", unit=MetricUnit.Bytes, value=result.get("hub_bytes", result["bytes"]))
    metrics.add_metric(name="BytesCopiedInS3", unit=MetricUnit.Bytes, value=result.get("s3_copy_bytes", 0))
    metrics.add_metric(name="FilesCopied", unit=MetricUnit.Count, value=task.files)
    metrics.add_metric(name="UnitSeconds", unit=MetricUnit.Seconds, value=result["seconds"])
    return result
