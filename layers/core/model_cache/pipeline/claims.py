"""Runs in flight, as gc sees them: a claim per run on the snapshot it writes or points a ref at.

A run (an execution's plan, an engine sync) writes `{work_prefix}/claims/{prefix}/{org--name}/{commit}/{holder}.json`
before it reads whether the commit is published, and deletes it when it ends (cleanup). gc, before it
deletes a snapshot, writes `gc.json` into the same folder and then lists the folder; a run, after writing
its claim, lists the folder too. With S3's read-after-write consistency each side sees the other's
object whenever their writes and listings interleave, so they can never both go ahead: gc skips a
claimed snapshot, and a run that finds gc at work fails with `SnapshotBusy` before it wrote anything
(nothing to clean; send the request again). Claims older than `CLAIM_TTL_DAYS` are a crashed run's and
are ignored (the work-prefix lifecycle rule removes them too).

gc's own mark is a lease, not a claim: it counts for `GC_LEASE_SECONDS` from its last write, and gc
writes it again before each batch of deletes (`GcLease.renew`), so a gc killed between its last
delete and its end blocks that commit for minutes, not for the claims' seven days. A gc that could
not renew within half the lease stops deleting before its mark could have lapsed.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from model_cache.adapters.s3 import list_objects
from model_cache.contract import errors, layout
from model_cache.pipeline.publish import put_bytes

CLAIM_TTL_DAYS = 7.0  # longer than any run; equal to the work-file lifecycle rule
# gc's mark lives this long after its last write: many delete batches (one PUT renews it before each),
# far above S3 clock skew, far below a run's retry interval times its retries.
GC_LEASE_SECONDS = 900.0


def utcnow() -> datetime:
    """The wall clock the ages of claims and leases are read against (S3's LastModified is UTC)."""
    return datetime.now(UTC)


def _put(s3: Any, bucket: str, key: str, holder: str) -> None:
    body = json.dumps({"holder": holder, "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()
    put_bytes(s3, bucket, key, body, "application/json")


def _delete(s3: Any, bucket: str, key: str) -> None:
    # A claim left behind only makes gc wait; the work-prefix lifecycle rule removes it.
    with contextlib.suppress(ClientError):
        s3.delete_object(Bucket=bucket, Key=key)


def _live(s3: Any, bucket: str, claims_folder: str, now: datetime | None = None) -> list[str]:
    """The names in the folder still in force: run claims younger than the TTL, gc's mark within its lease."""
    now = now or utcnow()
    oldest_claim = now - timedelta(days=CLAIM_TTL_DAYS)
    oldest_lease = now - timedelta(seconds=GC_LEASE_SECONDS)
    live = []
    for item in list_objects(s3, bucket, claims_folder):
        name = str(item["Key"])[len(claims_folder) :]
        if item["LastModified"] >= (oldest_lease if name == layout.GC_MARKER else oldest_claim):
            live.append(name)
    return live


def claim(s3: Any, bucket: str, work_prefix: str, prefix: str, repo_id: str, commit: str, holder: str) -> str:
    """Claim the snapshot for a run; returns the claim's key. Raises SnapshotBusy (claim withdrawn) if gc is
    deleting it right now."""
    claims_folder = layout.claims_folder(work_prefix, prefix, repo_id, commit)
    key = layout.claim_key(claims_folder, holder)
    _put(s3, bucket, key, holder)
    if layout.GC_MARKER in _live(s3, bucket, claims_folder):
        _delete(s3, bucket, key)
        raise errors.SnapshotBusy(
            f"gc is deleting {repo_id}@{commit[:12]} right now; nothing was written: send the request again in a minute"
        )
    return key


def release(s3: Any, bucket: str, key: str | None) -> None:
    if key:
        _delete(s3, bucket, key)


class GcLease:
    """gc's mark on one snapshot: `renew()` before each batch of deletes writes it again (at most every
    third of the lease) and raises SnapshotBusy when the last write is too old to trust."""

    def __init__(self, s3: Any, bucket: str, key: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.s3, self.bucket, self.key, self.clock = s3, bucket, key, clock
        self.written = clock()
        _put(s3, bucket, key, "gc")

    def renew(self) -> None:
        elapsed = self.clock() - self.written
        if elapsed > GC_LEASE_SECONDS / 2:
            raise errors.SnapshotBusy(
                f"gc's lease on {self.key} was last written {elapsed:.0f} s ago and may have lapsed; stopped "
                "deleting (re-run gc to finish)"
            )
        if elapsed > GC_LEASE_SECONDS / 3:
            _put(self.s3, self.bucket, self.key, "gc")
            self.written = self.clock()


def gc_begin(s3: Any, bucket: str, work_prefix: str, prefix: str, repo_id: str, commit: str) -> list[str]:
    """Mark the snapshot as being deleted; returns the live claims of runs found (then gc must not delete,
    and has already withdrawn its mark)."""
    return gc_lease(s3, bucket, work_prefix, prefix, repo_id, commit)[1]


def gc_lease(
    s3: Any, bucket: str, work_prefix: str, prefix: str, repo_id: str, commit: str
) -> tuple[GcLease, list[str]]:
    """gc_begin, also returning the lease gc renews while it deletes."""
    claims_folder = layout.claims_folder(work_prefix, prefix, repo_id, commit)
    lease = GcLease(s3, bucket, layout.gc_marker_key(claims_folder))
    runs = [name for name in _live(s3, bucket, claims_folder) if name != layout.GC_MARKER]
    if runs:
        gc_end(s3, bucket, work_prefix, prefix, repo_id, commit)
    return lease, runs


def gc_end(s3: Any, bucket: str, work_prefix: str, prefix: str, repo_id: str, commit: str) -> None:
    _delete(s3, bucket, layout.gc_marker_key(layout.claims_folder(work_prefix, prefix, repo_id, commit)))
