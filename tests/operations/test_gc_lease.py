"""gc's mark on a snapshot is a lease (issue 23, row 12): a gc killed between its last delete and its
end blocks that commit for GC_LEASE_SECONDS, not for the claims' seven days."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from model_cache.contract import errors
from model_cache.pipeline import claims

pytestmark = pytest.mark.integration

REPO, COMMIT = "org/leased", "c" * 40


def test_a_killed_gcs_mark_blocks_runs_only_for_its_lease(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN gc marked a snapshot and was killed before withdrawing its mark (no gc_end)
    WHEN a run claims that commit at once, and again once the lease has passed (the clock moved on)
    THEN the first is SnapshotBusy and the second goes ahead, with its claim in place."""
    runs = claims.gc_begin(s3, bucket, "work", "models", REPO, COMMIT)
    assert runs == []

    with pytest.raises(errors.SnapshotBusy):
        claims.claim(s3, bucket, "work", "models", REPO, COMMIT, "run-1")

    now = claims.utcnow()
    monkeypatch.setattr(claims, "utcnow", lambda: now + timedelta(seconds=claims.GC_LEASE_SECONDS + 60))
    key = claims.claim(s3, bucket, "work", "models", REPO, COMMIT, "run-2")
    assert key.endswith("run-2.json")
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0


def test_a_gc_that_cannot_renew_its_lease_in_time_stops_deleting(s3: Any, bucket: str) -> None:
    """GIVEN gc's lease last written more than half a lease ago (gc was paused)
    WHEN gc is about to delete its next batch
    THEN it stops with SnapshotBusy instead of deleting under a mark that may have lapsed; a lease
    renewed in time is written again and lets gc go on."""
    ticks = [0.0]
    lease = claims.GcLease(s3, bucket, "work/claims/x/gc.json", clock=lambda: ticks[0])
    assert s3.head_object(Bucket=bucket, Key=lease.key)["ContentLength"] > 0

    ticks[0] = claims.GC_LEASE_SECONDS * 0.4
    lease.renew()
    assert lease.written == ticks[0]

    ticks[0] += claims.GC_LEASE_SECONDS * 0.6
    with pytest.raises(errors.SnapshotBusy, match="lapsed"):
        lease.renew()


def test_gc_renews_its_lease_before_each_batch_and_stops_when_it_cannot(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a snapshot of 5 files deleted in batches of 2, and a lease that cannot be renewed a second time
    WHEN gc deletes the snapshot
    THEN it renewed before the first batch, stops with SnapshotBusy before the second, and the files of
    the batches it did not run are still there."""
    from model_cache.contract import layout
    from model_cache.operations import gc

    monkeypatch.setattr(gc, "_DELETE_BATCH", 2)
    for index in range(5):
        s3.put_object(Bucket=bucket, Key=layout.file_key("models", REPO, COMMIT, f"f{index}.bin"), Body=b"x")
    renewals: list[int] = []

    def renew() -> None:
        renewals.append(len(renewals))
        if len(renewals) > 1:
            raise errors.SnapshotBusy("the lease lapsed while gc was paused")

    with pytest.raises(errors.SnapshotBusy, match="lapsed"):
        gc.delete_snapshot(s3, bucket, "models", REPO, COMMIT, renew=renew)
    left = s3.list_objects_v2(Bucket=bucket, Prefix=layout.snapshot_prefix("models", REPO, COMMIT)).get("Contents", [])
    assert renewals == [0, 1]
    assert len(left) == 3
