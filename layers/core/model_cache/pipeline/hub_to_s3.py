"""Stream Hub bytes into S3: one PutObject per small file, UploadPart per part of a big one.

Nothing touches local disk. Every part is one HTTP Range request to the file's resolve URL, read by
`adapters.hub_reader.HubReader` (retries, resume by range, the redirect rules) into one buffer, and
uploaded with a CRC64NVME checksum; the write-once rules of the snapshot's keys are `pipeline.multipart`'s,
the copies inside S3 `pipeline.s3_copy`'s, and S3 itself `adapters.s3`.

`run_parts` is the one scheduler both the engine (every part of every file) and a Lambda unit (the
parts of one unit) use: a thread pool pulling parts in file order, at most `concurrency + window`
part buffers alive at once (memory <= part_size x (concurrency + window)), and an in-order hashing
cursor per file, so any file whose every part is in the run is verified in-stream without re-reading.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from model_cache.adapters.hub_reader import HubReader
from model_cache.adapters.progress import NullProgress, Progress
from model_cache.adapters.s3 import s3_error, version_or_none
from model_cache.contract import errors
from model_cache.pipeline.multipart import (
    CHECKSUM_ALGORITHM,
    PartResult,
    StoredObject,
    adopt_existing,
    precondition_failed,
)
from model_cache.pipeline.plan import Plan, PlannedFile, UnitItem
from model_cache.pipeline.verify import FileDigests, FileHasher

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
