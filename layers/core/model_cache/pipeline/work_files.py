"""A plan's work files in S3 (docs/contributing/internals.md, "Where the work lives"): the stored plan, the
units' and completions' records, and the failure they explain when a Map loses an item."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from model_cache.adapters.s3 import list_keys
from model_cache.contract import errors, layout
from model_cache.pipeline import publish as publish_mod
from model_cache.pipeline.events import PlanRef
from model_cache.pipeline.hub_to_s3 import FileOutcome
from model_cache.pipeline.plan import Plan


def put_json(s3: Any, bucket: str, key: str, data: Any) -> None:
    publish_mod.put_bytes(s3, bucket, key, json.dumps(data, separators=(",", ":")).encode(), "application/json")


def load_plan(s3: Any, where: PlanRef | dict[str, Any]) -> Plan:
    """The plan stored at `where` (a task's `PlanRef`, or an event or result naming bucket and plan_key)."""
    ref = where if isinstance(where, PlanRef) else PlanRef.from_event(where)
    data = publish_mod.get_json(s3, ref.bucket, ref.plan_key)
    if data is None:
        raise errors.InvalidRequest(f"no plan at s3://{ref.bucket}/{ref.plan_key}: run the plan task first")
    return Plan.from_json(data)


def unit_result_key(plan: Plan, unit_id: int) -> str:
    return layout.unit_result_key(plan.work_dir, unit_id)


def files_key(plan: Plan) -> str:
    return layout.files_key(plan.work_dir)


def units_key(plan: Plan) -> str:
    return layout.units_key(plan.work_dir)


def completions_key(plan: Plan) -> str:
    return layout.completions_key(plan.work_dir)


def completion_result_key(plan: Plan, file_index: int) -> str:
    return layout.completion_result_key(plan.work_dir, file_index)


def completion_items(plan: Plan) -> list[dict[str, Any]]:
    """One item per multipart file, for the CompleteFiles Map: each is completed (and, when split
    across units, read back) by its own invocation, so no invocation's work grows with the model."""
    return [
        {"bucket": plan.bucket, "plan_key": plan.plan_key, "path": planned.path, "file_index": index}
        for index, planned in enumerate(plan.files)
        if planned.multipart
    ]


def get_all_json(s3: Any, bucket: str, keys: list[str]) -> list[dict[str, Any]]:
    """Small JSON work files, fetched 16 at a time (a plan may leave thousands), in the order of `keys`."""
    if len(keys) <= 1:
        found = [publish_mod.get_json(s3, bucket, key) for key in keys]
    else:
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="work-files") as pool:
            found = list(pool.map(lambda key: publish_mod.get_json(s3, bucket, key), keys))
    return [record for record in found if record is not None]


def read_unit_records(s3: Any, plan: Plan) -> list[dict[str, Any]]:
    """Every unit result file of the plan, lowest unit id first (the keys sort by the padded id)."""
    return get_all_json(s3, plan.bucket, list_keys(s3, plan.bucket, layout.unit_results_folder(plan.work_dir)))


def read_completion_records(s3: Any, plan: Plan) -> list[dict[str, Any]]:
    return get_all_json(s3, plan.bucket, list_keys(s3, plan.bucket, layout.completion_results_folder(plan.work_dir)))


def outcomes_of(records: Iterable[dict[str, Any]]) -> list[dict[str, FileOutcome]]:
    return [
        {item["path"]: FileOutcome.from_json(item) for item in record["files"]}
        for record in records
        if not record.get("failed")
    ]


def explain_copy_failure(
    plan: Plan, records: list[dict[str, Any]], map_error: Any, completions: Sequence[dict[str, Any]] = ()
) -> None:
    """The failure path after the copy or completion Map: say which unit or file failed and why, from
    the records alone.

    Completes no upload and reads no file back (that is finalize's work on the success path, and here it
    would replace the real cause with a secondary one, or outlive the cleanup that follows). Always raises:
    the failed unit's own domain error, or a TransferError naming the units that left no record (stopped
    by a timeout or out of memory before they could write one) and the Map's own error.
    """
    raise_unit_error(records)
    raise_unit_error(completions)
    recorded = {record.get("unit_id") for record in records}
    silent = [unit for unit in plan.units if unit.unit_id not in recorded]
    cause = ""
    if isinstance(map_error, dict):
        cause = f" (the Map: {map_error.get('Error', '?')}: {str(map_error.get('Cause', ''))[:300]})"
    completed = {record.get("path") for record in completions}
    unfinished = [item["path"] for item in completion_items(plan) if item["path"] not in completed]
    if not silent and completions and unfinished:
        raise errors.TransferError(
            f"completing {', '.join(unfinished[:5])} of {plan.repo_id}@{plan.commit[:12]} stopped without a result: "
            f"a timeout or out of memory; see the finalize log of this execution{cause}"
        )
    if silent:
        named = ", ".join(f"{unit.unit_id} ({unit.items[0].path}, {unit.runner})" for unit in silent[:5])
        more = f" and {len(silent) - 5} more" if len(silent) > 5 else ""
        raise errors.TransferError(
            f"copy unit(s) {named}{more} of {plan.repo_id}@{plan.commit[:12]} stopped without a result: a timeout or "
            f"out of memory; see the copy-unit log of this execution{cause}"
        )
    raise errors.TransferError(f"the copy of {plan.repo_id}@{plan.commit[:12]} failed{cause}")


def raise_unit_error(records: Iterable[dict[str, Any]]) -> None:
    """Raise the lowest-numbered failed unit's own domain error, as its own class.

    A Distributed Map that loses an item fails as `States.ExceedToleratedFailureThreshold`, which
    says nothing about why; finalize runs on that path first, so the execution's `Fail` shows the
    unit's real error (`GatedRepo`, `IntegrityError`, ...) instead.
    """
    for record in records:
        if record.get("failed") and record.get("error"):
            error_class = getattr(errors, str(record["error"]), None)
            if not (isinstance(error_class, type) and issubclass(error_class, errors.ModelCacheError)):
                error_class = errors.TransferError
            task = "completing" if record.get("unit_id") is None else f"copy unit {record.get('unit_id')}"
            raise error_class(f"{task} ({record.get('path')}): {record.get('message')}")
