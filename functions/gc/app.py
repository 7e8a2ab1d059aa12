"""Scheduled gc: delete snapshots no ref or manifest.json names, beyond the retention (model_cache.gc).

The schedule passes `{"source": "schedule"}`; the retention comes from GC_KEEP and
GC_OLDER_THAN_DAYS (template parameters). A manual invocation may override `keep`,
`older_than_days`, `dry_run` and `repos` in its event. The role may delete only under the cache
prefix, and gc never deletes a snapshot a ref or manifest.json names.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from model_cache import errors
from model_cache.errors import ModelCacheError
from model_cache.gc import DEFAULT_KEEP, DEFAULT_OLDER_THAN_DAYS, collect
from model_cache.steps import validate_bucket, validate_prefix
from model_cache.transfer import s3_client

logger = Logger()
tracer = Tracer()
metrics = Metrics()
MAX_LISTED = 100  # deletions named in the result; the log has every decision


def _settings(event: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise errors.InvalidRequest(f"event must be a JSON object, got {type(event).__name__}")
    try:
        keep = event.get("keep", int(os.environ.get("GC_KEEP", DEFAULT_KEEP)))
        older_than = event.get("older_than_days", float(os.environ.get("GC_OLDER_THAN_DAYS", DEFAULT_OLDER_THAN_DAYS)))
    except ValueError as exc:
        raise errors.InvalidRequest(f"GC_KEEP / GC_OLDER_THAN_DAYS must be numbers: {exc}") from exc
    dry_run = event.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise errors.InvalidRequest(f"dry_run must be true or false, got {dry_run!r}")
    repos = event.get("repos", [])
    if not isinstance(repos, list) or not all(isinstance(repo, str) for repo in repos):
        raise errors.InvalidRequest("repos must be a list of repo ids")
    return {
        "bucket": validate_bucket(event.get("bucket") or os.environ.get("MODEL_CACHE_BUCKET")),
        "prefix": validate_prefix(event.get("prefix") or os.environ.get("MODEL_CACHE_PREFIX", "models")),
        "keep": keep,
        "older_than_days": older_than,
        "dry_run": dry_run,
        "repo_ids": repos,
    }


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        settings = _settings(event)
        report = collect(s3_client(), **settings)
    except ModelCacheError as exc:
        metrics.add_metric(name="GcFailures", unit=MetricUnit.Count, value=1)
        logger.error("gc failed", extra={"error": type(exc).__name__, "reason": str(exc)})
        raise
    deleted = [decision for decision in report.decisions if decision.action == "delete"]
    for decision in report.decisions:
        logger.info("gc decision", extra=decision.to_json())
    metrics.add_metric(name="SnapshotsDeleted", unit=MetricUnit.Count, value=report.deleted_snapshots)
    metrics.add_metric(name="BytesDeleted", unit=MetricUnit.Bytes, value=report.deleted_bytes)
    metrics.add_metric(name="SnapshotsKept", unit=MetricUnit.Count, value=len(report.decisions) - len(deleted))
    return {
        "status": "dry_run" if report.dry_run else "collected",
        "keep": report.keep,
        "older_than_days": report.older_than_days,
        "deleted_snapshots": report.deleted_snapshots,
        "deleted_objects": report.deleted_objects,
        "deleted_bytes": report.deleted_bytes,
        "kept_snapshots": len(report.decisions) - len(deleted),
        "deletions": [decision.to_json() for decision in deleted[:MAX_LISTED]],
    }
