"""The state machine's tasks as plain functions: JSON in, JSON out (docs/contributing/internals.md,
"State machine task I/O").

The Lambda handlers and the Fargate copier call these and nothing else; `engine.sync` runs the same
typed functions (`prepare_plan`, `transfer.run_parts`, `finalize_files`, `publish.publish`,
`cleanup_plan`) in one process. The Hub token only ever arrives as the `token=` keyword.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from model_cache import claims, errors, ids, layout
from model_cache import publish as publish_mod
from model_cache.governance import RequestPolicy
from model_cache.hubapi import check_access, resolve
from model_cache.ids import validate_bucket, validate_plan_id, validate_prefix, validate_work_prefix
from model_cache.limits import check_plan, make_run_plan
from model_cache.manifest import FileRecord
from model_cache.plan import DEFAULT_WORK_PREFIX, Plan, PlannedFile, PlanOptions, new_plan_id, work_dir_for
from model_cache.publish import Published
from model_cache.refresh import reusable_sources
from model_cache.request_message import validate_requested_by
from model_cache.selection import select_paths, validate_globs
from model_cache.tracked import REFRESH_REQUESTER
from model_cache.transfer import (
    FileOutcome,
    HubReader,
    abort_uploads,
    complete_upload,
    copy_files,
    delete_own_write,
    list_keys,
    read_back_digests,
    run_parts,
    s3_client,
    s3_error,
    start_uploads,
)

INLINE_UNITS_LIMIT = 16  # keeps every result under ~8 KB; the Map reads units.json from S3 anyway


# ---------------------------------------------------------------------------------------------
# Typed building blocks, shared with the engine
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkippedGated:
    """A scheduled refresh of a gated repo on a stack without a Hub token: nothing to do, nothing written."""

    repo_id: str
    revision: str
    commit: str


def prepare_plan(
    s3: Any,
    repo_id: str,
    revision: str,
    *,
    bucket: str,
    prefix: str = layout.DEFAULT_PREFIX,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    force: bool = False,
    options: PlanOptions | None = None,
    token: str | None = None,
    plan_id: str | None = None,
    work_prefix: str = DEFAULT_WORK_PREFIX,
    requested_by: str | None = None,
    policy: RequestPolicy | None = None,
    gated_prefix: str | None = None,
) -> Plan | Published | SkippedGated:
    """Resolve (one Hub call), and either re-point refs of an already published commit (no copy)
    or select files, plan units and start their multipart uploads.

    `policy` (the platform's allow lists and quotas) refuses the request before the Hub is asked for
    more than the listing, and before anything is written."""
    ids.validate_repo_id(repo_id)
    ids.validate_revision(revision)
    validate_bucket(bucket)
    policy = policy or RequestPolicy()
    policy.check_repo(repo_id)
    policy.check_force(force, requested_by)
    prefix = validate_prefix(prefix)
    include = validate_globs(list(include), "include")
    exclude = validate_globs(list(exclude), "exclude")
    snapshot = resolve(repo_id, revision, token=token)
    if snapshot.gated and token is None and requested_by == REFRESH_REQUESTER:
        # A scheduled refresh of a gated model on a stack without a token could only fail (GatedRepo) and
        # page someone every night: it is skipped, before anything is written, and counted instead.
        return SkippedGated(repo_id=repo_id, revision=revision, commit=snapshot.commit)
    if snapshot.gated and gated_prefix:
        # A gated repo lives under its own prefix, readable only by the teams given GatedReadOnlyPolicy.
        prefix = validate_prefix(gated_prefix)
    by_path = {hub_file.path: hub_file for hub_file in snapshot.files}
    chosen = select_paths(list(by_path), include, exclude)
    if not chosen:
        raise errors.InvalidRequest(
            f"include {list(include)} / exclude {list(exclude)} select none of the {len(by_path)} files "
            f"of {repo_id}@{revision}"
        )
    # Refused before anything is written (the claim included) when the plan would break an AWS limit.
    every_file = [by_path[path] for path in chosen]
    policy.check_selection(repo_id, revision, every_file)
    if policy.limits_repo_size:
        # The quota is on the repo the manifest would hold: what is published for the commit plus this
        # selection. Publish checks the same union again, since a concurrent run may add to it meanwhile.
        held = publish_mod.get_json(s3, bucket, layout.manifest_key(prefix, repo_id, snapshot.commit))
        policy.check_union(repo_id, revision, (held or {}).get("files", []), every_file)
    check_plan(make_run_plan(snapshot, every_file, bucket=bucket, prefix=prefix, options=options))
    plan_id = plan_id or new_plan_id()
    # Claimed before the manifest is read, so gc, which marks before it looks for claims, either sees
    # this run and keeps the snapshot, or this run sees gc at work and stops (model_cache.claims).
    claim_key = claims.claim(s3, bucket, work_prefix, prefix, repo_id, snapshot.commit, plan_id)
    try:
        if not force:
            existing = publish_mod.get_json(s3, bucket, layout.manifest_key(prefix, repo_id, snapshot.commit))
            if existing is not None:
                # "Published" means published for this selection (docs/architecture.md 3.2): a manifest that
                # lacks some chosen file is not; only the missing files are copied, and publish writes the union.
                have = {entry.get("path") for entry in existing.get("files", [])}
                if all(path in have for path in chosen):
                    # The revision was resolved to this commit a moment ago: it is the head.
                    published = publish_mod.point_refs(
                        s3, bucket, prefix, repo_id, revision, existing, is_head=lambda: True
                    )
                    claims.release(s3, bucket, claim_key)
                    return published
                chosen = [path for path in chosen if path not in have]
        selected = [by_path[path] for path in chosen]
        check_access(snapshot, selected[0].path, token=token)
        # Incremental refresh: files whose bytes the previous snapshot of this revision already holds are
        # copied inside S3; --force means "everything from the Hub again".
        reuse = {} if force else reusable_sources(s3, bucket, prefix, repo_id, revision, selected)
        # Split files or whole ones, whichever finishes sooner (limits.fastest_plan).
        plan = make_run_plan(
            snapshot,
            selected,
            bucket=bucket,
            prefix=prefix,
            options=options,
            plan_id=plan_id,
            work_prefix=work_prefix,
            reuse=reuse,
            include=include,
            exclude=exclude,
        )
        plan.claim_key = claim_key
        plan.requested_by = requested_by
        check_plan(plan)
        try:
            start_uploads(s3, plan)
        except BaseException:
            abort_uploads(s3, plan)
            raise
    except BaseException:
        claims.release(s3, bucket, claim_key)
        raise
    return plan


def merge_outcomes(batches: Iterable[dict[str, FileOutcome]]) -> dict[str, FileOutcome]:
    """Combine per-unit outcomes: parts of a split file are pooled; digests exist only for whole files."""
    merged: dict[str, FileOutcome] = {}
    for batch in batches:
        for path, outcome in batch.items():
            target = merged.setdefault(path, FileOutcome(path=path))
            target.parts.extend(outcome.parts)
            target.digests = target.digests or outcome.digests
            target.stored = target.stored or outcome.stored
    return merged


def finalize_file(s3: Any, plan: Plan, planned: PlannedFile, outcome: FileOutcome | None) -> tuple[FileRecord, bool]:
    """Complete one file's multipart upload (if it has one) and verify it; returns its record and
    whether it was verified by reading it back (a file split across units: no unit saw it whole).

    Completion is write-once (If-None-Match: *): a key another run already filled is adopted only if
    its bytes check out, and never replaced. On a read-back mismatch only the object this run itself
    created is taken off its key (transfer.delete_own_write: a conditional delete on its ETag); a
    failure never deletes a verified object, so a concurrent or earlier run's published files are
    never touched.
    """
    if outcome is None:
        raise errors.TransferError(f"{planned.path} was never copied: a unit is missing its result")
    read_back = False
    if planned.multipart:
        full_crc = outcome.digests.crc64nvme if outcome.digests else None
        stored = complete_upload(s3, plan, planned, outcome.parts, full_crc)
        digests = outcome.digests
        if digests is None:
            try:
                digests = read_back_digests(s3, plan.bucket, planned, stored)
            except errors.IntegrityError:
                delete_own_write(s3, plan.bucket, planned.key, stored)
                raise
            read_back = True
    else:
        if outcome.stored is None or outcome.digests is None:
            raise errors.TransferError(f"{planned.path} was never written: a unit is missing its result")
        stored, digests = outcome.stored, outcome.digests
    record = FileRecord(
        path=planned.path,
        size=planned.size,
        sha256=digests.sha256,
        git_oid=planned.git_oid,
        lfs=planned.lfs,
        key=planned.key,
        version_id=stored.version_id,
        crc64nvme=stored.crc64nvme,
    )
    return record, read_back


def finalize_files(s3: Any, plan: Plan, outcomes: dict[str, FileOutcome]) -> tuple[list[FileRecord], int]:
    """`finalize_file` for every file of the plan, in one process (`engine.sync`, whose units are whole
    files); returns the records and how many files were verified by reading back."""
    records: list[FileRecord] = []
    read_back = 0
    for planned in plan.files:
        record, was_read_back = finalize_file(s3, plan, planned, outcomes.get(planned.path))
        records.append(record)
        read_back += was_read_back
    return records, read_back


def cleanup_plan(s3: Any, plan: Plan) -> dict[str, int]:
    """Abort the plan's open uploads. Objects already at snapshot keys stay: each one is verified
    (an unverified one is deleted where its check failed), may be named by another run's manifest,
    and is adopted by the next run of the commit; gc removes unpublished leftovers after its grace."""
    aborted = abort_uploads(s3, plan)
    claims.release(s3, plan.bucket, plan.claim_key)
    return {"aborted_uploads": aborted}


# ---------------------------------------------------------------------------------------------
# Work files in S3
# ---------------------------------------------------------------------------------------------


def _put_json(s3: Any, bucket: str, key: str, data: Any) -> None:
    publish_mod.put_bytes(s3, bucket, key, json.dumps(data, separators=(",", ":")).encode(), "application/json")


def _require(event: dict[str, Any], name: str) -> Any:
    if name not in event or event[name] in (None, ""):
        raise errors.InvalidRequest(f"event has no {name!r}")
    return event[name]


def load_plan(s3: Any, event: dict[str, Any]) -> Plan:
    if not isinstance(event, dict):
        raise errors.InvalidRequest(f"event must be a JSON object, got {type(event).__name__}")
    bucket = validate_bucket(_require(event, "bucket"))
    plan_key = _require(event, "plan_key")
    data = publish_mod.get_json(s3, bucket, plan_key)
    if data is None:
        raise errors.InvalidRequest(f"no plan at s3://{bucket}/{plan_key}: run the plan task first")
    return Plan.from_json(data)


def unit_result_key(plan: Plan, unit_id: int) -> str:
    return f"{plan.work_dir}units/{unit_id:06d}.json"


def files_key(plan: Plan) -> str:
    return f"{plan.work_dir}files.json"


def units_key(plan: Plan) -> str:
    return f"{plan.work_dir}units.json"


def completions_key(plan: Plan) -> str:
    return f"{plan.work_dir}completions.json"


def completion_result_key(plan: Plan, file_index: int) -> str:
    return f"{plan.work_dir}completed/{file_index:06d}.json"


def completion_items(plan: Plan) -> list[dict[str, Any]]:
    """One item per multipart file, for the CompleteFiles Map: each is completed (and, when split
    across units, read back) by its own invocation, so no invocation's work grows with the model."""
    return [
        {"bucket": plan.bucket, "plan_key": plan.plan_key, "path": planned.path, "file_index": index}
        for index, planned in enumerate(plan.files)
        if planned.multipart
    ]


def _get_all_json(s3: Any, bucket: str, keys: list[str]) -> list[dict[str, Any]]:
    """Small JSON work files, fetched 16 at a time (a plan may leave thousands), in the order of `keys`."""
    if len(keys) <= 1:
        found = [publish_mod.get_json(s3, bucket, key) for key in keys]
    else:
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="work-files") as pool:
            found = list(pool.map(lambda key: publish_mod.get_json(s3, bucket, key), keys))
    return [record for record in found if record is not None]


def _unit_records(s3: Any, plan: Plan) -> list[dict[str, Any]]:
    """Every unit result file of the plan, lowest unit id first (the keys sort by the padded id)."""
    return _get_all_json(s3, plan.bucket, list_keys(s3, plan.bucket, f"{plan.work_dir}units/"))


def _completion_records(s3: Any, plan: Plan) -> list[dict[str, Any]]:
    return _get_all_json(s3, plan.bucket, list_keys(s3, plan.bucket, f"{plan.work_dir}completed/"))


def _outcomes_of(records: Iterable[dict[str, Any]]) -> list[dict[str, FileOutcome]]:
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
    _raise_unit_error(records)
    _raise_unit_error(completions)
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


def _raise_unit_error(records: Iterable[dict[str, Any]]) -> None:
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


# ---------------------------------------------------------------------------------------------
# The tasks
# ---------------------------------------------------------------------------------------------


def _parse_plan_event(event: Any) -> dict[str, Any]:
    if isinstance(event, str):
        event = {"repo_id": event}
    if not isinstance(event, dict):
        raise errors.InvalidRequest(f"event must be a JSON object, got {type(event).__name__}")
    repo_ref = _require(event, "repo_id")
    if not isinstance(repo_ref, str):
        raise errors.InvalidRequest(f"repo_id must be a string, got {type(repo_ref).__name__}")
    repo_id, ref_revision = ids.parse_repo_ref(repo_ref)
    revision = event.get("revision") or ref_revision or layout.DEFAULT_REVISION
    if ref_revision and event.get("revision") and ref_revision != event["revision"]:
        raise errors.InvalidRequest(f"repo_id says @{ref_revision} but revision says {event['revision']!r}")
    force = event.get("force", False)
    if not isinstance(force, bool):
        raise errors.InvalidRequest(f"force must be true or false, got {force!r}")
    plan_id = validate_plan_id(event.get("plan_id") or new_plan_id())
    work_prefix = validate_work_prefix(event.get("work_prefix") or DEFAULT_WORK_PREFIX)
    gated_prefix = event.get("gated_prefix") or None
    if gated_prefix is not None:
        gated_prefix = validate_prefix(gated_prefix)
        if gated_prefix == work_prefix:
            raise errors.InvalidRequest(f"gated_prefix {gated_prefix!r} is the work prefix")
    return {
        "requested_by": validate_requested_by(event.get("requested_by")),
        "gated_prefix": gated_prefix,
        "repo_id": repo_id,
        "revision": ids.validate_revision(revision),
        "include": validate_globs(event.get("include"), "include"),
        "exclude": validate_globs(event.get("exclude"), "exclude"),
        "force": force,
        "bucket": validate_bucket(_require(event, "bucket")),
        "prefix": validate_prefix(event.get("prefix", layout.DEFAULT_PREFIX)),
        "options": PlanOptions.from_json(event.get("options")),
        "plan_id": plan_id,
        "work_prefix": work_prefix.strip("/"),
    }


def plan(event: Any, *, token: str | None = None, s3: Any = None) -> dict[str, Any]:
    """Task 1: resolve, plan, start uploads; store plan.json and units.json under the work prefix."""
    args = _parse_plan_event(event)
    s3 = s3 or s3_client()
    prepared = _stored_plan(s3, args) or prepare_plan(
        s3,
        args["repo_id"],
        args["revision"],
        token=token,
        policy=RequestPolicy.from_env(),
        **_without(args, "repo_id", "revision"),
    )
    base = {
        "repo_id": args["repo_id"],
        "revision": args["revision"],
        "bucket": args["bucket"],
        "prefix": args["prefix"],
        "plan_id": args["plan_id"],
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
        _put_json(s3, the_plan.bucket, the_plan.plan_key, the_plan.to_json())
        _put_json(s3, the_plan.bucket, units_key(the_plan), items)
        _put_json(s3, the_plan.bucket, completions_key(the_plan), completion_items(the_plan))
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


def _stored_plan(s3: Any, args: dict[str, Any]) -> Plan | None:
    """The plan an earlier attempt of this very task stored (a retried Plan task has the same plan id).

    Reusing it keeps its multipart uploads: planning again would start new ones and orphan the first
    attempt's. Only a complete plan is stored (after every upload started), and only one for the same
    repo and revision is taken.
    """
    key = f"{work_dir_for(args['work_prefix'], args['plan_id'])}plan.json"
    data = publish_mod.get_json(s3, args["bucket"], key)
    if data is None:
        return None
    stored = Plan.from_json(data)
    prefixes = {args["prefix"], args.get("gated_prefix") or args["prefix"]}
    if (stored.repo_id, stored.revision) != (args["repo_id"], args["revision"]) or stored.prefix not in prefixes:
        raise errors.InvalidRequest(
            f"plan id {args['plan_id']!r} already holds a plan for {stored.repo_id}@{stored.revision}; "
            "use another plan id"
        )
    return stored


def _without(args: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in args.items() if key not in names}


def copy_unit(
    event: Any, *, token: str | None = None, s3: Any = None, concurrency: int | None = None
) -> dict[str, Any]:
    """Task 2: copy one unit's parts (Lambda or Fargate), verifying whole files in-stream."""
    started = time.monotonic()
    s3 = s3 or s3_client()
    the_plan = load_plan(s3, event)
    unit_id = event.get("unit_id")
    if not isinstance(unit_id, int) or isinstance(unit_id, bool):
        raise errors.InvalidRequest(f"event has no integer 'unit_id' (got {unit_id!r})")
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
        failure.update(path=event.get("path"), error=type(exc).__name__, message=str(exc)[:2000])
        _put_json(s3, the_plan.bucket, result_key, failure)
        raise
    _put_json(s3, the_plan.bucket, result_key, _unit_record(unit_id, reader, outcomes, failed=False))
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


def complete_file(event: Any, *, s3: Any = None, token: str | None = None) -> dict[str, Any]:
    """Task 3a, one per multipart file (the CompleteFiles Map): complete its upload and verify it,
    reading it back only when it was split across units. Its record goes to `completed/`.

    Its work is one file's, never the model's: at most the Fargate threshold read back, by one Lambda.
    A failure is recorded too, so the execution fails with this file's own error.
    """
    s3 = s3 or s3_client()
    the_plan = load_plan(s3, event)
    path = _require(event, "path")
    file_index = event.get("file_index")
    planned = the_plan.file(str(path))
    if not isinstance(file_index, int) or the_plan.files[file_index].path != planned.path:
        raise errors.InvalidRequest(f"event's file_index {file_index!r} is not the index of {path!r} in the plan")
    result_key = completion_result_key(the_plan, file_index)
    holders = [unit for unit in the_plan.units if any(item.path == planned.path for item in unit.items)]
    records = _get_all_json(s3, the_plan.bucket, [unit_result_key(the_plan, unit.unit_id) for unit in holders])
    outcomes = merge_outcomes(_outcomes_of(records))
    try:
        _raise_unit_error(records)
        if len(records) != len(holders) or any(record.get("failed") for record in records):
            raise errors.TransferError(f"{planned.path}: a unit holding its parts has no successful result")
        record, read_back = finalize_file(s3, the_plan, planned, outcomes.get(planned.path))
    except BaseException as exc:
        failure = {"unit_id": None, "path": planned.path, "failed": True, "error": type(exc).__name__}
        _put_json(s3, the_plan.bucket, result_key, {**failure, "message": str(exc)[:2000]})
        raise
    _put_json(
        s3, the_plan.bucket, result_key, {"path": planned.path, "record": record.to_json(), "read_back": read_back}
    )
    return {"status": "completed", "path": planned.path, "bytes": planned.size, "read_back": read_back}


def complete_files(event: Any, *, s3: Any = None) -> dict[str, Any]:
    """Every completion item of a plan, one after another, then the plan's event back: what the
    CompleteFiles Map does, for drivers that run the tasks in one process (tests, the CLI)."""
    s3 = s3 or s3_client()
    the_plan = load_plan(s3, event)
    for item in completion_items(the_plan):
        complete_file(item, s3=s3)
    return dict(event)


def finalize(event: Any, *, s3: Any = None, token: str | None = None) -> dict[str, Any]:
    """Task 3b: gather the verified records of every file into files.json.

    Its work is bounded whatever the model: it reads the units' and completions' small result records
    and writes one file; it completes no upload and reads no file back (CompleteFiles did, file by
    file). When a copy unit or a completion failed, it fails first with that one's own error.
    """
    s3 = s3 or s3_client()
    the_plan = load_plan(s3, event)
    unit_records = _unit_records(s3, the_plan)
    recorded_ok = {record.get("unit_id") for record in unit_records if not record.get("failed")}
    completions = _completion_records(s3, the_plan)
    completed = {record["path"]: record for record in completions if not record.get("failed")}
    multipart = {item["path"] for item in completion_items(the_plan)}
    if event.get("explain") or any(unit.unit_id not in recorded_ok for unit in the_plan.units):
        # Nothing is gathered while any unit or completion failed or left no result: say which, and stop.
        explain_copy_failure(the_plan, unit_records, event.get("map_error"), completions)
    missing = sorted(multipart - set(completed))
    if missing:
        _raise_unit_error(completions)
        raise errors.TransferError(
            f"{', '.join(missing[:5])} of {the_plan.repo_id}@{the_plan.commit[:12]} were never completed: "
            "the CompleteFiles step (steps.complete_file) has not run for them"
        )
    outcomes = merge_outcomes(_outcomes_of(unit_records))
    records: list[FileRecord] = []
    for planned in the_plan.files:
        if planned.multipart:
            records.append(FileRecord.from_json(completed[planned.path]["record"]))
        else:
            records.append(finalize_file(s3, the_plan, planned, outcomes.get(planned.path))[0])
    _put_json(s3, the_plan.bucket, files_key(the_plan), [record.to_json() for record in records])
    return {
        "status": "verified",
        "bucket": the_plan.bucket,
        "plan_key": the_plan.plan_key,
        "files_key": files_key(the_plan),
        "files": len(records),
        "total_bytes": sum(record.size for record in records),
        "verified_by_read_back": sum(1 for record in completed.values() if record.get("read_back")),
    }


def publish(event: Any, *, s3: Any = None, token: str | None = None) -> dict[str, Any]:
    """Task 4: hash file, manifest, ref, root manifest — in that order."""
    s3 = s3 or s3_client()
    the_plan = load_plan(s3, event)
    raw = publish_mod.get_bytes(s3, the_plan.bucket, files_key(the_plan))
    if raw is None:
        raise errors.InvalidRequest(f"no verified file list at {files_key(the_plan)}: run finalize first")
    records = [FileRecord.from_json(item) for item in json.loads(raw)]
    is_head = publish_mod.hub_head_check(the_plan.repo_id, the_plan.revision, the_plan.commit, token=token)
    published = publish_mod.publish(s3, the_plan, records, is_head=is_head, policy=RequestPolicy.from_env())
    return {"status": "published", "repo_id": the_plan.repo_id, "revision": the_plan.revision, **published.to_json()}


def cleanup(event: Any, *, s3: Any = None, token: str | None = None) -> dict[str, Any]:
    """Task 5: abort open uploads, delete a failed run's objects, delete the plan's work files."""
    s3 = s3 or s3_client()
    if not isinstance(event, dict) or not event.get("plan_key"):
        return {"status": "cleaned", "aborted_uploads": 0, "deleted_work_files": 0}
    try:
        the_plan = load_plan(s3, event)
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
