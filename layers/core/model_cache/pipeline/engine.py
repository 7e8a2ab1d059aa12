"""`sync`: mirror one Hub revision into S3 in one process, on a thread pool.

The same building blocks as the state machine's tasks (`model_cache.pipeline.steps`), run back to back:
resolve + plan + start uploads -> every part of every file on one pool, verified in-stream ->
complete uploads -> publish. Any failure aborts this run's uploads and deletes what it wrote.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

from model_cache.adapters.hub_reader import HubReader
from model_cache.adapters.hubapi import resolve_token
from model_cache.adapters.progress import NullProgress, Progress
from model_cache.adapters.s3 import s3_client
from model_cache.contract import errors, layout
from model_cache.pipeline import claims
from model_cache.pipeline.events import PlanRequest
from model_cache.pipeline.finalize import cleanup_plan, finalize_files
from model_cache.pipeline.hub_to_s3 import FileOutcome, run_parts
from model_cache.pipeline.plan import DEFAULT_PART_SIZE, DEFAULT_UNIT_SIZE, PlanOptions, UnitItem
from model_cache.pipeline.prepare import SkippedGated, prepare_plan
from model_cache.pipeline.publish import Published, hub_head_check, publish
from model_cache.pipeline.s3_copy import copy_files

DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class SyncResult:
    status: str  # "published" or "already_published"
    repo_id: str
    revision: str
    commit: str
    bucket: str
    manifest_key: str
    ref_key: str | None
    root_manifest_key: str | None
    files: int
    total_bytes: int
    copied_bytes: int
    seconds: float
    retries: int
    reused_files: int = 0  # copied inside S3 from the previous snapshot (incremental refresh)
    reused_bytes: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.copied_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 2)}


def sync(
    repo_id: str,
    revision: str = layout.DEFAULT_REVISION,
    *,
    bucket: str,
    prefix: str = layout.DEFAULT_PREFIX,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    force: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    part_size: int = DEFAULT_PART_SIZE,
    token: str | None = None,
    progress: Progress | None = None,
    s3: Any = None,
) -> SyncResult:
    """Copy `repo_id`@`revision` into s3://`bucket`/`prefix`/ verified, and publish it; a no-op if published."""
    started = time.monotonic()
    progress = progress or NullProgress()
    if not isinstance(concurrency, int) or concurrency < 1 or concurrency > 256:
        raise errors.InvalidRequest(f"concurrency must be between 1 and 256, got {concurrency!r}")
    s3 = s3 or s3_client(concurrency)
    # The downloads need the token as much as the listing does: HF_TOKEN when none is passed.
    token = resolve_token(token)
    options = PlanOptions(part_size=part_size, unit_size=max(DEFAULT_UNIT_SIZE, part_size))
    request = PlanRequest.create(
        repo_id, revision, bucket=bucket, prefix=prefix, include=include, exclude=exclude, force=force, options=options
    )
    prepared = prepare_plan(s3, request, token=token)
    if isinstance(prepared, SkippedGated):  # a refresh-only outcome: sync never asks as the schedule
        raise errors.GatedRepo(f"{repo_id} is gated: set HF_TOKEN to a token with access")
    if isinstance(prepared, Published):
        return _result("already_published", repo_id, revision, bucket, prepared, 0, started, 0)
    plan = prepared
    progress.begin(len(plan.files), plan.total_bytes)
    reader = HubReader(plan.repo_id, plan.commit, plan.endpoint, token)
    items = [UnitItem(planned.path, 1, planned.part_count) for planned in plan.files if planned.copy_from is None]
    reused = [UnitItem(planned.path, 1, planned.part_count) for planned in plan.files if planned.copy_from]
    reused_bytes = sum(plan.file(item.path).size for item in reused)
    outcomes: dict[str, FileOutcome] = {}
    copy_outcomes: dict[str, FileOutcome] = {}
    try:
        # Copies inside S3 cost this process only waiting, so they run while the Hub parts stream.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3copy-files") as background:
            copying = (
                background.submit(
                    copy_files, s3, plan, reused, concurrency=concurrency, progress=progress, outcomes=copy_outcomes
                )
                if reused
                else None
            )
            run_parts(s3, plan, items, reader, concurrency=concurrency, progress=progress, outcomes=outcomes)
            if copying is not None:
                copying.result()
        records, _ = finalize_files(s3, plan, {**copy_outcomes, **outcomes})
        is_head = hub_head_check(plan.repo_id, plan.revision, plan.commit, token=token)
        published = publish(s3, plan, records, is_head=is_head)
        claims.release(s3, bucket, plan.claim_key)
    except BaseException:
        progress.abort()
        # Leaving the `with` waited for the copies, so no upload is still being written to.
        cleanup_plan(s3, plan)
        raise
    progress.end()
    hub_bytes = plan.total_bytes - reused_bytes
    result = _result("published", repo_id, revision, bucket, published, hub_bytes, started, reader.retries)
    return replace(result, reused_files=len(reused), reused_bytes=reused_bytes)


def _result(
    status: str,
    repo_id: str,
    revision: str,
    bucket: str,
    published: Published,
    copied: int,
    started: float,
    retries: int,
) -> SyncResult:
    return SyncResult(
        status=status,
        repo_id=repo_id,
        revision=revision,
        commit=published.commit,
        bucket=bucket,
        manifest_key=published.manifest_key,
        ref_key=published.ref_key,
        root_manifest_key=published.root_manifest_key,
        files=published.files,
        total_bytes=published.total_bytes,
        copied_bytes=copied,
        seconds=time.monotonic() - started,
        retries=retries,
    )
