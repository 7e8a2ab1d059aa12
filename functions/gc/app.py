"""Scheduled gc: delete snapshots no ref or manifest.json names, beyond the retention (model_cache.operations.gc).

The schedule passes `{"source": "schedule"}`; the retention comes from GC_KEEP and
GC_OLDER_THAN_DAYS (template parameters). A manual invocation may override `keep`,
`older_than_days`, `dry_run` and `repos` in its event. The role may delete only under the cache
prefix, and gc never deletes a snapshot a ref or manifest.json names.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from model_cache.adapters.s3 import s3_client
from model_cache.adapters.task_metrics import counted_failure
from model_cache.operations.gc import collect, scheduled_settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with counted_failure("gc", logger, metrics, metric_name="GcFailures"):
        report = collect(s3_client(), **scheduled_settings(event))
    for decision in report.decisions:
        logger.info("gc decision", extra=decision.to_json())
    metrics.add_metric(name="SnapshotsDeleted", unit=MetricUnit.Count, value=report.deleted_snapshots)
    metrics.add_metric(name="BytesDeleted", unit=MetricUnit.Bytes, value=report.deleted_bytes)
    metrics.add_metric(name="SnapshotsKept", unit=MetricUnit.Count, value=report.kept_snapshots)
    return report.summary()
