"""`model-cache gc`: delete snapshots nothing names any more, beyond the retention.

A snapshot is `snapshots/{commit}/` plus `manifests/{commit}.json`. It is **protected** — never
deleted, whatever the options — when a `refs/*` object or `manifest.json` names its commit. Of the
other published snapshots of a repo, the newest `keep` (by the manifest's `created_at`) and any
younger than `older_than_days` stay; the rest go. Files under `snapshots/{commit}/` with no manifest
(a failed run's leftovers, or a sync still copying) are deleted only when their newest object is
older than both `older_than_days` and `ORPHAN_GRACE_DAYS`, so a sync in progress is never touched.

Runs in flight: a snapshot a run has claimed is kept, and a run never starts on a snapshot gc has marked
(`model_cache.pipeline.claims`). Deletion order keeps readers safe: the refs and `manifest.json` are read again,
after gc's mark, just before each snapshot goes (a ref that moved onto it since the plan saves it),
then `manifests/{commit}.json` is deleted first and the files after it, so a reader never finds a
manifest whose files are gone.

Versioned buckets: gc deletes the current versions (S3 leaves a delete marker); the bucket's
lifecycle rule (NoncurrentVersionExpiration) removes the noncurrent versions later, so storage is
freed after that many days and a mistaken gc can be undone until then by removing the markers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import ClientError

from model_cache.adapters.s3 import list_objects, s3_error
from model_cache.contract import errors, ids, layout
from model_cache.contract.ids import validate_bucket, validate_prefix
from model_cache.pipeline import claims
from model_cache.pipeline.plan import DEFAULT_WORK_PREFIX
from model_cache.pipeline.publish import PREVIOUS_COMMIT_METADATA, get_bytes, get_json

DEFAULT_KEEP = 2
DEFAULT_OLDER_THAN_DAYS = 14.0
# Longer than any run can take (Lambda units, Fargate copies, retries) and equal to the work-file
# lifecycle, so leftovers of a run that may still be copying are never taken for garbage.
ORPHAN_GRACE_DAYS = 7.0
MAX_LISTED_DELETIONS = 100  # deletions named in a scheduled run's result; the log has every decision
_DELETE_BATCH = 1000

Action = Literal["keep", "delete"]


@dataclass(frozen=True)
class SnapshotInfo:
    """What gc knows of one commit folder of one repo."""

    repo_id: str
    commit: str
    published: bool  # manifests/{commit}.json exists
    created_at: datetime  # the manifest's created_at; for unpublished files, the newest object's time
    bytes: int = 0
    objects: int = 0


@dataclass(frozen=True)
class Decision:
    repo_id: str
    commit: str
    action: Action
    reason: str
    bytes: int
    objects: int
    published: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "commit": self.commit,
            "action": self.action,
            "reason": self.reason,
            "bytes": self.bytes,
            "objects": self.objects,
            "published": self.published,
        }


@dataclass
class GcReport:
    bucket: str
    prefix: str
    dry_run: bool
    keep: int
    older_than_days: float
    decisions: list[Decision] = field(default_factory=list)
    deleted_snapshots: int = 0
    deleted_objects: int = 0
    deleted_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "prefix": self.prefix,
            "dry_run": self.dry_run,
            "keep": self.keep,
            "older_than_days": self.older_than_days,
            "deleted_snapshots": self.deleted_snapshots,
            "deleted_objects": self.deleted_objects,
            "deleted_bytes": self.deleted_bytes,
            "decisions": [decision.to_json() for decision in self.decisions],
        }

    @property
    def deletions(self) -> list[Decision]:
        return [decision for decision in self.decisions if decision.action == "delete"]

    @property
    def kept_snapshots(self) -> int:
        return len(self.decisions) - len(self.deletions)

    def summary(self, max_listed: int = MAX_LISTED_DELETIONS) -> dict[str, Any]:
        """The scheduled gc's small result: the counts and the first `max_listed` deletions."""
        return {
            "status": "dry_run" if self.dry_run else "collected",
            "keep": self.keep,
            "older_than_days": self.older_than_days,
            "deleted_snapshots": self.deleted_snapshots,
            "deleted_objects": self.deleted_objects,
            "deleted_bytes": self.deleted_bytes,
            "kept_snapshots": self.kept_snapshots,
            "deletions": [decision.to_json() for decision in self.deletions[:max_listed]],
        }


def scheduled_settings(event: object, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """`collect`'s keyword arguments for a gc Lambda event (docs/how-to/operations.md).

    The schedule passes `{"source": "schedule"}`: the retention comes from GC_KEEP and
    GC_OLDER_THAN_DAYS, the bucket from MODEL_CACHE_BUCKET; a manual invocation may override
    `keep`, `older_than_days`, `dry_run`, `repos`, `bucket` and `prefix`.
    """
    if not isinstance(event, dict):
        raise errors.InvalidRequest(f"event must be a JSON object, got {type(event).__name__}")
    try:
        keep = event.get("keep", int(environ.get("GC_KEEP", DEFAULT_KEEP)))
        older_than = event.get("older_than_days", float(environ.get("GC_OLDER_THAN_DAYS", DEFAULT_OLDER_THAN_DAYS)))
    except ValueError as exc:
        raise errors.InvalidRequest(f"GC_KEEP / GC_OLDER_THAN_DAYS must be numbers: {exc}") from exc
    dry_run = event.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise errors.InvalidRequest(f"dry_run must be true or false, got {dry_run!r}")
    repos = event.get("repos", [])
    if not isinstance(repos, list) or not all(isinstance(repo, str) for repo in repos):
        raise errors.InvalidRequest("repos must be a list of repo ids")
    return {
        "bucket": validate_bucket(event.get("bucket") or environ.get("MODEL_CACHE_BUCKET")),
        "prefix": validate_prefix(event.get("prefix") or environ.get("MODEL_CACHE_PREFIX", "models")),
        "keep": keep,
        "older_than_days": older_than,
        "dry_run": dry_run,
        "repo_ids": repos,
        "work_prefix": (environ.get("MODEL_CACHE_WORK_PREFIX") or DEFAULT_WORK_PREFIX).strip("/"),
    }


def validate_retention(keep: object, older_than_days: object) -> tuple[int, float]:
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
        raise errors.InvalidRequest(f"keep must be a whole number >= 0, got {keep!r}")
    if (
        not isinstance(older_than_days, int | float)
        or isinstance(older_than_days, bool)
        or not 0 <= older_than_days < 100_000
    ):
        raise errors.InvalidRequest(f"older_than_days must be a number of days >= 0, got {older_than_days!r}")
    return keep, float(older_than_days)


def decide(
    snapshots: Iterable[SnapshotInfo],
    protected: dict[str, list[str]],
    *,
    keep: int,
    older_than_days: float,
    now: datetime,
    lost_at: Mapping[str, datetime] | None = None,
) -> list[Decision]:
    """Pure: what to do with each snapshot of ONE repo. `protected` maps a commit to the names pointing at it.

    A published snapshot's age counts from when it lost its last ref: `lost_at[commit]` (the newest
    move of a ref off it, see `refs_lost_at`) when that is later than its manifest's `created_at`."""
    keep, older_than_days = validate_retention(keep, older_than_days)
    min_age = timedelta(days=older_than_days)
    orphan_age = timedelta(days=max(older_than_days, ORPHAN_GRACE_DAYS))
    decisions: list[Decision] = []
    unreferenced = sorted(
        (snap for snap in snapshots if snap.commit not in protected or not protected[snap.commit]),
        key=lambda snap: (snap.created_at, snap.commit),
        reverse=True,
    )
    kept_newest = 0
    for snap in unreferenced:
        lost = (lost_at or {}).get(snap.commit)
        since = max(snap.created_at, lost) if snap.published and lost else snap.created_at
        age = now - since
        if not snap.published:
            if age < orphan_age:
                action: Action = "keep"
                reason = f"unpublished files younger than {orphan_age.days} days (a sync may still be copying)"
            else:
                action, reason = "delete", "unpublished leftovers of a run that never published"
        elif kept_newest < keep:
            kept_newest += 1
            action, reason = "keep", f"one of the newest {keep} unreferenced snapshots"
        elif age < min_age:
            action, reason = "keep", f"younger than {older_than_days:g} days"
        else:
            action, reason = "delete", f"unreferenced and older than {older_than_days:g} days"
        decisions.append(_decision(snap, action, reason))
    for snap in snapshots:
        names = protected.get(snap.commit)
        if names:
            decisions.append(_decision(snap, "keep", f"named by {', '.join(sorted(names))}"))
    return sorted(decisions, key=lambda decision: decision.commit)


def _decision(snap: SnapshotInfo, action: Action, reason: str) -> Decision:
    return Decision(snap.repo_id, snap.commit, action, reason, snap.bytes, snap.objects, snap.published)


# ---------------------------------------------------------------------------------------------
# Reading the bucket
# ---------------------------------------------------------------------------------------------


def list_repo_ids(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Every repo folder under the prefix (folders that are not a valid repo slug are left alone)."""
    base = layout.cache_base(prefix)
    repos: list[str] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base, Delimiter="/"):
            for item in page.get("CommonPrefixes", []):
                slug = item["Prefix"][len(base) :].rstrip("/")
                repo_id = layout.repo_id_from_slug(slug)
                try:
                    ids.validate_repo_id(repo_id)
                except errors.InvalidRequest:
                    continue
                if layout.repo_slug(repo_id) == slug:
                    repos.append(repo_id)
    except ClientError as exc:
        raise s3_error(exc, bucket, f"listing {base or '/'}") from exc
    return repos


def refs_lost_at(s3: Any, bucket: str, prefix: str, repo_id: str) -> dict[str, datetime]:
    """commit -> when a ref moved off it: a ref the pipeline moves records the commit it replaced
    (`x-amz-meta-previous-commit`), and its LastModified is the moment of the move."""
    lost: dict[str, datetime] = {}
    for key, _, modified in _list(s3, bucket, layout.refs_folder(prefix, repo_id)):
        try:
            previous = s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get(PREVIOUS_COMMIT_METADATA)
        except ClientError:
            continue
        if isinstance(previous, str) and ids.is_commit_id(previous):
            lost[previous] = max(lost.get(previous, modified), modified)
    return lost


def protected_commits(s3: Any, bucket: str, prefix: str, repo_id: str) -> dict[str, list[str]]:
    """commit -> the names that pin it: 'refs/<name>' for every ref, 'manifest.json' for the root manifest."""
    names: dict[str, list[str]] = {}
    refs_prefix = layout.refs_folder(prefix, repo_id)
    for key, _, _ in _list(s3, bucket, refs_prefix):
        commit = (get_bytes(s3, bucket, key) or b"").decode("ascii", "replace").strip()
        names.setdefault(commit, []).append(f"refs/{key[len(refs_prefix) :]}")
    root = get_json(s3, bucket, layout.root_manifest_key(prefix, repo_id))
    if root is not None and isinstance(root.get("commit"), str):
        names.setdefault(root["commit"], []).append("manifest.json")
    return names


def scan_snapshots(s3: Any, bucket: str, prefix: str, repo_id: str) -> list[SnapshotInfo]:
    """One `SnapshotInfo` per commit that has a manifest or files under snapshots/."""
    snapshots = layout.snapshots_folder(prefix, repo_id)
    manifests = layout.manifests_folder(prefix, repo_id)
    totals: dict[str, list[Any]] = {}  # commit -> [bytes, objects, newest LastModified]
    for key, size, modified in _list(s3, bucket, snapshots):
        commit = key[len(snapshots) :].split("/", 1)[0]
        if not ids.is_commit_id(commit):
            continue  # not ours: gc only ever touches commit folders
        entry = totals.setdefault(commit, [0, 0, modified])
        entry[0] += size
        entry[1] += 1
        entry[2] = max(entry[2], modified)
    published: dict[str, datetime] = {}
    manifest_bytes: dict[str, int] = {}
    for key, size, modified in _list(s3, bucket, manifests):
        name = key[len(manifests) :]
        commit = name.removesuffix(".json")
        if not name.endswith(".json") or not ids.is_commit_id(commit):
            continue
        manifest = get_json(s3, bucket, key) or {}
        published[commit] = _parse_time(manifest.get("created_at")) or modified
        manifest_bytes[commit] = size
    infos: list[SnapshotInfo] = []
    for commit in sorted(set(totals) | set(published)):
        size, count, newest = totals.get(commit, [0, 0, None])
        infos.append(
            SnapshotInfo(
                repo_id=repo_id,
                commit=commit,
                published=commit in published,
                created_at=published.get(commit) or newest,
                bytes=size + manifest_bytes.get(commit, 0),
                objects=count + (1 if commit in published else 0),
            )
        )
    return infos


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _list(s3: Any, bucket: str, prefix: str) -> list[tuple[str, int, datetime]]:
    return [(item["Key"], int(item["Size"]), item["LastModified"]) for item in list_objects(s3, bucket, prefix)]


# ---------------------------------------------------------------------------------------------
# Deleting
# ---------------------------------------------------------------------------------------------


def delete_snapshot(
    s3: Any, bucket: str, prefix: str, repo_id: str, commit: str, renew: Callable[[], None] | None = None
) -> int:
    """Delete manifests/{commit}.json, then every object under snapshots/{commit}/; returns objects deleted.
    `renew` (gc's lease) is called before each batch."""
    deleted = 0
    manifest_key = layout.manifest_key(prefix, repo_id, commit)
    try:
        if get_bytes(s3, bucket, manifest_key) is not None:
            s3.delete_object(Bucket=bucket, Key=manifest_key)
            deleted += 1
    except ClientError as exc:
        raise s3_error(exc, bucket, f"deleting {manifest_key}") from exc
    keys = [key for key, _, _ in _list(s3, bucket, layout.snapshot_prefix(prefix, repo_id, commit))]
    for start in range(0, len(keys), _DELETE_BATCH):
        batch = [{"Key": key} for key in keys[start : start + _DELETE_BATCH]]
        if renew is not None:
            renew()
        try:
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        except ClientError as exc:
            raise s3_error(exc, bucket, f"deleting the files of {repo_id} at {commit}") from exc
        failures = response.get("Errors", [])
        if failures:
            first = failures[0]
            raise errors.TransferError(
                f"S3 refused to delete {len(failures)} object(s) of {repo_id} at {commit}, e.g. {first.get('Key')}: "
                f"{first.get('Code')} {first.get('Message', '')}; its manifest is already gone, re-run gc to finish"
            )
        deleted += len(batch)
    return deleted


def collect(
    s3: Any,
    bucket: str,
    *,
    prefix: str = layout.DEFAULT_PREFIX,
    repo_ids: Sequence[str] = (),
    keep: int = DEFAULT_KEEP,
    older_than_days: float = DEFAULT_OLDER_THAN_DAYS,
    dry_run: bool = False,
    now: datetime | None = None,
    work_prefix: str = DEFAULT_WORK_PREFIX,
) -> GcReport:
    """Plan (and unless `dry_run`, carry out) the gc of every repo under the prefix, or of `repo_ids`."""
    keep, older_than_days = validate_retention(keep, older_than_days)
    now = now or datetime.now(UTC)
    report = GcReport(bucket, prefix, dry_run, keep, older_than_days)
    repos = [ids.validate_repo_id(repo_id) for repo_id in repo_ids] or list_repo_ids(s3, bucket, prefix)
    for repo_id in repos:
        protected = protected_commits(s3, bucket, prefix, repo_id)
        snapshots = scan_snapshots(s3, bucket, prefix, repo_id)
        lost = refs_lost_at(s3, bucket, prefix, repo_id)
        for decision in decide(snapshots, protected, keep=keep, older_than_days=older_than_days, now=now, lost_at=lost):
            if decision.action == "delete" and not dry_run:
                decision = _delete_unless_claimed(s3, bucket, prefix, work_prefix, decision, report)
            report.decisions.append(decision)
    return report


def _delete_unless_claimed(
    s3: Any, bucket: str, prefix: str, work_prefix: str, decision: Decision, report: GcReport
) -> Decision:
    """Mark the snapshot (claims.gc_begin), then delete it unless a run in flight claimed it or a ref moved
    onto it since the scan; the mark is withdrawn either way."""
    repo_id, commit = decision.repo_id, decision.commit
    lease, runs = claims.gc_lease(s3, bucket, work_prefix, prefix, repo_id, commit)
    if runs:
        return replace(decision, action="keep", reason=f"claimed by a run in flight ({', '.join(sorted(runs))})")
    try:
        # A ref may have moved onto this commit since the scan: read the names again, after the mark.
        names_now = protected_commits(s3, bucket, prefix, repo_id).get(commit)
        if names_now:
            return replace(decision, action="keep", reason=f"named by {', '.join(sorted(names_now))} since the scan")
        report.deleted_objects += delete_snapshot(s3, bucket, prefix, repo_id, commit, renew=lease.renew)
        report.deleted_snapshots += 1
        report.deleted_bytes += decision.bytes
        return decision
    finally:
        claims.gc_end(s3, bucket, work_prefix, prefix, repo_id, commit)
