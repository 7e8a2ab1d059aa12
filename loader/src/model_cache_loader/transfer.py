"""Parallel ranged GETs from S3 straight into preallocated blob files, verified as they land.

Every part of every missing blob is one task on a shared pool of `concurrency` threads, each
writing its bytes with os.pwrite at their offset. sha256 runs alongside, so verification costs no
extra pass after the last byte: the thread receiving the bytes at the hashing frontier hashes them
straight from memory, and only parts that arrive ahead of the frontier are read back (from the
page cache) once the frontier reaches them.

With verify="crc64nvme" each blob is checked against the manifest's CRC64NVME (S3's full-object
checksum, which the pipeline recorded after checking the file's sha256) instead: each part's CRC is
computed by the thread receiving it and the parts' CRCs are combined in order at the end, so nothing
is ever read back; at ~30 GB/s per core it costs about 3% of sha256. It needs awscrt (the `crc`
extra); without it, or for a file whose manifest entry has no CRC64NVME, the file is verified by
sha256 and a log line says why.

verify="auto" (the default) chooses per blob by threat model (docs/explanation/security.md): a
blob read at the exact version the manifest pins is the object the pipeline checked by sha256
before publishing, so what is left to catch is corruption in transit or on disk, which CRC64NVME
catches; a blob read unpinned (a replica, a manifest without version ids) could have been
overwritten since, so it is checked by sha256. Without awscrt every blob is checked by sha256.

Bodies are received straight into a reused per-thread buffer (see BodyReader), then written with
os.pwrite and hashed from that same buffer: one copy from the socket, one into the page cache.

A blob is written to `blobs/<name>.loader-incomplete` and renamed to `blobs/<name>` only after its
size and digest match. Finished parts are appended to `blobs/<name>.loader-parts`, so a download cut
by a killed process resumes where it stopped; resumed bytes are never trusted: the digest covers
every byte of the file, and a resumed blob that fails it is downloaded once more from scratch.
Without a digest (verify size or none) there is nothing to check resumed bytes against, so they are
discarded.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import errno
import hashlib
import http.client
import json
import logging
import os
import shutil
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from urllib3.exceptions import HTTPError

from model_cache_loader.errors import (
    AccessError,
    CacheWriteError,
    IntegrityError,
    LoaderError,
    ManifestError,
    NotCachedError,
    S3UnavailableError,
)
from model_cache_loader.hfcache import RepoCache, mark_verified
from model_cache_loader.manifest import ManifestFile

# awscrt (the optional `crc` extra) is imported on first use: 80 ms of a sha256 pull's start-up (issue 25).
_NOT_LOADED: Any = object()
crc_checksums: Any = _NOT_LOADED


def _checksums() -> Any:
    """awscrt's checksums module, or None when awscrt is not installed."""
    global crc_checksums
    if crc_checksums is _NOT_LOADED:
        try:
            from awscrt import checksums as module
        except ImportError:
            module = None
        crc_checksums = module
    return crc_checksums


FREE_SPACE_MARGIN = 64 * 1024 * 1024  # never fill the volume to the last byte
HEAD_BEFORE_ALLOCATE = 64 * 1024 * 1024  # blobs this big get their real size from S3 before any allocation
log = logging.getLogger("model_cache_loader")

# Bytes received, written and hashed at a time. Measured on the CPU-bound benchmark (2 GiB, 2 cores):
# 256 KiB cost 2.4-2.9 client CPU s with sha256 where 1 MiB cost 3.1-4.5 and 512 KiB 3.2-3.6: a chunk
# and its page-cache copy must stay in the core's L2 (1 MiB here) between the socket copy, the pwrite
# and the hash; 128 KiB was no better (2.6-2.7), more calls per byte.
READ_CHUNK = 256 * 1024
# Bytes read back and hashed per call. Each call gives up the GIL and must win it back from the
# receiving threads; at READ_CHUNK the hash ran at ~140 MB/s behind 32 streams (the GIL's switch
# interval per 256 KiB) and every byte was hashed after the last one arrived (issue 25; bench write_size).
HASH_READ_CHUNK = 8 * 1024 * 1024
DEFAULT_PART_SIZE = 16 * 1024 * 1024
AUTO_PART_MAX = 64 * 1024 * 1024
# sha256 blobs: the streams cover the model in this many waves, and the blobs' parts are queued
# interleaved, so each blob's hash keeps pace with its download (plan_part_size; bench write_size).
HASH_WAVES = 4
INTERLEAVE_BLOBS = True
PART_ATTEMPTS = 4
VERIFY_MODES = ("auto", "sha256", "crc64nvme", "size", "none")
# S3's answers that mean "S3 is not serving right now", not "this setup is wrong": try again later.
UNAVAILABLE_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"})
DIGEST_MODES = ("sha256", "crc64nvme")


def crc64nvme_available() -> bool:
    """awscrt is installed and can combine CRCs (part CRCs are joined without re-reading the bytes)."""
    module = _checksums()
    return module is not None and hasattr(module, "combine_crc64nvme")


def decode_crc64nvme(value: str, label: str) -> int:
    """S3's textual CRC64NVME (base64 of the 8 big-endian bytes) as an integer."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 8:
        raise ManifestError(
            f"{label}: crc64nvme {value!r} is not base64 of 8 bytes; "
            "re-publish the snapshot or pull with --verify sha256"
        )
    return int.from_bytes(raw, "big")


def encode_crc64nvme(value: int) -> str:
    return base64.b64encode(value.to_bytes(8, "big")).decode("ascii")


class BodyReader:
    """Reads a GetObject body into the caller's buffer with one copy.

    botocore's StreamingBody.readinto goes through urllib3's, which reads a new bytes object and
    copies it over (http.client's read(n) even allocates and zeroes a bytearray first). The
    http.client response urllib3 wraps receives into the buffer directly. botocore asks urllib3 for
    the bytes undecoded (decode_content=False), so both paths give the same bytes, and http.client
    stops at Content-Length; with any other stack the botocore path is used.
    """

    def __init__(self, body: Any) -> None:
        self.body = body
        raw = getattr(body, "_raw_stream", None)
        fp: Any = getattr(raw, "_fp", None)
        direct = (
            callable(getattr(fp, "readinto", None))
            and callable(getattr(raw, "release_conn", None))
            and getattr(raw, "decode_content", True) is False
        )
        self._raw = raw if direct else None
        self.readinto: Any = fp.readinto if direct else body.readinto

    def at_end(self) -> bool:
        """True when the body has no more bytes; the connection then goes back to the pool."""
        if self._raw is None:
            return not self.body.read(1)
        if self._raw._fp.read(1):
            return False
        self._raw.release_conn()  # urllib3 did not see the bytes go by, so it is told they are consumed
        return True

    def close(self) -> None:
        self.body.close()


_buffers = threading.local()


def read_buffer() -> memoryview:
    """This thread's reusable buffer (a fresh object per chunk costs an allocation, page faults and a copy)."""
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = memoryview(bytearray(READ_CHUNK))
        _buffers.view = view
    return view


class _Cancelled(Exception):
    pass


class ShortBody(Exception):
    """S3 closed the body before the bytes asked for: a transport fault, retried from where it stopped."""


# What a ranged GET retries from the first byte not yet received: transport faults and a cut body.
RETRIED_ERRORS = (ClientError, BotoCoreError, OSError, http.client.HTTPException, HTTPError, ShortBody)
# S3 error codes that are worth another attempt; any other ClientError is final.
TRANSIENT_S3_CODES = ("InternalError", "SlowDown", "503")


def is_final(exc: BaseException) -> bool:
    """A ClientError S3 will answer the same way again (denied, missing): not retried."""
    return isinstance(exc, ClientError) and _client_error_code(exc) not in TRANSIENT_S3_CODES


@dataclass
class BlobJob:
    """One blob to fetch: an S3 object of known size and sha256 into a cache blob path."""

    key: str
    size: int
    sha256: str
    final_path: Path
    tmp_path: Path
    journal_path: Path
    label: str
    crc64nvme: str | None = None
    version_id: str | None = None
    # where the blob's "verified" marker goes once a digest check passed (hfcache.mark_verified)
    marker_path: Path | None = None
    resumed_bytes: int = 0
    # how this blob is verified: the Downloader's mode, or sha256 where crc64nvme cannot apply
    check: str = ""
    part_crcs: dict[int, int] = field(default_factory=dict)
    # filled while running
    part_size: int = 0
    fd: int = -1
    parts: int = 0
    done: set[int] = field(default_factory=set)
    hashed_bytes: int = 0
    frontier_part: int = 0
    hashing: bool = False
    digest: Any = field(default_factory=hashlib.sha256)
    # The read-back buffer of whichever thread is hashing this blob (one at a time), HASH_READ_CHUNK bytes.
    hash_buffer: memoryview | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    journal_fd: int = -1
    finished: bool = False


class Progress:
    """Thread-safe byte counter the CLI reads to show bytes, rate and ETA."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count


def _client_error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def s3_error(exc: Exception, *, bucket: str, key: str) -> LoaderError:
    """Map a boto error to the loader's: a miss, or S3 unreachable/denied."""
    if isinstance(exc, ClientError):
        code = _client_error_code(exc)
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotCachedError(f"s3://{bucket}/{key} does not exist: the model is not cached at this revision")
        if code == "NoSuchBucket":
            return AccessError(
                f"bucket {bucket!r} does not exist: check MODEL_CACHE_BUCKET (or --bucket) and AWS_REGION"
            )
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return AccessError(
                f"access denied reading s3://{bucket}/{key}: give the pod's role s3:GetObject on the cache bucket"
            )
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in UNAVAILABLE_CODES or (isinstance(status, int) and status >= 500):
            return S3UnavailableError(f"S3 answered {code or status} reading s3://{bucket}/{key} after retries")
        return AccessError(f"S3 error {code or exc} reading s3://{bucket}/{key}")
    if isinstance(exc, NoCredentialsError):
        return AccessError(
            f"no AWS credentials to read s3://{bucket}/{key}: give the pod a role (Pod Identity, IRSA) "
            "or set AWS_PROFILE / AWS_ACCESS_KEY_ID"
        )
    return S3UnavailableError(
        f"S3 unreachable reading s3://{bucket}/{key} ({type(exc).__name__}: {exc}); "
        "check AWS_ENDPOINT_URL / network / credentials"
    )


def crc64nvme_update(chunk: memoryview, crc: int) -> int:
    """The running CRC64NVME after `chunk` (only called where check_for chose crc64nvme)."""
    module = _checksums()
    assert module is not None
    result: int = module.crc64nvme(chunk, crc)
    return result


def check_for(verify: str, crc64nvme: str | None, *, pinned: bool) -> str:
    """How a file is checked under `verify`: crc64nvme only where awscrt is here and the manifest
    recorded the file's CRC (and, for auto, the read is pinned to the manifest's version), else
    sha256 for the digest modes; size and none as asked."""
    if verify == "auto":
        verify = "crc64nvme" if pinned else "sha256"
    if verify == "crc64nvme" and (crc64nvme is None or not crc64nvme_available()):
        return "sha256"
    return verify


def plan_part_size(
    size: int, total: int, *, concurrency: int, part_size: int, auto: bool = False, in_order: bool = False
) -> int:
    """Bytes per GET for a blob of `size` among `total` bytes to fetch over `concurrency` streams.

    A blob that fits in about one stream's share of the bytes gains nothing from being split, and
    fetched whole it arrives in order, so it is hashed in-stream with no read-back and costs one
    request. Bigger blobs are split into `part_size` ranges that complete roughly in order, so the
    hashing frontier keeps up with the download instead of trailing it.

    With `auto`, `part_size` is the least part: parts grow to each stream's share of the bytes, up
    to AUTO_PART_MAX, so every stream stays busy with fewer, longer requests. Measured side by side
    on the 1 GiB-shard bench (2 GiB, `python -m bench peers`, 4 interleaved rounds): 64 MiB parts
    pulled in 5.2-6.3 s where 16 MiB parts took 5.5-8.0 s, with early writeback in both.

    `in_order` (sha256, which must hash each blob in file order): parts stay small enough that the
    streams cover the bytes in HASH_WAVES waves, so a wave is hashed while the next one arrives instead
    of every byte after the last one (issue 25: 0.55 s per GiB after the last byte with one wave).
    """
    if auto:
        waves = HASH_WAVES if in_order else 1
        part_size = max(part_size, min(total // max(concurrency * waves, 1), AUTO_PART_MAX))
    whole_limit = max(part_size, int(1.5 * total / max(concurrency, 1)))
    return size if 0 < size <= whole_limit else part_size


class Downloader:
    def __init__(
        self,
        s3: Any,
        bucket: str,
        *,
        concurrency: int,
        part_size: int | None,
        verify: str,
        progress: Progress | None = None,
    ) -> None:
        """`part_size` None: parts sized by the model (plan_part_size's `auto`), from DEFAULT_PART_SIZE."""
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
        self.s3 = s3
        self.bucket = bucket
        self.concurrency = concurrency
        self.part_size = part_size
        self.verify = verify
        self.progress = progress or Progress()
        self._cancel = threading.Event()
        self._bytes = 0
        self._bytes_lock = threading.Lock()
        self._checks_said = False
        # When the last byte of any part arrived and the last digest was compared: the verify tail
        # (`-v` logs it per round; bench write_size reads it).
        self.last_byte_at = 0.0
        self.checked_at = 0.0
        self._writeback = _Writeback()

    @property
    def bytes_downloaded(self) -> int:
        return self._bytes

    def run(self, jobs: list[BlobJob]) -> int:
        """Fetch every job; returns the bytes fetched from S3. Raises on the first failure, leaving
        only resumable temporary files (never a wrong blob)."""
        retry = self._run_round(jobs, allow_resume=True)
        if retry:
            log.warning(
                "download of %s did not verify; discarding the file(s) and downloading them once more",
                ", ".join(job.label for job in retry),
            )
            fresh = [self._fresh_copy(job) for job in retry]
            again = self._run_round(fresh, allow_resume=False)
            if again:
                raise IntegrityError(self._mismatch_message(again[0]))
        return self._bytes

    def _fresh_copy(self, job: BlobJob) -> BlobJob:
        return BlobJob(
            job.key,
            job.size,
            job.sha256,
            job.final_path,
            job.tmp_path,
            job.journal_path,
            job.label,
            job.crc64nvme,
            job.version_id,
            job.marker_path,
        )

    def _plan_checks(self, jobs: list[BlobJob]) -> None:
        """Each blob's check: the asked mode, or sha256 where a CRC64NVME check cannot be made
        (said once per pull, not again for a blob downloaded once more)."""
        if self.verify == "auto":
            # Chosen per blob, nothing to warn about: sha256 where the read is unpinned is the point.
            self._plan_checks_quietly(jobs)
            _refuse_malformed_crcs(jobs)
            return
        for job in jobs:
            job.check = self.verify
        if self.verify != "crc64nvme":
            return
        if self._checks_said:
            self._plan_checks_quietly(jobs)
            return
        self._checks_said = True
        if not crc64nvme_available():
            log.warning(
                "verify=crc64nvme needs awscrt >= 0.38, which is not installed (install awscrt beside "
                "the loader: the wheel's [crc] extra); verifying sha256 instead"
            )
            for job in jobs:
                job.check = "sha256"
            return
        without = [job for job in jobs if job.crc64nvme is None]
        for job in without:
            job.check = "sha256"
        _refuse_malformed_crcs(jobs)
        if without:
            shown = ", ".join(job.label for job in without[:5]) + (", ..." if len(without) > 5 else "")
            log.warning(
                "verify=crc64nvme: the manifest records no crc64nvme for %d file(s) (%s); verifying them by sha256",
                len(without),
                shown,
            )

    def _plan_checks_quietly(self, jobs: list[BlobJob]) -> None:
        for job in jobs:
            job.check = check_for(self.verify, job.crc64nvme, pinned=job.version_id is not None)

    def _run_round(self, jobs: list[BlobJob], *, allow_resume: bool) -> list[BlobJob]:
        self._cancel.clear()
        tasks: list[tuple[BlobJob, int]] = []
        try:
            self._plan_checks(jobs)
            self._plan_part_sizes(jobs)  # after the checks: a sha256 blob's parts are sized to hash in order
            self._check_free_space(jobs)
            queues: list[list[tuple[BlobJob, int]]] = []
            for job in jobs:
                self._open(job, allow_resume=allow_resume and job.check in DIGEST_MODES)
                queue = [(job, index) for index in range(job.parts) if index not in job.done]
                if queue:
                    queues.append(queue)
                else:
                    self._advance_hash(job)  # fully resumed (or empty): verify now
            tasks = _interleaved(queues) if INTERLEAVE_BLOBS else [task for queue in queues for task in queue]
            fetching = sum(self._part_length(job, i) for job, i in tasks)
            self.progress.total += fetching
            if tasks:
                with ThreadPoolExecutor(self.concurrency, thread_name_prefix="mcl-get") as pool:
                    futures: list[Future[None]] = [pool.submit(self._fetch_part, job, i) for job, i in tasks]
                    try:
                        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                    except BaseException:
                        # Ctrl-C (KeyboardInterrupt) or SystemExit lands here, in the waiting thread:
                        # stop the parts in flight at their next chunk and start none of the queued
                        # ones, or the pool's exit would fetch every remaining byte first. What is
                        # left is what a kill leaves: journalled parts, resumable, no blob renamed.
                        self._stop(futures)
                        raise
                    failed = next((f for f in finished if f.exception() is not None), None)
                    if failed is not None:
                        self._stop(futures)
                        raise _first_real_error(futures)
            # Every blob's check first, then each verified blob made durable and renamed: the time to
            # "checked" is the check's own tail, the time to "in place" adds the disk's.
            verified = [self._verify(job) for job in jobs]
            self.checked_at = time.monotonic()
            self._writeback.finish()  # every part's writeback started, before any fsync waits for it
            mismatched = []
            for job, matches in zip(jobs, verified, strict=True):
                if matches:
                    self._install(job)
                else:
                    self._discard(job)
                    mismatched.append(job)
            if tasks:
                log.info(
                    "%d files checked %.3f s and in place %.3f s after the last byte (%d bytes fetched)",
                    len(jobs),
                    self.checked_at - self.last_byte_at,
                    time.monotonic() - self.last_byte_at,
                    fetching,
                )
            # A mismatch gets one fresh download (S3 may have served a bad byte once); a second one
            # raises IntegrityError, which the caller answers with the Hub fallback.
            return mismatched
        finally:
            self._writeback.finish()  # no writeback of a descriptor closed below
            for job in jobs:
                self._close(job)

    def _stop(self, futures: list[Future[None]]) -> None:
        self._cancel.set()
        for future in futures:
            future.cancel()
        wait(futures)

    def _mismatch_message(self, job: BlobJob) -> str:
        expected = f"crc64nvme {job.crc64nvme}" if job.check == "crc64nvme" else f"sha256 {job.sha256}"
        return (
            f"{job.label}: the bytes of s3://{self.bucket}/{job.key} do not match the manifest's {expected}; "
            "nothing was kept. The cached object is corrupt or was replaced: re-sync it "
            "with the pipeline (model-cache sync --force)"
        )

    # ---- one blob ------------------------------------------------------------------------------

    def _part_length(self, job: BlobJob, index: int) -> int:
        return min(job.part_size, job.size - index * job.part_size)

    def _plan_part_sizes(self, jobs: list[BlobJob]) -> None:
        total = sum(job.size for job in jobs)
        for job in jobs:
            if not job.part_size:
                job.part_size = plan_part_size(
                    job.size,
                    total,
                    concurrency=self.concurrency,
                    part_size=self.part_size or DEFAULT_PART_SIZE,
                    auto=self.part_size is None,
                    in_order=job.check == "sha256",
                )

    def _check_free_space(self, jobs: list[BlobJob]) -> None:
        """Refuse, before any byte is allocated, a pull the cache's file system cannot hold (a manifest that
        claims more than the disk has, honest or not, must not fill the node)."""
        if not jobs:
            return
        needed = 0
        for job in jobs:
            try:
                on_disk = job.tmp_path.stat().st_size
            except OSError:
                on_disk = 0
            needed += max(0, job.size - on_disk)
        folder = jobs[0].final_path.parent
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if needed > free - FREE_SPACE_MARGIN:
            raise CacheWriteError(
                f"the pull needs {needed:,} bytes but {folder} has {free:,} free "
                f"(keeping {FREE_SPACE_MARGIN:,} spare); free space or point HF_HUB_CACHE at a bigger volume"
            )

    def _real_size_before_allocating(self, job: BlobJob) -> None:
        """A big blob's object size, from S3 itself, before its space is reserved on disk."""
        if job.size < HEAD_BEFORE_ALLOCATE:
            return  # a small blob's size is checked on its GET; reserving it costs little
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": job.key}
        if job.version_id:
            request["VersionId"] = job.version_id
        try:
            size = int(self.s3.head_object(**request)["ContentLength"])
        except ClientError as exc:
            raise s3_error(exc, bucket=self.bucket, key=job.key) from exc
        if size != job.size:
            raise IntegrityError(
                f"{job.label}: s3://{self.bucket}/{job.key} is {size} bytes, the manifest says {job.size}; "
                "nothing was allocated. Re-sync the model with the pipeline"
            )

    def _open(self, job: BlobJob, *, allow_resume: bool) -> None:
        job.final_path.parent.mkdir(parents=True, exist_ok=True)
        if allow_resume:
            self._resume_from_journal(job)
        if not job.done:
            for stale in (job.tmp_path, job.journal_path):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
        job.parts = -(-job.size // job.part_size) if job.size else 0
        job.resumed_bytes = sum(self._part_length(job, i) for i in job.done)
        if job.resumed_bytes:
            log.info(
                "%s: resuming a cut download, %d of %d bytes already on disk", job.label, job.resumed_bytes, job.size
            )
        # O_NOFOLLOW: a symlink planted at a staging path is never followed to overwrite another file; it
        # is removed (the link, not its target) and the blob starts over.
        try:
            job.fd = os.open(job.tmp_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise _cache_write_error(job, job.tmp_path, exc) from exc
            log.warning("%s: %s is a symlink; removed it, not followed", job.label, job.tmp_path)
            job.tmp_path.unlink()
            job.journal_path.unlink(missing_ok=True)
            job.done = set()
            job.resumed_bytes = 0
            job.fd = os.open(job.tmp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        if os.fstat(job.fd).st_size != job.size:
            self._real_size_before_allocating(job)
            try:
                os.ftruncate(job.fd, job.size)
            except (OverflowError, ValueError) as exc:
                raise IntegrityError(f"{job.label}: the manifest's size {job.size} is not a file size: {exc}") from exc
            if job.size and hasattr(os, "posix_fallocate"):
                with contextlib.suppress(OSError):
                    os.posix_fallocate(job.fd, 0, job.size)
        job.journal_fd = os.open(job.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        if not job.done:
            header = {"part_size": job.part_size, "sha256": job.sha256, "size": job.size}
            os.write(job.journal_fd, (json.dumps(header, sort_keys=True) + "\n").encode())

    def _resume_from_journal(self, job: BlobJob) -> None:
        """Adopt the finished parts (and part size) a dead process journalled for this very blob."""
        try:
            lines = job.journal_path.read_text().splitlines()
            tmp_size = job.tmp_path.stat().st_size
            header = json.loads(lines[0]) if lines else None
        except (OSError, UnicodeDecodeError, ValueError):
            return
        if (
            not isinstance(header, dict)
            or header.get("sha256") != job.sha256
            or header.get("size") != job.size
            or tmp_size != job.size
            or not isinstance(header.get("part_size"), int)
            or header["part_size"] < 1
        ):
            return
        part_size: int = header["part_size"]
        parts = -(-job.size // part_size) if job.size else 0
        done = {int(line) for line in lines[1:] if line.isdigit() and int(line) < parts}
        if done:
            job.part_size = part_size
            job.done = done

    def _close(self, job: BlobJob) -> None:
        job.hash_buffer = None
        for attr in ("fd", "journal_fd"):
            fd = getattr(job, attr)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(job, attr, -1)

    def _fetch_part(self, job: BlobJob, index: int) -> None:
        """GET one part into the blob at its offset, retrying a reset or a cut body from the first
        byte not yet received: bytes already on disk (and hashed, in-stream or later from disk) are
        never fetched or written again, so every byte the digest covers is the byte on disk."""
        start = index * job.part_size
        end = start + self._part_length(job, index)
        offset = start
        sha_in_stream = job.check == "sha256"
        crc = 0 if job.check == "crc64nvme" else None
        last_error: Exception | None = None
        for attempt in range(PART_ATTEMPTS):
            if self._cancel.is_set():
                raise _Cancelled()
            try:
                request: dict[str, Any] = {"Bucket": self.bucket, "Key": job.key}
                if job.version_id:
                    request["VersionId"] = job.version_id  # exactly the bytes the pipeline verified
                whole = job.parts == 1 and offset == start
                if not whole:
                    request["Range"] = f"bytes={offset}-{end - 1}"
                response = self.s3.get_object(**request)
                self._check_object_size(job, response, whole, offset, end - offset)
                body = BodyReader(response["Body"])
                buffer = read_buffer()
                while offset < end:
                    if self._cancel.is_set():
                        body.close()
                        raise _Cancelled()
                    received = body.readinto(buffer[: min(READ_CHUNK, end - offset)])
                    if not received:
                        break
                    chunk = buffer[:received]
                    _write_at(job, chunk, offset)
                    if sha_in_stream:
                        self._hash_in_stream(job, chunk, offset)
                    elif crc is not None:
                        crc = crc64nvme_update(chunk, crc)
                    offset += received
                    self._count(received)
                if offset < end:
                    body.close()
                    raise ShortBody(f"the body ended {end - offset} bytes early")
                if not body.at_end():
                    body.close()
                    raise IntegrityError(
                        f"{job.label}: s3://{self.bucket}/{job.key} returned more bytes than the manifest's size "
                        f"{job.size}; nothing was kept"
                    )
                break
            except RETRIED_ERRORS as exc:
                if is_final(exc):
                    raise s3_error(exc, bucket=self.bucket, key=job.key) from exc
                last_error = exc
                log.info(
                    "%s part %d attempt %d cut at byte %d (%s); resuming from there",
                    job.label,
                    index,
                    attempt + 1,
                    offset,
                    exc,
                )
        else:
            assert last_error is not None
            raise s3_error(last_error, bucket=self.bucket, key=job.key) from last_error
        received_at = time.monotonic()
        with self._bytes_lock:
            self.last_byte_at = max(self.last_byte_at, received_at)
        self._writeback.put(job.fd, start, end - start)
        try:
            os.write(job.journal_fd, f"{index}\n".encode())
        except OSError as exc:
            raise _cache_write_error(job, job.journal_path, exc) from exc
        with job.lock:
            job.done.add(index)
            if crc is not None:
                job.part_crcs[index] = crc
        self._advance_hash(job)

    def _check_object_size(self, job: BlobJob, response: dict[str, Any], whole: bool, start: int, length: int) -> None:
        if whole:
            total = int(response.get("ContentLength", -1))
        else:
            content_range = str(response.get("ContentRange", ""))
            total = int(content_range.rpartition("/")[2]) if content_range.rpartition("/")[2].isdigit() else -1
            if total == job.size and (
                content_range.partition("/")[0] != f"bytes {start}-{start + length - 1}"
                or int(response.get("ContentLength", -1)) != length
            ):
                response["Body"].close()
                raise IntegrityError(
                    f"{job.label}: s3://{self.bucket}/{job.key} answered the range {start}-{start + length - 1} with "
                    f"{content_range!r}; nothing was kept"
                )
        if total != job.size:
            response["Body"].close()
            raise IntegrityError(
                f"{job.label}: s3://{self.bucket}/{job.key} is {total} bytes, the manifest says {job.size}; "
                "nothing was kept. Re-sync the model with the pipeline"
            )

    def _count(self, count: int) -> None:
        with self._bytes_lock:
            self._bytes += count
        self.progress.add(count)

    def _uncount(self, count: int) -> None:
        if count:
            self._count(-count)

    def _hash_in_stream(self, job: BlobJob, chunk: memoryview, offset: int) -> None:
        """Hash a just-received chunk directly when it is the next byte to hash (no read-back)."""
        with job.lock:
            if job.hashing or offset != job.hashed_bytes:
                return
            job.hashing = True
        try:
            job.digest.update(chunk)
        finally:
            with job.lock:
                job.hashed_bytes += len(chunk)
                job.hashing = False

    def _written_frontier(self, job: BlobJob) -> int:
        """Bytes from the start of the blob that are on disk: the run of finished parts from part 0."""
        while job.frontier_part in job.done:
            job.frontier_part += 1
        return min(job.frontier_part * job.part_size, job.size)

    def _advance_hash(self, job: BlobJob) -> None:
        """Hash the finished prefix not yet hashed in-stream, reading it back (from the page cache).

        One thread per blob hashes at a time; a thread finding the blob busy leaves the work to it,
        and the busy thread re-checks the frontier under the lock before it lets go.
        """
        if job.check != "sha256":
            return
        with job.lock:
            if job.hashing:
                return
            job.hashing = True
        try:
            while True:
                with job.lock:
                    start, end = job.hashed_bytes, self._written_frontier(job)
                    if start >= end or self._cancel.is_set():
                        job.hashing = False
                        return
                offset = start
                while offset < end:
                    chunk = _read_at(job, offset, end)
                    job.digest.update(chunk)
                    offset += len(chunk)
                with job.lock:
                    job.hashed_bytes = offset
        except BaseException:
            with job.lock:
                job.hashing = False
            raise

    def _file_crc64nvme(self, job: BlobJob) -> int:
        """The blob's CRC64NVME: the parts' CRCs combined in order; a resumed part (no CRC in memory)
        is read back from the temporary file."""
        module = _checksums()
        assert module is not None
        total = 0
        for index in range(job.parts):
            length = self._part_length(job, index)
            part_crc = job.part_crcs.get(index)
            if part_crc is None:
                part_crc, offset, end = 0, index * job.part_size, index * job.part_size + length
                while offset < end:
                    chunk = _read_at(job, offset, end)
                    part_crc = crc64nvme_update(chunk, part_crc)
                    offset += len(chunk)
            total = module.combine_crc64nvme(total, part_crc, length)
        return total

    def _verify(self, job: BlobJob) -> bool:
        """The temporary file's bytes match the manifest under the blob's check."""
        if job.check == "sha256":
            self._advance_hash(job)
            return job.hashed_bytes == job.size and job.digest.hexdigest() == job.sha256
        if job.check == "crc64nvme":
            assert job.crc64nvme is not None
            return self._file_crc64nvme(job) == decode_crc64nvme(job.crc64nvme, job.label)
        return True

    def _discard(self, job: BlobJob) -> None:
        """A blob that failed its check: nothing of it is kept."""
        self._close(job)
        for path in (job.tmp_path, job.journal_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _install(self, job: BlobJob) -> None:
        """Rename a verified temporary file into place, durable first."""
        if os.fstat(job.fd).st_size != job.size:
            raise IntegrityError(f"{job.label}: temporary file has the wrong size; is another process writing it?")
        try:
            # On disk before the name says "complete": after a node crash a blob of the right size
            # must not be zeros the page cache never wrote back (completeness is checked by size).
            os.fsync(job.fd)
        except OSError as exc:
            raise _cache_write_error(job, job.tmp_path, exc) from exc
        self._close(job)
        os.replace(job.tmp_path, job.final_path)
        _fsync_dir(job.final_path.parent)
        if job.marker_path is not None:
            mark_verified(job.final_path, job.marker_path, job.check)
        with contextlib.suppress(FileNotFoundError):
            job.journal_path.unlink()
        job.finished = True


def _refuse_malformed_crcs(jobs: list[BlobJob]) -> None:
    """A malformed CRC64NVME in the manifest fails (ManifestError) before any download."""
    for job in jobs:
        if job.check == "crc64nvme" and job.crc64nvme is not None:
            decode_crc64nvme(job.crc64nvme, job.label)


def _interleaved(queues: list[list[tuple[BlobJob, int]]]) -> list[tuple[BlobJob, int]]:
    """Each blob's parts in order, the blobs taking turns: every blob's frontier moves from the start,
    so each is hashed (on its own core) while it downloads, not one after another at the end."""
    order: list[tuple[BlobJob, int]] = []
    for position in range(max((len(queue) for queue in queues), default=0)):
        order.extend(queue[position] for queue in queues if position < len(queue))
    return order


def _write_at(job: BlobJob, chunk: memoryview, offset: int) -> None:
    # A local write error (ENOSPC, EIO, read-only cache) is not an S3 fault: it must neither be
    # retried as one nor reported as "S3 unreachable", which sent a full disk to the Hub fallback.
    try:
        while chunk:
            # pwrite may write less than asked (a signal, a nearly full disk): the rest is written
            # again at its own offset, never assumed to be on disk.
            written = os.pwrite(job.fd, chunk, offset)
            if written <= 0:
                raise OSError(errno.EIO, "pwrite wrote no bytes")
            chunk = chunk[written:]
            offset += written
    except OSError as exc:
        raise _cache_write_error(job, job.tmp_path, exc) from exc


def _load_sync_file_range() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writing the range's dirty pages back, do not wait


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a finished part back to disk now, so the blob's fsync (durability before the
    rename) waits for the last parts only. Without it the kernel holds the dirty pages (below its
    background threshold, 10% of RAM) until the fsync, which then writes the whole blob while the
    pull waits: 1.0-1.5 s of a 2 GiB pull on the 1 GiB-shard bench, side by side. A hint: where
    the call is missing or fails, the fsync does all the work, as before."""
    if _SYNC_FILE_RANGE is not None and length > 0:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class _Writeback:
    """Starts each finished part's writeback (start_writeback) on a thread of its own, in the order
    the parts finish, so a receiving thread never waits on the disk: sync_file_range blocks while the
    device's queue is full, and on this VM that held the last parts' threads, and so the check, about
    0.5 s per GiB after the last byte (bench write_size). `finish` waits until every range handed over
    has been started; the caller calls it before it fsyncs or closes the files."""

    def __init__(self) -> None:
        self._ranges: SimpleQueue[tuple[int, int, int] | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, fd: int, offset: int, length: int) -> None:
        if _SYNC_FILE_RANGE is None or length <= 0:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mcl-writeback", daemon=True)
                self._thread.start()
        self._ranges.put((fd, offset, length))

    def _run(self) -> None:
        while (item := self._ranges.get()) is not None:
            start_writeback(*item)

    def finish(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._ranges.put(None)
            thread.join()


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (best effort: some filesystems refuse a directory fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_at(job: BlobJob, offset: int, end: int) -> memoryview:
    """Bytes of the temporary file from `offset` (at most up to `end`), read into the blob's read-back
    buffer. Only the one thread hashing the blob (or finishing it) calls this."""
    if job.hash_buffer is None:
        job.hash_buffer = memoryview(bytearray(min(HASH_READ_CHUNK, max(job.size, 1))))
    buffer = job.hash_buffer[: min(len(job.hash_buffer), end - offset)]
    received = os.preadv(job.fd, [buffer], offset)
    if not received:
        raise IntegrityError(f"{job.label}: temporary file shrank while verifying; is another process writing it?")
    return buffer[:received]


def _cache_write_error(job: BlobJob, path: Path, exc: OSError) -> CacheWriteError:
    return CacheWriteError(
        f"{job.label}: cannot write {path} ({exc.strerror or exc}): free space in the cache directory or "
        "point HF_HUB_CACHE (--cache-dir) at a larger volume; no blob was kept and the next pull resumes"
    )


def _first_real_error(futures: list[Future[None]]) -> BaseException:
    """The error that stopped the pool, not the cancellations it caused in the other threads."""
    errors = [f.exception() for f in futures if f.done() and not f.cancelled()]
    real = [e for e in errors if e is not None and not isinstance(e, _Cancelled)]
    if real:
        return real[0]
    return next((e for e in errors if e is not None), LoaderError("download stopped without an error"))


def make_job(entry: ManifestFile, cache: RepoCache, *, pin_version: bool = True) -> BlobJob:
    """The job that fetches a manifest file's object into its blob in a RepoCache; with `pin_version`
    it GETs the very version the manifest names."""
    name = entry.blob_name
    return BlobJob(
        key=entry.key,
        size=entry.size,
        sha256=entry.sha256,
        final_path=cache.blob_path(name),
        tmp_path=cache.tmp_path(name),
        journal_path=cache.journal_path(name),
        label=entry.path,
        crc64nvme=entry.crc64nvme,
        version_id=entry.version_id if pin_version else None,
        marker_path=cache.marker_path(name),
    )
