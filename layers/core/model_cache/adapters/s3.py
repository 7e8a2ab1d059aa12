"""S3 as every module uses it: the client, listings, a missing key told from a denied one, S3 errors as
domain errors, and reading an object back (whole, or as parallel ranges)."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from model_cache.contract import errors

READ_BACK_ATTEMPTS = 4


def s3_client(concurrency: int = 8) -> Any:
    """A boto3 S3 client sized for `concurrency` threads (AWS_ENDPOINT_URL honoured by boto3 itself)."""
    config = Config(
        max_pool_connections=max(10, concurrency * 2 + 2),
        retries={"mode": "standard", "max_attempts": 6},
        connect_timeout=10,
        read_timeout=120,
        tcp_keepalive=True,
    )
    return boto3.client("s3", config=config)


def list_objects(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under `prefix` (ListObjectsV2 `Contents` entries, all pages), S3 errors as domain errors."""
    objects: list[dict[str, Any]] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects.extend(page.get("Contents", []))
    except ClientError as exc:
        raise s3_error(exc, bucket, f"listing {prefix}") from exc
    return objects


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return [item["Key"] for item in list_objects(s3, bucket, prefix)]


MISSING_CODES = ("NoSuchKey", "404", "NotFound")


DENIED_CODES = ("AccessDenied", "403", "Forbidden")


def is_missing(s3: Any, bucket: str, key: str, exc: ClientError) -> bool:
    """Whether a failed GET or HEAD of `key` means the key does not exist.

    S3 answers a missing key with 404 only to a caller that has s3:ListBucket on the bucket, and with
    403 to any other (GetObject and HeadObject API references, "Permissions"); a ListBucket conditioned
    on s3:prefix does not count there, since the read carries no prefix. Our roles list only their own
    prefixes, so on a 403 the caller asks the listing it may make: one ListObjectsV2 of exactly this
    name. The key is missing only when that listing is allowed and does not hold it; a refused listing
    or a listed key leaves the 403 what it is, a denial.
    """
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in MISSING_CODES:
        return True
    if code not in DENIED_CODES:
        return False
    try:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except ClientError:
        return False
    return not any(item.get("Key") == key for item in listed.get("Contents", []))


def s3_error(exc: ClientError, bucket: str, what: str) -> errors.ModelCacheError:
    """The domain error for an S3 ClientError, naming the bucket and the fix."""
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":
        return errors.BucketNotFound(f"bucket {bucket!r} does not exist: create it or pass the right --bucket")
    if code in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
        return errors.AccessDenied(
            f"access denied to bucket {bucket!r} while {what}: check the credentials and the bucket policy"
        )
    return errors.TransferError(f"S3 failed while {what} in bucket {bucket!r}: {code or status}")


def version_or_none(version_id: object) -> str | None:
    """S3 says "null" for an object in a bucket without versioning; the manifest wants JSON null."""
    return version_id if isinstance(version_id, str) and version_id and version_id != "null" else None


def _version(version_id: str | None) -> dict[str, str]:
    return {"VersionId": version_id} if version_id else {}


def iter_object(s3: Any, bucket: str, key: str, version_id: str | None) -> Iterator[bytes]:
    """Stream an uploaded object back (for verifying a file whose ranges were copied by several units)."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key, **_version(version_id))["Body"]
    except ClientError as exc:
        raise s3_error(exc, bucket, f"reading back {key}") from exc
    try:
        yield from body.iter_chunks(chunk_size=8 * 1024 * 1024)
    finally:
        body.close()


def iter_object_ranges(
    s3: Any,
    bucket: str,
    key: str,
    version_id: str | None,
    size: int,
    *,
    chunk_size: int = 16 * 1024 * 1024,
    concurrency: int = 8,
) -> Iterator[bytes]:
    """An object's bytes in order, fetched as `concurrency` parallel ranged GETs (one S3 stream is ~100 MB/s;
    a multi-GiB read-back must fit a Lambda's time). At most `concurrency` chunks are held at once."""
    if size <= chunk_size:
        yield from iter_object(s3, bucket, key, version_id)
        return

    def fetch(start: int) -> bytes:
        end = min(start + chunk_size, size) - 1
        for attempt in range(READ_BACK_ATTEMPTS):
            try:
                response = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}", **_version(version_id))
                data: bytes = response["Body"].read()
            except ClientError as exc:
                raise s3_error(exc, bucket, f"reading back {key}") from exc
            except (BotoCoreError, OSError):
                data = b""  # a body cut mid-way is a transport fault, not a verdict on the bytes
            if len(data) == end - start + 1:
                return data
            time.sleep(min(2.0, 0.1 * 2**attempt))
        raise errors.TransferError(
            f"s3://{bucket}/{key}: bytes {start}-{end} could not be read back whole after {READ_BACK_ATTEMPTS} attempts"
        )

    starts = iter(range(0, size, chunk_size))
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="read-back") as pool:
        window = deque(pool.submit(fetch, start) for start in itertools.islice(starts, concurrency))
        while window:
            data = window.popleft().result()
            following = next(starts, None)
            if following is not None:
                window.append(pool.submit(fetch, following))
            yield data
