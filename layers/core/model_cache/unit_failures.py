"""Carry a failed copy unit's own error past the Map, so the execution fails with it.

A Distributed Map that loses an item fails as `States.ExceedToleratedFailureThreshold`, which
says nothing about why; the unit's real error (`GatedRepo`, `IntegrityError`, ...) lives only in
that child execution. The copy-unit handler records its domain error under the plan's work folder
and the finalize handler raises the first recorded one before doing anything else, so the state
machine's `Fail` shows the original error name and message. The work folder is deleted by cleanup.

Interim home: this belongs in `model_cache.steps` (copy_unit's failed unit record and finalize),
where the Fargate copier would get it too.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from botocore.exceptions import ClientError

from model_cache import errors

FAILURES_FOLDER = "failures"


def failures_prefix(plan_key: str) -> str:
    return f"{posixpath.dirname(plan_key)}/{FAILURES_FOLDER}/"


def record_unit_failure(s3: Any, event: dict[str, Any], exc: errors.ModelCacheError) -> None:
    """Write the unit's error next to the plan; best effort, never hides `exc`."""
    bucket, plan_key, unit_id = event.get("bucket"), event.get("plan_key"), event.get("unit_id")
    if not isinstance(bucket, str) or not isinstance(plan_key, str) or not isinstance(unit_id, int):
        return
    record = {"unit_id": unit_id, "path": event.get("path"), "error": type(exc).__name__, "message": str(exc)}
    try:
        s3.put_object(
            Bucket=bucket,
            Key=f"{failures_prefix(plan_key)}{unit_id:06d}.json",
            Body=json.dumps(record).encode(),
            ContentType="application/json",
        )
    except ClientError:
        return


def raise_recorded_failure(s3: Any, event: dict[str, Any]) -> None:
    """Raise the lowest-numbered unit's recorded error, as its own class; return if none."""
    bucket, plan_key = event.get("bucket"), event.get("plan_key")
    if not isinstance(bucket, str) or not isinstance(plan_key, str):
        return
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=failures_prefix(plan_key), MaxKeys=1)
    entries = listing.get("Contents", [])
    if not entries:
        return
    record = json.loads(s3.get_object(Bucket=bucket, Key=entries[0]["Key"])["Body"].read())
    error_class = getattr(errors, str(record.get("error")), None)
    if not (isinstance(error_class, type) and issubclass(error_class, errors.ModelCacheError)):
        error_class = errors.TransferError
    raise error_class(f"copy unit {record.get('unit_id')} ({record.get('path')}): {record.get('message')}")
