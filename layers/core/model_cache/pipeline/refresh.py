"""Incremental refresh: which files of a new commit can be copied inside S3 from the previous snapshot.

The previous snapshot is the one `refs/{revision}` names (so a branch that moved reuses what the
branch pointed at). A file is reusable when the previous manifest lists the same bytes — the same git
blob id and size (for an LFS file the blob id is that of its pointer, which names the sha256 and the
size) and, for LFS, the same sha256 — and the object S3 holds for it is still the one the manifest
recorded: one HEAD checks its size, version id and stored CRC64NVME. Anything else comes from the Hub.
The copy itself (`s3_copy.copy_files`) pins that object by ETag and checks the new object's CRC64NVME
against the recorded one, so a copied file is verified without reading it.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from model_cache.adapters.hubapi import HubFile
from model_cache.adapters.s3 import is_missing, s3_error, version_or_none
from model_cache.contract import ids, layout
from model_cache.pipeline.plan import CopySource
from model_cache.pipeline.publish import get_bytes, get_json

HEAD_CONCURRENCY = 8  # within the default client's connection pool


def previous_manifest(s3: Any, bucket: str, prefix: str, repo_id: str, revision: str) -> dict[str, Any] | None:
    """The manifest refs/{revision} names, or None (a bare commit id has no ref; a first sync has none)."""
    if ids.is_commit_id(revision):
        return None
    ref = get_bytes(s3, bucket, layout.ref_key(prefix, repo_id, revision))
    commit = (ref or b"").decode("ascii", "replace").strip()
    if not ids.is_commit_id(commit):
        return None
    manifest = get_json(s3, bucket, layout.manifest_key(prefix, repo_id, commit))
    if manifest is None or not isinstance(manifest.get("files"), list):
        return None
    return manifest


def _same_bytes(hub_file: HubFile, entry: dict[str, Any]) -> bool:
    if entry.get("size") != hub_file.size or entry.get("git_oid") != hub_file.git_oid:
        return False
    if hub_file.lfs_sha256 is not None:
        return bool(entry.get("lfs")) and entry.get("sha256") == hub_file.lfs_sha256
    return not entry.get("lfs")


def reusable_sources(
    s3: Any, bucket: str, prefix: str, repo_id: str, revision: str, files: Iterable[HubFile]
) -> dict[str, CopySource]:
    """path -> the verified previous object with the same bytes, for every file of `files` that has one."""
    previous = previous_manifest(s3, bucket, prefix, repo_id, revision)
    if previous is None:
        return {}
    snapshots = layout.snapshots_folder(prefix, repo_id)
    by_blob: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in previous["files"]:
        key = entry.get("key")
        # Only ever copy from this repo's own snapshots, whatever a manifest says.
        if isinstance(key, str) and key.startswith(snapshots) and ".." not in key.split("/"):
            by_blob.setdefault((str(entry.get("git_oid")), int(entry.get("size", -1))), entry)
    candidates: dict[str, dict[str, Any]] = {}
    for hub_file in files:
        entry = by_blob.get((hub_file.git_oid, hub_file.size))
        if entry is not None and _same_bytes(hub_file, entry):
            candidates[hub_file.path] = entry
    # One HEAD per candidate; a few in parallel so a repo of thousands of files plans in seconds.
    with ThreadPoolExecutor(max_workers=HEAD_CONCURRENCY, thread_name_prefix="reuse-head") as pool:
        results = pool.map(lambda entry: _checked_source(s3, bucket, entry), candidates.values())
        checked = dict(zip(candidates, results, strict=True))
    return {path: source for path, source in checked.items() if source is not None}


def _checked_source(s3: Any, bucket: str, entry: dict[str, Any]) -> CopySource | None:
    """The object for `entry` if S3 still holds exactly what the manifest recorded, else None."""
    if not entry.get("crc64nvme"):
        return None  # a copy is verified by its CRC64NVME; without a recorded one, fetch from the Hub
    # The recorded version, not whatever is current: a delete marker or a newer write over the key does not
    # change the bytes that were verified, and the copy names that version too.
    pinned = {"VersionId": entry["version_id"]} if entry.get("version_id") else {}
    try:
        head = s3.head_object(Bucket=bucket, Key=entry["key"], ChecksumMode="ENABLED", **pinned)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchVersion", "405") or is_missing(
            s3, bucket, entry["key"], exc
        ):
            return None  # gone (gc, or removed by hand): fetch it from the Hub
        raise s3_error(exc, bucket, f"checking {entry['key']} for reuse") from exc
    if head.get("ContentLength") != entry["size"]:
        return None
    recorded_version = entry.get("version_id")
    if recorded_version and version_or_none(head.get("VersionId")) != recorded_version:
        return None
    stored_crc = head.get("ChecksumCRC64NVME")
    if entry.get("crc64nvme") and stored_crc and stored_crc != entry["crc64nvme"]:
        return None
    return CopySource(
        key=entry["key"],
        etag=str(head["ETag"]),
        sha256=str(entry["sha256"]),
        crc64nvme=entry.get("crc64nvme"),
        version_id=version_or_none(head.get("VersionId")),
    )
