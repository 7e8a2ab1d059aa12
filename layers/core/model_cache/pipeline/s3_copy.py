"""Copies inside S3 for an incremental refresh: files the previous snapshot already holds, by CopyObject or
UploadPartCopy pinned to the recorded version and ETag, their CRC64NVME checked against the record."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from botocore.exceptions import ClientError

from model_cache.adapters.progress import NullProgress, Progress
from model_cache.adapters.s3 import _version, is_missing, s3_error, version_or_none
from model_cache.contract import errors
from model_cache.pipeline.hub_to_s3 import FileOutcome
from model_cache.pipeline.multipart import (
    CHECKSUM_ALGORITHM,
    PartResult,
    StoredObject,
    adopt_existing,
    delete_own_write,
    precondition_failed,
)
from model_cache.pipeline.plan import Plan, PlannedFile, UnitItem
from model_cache.pipeline.verify import FileDigests


def copy_files(
    s3: Any,
    plan: Plan,
    items: Sequence[UnitItem],
    *,
    concurrency: int,
    progress: Progress | None = None,
    outcomes: dict[str, FileOutcome] | None = None,
) -> dict[str, FileOutcome]:
    """Copy the `copy_from` files named by `items` from the previous snapshot, inside S3.

    CopyObject for a file up to 5 GiB, UploadPartCopy into the plan's multipart upload above that;
    each request pins the source by ETag (CopySourceIfMatch). S3 copies bytes exactly, so a copy is
    verified by checksum, not by reading it: the new object's CRC64NVME must equal the one the
    previous manifest recorded for verified bytes (for a multipart copy S3 checks it at completion).
    """
    progress = progress or NullProgress()
    outcomes = outcomes if outcomes is not None else {}
    tasks: list[tuple[PlannedFile, int]] = []
    for item in items:
        planned = plan.file(item.path)
        if planned.copy_from is None:
            raise errors.InvalidRequest(f"{planned.path} has no copy source: it must come from the Hub")
        if planned.multipart and planned.upload_id is None:
            raise errors.InvalidRequest(f"{planned.path} has no multipart upload: run plan first")
        outcomes[planned.path] = FileOutcome(path=planned.path)
        progress.file_started(planned.path, planned.size)
        tasks.extend((planned, number) for number in range(item.first_part, item.last_part + 1))
    lock = threading.Lock()

    def copy_one(planned: PlannedFile, part_number: int) -> None:
        if planned.multipart:
            part = _copy_part(s3, plan, planned, part_number)
            with lock:
                outcomes[planned.path].parts.append(part)
        else:
            stored = _copy_object(s3, plan, planned)
            try:
                _check_copy(planned, stored)
            except errors.IntegrityError:
                delete_own_write(s3, plan.bucket, planned.key, stored)  # a bad copy this run made, only
                raise
            with lock:
                outcomes[planned.path].stored = stored
        start, end = planned.part_range(part_number)
        progress.advance(planned.path, end - start)

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="s3copy") as pool:
        futures = [pool.submit(copy_one, planned, number) for planned, number in tasks]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            future.cancel()
        failures = [f.exception() for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
    if failures:
        first = failures[0]
        if isinstance(first, errors.ModelCacheError):
            raise first
        raise errors.TransferError(f"copy inside S3 failed: {type(first).__name__}: {first}") from first
    for item in items:
        planned = plan.file(item.path)
        source = planned.copy_from
        assert source is not None  # checked above
        outcome = outcomes[planned.path]
        crc = outcome.stored.crc64nvme if outcome.stored is not None else source.crc64nvme
        if crc is not None:
            # The recorded sha256 (and, for a regular file, the git blob id the bytes were matched by)
            # stand for these bytes: the copy is byte-exact and its CRC64NVME matches (single copy) or
            # will be checked by S3 at completion (multipart). Without a CRC, finalize reads it back.
            outcome.digests = FileDigests(
                size=planned.size,
                sha256=source.sha256,
                git_sha1=None if planned.lfs else planned.git_oid,
                crc64nvme=crc,
            )
        progress.file_done(planned.path)
    return outcomes


def _copy_source(plan: Plan, planned: PlannedFile) -> dict[str, str]:
    source = planned.copy_from
    assert source is not None
    # Pinned by version where the bucket has versions: a delete marker placed since planning does not
    # hide the verified bytes (and CopySourceIfMatch still pins them by ETag).
    pinned = {"VersionId": source.version_id} if source.version_id else {}
    return {"Bucket": plan.bucket, "Key": source.key, **pinned}


def _copy_error(exc: ClientError, plan: Plan, planned: PlannedFile) -> errors.ModelCacheError:
    code = exc.response.get("Error", {}).get("Code", "")
    if code in ("PreconditionFailed", "412", "NoSuchKey", "NoSuchVersion", "404"):
        source = planned.copy_from.key if planned.copy_from else "?"
        return errors.IntegrityError(
            f"{planned.path}: the previous snapshot's object {source} changed or vanished since planning ({code}); "
            "run the refresh again (it will fetch this file from the Hub)"
        )
    return s3_error(exc, plan.bucket, f"copying {planned.path} from the previous snapshot")


def _key_exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_missing(s3, bucket, key, exc):
            return False
        raise s3_error(exc, bucket, f"checking {key}") from exc
    return True


def _copy_object(s3: Any, plan: Plan, planned: PlannedFile) -> StoredObject:
    source = planned.copy_from
    assert source is not None
    # S3 honours If-None-Match on CopyObject; moto ignores it, so a taken key is also looked for first.
    if _key_exists(s3, plan.bucket, planned.key):
        return adopt_existing(s3, plan.bucket, planned, source.crc64nvme)
    try:
        response = s3.copy_object(
            Bucket=plan.bucket,
            Key=planned.key,
            CopySource=_copy_source(plan, planned),
            CopySourceIfMatch=source.etag,
            ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            MetadataDirective="COPY",
            IfNoneMatch="*",
        )
    except ClientError as exc:
        if precondition_failed(exc) and _key_exists(s3, plan.bucket, planned.key):
            return adopt_existing(s3, plan.bucket, planned, source.crc64nvme)
        raise _copy_error(exc, plan, planned) from exc
    version_id = version_or_none(response.get("VersionId"))
    result = response.get("CopyObjectResult", {})
    crc = result.get("ChecksumCRC64NVME")
    if crc is None:
        head = s3.head_object(Bucket=plan.bucket, Key=planned.key, ChecksumMode="ENABLED", **_version(version_id))
        crc = head.get("ChecksumCRC64NVME")
    return StoredObject(version_id=version_id, crc64nvme=crc, etag=result.get("ETag"))


def _check_copy(planned: PlannedFile, stored: StoredObject) -> None:
    """A copy is byte-exact only if its CRC64NVME is the one recorded for the verified source bytes."""
    source = planned.copy_from
    if source is not None and source.crc64nvme is not None and stored.crc64nvme != source.crc64nvme:
        raise errors.IntegrityError(
            f"{planned.path}: the copy has CRC64NVME {stored.crc64nvme}, the previous manifest recorded "
            f"{source.crc64nvme}; nothing was published"
        )


def _copy_part(s3: Any, plan: Plan, planned: PlannedFile, part_number: int) -> PartResult:
    source = planned.copy_from
    assert source is not None
    start, end = planned.part_range(part_number)
    try:
        response = s3.upload_part_copy(
            Bucket=plan.bucket,
            Key=planned.key,
            UploadId=planned.upload_id,
            PartNumber=part_number,
            CopySource=_copy_source(plan, planned),
            CopySourceIfMatch=source.etag,
            CopySourceRange=f"bytes={start}-{end - 1}",
        )
    except ClientError as exc:
        raise _copy_error(exc, plan, planned) from exc
    result = response.get("CopyPartResult", {})
    return PartResult(part_number=part_number, etag=result["ETag"], crc64nvme=result.get("ChecksumCRC64NVME") or "")
