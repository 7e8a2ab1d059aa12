"""Settling a plan's files once they are copied: complete each multipart upload write-once, verify what no
unit saw whole by reading it back, and clean up what a plan leaves. Shared by the tasks and the engine."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from model_cache.contract import errors
from model_cache.contract.manifest import FileRecord
from model_cache.pipeline import claims
from model_cache.pipeline.hub_to_s3 import FileOutcome
from model_cache.pipeline.multipart import (
    abort_uploads,
    complete_upload,
    delete_own_write,
    read_back_digests,
)
from model_cache.pipeline.plan import Plan, PlannedFile


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
    created is taken off its key (multipart.delete_own_write: a conditional delete on its ETag); a
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
