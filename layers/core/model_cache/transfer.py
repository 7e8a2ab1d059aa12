"""Stream Hub bytes into S3: one PutObject per small file, UploadPart per part of a big one.

Nothing touches local disk. Every part is one HTTP Range request to the file's resolve URL (redirects
followed by huggingface_hub's shared httpx session, which keeps connections alive and drops the
Authorization header when a redirect leaves the Hub), read into one buffer, and uploaded with a
CRC64NVME checksum. A transient fault (reset, drop mid-body, timeout, 408/429/5xx) retries that part
with backoff, resuming the Range at the first byte not yet received; 401/403/404 fail at once.

`run_parts` is the one scheduler both the engine (every part of every file) and a Lambda unit (the
parts of one unit) use: a thread pool pulling parts in file order, at most `concurrency + window`
part buffers alive at once (memory <= part_size x (concurrency + window)), and an in-order hashing
cursor per file, so any file whose every part is in the run is verified in-stream without re-reading.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import ipaddress
import itertools
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import boto3
import httpx2
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from huggingface_hub import get_session, hf_hub_url
from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]  # lazy re-export

from model_cache import errors
from model_cache.plan import Plan, PlannedFile, UnitItem
from model_cache.progress import NullProgress, Progress
from model_cache.verify import FileDigests, FileHasher

CHECKSUM_ALGORITHM = "CRC64NVME"
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 120.0
READ_BACK_ATTEMPTS = 4


# ---------------------------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The Hub
# ---------------------------------------------------------------------------------------------


@dataclass
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.25
    max_delay: float = 20.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)
        backoff: float = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)  # noqa: S311 -- jitter: parallel parts do not retry in lockstep


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


MAX_REDIRECTS = 10
REDIRECT_STATUS = (301, 302, 303, 307, 308)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port


def check_redirect(hub_endpoint: str, target: str) -> None:
    """Refuse a Hub redirect that leaves for anything but a public https origin.

    The Hub's own origin is always fine; so is any target when the Hub is an http loopback endpoint (the
    offline harness: the Hub double and its CDN listener). Otherwise the target must be https and its host
    must not be, or resolve to, a loopback, link-local (the instance metadata service), private, reserved
    or multicast address: a compromised or spoofed mirror cannot turn the copier into a proxy for the VPC.
    """
    if _origin(target) == _origin(hub_endpoint) or _is_local_harness(hub_endpoint):
        return
    parts = urlsplit(target)
    if parts.scheme != "https":
        raise errors.TransferError(
            f"the Hub redirected to {parts.scheme or 'a relative'}:// ({target[:120]}); only https is followed"
        )
    host = parts.hostname or ""
    for address in _addresses(host, parts.port or 443):
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if (
            ip.is_loopback
            or ip.is_link_local
            or ip.is_private
            or ip.is_reserved
            or ip.is_multicast
            or ip.is_unspecified
        ):
            raise errors.TransferError(
                f"the Hub redirected to {host!r} ({address}), a non-public address; such redirects are never followed"
            )


def _addresses(host: str, port: int) -> list[str]:
    """The addresses a redirect's host stands for: itself when it is an IP literal, else what DNS says."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return ["127.0.0.1"]
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)})
    except (OSError, UnicodeError) as exc:
        raise errors.TransferError(f"the Hub redirected to {host!r}, which does not resolve: {exc}") from exc


def _is_local_harness(endpoint: str) -> bool:
    parts = urlsplit(endpoint)
    if parts.scheme != "http" or not parts.hostname:
        return False
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return parts.hostname == "localhost"


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class HubReader:
    """Reads byte ranges of one commit's files from the Hub's resolve URLs, with retries."""

    def __init__(
        self,
        repo_id: str,
        commit: str,
        endpoint: str,
        token: str | None,
        *,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.repo_id = repo_id
        self.commit = commit
        self.endpoint = endpoint
        self.policy = policy or RetryPolicy()
        # token=False: never fall back to a token file on disk; the token comes only from the caller.
        self._headers = build_hf_headers(token=token or False, library_name="s3-model-cache")
        self._token_given = bool(token)
        self._session = get_session()
        self.retries = 0  # how many transient faults were absorbed (visible to tests and the summary)
        self._lock = threading.Lock()
        self._download_urls: dict[str, str] = {}
        self._resolve_locks: dict[str, threading.Lock] = {}

    def url(self, path: str) -> str:
        return hf_hub_url(self.repo_id, path, revision=self.commit, endpoint=self.endpoint)

    def read(self, path: str, start: int, end: int, *, ranged: bool, on_bytes: Callable[[int], None]) -> bytes:
        """Bytes [start, end) of `path`; `ranged=False` fetches the whole file with a plain GET."""
        length = end - start
        # BytesIO.getvalue() hands over its buffer without a copy, and botocore sends `bytes` without
        # one either (a bytearray body costs a second copy per part): one part-sized buffer per part.
        buffer = io.BytesIO()
        attempt = 0
        while True:
            attempt += 1
            try:
                # Each attempt resumes at the first byte not yet in the buffer.
                self._fill(path, start, end, buffer, ranged=ranged, on_bytes=on_bytes)
                if buffer.tell() == length:
                    return buffer.getvalue()
                raise _Transient(f"the connection closed after {buffer.tell()} of {length} bytes")
            except _Transient as fault:
                if attempt >= self.policy.max_attempts:
                    raise errors.TransferError(
                        f"{path}: bytes {start}-{end - 1} still failing after {attempt} attempts ({fault.reason})"
                    ) from fault
                with self._lock:
                    self.retries += 1
                self.policy.sleep(self.policy.delay(attempt, fault.retry_after))

    def _fill(
        self,
        path: str,
        start: int,
        end: int,
        buffer: io.BytesIO,
        *,
        ranged: bool,
        on_bytes: Callable[[int], None],
    ) -> None:
        received = buffer.tell()
        headers = {**self._headers, "Accept-Encoding": "identity"}  # the file's own bytes, never re-encoded
        if ranged or received:
            headers["Range"] = f"bytes={start + received}-{end - 1}"
        if end - start == 0:
            headers.pop("Range", None)
        timeout = httpx2.Timeout(self.policy.read_timeout, connect=self.policy.connect_timeout)
        length = end - start
        try:
            url = self._download_url(path, timeout) if ranged else self._small_file_url(path)
            for _ in range(MAX_REDIRECTS):
                if not self._same_origin_as_hub(url):
                    headers.pop("authorization", None)  # the token never leaves the Hub's origin
                with self._session.stream(
                    "GET", url, headers=headers, timeout=timeout, follow_redirects=False
                ) as response:
                    location = response.headers.get("Location")
                    if response.status_code in REDIRECT_STATUS and location:
                        # A small file's GET follows its redirects here, each one checked, and remembers the
                        # last so that a retry goes straight there.
                        url = urljoin(url, location)
                        check_redirect(self.endpoint, url)
                        with self._lock:
                            self._download_urls[path] = url
                        continue
                    if response.status_code in (403, 404, 410) and url != self.url(path):
                        # A signed CDN URL can expire mid-copy: resolve it again on the next attempt.
                        self._forget_download_url(path)
                        raise _Transient(f"the download URL for {path} answered HTTP {response.status_code}")
                    self._check_status(path, response, expect_partial="Range" in headers)
                    for chunk in response.iter_raw():  # as received: re-chunking would copy every byte once more
                        size = len(chunk)
                        if received + size > length:
                            raise errors.IntegrityError(
                                f"{path}: the Hub sent more than the {end - start} bytes asked for at offset {start}"
                            )
                        buffer.write(chunk)
                        received += size
                        on_bytes(size)
                    return
            raise errors.TransferError(f"{path}: more than {MAX_REDIRECTS} redirects from the Hub")
        except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc

    def _same_origin_as_hub(self, url: str) -> bool:
        return _origin(url) == _origin(self.endpoint)

    def _download_url(self, path: str, timeout: httpx2.Timeout) -> str:
        """Where the file's bytes are served: the resolve URL's redirect target (the Hub's CDN for LFS files),
        found with one HEAD per file, so that each part costs one request and the Hub's resolve endpoint
        (rate-limited) sees one call per file, not one per part."""
        with self._lock:
            path_lock = self._resolve_locks.setdefault(path, threading.Lock())
        with path_lock:  # parallel parts of one file wait for a single resolve
            with self._lock:
                cached = self._download_urls.get(path)
            if cached is not None:
                return cached
            url = self._resolve(path, timeout)
            with self._lock:
                self._download_urls[path] = url
            return url

    def _resolve(self, path: str, timeout: httpx2.Timeout) -> str:
        url = self.url(path)
        for _ in range(MAX_REDIRECTS):
            headers = dict(self._headers)
            if not self._same_origin_as_hub(url):
                headers.pop("authorization", None)
            response = self._session.head(url, headers=headers, timeout=timeout, follow_redirects=False)
            location = response.headers.get("Location")
            if response.status_code in REDIRECT_STATUS and location:
                url = urljoin(url, location)
                check_redirect(self.endpoint, url)
                continue
            self._check_status(path, response, expect_partial=False)
            return url
        raise errors.TransferError(f"{path}: more than {MAX_REDIRECTS} redirects from the Hub")

    def _small_file_url(self, path: str) -> str:
        """Where a small file's GET starts: the redirect target an earlier attempt followed, or its resolve URL."""
        with self._lock:
            cached = self._download_urls.get(path)
        return cached if cached is not None else self.url(path)

    def _forget_download_url(self, path: str) -> None:
        with self._lock:
            self._download_urls.pop(path, None)

    def _check_status(self, path: str, response: httpx2.Response, *, expect_partial: bool) -> None:
        status = response.status_code
        if status == 206 or (status == 200 and not expect_partial):
            return
        if status in TRANSIENT_STATUS:
            raise _Transient(f"HTTP {status}", parse_retry_after(response.headers.get("Retry-After")))
        where = f"{self.repo_id}/{path}@{self.commit[:12]}"
        if status == 401 or (status == 403 and not self._token_given):
            raise errors.GatedRepo(f"the Hub refused {where} (HTTP {status}): set HF_TOKEN to a token with access")
        if status == 403:
            raise errors.AccessDenied(f"the Hub refused {where} with the token given (HTTP 403): check its access")
        if status == 404:
            raise errors.EntryNotFound(f"{where} is not at the Hub (HTTP 404): the commit may have been removed")
        if status == 416:
            raise errors.IntegrityError(f"{where} is shorter than the Hub's listing declares (HTTP 416)")
        if status == 200:
            raise errors.TransferError(f"the Hub ignored the Range request for {where}; cannot resume safely")
        raise errors.TransferError(f"the Hub answered HTTP {status} for {where}")


# ---------------------------------------------------------------------------------------------
# The scheduler
# ---------------------------------------------------------------------------------------------

_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1024 * 1024
_malloc_tuned = False


def keep_part_buffers_off_the_heap() -> None:
    """Make glibc serve every allocation >= 1 MiB by mmap, so a freed part buffer goes back to the OS.

    glibc raises its mmap threshold after the first large free, and later part-sized buffers then
    come from per-thread heaps that fragment and keep RSS ~100 MiB above the live buffers. Fixing
    the threshold keeps peak RSS ~ baseline + part_size x (concurrency + window). A no-op off glibc.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        if name:
            ctypes.CDLL(name).mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


@dataclass
class FileOutcome:
    """What a run did for one file: its uploaded parts, and its digests when the run saw every byte."""

    path: str
    parts: list[PartResult] = field(default_factory=list)
    digests: FileDigests | None = None
    stored: StoredObject | None = None  # set for a single-PUT file (the object exists and is verified)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "parts": [part.to_json() for part in sorted(self.parts, key=lambda part: part.part_number)],
            "digests": None if self.digests is None else self.digests.__dict__,
            "stored": None if self.stored is None else self.stored.__dict__,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileOutcome:
        return cls(
            path=data["path"],
            parts=[PartResult.from_json(part) for part in data["parts"]],
            digests=None if data["digests"] is None else FileDigests(**data["digests"]),
            stored=None if data["stored"] is None else StoredObject(**data["stored"]),
        )


class _OrderedHasher:
    """Feeds a file's parts to its hasher in order as they complete, whatever order they finish in."""

    def __init__(self, planned: PlannedFile, release: Callable[[], None]) -> None:
        self.hasher = FileHasher(planned.hub_file())
        self._next = 1
        self._pending: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self._release = release

    def feed(self, part_number: int, data: bytes) -> None:
        with self._lock:
            self._pending[part_number] = data
            while self._next in self._pending:
                self.hasher.update(self._pending.pop(self._next))
                self._next += 1
                self._release()


@dataclass(frozen=True)
class _PartTask:
    planned: PlannedFile
    part_number: int


class _Stopped(Exception):
    """Another part failed: this one gives up quietly so the first error is the one reported."""


def run_parts(
    s3: Any,
    plan: Plan,
    items: Sequence[UnitItem],
    reader: HubReader,
    *,
    concurrency: int,
    window: int = 2,
    progress: Progress | None = None,
    outcomes: dict[str, FileOutcome] | None = None,
) -> dict[str, FileOutcome]:
    """Copy the parts named by `items` with `concurrency` threads; verify whole files in-stream.

    Raises the first domain error; parts already uploaded stay in their (still open) multipart
    upload, which the caller's cleanup aborts. Pass `outcomes` to see, after a failure, what was
    already written (single-PUT objects a cleanup must delete).
    """
    progress = progress or NullProgress()
    keep_part_buffers_off_the_heap()
    if concurrency < 1:
        raise errors.InvalidRequest(f"concurrency must be at least 1, got {concurrency}")
    slots = threading.Semaphore(concurrency + max(0, window))
    stop = threading.Event()
    outcomes = outcomes if outcomes is not None else {}
    hashers: dict[str, _OrderedHasher] = {}
    tasks: list[_PartTask] = []
    remaining: dict[str, int] = {}
    for item in items:
        planned = plan.file(item.path)
        if not 1 <= item.first_part <= item.last_part <= planned.part_count:
            raise errors.InvalidRequest(f"unit item {item} is outside {planned.path}'s {planned.part_count} parts")
        if planned.multipart and planned.upload_id is None:
            raise errors.InvalidRequest(f"{planned.path} has no multipart upload: run plan first")
        outcomes[planned.path] = FileOutcome(path=planned.path)
        if item.first_part == 1 and item.last_part == planned.part_count and planned.multipart:
            hashers[planned.path] = _OrderedHasher(planned, slots.release)
        tasks.extend(_PartTask(planned, number) for number in range(item.first_part, item.last_part + 1))
        remaining[planned.path] = item.last_part - item.first_part + 1
        first_start, _ = planned.part_range(item.first_part)
        _, last_end = planned.part_range(item.last_part)
        progress.file_started(planned.path, last_end - first_start)
    outcome_lock = threading.Lock()

    def acquire_slot() -> None:
        while not slots.acquire(timeout=0.2):
            if stop.is_set():
                raise _Stopped

    def copy_part(task: _PartTask) -> None:
        if stop.is_set():
            raise _Stopped
        planned = task.planned
        acquire_slot()
        released = False
        try:
            start, end = planned.part_range(task.part_number)

            def on_bytes(count: int) -> None:
                progress.advance(planned.path, count)

            data = reader.read(planned.path, start, end, ranged=planned.multipart, on_bytes=on_bytes)
            if stop.is_set():
                raise _Stopped
            if not planned.multipart:
                hasher = FileHasher(planned.hub_file())
                hasher.update(data)
                digests = hasher.verify()  # before the PUT: a bad small file is never written
                stored = _put_object(s3, plan, planned, data, digests)
                with outcome_lock:
                    outcomes[planned.path].digests = digests
                    outcomes[planned.path].stored = stored
            else:
                part = _upload_part(s3, plan, planned, task.part_number, data)
                with outcome_lock:
                    outcomes[planned.path].parts.append(part)
                ordered = hashers.get(planned.path)
                if ordered is not None:
                    released = True  # the hasher releases the slot once the part is hashed
                    ordered.feed(task.part_number, data)
            del data
        finally:
            if not released:
                slots.release()
        with outcome_lock:
            remaining[planned.path] -= 1
            finished = remaining[planned.path] == 0
        if finished:
            progress.file_done(planned.path)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="copy") as pool:
        futures = [pool.submit(copy_part, task) for task in tasks]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:
            # Ctrl-C (KeyboardInterrupt) lands in this waiting thread. Without this the pool's exit
            # would run every queued part first: stop now, so only the parts in flight finish.
            stop.set()
            for future in futures:
                future.cancel()
            raise
        failures = [f.exception() for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
        first_error = next((e for e in failures if not isinstance(e, _Stopped)), None)
        if first_error is not None:
            stop.set()
            for future in futures:
                future.cancel()
    if first_error is not None:
        if isinstance(first_error, errors.ModelCacheError):
            raise first_error
        raise errors.TransferError(f"copy failed: {type(first_error).__name__}: {first_error}") from first_error
    for path, ordered in hashers.items():
        outcomes[path].digests = ordered.hasher.verify()
    return outcomes


def _put_object(s3: Any, plan: Plan, planned: PlannedFile, data: bytes, digests: FileDigests) -> StoredObject:
    """Write a verified small file, only if its key is free (If-None-Match: *); a taken key is adopted
    when it holds the same bytes, and is never overwritten."""
    try:
        response = s3.put_object(
            Bucket=plan.bucket, Key=planned.key, Body=data, ChecksumAlgorithm=CHECKSUM_ALGORITHM, IfNoneMatch="*"
        )
    except ClientError as exc:
        if precondition_failed(exc):
            return adopt_existing(s3, plan.bucket, planned, digests.crc64nvme)
        raise s3_error(exc, plan.bucket, f"writing {planned.path}") from exc
    return StoredObject(
        version_id=version_or_none(response.get("VersionId")),
        crc64nvme=response.get("ChecksumCRC64NVME"),
        etag=response.get("ETag"),
    )


def _upload_part(s3: Any, plan: Plan, planned: PlannedFile, part_number: int, data: bytes) -> PartResult:
    try:
        response = s3.upload_part(
            Bucket=plan.bucket,
            Key=planned.key,
            UploadId=planned.upload_id,
            PartNumber=part_number,
            Body=data,
            ChecksumAlgorithm=CHECKSUM_ALGORITHM,
        )
    except ClientError as exc:
        raise s3_error(exc, plan.bucket, f"uploading part {part_number} of {planned.path}") from exc
    return PartResult(part_number=part_number, etag=response["ETag"], crc64nvme=response["ChecksumCRC64NVME"])


# ---------------------------------------------------------------------------------------------
# Copies inside S3 (incremental refresh)
# ---------------------------------------------------------------------------------------------


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
