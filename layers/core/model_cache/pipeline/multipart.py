"""Write-once objects in the snapshot: start and abort a plan's multipart uploads, complete one with
`If-None-Match: *`, adopt a key another run filled only when its bytes check out, read a file back to
verify it, and take off its key only an object this run wrote (`delete_own_write`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from model_cache.adapters.s3 import _version, iter_object_ranges, s3_error, version_or_none
from model_cache.contract import errors
from model_cache.pipeline.plan import Plan, PlannedFile
from model_cache.pipeline.verify import FileDigests, FileHasher

CHECKSUM_ALGORITHM = "CRC64NVME"


@dataclass(frozen=True)
class PartResult:
    part_number: int
    etag: str
    crc64nvme: str

    def to_json(self) -> list[Any]:
        return [self.part_number, self.etag, self.crc64nvme]

    @classmethod
    def from_json(cls, data: list[Any]) -> PartResult:
        return cls(part_number=int(data[0]), etag=str(data[1]), crc64nvme=str(data[2]))


def start_uploads(s3: Any, plan: Plan) -> None:
    """Create a multipart upload for every multipart file of the plan that has none yet."""
    for planned in plan.files:
        if planned.multipart and planned.upload_id is None:
            try:
                response = s3.create_multipart_upload(
                    Bucket=plan.bucket,
                    Key=planned.key,
                    ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                    ChecksumType="FULL_OBJECT",
                )
            except ClientError as exc:
                raise s3_error(exc, plan.bucket, f"starting the upload of {planned.path}") from exc
            plan.set_upload_id(planned.path, response["UploadId"])


def abort_uploads(s3: Any, plan: Plan) -> int:
    """Abort every multipart upload of the plan still open; returns how many were aborted."""
    return sum(_abort_one(s3, plan, planned) for planned in plan.files)


@dataclass(frozen=True)
class StoredObject:
    """An object at a snapshot key. `created`: this run wrote it (a conditional write succeeded);
    False: the key already held it (another run's write, adopted only after its bytes checked out)."""

    version_id: str | None
    crc64nvme: str | None
    etag: str | None = None
    created: bool = True


def precondition_failed(exc: ClientError) -> bool:
    """A conditional write lost: the key already exists (If-None-Match) or changed (If-Match)."""
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412


def adopt_existing(
    s3: Any, bucket: str, planned: PlannedFile, expected_crc64nvme: str | None, *, read_back: bool = True
) -> StoredObject:
    """The key is taken (a write with If-None-Match: * was refused): use the object there only if it
    holds the file's bytes. Never overwrites or deletes it: it may be named by a published manifest.

    Checked by size and S3's full-object CRC64NVME against `expected_crc64nvme` (the CRC of bytes this
    run verified); without a CRC to compare, by reading it back and hashing it (`read_back`), or not at
    all when the caller reads it back itself (a file split across units).
    """
    try:
        head = s3.head_object(Bucket=bucket, Key=planned.key, ChecksumMode="ENABLED")
    except ClientError as exc:
        raise s3_error(exc, bucket, f"checking the existing object of {planned.path}") from exc
    found = StoredObject(
        version_id=version_or_none(head.get("VersionId")),
        crc64nvme=head.get("ChecksumCRC64NVME"),
        etag=head.get("ETag"),
        created=False,
    )
    if head.get("ContentLength") != planned.size:
        raise errors.IntegrityError(
            f"{planned.path}: s3://{bucket}/{planned.key} already holds {head.get('ContentLength')} bytes, not the "
            f"file's {planned.size}; it was left untouched and nothing was published"
        )
    if expected_crc64nvme is not None and found.crc64nvme is not None:
        if found.crc64nvme != expected_crc64nvme:
            raise errors.IntegrityError(
                f"{planned.path}: s3://{bucket}/{planned.key} already holds other bytes (CRC64NVME "
                f"{found.crc64nvme}, the verified bytes have {expected_crc64nvme}); it was left untouched"
            )
        return found
    if read_back:
        read_back_digests(s3, bucket, planned, found)
    return found


def read_back_digests(s3: Any, bucket: str, planned: PlannedFile, stored: StoredObject) -> FileDigests:
    """Hash the stored object (by its version id) and check it against the Hub's declaration."""
    hasher = FileHasher(planned.hub_file())
    for chunk in iter_object_ranges(s3, bucket, planned.key, stored.version_id, planned.size):
        hasher.update(chunk)
    try:
        return hasher.verify()
    except errors.IntegrityError as exc:
        if not stored.created:
            raise errors.IntegrityError(
                f"{exc}; s3://{bucket}/{planned.key} was written by another run and was left untouched"
            ) from exc
        raise


def delete_own_write(s3: Any, bucket: str, key: str, stored: StoredObject) -> bool:
    """Take an object this run created and that failed verification off its key, and nothing else.

    Only while the key still holds this run's ETag (a conditional delete), so another run's object is
    never touched. On a versioned bucket that leaves a delete marker: the bad bytes stay a noncurrent
    version, which no manifest names and the lifecycle expires, because no pipeline role may delete a
    version under the cache prefix (s3:DeleteObjectVersion is granted on the work prefix only). An object
    this run only adopted is never deleted.
    """
    if not stored.created or not stored.etag:
        return False
    try:
        s3.delete_object(Bucket=bucket, Key=key, IfMatch=stored.etag)
    except ClientError:
        return False  # best effort: the error that brought us here is the one to report
    return True


def complete_upload(
    s3: Any, plan: Plan, planned: PlannedFile, parts: Sequence[PartResult], full_crc64nvme: str | None
) -> StoredObject:
    """Complete a multipart upload; with `full_crc64nvme` S3 checks the whole object against it too."""
    expected = list(range(1, planned.part_count + 1))
    numbers = sorted(part.part_number for part in parts)
    if numbers != expected:
        missing = sorted(set(expected) - set(numbers))[:5]
        raise errors.TransferError(f"{planned.path}: parts {missing}... were never uploaded; cannot complete")
    if planned.upload_id is None:
        raise errors.InvalidRequest(f"{planned.path} has no multipart upload to complete")
    kwargs: dict[str, Any] = {
        "Bucket": plan.bucket,
        "Key": planned.key,
        "UploadId": planned.upload_id,
        "MultipartUpload": {
            "Parts": [
                {
                    "PartNumber": part.part_number,
                    "ETag": part.etag,
                    # UploadPartCopy results may carry no part checksum; S3 then checks the full object's.
                    **({"ChecksumCRC64NVME": part.crc64nvme} if part.crc64nvme else {}),
                }
                for part in sorted(parts, key=lambda part: part.part_number)
            ]
        },
        "ChecksumType": "FULL_OBJECT",
        # Write-once: a snapshot key that already holds an object (another run's, maybe published) is
        # never replaced, on versioned and unversioned buckets alike (docs/architecture.md 3.1).
        "IfNoneMatch": "*",
    }
    if full_crc64nvme is not None:
        kwargs["ChecksumCRC64NVME"] = full_crc64nvme
    try:
        response = s3.complete_multipart_upload(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if precondition_failed(exc):
            # The key is taken: by this run's own upload completed in an earlier attempt, or by
            # another run. Either way this upload can never complete, so it is aborted now.
            _abort_one(s3, plan, planned)
            already = _completed_earlier(s3, plan, planned, parts)
            if already is not None:
                return already
            # Without an in-stream digest (a split file) finalize reads the object back itself.
            return adopt_existing(s3, plan.bucket, planned, full_crc64nvme, read_back=full_crc64nvme is not None)
        if code == "NoSuchUpload":
            # A retried finalize: the upload may already be complete. Accept the object only if its
            # ETag is the multipart ETag of exactly these parts.
            already = _completed_earlier(s3, plan, planned, parts)
            if already is not None:
                return already
        if code in ("BadDigest", "InvalidPart", "InvalidRequest") and full_crc64nvme is not None:
            raise errors.IntegrityError(f"{planned.path}: S3 rejected the object's CRC64NVME ({code})") from exc
        raise s3_error(exc, plan.bucket, f"completing the upload of {planned.path}") from exc
    version_id = version_or_none(response.get("VersionId"))
    crc = response.get("ChecksumCRC64NVME")
    if crc is None:
        head = s3.head_object(Bucket=plan.bucket, Key=planned.key, ChecksumMode="ENABLED", **_version(version_id))
        crc = head.get("ChecksumCRC64NVME")
    stored = StoredObject(version_id=version_id, crc64nvme=crc, etag=response.get("ETag"))
    if full_crc64nvme is not None and crc is not None and crc != full_crc64nvme:
        delete_own_write(s3, plan.bucket, planned.key, stored)
        raise errors.IntegrityError(f"{planned.path}: S3 holds CRC64NVME {crc}, the bytes sent had {full_crc64nvme}")
    return stored


def _abort_one(s3: Any, plan: Plan, planned: PlannedFile) -> bool:
    """Abort the file's multipart upload; False when it has none or it is already gone."""
    if planned.upload_id is None:
        return False
    try:
        s3.abort_multipart_upload(Bucket=plan.bucket, Key=planned.key, UploadId=planned.upload_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("NoSuchUpload", "404"):
            raise s3_error(exc, plan.bucket, f"aborting the upload of {planned.path}") from exc
        return False
    return True


def multipart_etag(parts: Sequence[PartResult]) -> str:
    """S3's ETag of a completed multipart object: md5 of the parts' binary md5s, then '-{count}'."""
    ordered = sorted(parts, key=lambda part: part.part_number)
    digest = hashlib.md5(b"".join(bytes.fromhex(part.etag.strip('"')) for part in ordered), usedforsecurity=False)
    return f'"{digest.hexdigest()}-{len(ordered)}"'


def _completed_earlier(s3: Any, plan: Plan, planned: PlannedFile, parts: Sequence[PartResult]) -> StoredObject | None:
    try:
        head = s3.head_object(Bucket=plan.bucket, Key=planned.key, ChecksumMode="ENABLED")
    except ClientError:
        return None
    if head.get("ETag") != multipart_etag(parts) or head.get("ContentLength") != planned.size:
        return None
    # Exactly these parts' bytes, but possibly another run's object of the same bytes: never ours to delete.
    return StoredObject(
        version_id=version_or_none(head.get("VersionId")),
        crc64nvme=head.get("ChecksumCRC64NVME"),
        etag=head.get("ETag"),
        created=False,
    )
