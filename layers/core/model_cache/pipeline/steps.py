"""The state machine's tasks as plain functions: a typed task in (`pipeline.events`, or the event's JSON,
parsed by the same `from_event`), JSON out (docs/contributing/internals.md, "State machine task I/O").

The Lambda handlers and the Fargate copier parse their event into its task and call these and nothing
else; `engine.sync` runs the same typed blocks (`prepare.prepare_plan`, `hub_to_s3.run_parts`,
`finalize.finalize_files`, `publish.publish`, `finalize.cleanup_plan`) in one process, and the work files
between tasks are `work_files`'. The Hub token only ever arrives as the `token=` keyword.
"""

from __future__ import annotations

import json
import time
from typing import Any

from botocore.exceptions import ClientError

from model_cache.adapters.hub_reader import HubReader
from model_cache.adapters.s3 import s3_client, s3_error
from model_cache.contract import errors, layout
from model_cache.contract.manifest import FileRecord
from model_cache.pipeline import claims
from model_cache.pipeline import publish as publish_mod
from model_cache.pipeline.events import (
    CleanupTask,
    CompleteFileTask,
    CopyUnitTask,
    FinalizeTask,
    PlanRef,
    PlanRequest,
    PublishTask,
)
from model_cache.pipeline.finalize import cleanup_plan, finalize_file, merge_outcomes
from model_cache.pipeline.governance import RequestPolicy
from model_cache.pipeline.hub_to_s3 import FileOutcome, run_parts
from model_cache.pipeline.multipart import (
    abort_uploads,
)
from model_cache.pipeline.plan import Plan
from model_cache.pipeline.prepare import SkippedGated, prepare_plan
from model_cache.pipeline.publish import Published
from model_cache.pipeline.s3_copy import copy_files
from model_cache.pipeline.work_files import (
    completion_items,
    completion_result_key,
    completions_key,
    explain_copy_failure,
    files_key,
    get_all_json,
    load_plan,
    outcomes_of,
    put_json,
    raise_unit_error,
    read_completion_records,
    read_unit_records,
    unit_result_key,
    units_key,
)

INLINE_UNITS_LIMIT = 16  # keeps every result under ~8 KB; the Map reads units.json from S3 anyway


# ---------------------------------------------------------------------------------------------
# The tasks
# ---------------------------------------------------------------------------------------------


def plan(event: PlanRequest | Any, *, token: str | None = None, s3: Any = None) -> dict[str, Any]:
    """Task 1: resolve, plan, start uploads; store plan.json and units.json under the work prefix."""
    request = PlanRequest.from_event(event)
    s3 = s3 or s3_client()
    prepared = _stored_plan(s3, request) or prepare_plan(s3, request, token=token, policy=RequestPolicy.from_env())
    base = {
        "repo_id": request.repo_id,
        "revision": request.revision,
        "bucket": request.bucket,
        "prefix": request.prefix,
        "plan_id": request.plan_id,
    }
    if isinstance(prepared, SkippedGated):
        return _without_copy_work("skipped_gated", base, prepared.commit, files=0, total_bytes=0, manifest_key=None)
    if isinstance(prepared, Published):
        return _without_copy_work(
            "already_published",
            base,
            prepared.commit,
            files=prepared.files,
            total_bytes=prepared.total_bytes,
            manifest_key=prepared.manifest_key,
        )
    the_plan = prepared
    items = unit_items(the_plan)
    try:
        put_json(s3, the_plan.bucket, the_plan.plan_key, the_plan.to_json())
        put_json(s3, the_plan.bucket, units_key(the_plan), items)
        put_json(s3, the_plan.bucket, completions_key(the_plan), completion_items(the_plan))
    except BaseException:
        abort_uploads(s3, the_plan)
        claims.release(s3, the_plan.bucket, the_plan.claim_key)
        raise
    return planned_result(the_plan, items)


def _without_copy_work(
    status: str, base: dict[str, Any], commit: str, *, files: int, total_bytes: int, manifest_key: str | None
) -> dict[str, Any]:
    """The Plan task's result when nothing is copied (already published, or a skipped refresh): every key the
    ASL's ResultSelector reads, with no plan, units or completions."""
    return {
        "status": status,
        **base,
        "commit": commit,
        "plan_key": None,
        "units_key": None,
        "units": None,
        "unit_count": 0,
        "completions_key": None,
        "completion_count": 0,
        "lambda_units": 0,
        "fargate_units": 0,
        "files": files,
        "total_bytes": total_bytes,
        "manifest_key": manifest_key,
    }


def unit_items(the_plan: Plan) -> list[dict[str, Any]]:
    """The CopyUnits Map's items (units.json): one small object per unit, naming the plan and the unit."""
    return [
        {
            "bucket": the_plan.bucket,
            "plan_key": the_plan.plan_key,
            "unit_id": unit.unit_id,
            "runner": unit.runner,
            "kind": unit.kind,
            "path": unit.items[0].path,
            "files": len(unit.items),
            "bytes": unit.bytes,
            "attempt": 0,  # counts the Fargate runs of the unit that stopped without the copier's verdict
        }
        for unit in the_plan.units
    ]


def planned_result(the_plan: Plan, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The Plan task's result: counts and keys only (the units inline only when few), so its size is
    bounded whatever the model (`make scale` measures it against Step Functions' 256 KiB)."""
    return {
        "status": "planned",
        "repo_id": the_plan.repo_id,
        "revision": the_plan.revision,
        "bucket": the_plan.bucket,
        "prefix": the_plan.prefix,
        "plan_id": the_plan.plan_id,
        "commit": the_plan.commit,
        "plan_key": the_plan.plan_key,
        "units_key": units_key(the_plan),
        "units": items if len(items) <= INLINE_UNITS_LIMIT else None,
        "unit_count": len(items),
        "completions_key": completions_key(the_plan),
        "completion_count": sum(1 for planned in the_plan.files if planned.multipart),
        "lambda_units": sum(1 for unit in the_plan.units if unit.runner == "lambda"),
        "fargate_units": sum(1 for unit in the_plan.units if unit.runner == "fargate"),
        "copy_units": sum(1 for unit in the_plan.units if unit.kind == "copy-from"),
        "files": len(the_plan.files),
        "total_bytes": the_plan.total_bytes,
        "reused_files": sum(1 for planned in the_plan.files if planned.copy_from is not None),
        "reused_bytes": sum(planned.size for planned in the_plan.files if planned.copy_from is not None),
        "manifest_key": the_plan.manifest_key,
    }


def _stored_plan(s3: Any, request: PlanRequest) -> Plan | None:
    """The plan an earlier attempt of this very task stored (a retried Plan task has the same plan id).

    Reusing it keeps its multipart uploads: planning again would start new ones and orphan the first
    attempt's. Only a complete plan is stored (after every upload started), and only one for the same
    repo and revision is taken.
    """
    key = layout.plan_key(layout.work_dir(request.work_prefix, request.plan_id))
    data = publish_mod.get_json(s3, request.bucket, key)
    if data is None:
        return None
    stored = Plan.from_json(data)
    prefixes = {request.prefix, request.gated_prefix or request.prefix}
    if (stored.repo_id, stored.revision) != (request.repo_id, request.revision) or stored.prefix not in prefixes:
        raise errors.InvalidRequest(
            f"plan id {request.plan_id!r} already holds a plan for {stored.repo_id}@{stored.revision}; "
            "use another plan id"
        )
    return stored


def copy_unit(
    event: CopyUnitTask | Any, *, token: str | None = None, s3: Any = None, concurrency: int | None = None
) -> dict[str, Any]:
    """Task 2: copy one unit's parts (Lambda or Fargate), verifying whole files in-stream."""
    started = time.monotonic()
    task = CopyUnitTask.from_event(event)
    unit_id = task.unit_id
    s3 = s3 or s3_client()
    the_plan = load_plan(s3, task.plan)
    reader = HubReader(the_plan.repo_id, the_plan.commit, the_plan.endpoint, token)
    outcomes: dict[str, FileOutcome] = {}
    result_key = unit_result_key(the_plan, unit_id)
    try:
        unit = the_plan.unit(unit_id)
        if unit.kind == "copy-from":
            copy_files(
                s3,
                the_plan,
                unit.items,
                concurrency=concurrency or the_plan.options.unit_concurrency,
                outcomes=outcomes,
            )
        else:
            run_parts(
                s3,
                the_plan,
                unit.items,
                reader,
                concurrency=concurrency or the_plan.options.unit_concurrency,
                outcomes=outcomes,
            )
    except BaseException as exc:
        # What was already written goes on record, so cleanup can delete it; a domain error goes
        # on record too, so finalize can fail the execution with it.
        failure = _unit_record(unit_id, reader, outcomes, failed=True)
        failure.update(path=task.path, error=type(exc).__name__, message=str(exc)[:2000])
        put_json(s3, the_plan.bucket, result_key, failure)
        raise
    put_json(s3, the_plan.bucket, result_key, _unit_record(unit_id, reader, outcomes, failed=False))
    return {
        "unit_id": unit_id,
        "path": unit.items[0].path,
        "runner": unit.runner,
        "kind": unit.kind,
        "bytes": unit.bytes,
        # Bytes read from the Hub vs copied inside S3 (the pipeline's metrics split them).
        "hub_bytes": 0 if unit.kind == "copy-from" else unit.bytes,
        "s3_copy_bytes": unit.bytes if unit.kind == "copy-from" else 0,
        "parts": sum(item.last_part - item.first_part + 1 for item in unit.items),
        "retries": reader.retries,
        "seconds": round(time.monotonic() - started, 3),
        "result_key": result_key,
    }


def _unit_record(unit_id: int, reader: HubReader, outcomes: dict[str, FileOutcome], *, failed: bool) -> dict[str, Any]:
    return {
        "unit_id": unit_id,
        "failed": failed,
        "retries": reader.retries,
        "files": [outcome.to_json() for outcome in outcomes.values()],
    }


def complete_file(event: CompleteFileTask | Any, *, s3: Any = None, token: str | None = None) -> dict[str, Any]:
    """Task 3a, one per multipart file (the CompleteFiles Map): complete its upload and verify it,
    reading it back only when it was split across units. Its record goes to `completed/`.

    Its work is one file's, never the model's: at most the Fargate threshold read back, by one Lambda.
    A failure is recorded too, so the execution fails with this file's own error.
    """
    task = CompleteFileTask.from_event(event)
    path, file_index = task.path, task.file_index
    s3 = s3 or s3_client()
    the_plan = load_plan(s3, task.plan)
    planned = the_plan.file(path)
    if file_index >= len(the_plan.files) or the_plan.files[file_index].path != planned.path:
        raise errors.InvalidRequest(f"event's file_index {file_index!r} is not the index of {path!r} in the plan")
    result_key = completion_result_key(the_plan, file_index)
    holders = [unit for unit in the_plan.units if any(item.path == planned.path for item in unit.items)]
    records = get_all_json(s3, the_plan.bucket, [unit_result_key(the_plan, unit.unit_id) for unit in holders])
    outcomes = merge_outcomes(outcomes_of(records))
    try:
        raise_unit_error(records)
        if len(records) != len(holders) or any(record.get("failed") for record in records):
            raise errors.TransferError(f"{planned.path}: a unit holding its parts has no successful result")
        record, read_back = finalize_file(s3, the_plan, planned, outcomes.get(planned.path))
    except BaseException as exc:
        failure = {"unit_id": None, "path": planned.path, "failed": True, "error": type(exc).__name__}
        put_json(s3, the_plan.bucket, result_key, {**failure, "message": str(exc)[:2000]})
        raise
    put_json(
        s3, the_plan.bucket, result_key, {"path": planned.path, "record": record.to_json(), "read_back": read_back}
    )
    return {"status": "completed", "path": planned.path, "bytes": planned.size, "read_back": read_back}


def complete_files(event: Any, *, s3: Any = None) -> dict[str, Any]:
    """Every completion item of a plan, one after another, then the plan's event back: what the
    CompleteFiles Map does, for drivers that run the tasks in one process (tests, the CLI)."""
    s3 = s3 or s3_client()
    the_plan = load_plan(s3, PlanRef.from_event(event))
    for item in completion_items(the_plan):
        complete_file(item, s3=s3)
    return dict(event)


def finalize(event: FinalizeTask | Any, *, s3: Any = None, token: str | None = None) -> dict[str, Any]:
    """Task 3b: gather the verified records of every file into files.json.

    Its work is bounded whatever the model: it reads the units' and completions' small result records
    and writes one file; it completes no upload and reads no file back (CompleteFiles did, file by
    file). When a copy unit or a completion failed, it fails first with that one's own error.
    """
    task = FinalizeTask.from_event(event)
    s3 = s3 or s3_client()
    the_plan = load_plan(s3, task.plan)
    unit_records = read_unit_records(s3, the_plan)
    recorded_ok = {record.get("unit_id") for record in unit_records if not record.get("failed")}
    completions = read_completion_records(s3, the_plan)
    completed = {record["path"]: record for record in completions if not record.get("failed")}
    multipart = {item["path"] for item in completion_items(the_plan)}
    if task.explain or any(unit.unit_id not in recorded_ok for unit in the_plan.units):
        # Nothing is gathered while any unit or completion failed or left no result: say which, and stop.
        explain_copy_failure(the_plan, unit_records, task.map_error, completions)
    missing = sorted(multipart - set(completed))
    if missing:
        raise_unit_error(completions)
        raise errors.TransferError(
            f"{', '.join(missing[:5])} of {the_plan.repo_id}@{the_plan.commit[:12]} were never completed: "
            "the CompleteFiles step (steps.complete_file) has not run for them"
        )
    outcomes = merge_outcomes(outcomes_of(unit_records))
    records: list[FileRecord] = []
    for planned in the_plan.files:
        if planned.multipart:
            records.append(FileRecord.from_json(completed[planned.path]["record"]))
        else:
            records.append(finalize_file(s3, the_plan, planned, outcomes.get(planned.path))[0])
    put_json(s3, the_plan.bucket, files_key(the_plan), [record.to_json() for record in records])
    return {
        "status": "verified",
        "bucket": the_plan.bucket,
        "plan_key": the_plan.plan_key,
        "files_key": files_key(the_plan),
        "files": len(records),
        "total_bytes": sum(record.size for record in records),
        "verified_by_read_back": sum(1 for record in completed.values() if record.get("read_back")),
    }


def publish(event: PublishTask | Any, *, s3: Any = None, token: str | None = None) -> dict[str, Any]:
    """Task 4: hash file, manifest, ref, root manifest — in that order."""
    task = PublishTask.from_event(event)
    s3 = s3 or s3_client()
    the_plan = load_plan(s3, task.plan)
    raw = publish_mod.get_bytes(s3, the_plan.bucket, files_key(the_plan))
    if raw is None:
        raise errors.InvalidRequest(f"no verified file list at {files_key(the_plan)}: run finalize first")
    records = [FileRecord.from_json(item) for item in json.loads(raw)]
    is_head = publish_mod.hub_head_check(the_plan.repo_id, the_plan.revision, the_plan.commit, token=token)
    published = publish_mod.publish(s3, the_plan, records, is_head=is_head, policy=RequestPolicy.from_env())
    return {"status": "published", "repo_id": the_plan.repo_id, "revision": the_plan.revision, **published.to_json()}


def cleanup(event: CleanupTask | Any, *, s3: Any = None, token: str | None = None) -> dict[str, Any]:
    """Task 5: abort open uploads, delete a failed run's objects, delete the plan's work files."""
    task = CleanupTask.from_event(event)
    if task.plan is None:
        return {"status": "cleaned", "aborted_uploads": 0, "deleted_work_files": 0}
    s3 = s3 or s3_client()
    try:
        the_plan = load_plan(s3, task.plan)
    except errors.InvalidRequest:
        return {"status": "cleaned", "aborted_uploads": 0, "deleted_work_files": 0}
    counts = cleanup_plan(s3, the_plan)
    deleted_work = delete_prefix(s3, the_plan.bucket, the_plan.work_dir)
    return {"status": "cleaned", **counts, "deleted_work_files": deleted_work}


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Delete every version (and delete marker) under `prefix`; returns how many objects had a version."""
    targets: list[dict[str, str]] = []
    keys: set[str] = set()
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                targets.append({"Key": entry["Key"], "VersionId": entry["VersionId"]})
                keys.add(entry["Key"])
        for start in range(0, len(targets), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": targets[start : start + 1000], "Quiet": True})
    except ClientError as exc:
        raise s3_error(exc, bucket, f"deleting the work files under {prefix}") from exc
    return len(keys)
