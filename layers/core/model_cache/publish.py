"""Publish a verified snapshot in the order readers rely on (ARCHITECTURE.md 3.1).

every file written and verified -> `hash` -> `manifests/{commit}.json` -> `refs/{revision}` ->
`manifest.json` (default branch only). A reader that finds a manifest finds every file it names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from model_cache import errors, ids, layout
from model_cache import manifest as manifest_mod
from model_cache.manifest import FileRecord
from model_cache.plan import Plan
from model_cache.transfer import s3_error

DEFAULT_BRANCH = layout.DEFAULT_REVISION


@dataclass(frozen=True)
class Published:
    commit: str
    manifest_key: str
    ref_key: str | None
    root_manifest_key: str | None
    files: int
    total_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "manifest_key": self.manifest_key,
            "ref_key": self.ref_key,
            "root_manifest_key": self.root_manifest_key,
            "files": self.files,
            "total_bytes": self.total_bytes,
        }


def get_json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The JSON object at `key`, or None when there is none (a missing bucket is an error)."""
    body = get_bytes(s3, bucket, key)
    if body is None:
        return None
    try:
        loaded = json.loads(body)
    except ValueError as exc:
        raise errors.IntegrityError(f"s3://{bucket}/{key} is not valid JSON") from exc
    if not isinstance(loaded, dict):
        raise errors.IntegrityError(f"s3://{bucket}/{key} is not a JSON object")
    return loaded


def get_bytes(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise s3_error(exc, bucket, f"reading {key}") from exc
    data: bytes = response["Body"].read()
    return data


def put_bytes(s3: Any, bucket: str, key: str, body: bytes, content_type: str) -> str | None:
    try:
        response = s3.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType=content_type, ChecksumAlgorithm="CRC64NVME"
        )
    except ClientError as exc:
        raise s3_error(exc, bucket, f"writing {key}") from exc
    version: str | None = response.get("VersionId")
    return version


def has_ref(revision: str) -> bool:
    """Branches and tags get a ref; a bare commit id is its own name and needs none."""
    return not ids.is_commit_id(revision)


def point_refs(s3: Any, bucket: str, prefix: str, repo_id: str, revision: str, manifest: dict[str, Any]) -> Published:
    """Make refs/{revision} (and manifest.json for main) point at `manifest`'s commit, writing only what differs.

    Costs one GET of the ref (and one of manifest.json for main) when everything is already in place.
    """
    commit = manifest["commit"]
    ref_key = root_key = None
    if has_ref(revision):
        ref_key = layout.ref_key(prefix, repo_id, revision)
        if get_bytes(s3, bucket, ref_key) != commit.encode("ascii"):
            put_bytes(s3, bucket, ref_key, commit.encode("ascii"), "text/plain")
        if revision == DEFAULT_BRANCH:
            root_key = layout.root_manifest_key(prefix, repo_id)
            current = get_json(s3, bucket, root_key)
            if current is None or current.get("commit") != commit or current.get("revision") != revision:
                put_bytes(s3, bucket, root_key, manifest_mod.dumps(manifest), "application/json")
    return Published(
        commit=commit,
        manifest_key=layout.manifest_key(prefix, repo_id, commit),
        ref_key=ref_key,
        root_manifest_key=root_key,
        files=len(manifest["files"]),
        total_bytes=int(manifest["total_size"]),
    )


def publish(s3: Any, plan: Plan, records: list[FileRecord]) -> Published:
    """Write hash, manifest, ref and root manifest, in that order, for files already verified in S3."""
    planned_paths = {planned.path for planned in plan.files}
    recorded_paths = {record.path for record in records}
    if planned_paths != recorded_paths:
        missing = sorted(planned_paths - recorded_paths)[:5]
        raise errors.IntegrityError(f"refusing to publish: files not copied and verified: {missing}")
    manifest = manifest_mod.build(
        repo_id=plan.repo_id,
        revision=plan.revision,
        commit=plan.commit,
        source=plan.endpoint,
        bucket=plan.bucket,
        prefix=plan.prefix,
        files=records,
    )
    if plan.write_hash_file:
        put_bytes(
            s3, plan.bucket, layout.hash_key(plan.prefix, plan.repo_id, plan.commit), plan.commit.encode(), "text/plain"
        )
    put_bytes(s3, plan.bucket, plan.manifest_key, manifest_mod.dumps(manifest), "application/json")
    return point_refs(s3, plan.bucket, plan.prefix, plan.repo_id, plan.revision, manifest)
