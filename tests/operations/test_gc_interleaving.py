"""gc never races a run: every ordering of gc's S3 operations against a run that needs the snapshot gc is
deleting, and of the run's against gc, ends with no manifest or ref naming anything missing.

The scene: commit c1 was cached and then main moved to c2 (refs/main -> c2), so c1 is unreferenced and,
with keep=0 and older_than_days=0, gc deletes it. Then the Hub's main goes back to c1, and a run needs c1
again: a plain request (c1's manifest is there, so it only re-points refs/main: the narrow window) or a
`force` re-copy (it writes c1's keys, adopting what is there). Each test runs one side and, through a
boto3 hook on its client (the request still goes to S3), runs the whole other side right before that
side's k-th S3 request, for every k. The run may lose with SnapshotBusy (gc was at work; nothing written);
whatever happens, `check_bucket` then finds every manifest's files and every ref's manifest, and no upload
is left open.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import incomplete_uploads, shared_test_module

from model_cache.adapters.s3 import s3_client
from model_cache.contract import errors, layout
from model_cache.operations.gc import collect
from model_cache.pipeline import steps
from model_cache.pipeline.engine import sync
from model_cache.pipeline.plan import MiB

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ops = shared_test_module("ops_support", "tests/operations/ops_support.py")
support = shared_test_module("reliability_support", "tests/reliability/reliability_support.py")
C1_README = b"# gc interleaving, c1\n"
C2_README = b"# gc interleaving, c2\n"


class Scene:
    def __init__(self, hub: Any, hub_root: Path, s3: Any) -> None:
        self.hub, self.hub_root, self.s3 = hub, hub_root, s3
        files = {**ops.default_files(), "README.md": C1_README}
        files[ops.BIG_FILE] = files[ops.BIG_FILE][: 6 * MiB]  # a 2-part multipart file, quick to copy
        self.repo_id = ops.make_repo(hub_root, files)

    def build(self) -> str:
        """A fresh unversioned bucket: c1 cached, then c2 cached and refs/main on c2; the Hub back on c1."""
        bucket = support.new_bucket(self.s3, versioned=False)
        ops.write_files(self.hub_root, self.repo_id, {"README.md": C1_README})
        self.c1 = sync(self.repo_id, bucket=bucket, part_size=5 * MiB, s3=self.s3).commit
        ops.write_files(self.hub_root, self.repo_id, {"README.md": C2_README})
        sync(self.repo_id, bucket=bucket, part_size=5 * MiB, s3=self.s3)
        ops.write_files(self.hub_root, self.repo_id, {"README.md": C1_README})
        return bucket


def run_gc(scene: Scene, bucket: str, client: Any) -> None:
    collect(client, bucket, repo_ids=[scene.repo_id], keep=0, older_than_days=0)


def run_request(scene: Scene, bucket: str, client: Any, *, force: bool) -> None:
    """An execution's tasks for main (now c1 at the Hub); SnapshotBusy is an acceptable end (nothing written)."""
    event = {"repo_id": scene.repo_id, "bucket": bucket, "force": force, "options": {"part_size": 5 * MiB}}
    try:
        planned = steps.plan(event, s3=client)
    except errors.SnapshotBusy:
        return
    if planned["status"] == "already_published":
        return
    try:
        for item in planned["units"]:
            steps.copy_unit(item, s3=client)
        steps.publish(steps.finalize(steps.complete_files(planned, s3=client), s3=client), s3=client)
    finally:
        steps.cleanup({**planned, "failed": False}, s3=client)


def interleave(first: Callable[[Any], None], second: Callable[[], None], at: int | None) -> int:
    """Run `first` with a client that runs `second` right before its `at`-th S3 request; returns how many
    requests `first` made."""
    client = s3_client()
    made = [0]

    def before(**_: Any) -> None:
        if made[0] == at:
            second()
        made[0] += 1

    client.meta.events.register("before-call.s3", before)
    first(client)
    return made[0]


def assert_clean(scene: Scene, bucket: str, where: str, table: Any) -> None:
    state = support.check_bucket(scene.s3, bucket)
    c1_published = state.published(layout.manifest_key("models", scene.repo_id, scene.c1))
    table.bucket_trial(state, recovered=c1_published, note=where)
    assert state.problems == [], f"{where}: {state.problems}"
    assert incomplete_uploads(scene.s3, bucket) == [], where


@pytest.fixture
def scene(hub: Any, hub_root: Path, s3: Any) -> Scene:
    return Scene(hub, hub_root, s3)


@pytest.mark.parametrize("force", [False, True], ids=["re-point refs", "force re-copy"])
def test_a_run_at_every_moment_of_gc(scene: Scene, force: bool) -> None:
    """GIVEN gc deleting the unreferenced c1  WHEN the run that needs c1 runs whole right before each of
    gc's S3 requests in turn  THEN no manifest or ref names anything missing, whichever side won.
    (Failed on efea134: gc deleted c1's files after the run had pointed refs/main at c1 or adopted them.)"""
    bucket = scene.build()
    total = interleave(lambda client: run_gc(scene, bucket, client), lambda: None, at=None)
    assert total > 5
    table = support.FaultTable(f"gc interleaved with a run ({'force re-copy' if force else 're-point refs'})")
    for k in range(total):
        bucket = scene.build()
        interleave(
            lambda client, bucket=bucket: run_gc(scene, bucket, client),
            lambda bucket=bucket: run_request(scene, bucket, s3_client(), force=force),
            at=k,
        )
        assert_clean(scene, bucket, f"run before gc request {k} of {total}", table)
    table.write()


def test_gc_at_every_moment_of_a_force_re_copy(scene: Scene) -> None:
    """GIVEN a force re-copy of the unreferenced c1  WHEN gc runs whole right before each of the run's S3
    requests in turn  THEN gc either keeps c1 (the run's claim) or deletes it before the run looks, and no
    manifest or ref names anything missing.
    (Failed on efea134: gc deleted keys mid-copy that the run then published.)"""
    bucket = scene.build()
    total = interleave(lambda client: run_request(scene, bucket, client, force=True), lambda: None, at=None)
    assert total > 5
    table = support.FaultTable("gc at every moment of a force re-copy")
    for k in range(total):
        bucket = scene.build()
        interleave(
            lambda client, bucket=bucket: run_request(scene, bucket, client, force=True),
            lambda bucket=bucket: run_gc(scene, bucket, s3_client()),
            at=k,
        )
        assert_clean(scene, bucket, f"gc before run request {k} of {total}", table)
    table.write()


def test_retention_counts_from_when_a_snapshot_lost_its_last_ref(
    hub: Any, hub_root: Path, s3: Any, bucket: str
) -> None:
    """GIVEN c1 published 60 days ago (its manifest's created_at) that was main until a moment ago
    WHEN gc runs with keep=0 and older_than_days=1  THEN c1 is kept: its age counts from the ref's move.
    (Failed on efea134: the age came from created_at, so c1 was deleted at once.)"""
    repo_id = ops.make_repo(hub_root)
    c1 = sync(repo_id, bucket=bucket, part_size=5 * MiB, s3=s3).commit
    key = layout.manifest_key("models", repo_id, c1)
    manifest = ops.manifest_at(s3, bucket, key)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({**manifest, "created_at": "2026-10-01T00:00:00Z"}).encode())
    ops.write_files(hub_root, repo_id, {"README.md": b"# moved\n"})
    sync(repo_id, bucket=bucket, part_size=5 * MiB, s3=s3)

    report = collect(s3, bucket, repo_ids=[repo_id], keep=0, older_than_days=1)

    decision = next(d for d in report.decisions if d.commit == c1)
    assert decision.action == "keep", decision.reason
    assert "younger than 1 days" in decision.reason
