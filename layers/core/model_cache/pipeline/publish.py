"""Publish a verified snapshot in the order readers rely on (docs/architecture.md 3.1).

every file written and verified -> `hash` -> `manifests/{commit}.json` -> `refs/{revision}` ->
`manifest.json` (default branch only). A reader that finds a manifest finds every file it names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from model_cache.adapters.hubapi import head_commit
from model_cache.adapters.s3 import is_missing, s3_error
from model_cache.contract import errors, ids, layout
from model_cache.contract import manifest as manifest_mod
from model_cache.contract.manifest import FileRecord
from model_cache.pipeline.governance import RequestPolicy
from model_cache.pipeline.multipart import precondition_failed
from model_cache.pipeline.plan import Plan

DEFAULT_BRANCH = layout.DEFAULT_REVISION
PREVIOUS_COMMIT_METADATA = "previous-commit"  # on a ref the pipeline moved: the commit it moved off (gc's clock)
CONDITIONAL_ATTEMPTS = 8  # re-reads after a lost conditional write before giving up


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
    return None if body is None else parse_json_object(body, bucket, key)


def get_bytes(s3: Any, bucket: str, key: str) -> bytes | None:
    return get_with_etag(s3, bucket, key)[0]


def get_with_etag(s3: Any, bucket: str, key: str) -> tuple[bytes | None, str | None]:
    """The object's bytes and ETag, or (None, None) when there is none: the read a conditional write builds on."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_missing(s3, bucket, key, exc):
            return None, None
        raise s3_error(exc, bucket, f"reading {key}") from exc
    data: bytes = response["Body"].read()
    return data, response.get("ETag")


def put_bytes(
    s3: Any,
    bucket: str,
    key: str,
    body: bytes,
    content_type: str,
    *,
    if_match: str | None = None,
    create: bool = False,
    metadata: dict[str, str] | None = None,
) -> str | None:
    """PutObject; `create` writes only where no object is (If-None-Match: *), `if_match` only over that ETag.

    A lost condition raises `Conflict`, so the caller re-reads and decides again.
    """
    condition: dict[str, Any] = {"Metadata": metadata} if metadata else {}
    if create:
        condition["IfNoneMatch"] = "*"
    elif if_match is not None:
        condition["IfMatch"] = if_match
    try:
        response = s3.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType=content_type, ChecksumAlgorithm="CRC64NVME", **condition
        )
    except ClientError as exc:
        if (create or if_match is not None) and precondition_failed(exc):
            raise Conflict(key) from exc
        raise s3_error(exc, bucket, f"writing {key}") from exc
    version: str | None = response.get("VersionId")
    return version


class Conflict(Exception):
    """Another writer changed the object between our read and our conditional write."""


def put_once(s3: Any, bucket: str, key: str, body: bytes, content_type: str) -> None:
    """Write `key` only if it does not exist yet: what is there stays (write-once keys)."""
    try:
        put_bytes(s3, bucket, key, body, content_type, create=True)
    except Conflict:
        return


def merge_manifests(existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`existing` with `new`'s extra files: the superset rule of docs/architecture.md 3.2.

    Every entry `existing` has stays exactly as it is (a reader may already use it); an entry of `new`
    for the same path must be identical, or the publish stops. The selection becomes the union's.
    """
    if existing.get("commit") != new["commit"] or existing.get("repo_id") != new["repo_id"]:
        raise errors.IntegrityError(
            f"manifests/{new['commit']}.json describes {existing.get('repo_id')}@{existing.get('commit')}; "
            "refusing to replace it"
        )
    have = {entry["path"]: entry for entry in existing.get("files", [])}
    for entry in new["files"]:
        old = have.get(entry["path"])
        if old is not None and old != entry:
            raise errors.IntegrityError(
                f"manifests/{new['commit']}.json already names {entry['path']} with other bytes or another "
                f"version ({old.get('version_id')!r}, {old.get('sha256')}) than this run verified "
                f"({entry.get('version_id')!r}, {entry.get('sha256')}); the published manifest was left as it is"
            )
    extra = [entry for entry in new["files"] if entry["path"] not in have]
    if not extra and "selection" in existing:
        return existing
    merged = dict(existing)
    files = sorted([*existing.get("files", []), *extra], key=lambda entry: entry["path"])
    merged["files"] = files
    merged["total_size"] = sum(int(entry["size"]) for entry in files)
    merged["selection"] = union_selection(existing.get("selection"), new.get("selection"))
    manifest_mod.validate(merged)
    return merged


def union_selection(first: dict[str, Any] | None, second: dict[str, Any] | None) -> dict[str, list[str]]:
    """A selection covering both: includes joined (empty = everything), excludes only where both had them.

    A manifest written before `selection` existed was written for the default selection (everything).
    """
    first = first or {"include": [], "exclude": []}
    second = second or {"include": [], "exclude": []}
    include: list[str] = []
    if first["include"] and second["include"]:
        include = list(dict.fromkeys([*first["include"], *second["include"]]))
    exclude = [pattern for pattern in first["exclude"] if pattern in second["exclude"]]
    return {"include": include, "exclude": exclude}


def write_manifest(
    s3: Any, bucket: str, key: str, manifest: dict[str, Any], *, policy: RequestPolicy | None = None
) -> dict[str, Any]:
    """Publish `manifest` at `manifests/{commit}.json`: created if absent, else replaced only by a
    superset of what is there (conditional on the ETag read). Returns the manifest now published.

    `policy`'s per-repo quota is checked on the manifest about to be written, the union: the check and
    the conditional write see the same version, so runs that each fit cannot add up past the quota."""
    policy = policy or RequestPolicy()
    for _ in range(CONDITIONAL_ATTEMPTS):
        body, etag = get_with_etag(s3, bucket, key)
        if body is None:
            policy.check_union(manifest["repo_id"], manifest["revision"], manifest["files"], [])
            try:
                put_bytes(s3, bucket, key, manifest_mod.dumps(manifest), "application/json", create=True)
            except Conflict:
                continue
            return manifest
        existing = parse_json_object(body, bucket, key)
        merged = merge_manifests(existing, manifest)
        if merged is existing:
            return existing
        policy.check_union(manifest["repo_id"], manifest["revision"], merged["files"], [])
        try:
            put_bytes(s3, bucket, key, manifest_mod.dumps(merged), "application/json", if_match=etag)
        except Conflict:
            continue
        return merged
    raise errors.TransferError(f"s3://{bucket}/{key} kept changing under {CONDITIONAL_ATTEMPTS} publishes; retry")


def parse_json_object(body: bytes, bucket: str, key: str) -> dict[str, Any]:
    try:
        loaded = json.loads(body)
    except ValueError as exc:
        raise errors.IntegrityError(f"s3://{bucket}/{key} is not valid JSON") from exc
    if not isinstance(loaded, dict):
        raise errors.IntegrityError(f"s3://{bucket}/{key} is not a JSON object")
    return loaded


def has_ref(revision: str) -> bool:
    """Branches and tags get a ref; a bare commit id is its own name and needs none."""
    return not ids.is_commit_id(revision)


HeadCheck = Callable[[], bool]


def point_refs(
    s3: Any,
    bucket: str,
    prefix: str,
    repo_id: str,
    revision: str,
    manifest: dict[str, Any],
    *,
    is_head: HeadCheck,
) -> Published:
    """Move refs/{revision} (and manifest.json for main) forward to `manifest`'s commit.

    Refs only move forward (docs/architecture.md 3.1): each write is conditional on what was read
    (If-Match on its ETag, If-None-Match when absent), and happens only while `is_head()` says the
    commit is still the revision's head on the Hub. manifest.json follows refs/main: it is written
    only while refs/main names this commit, so the two never name different commits for long. A
    snapshot that lost the race stays published under manifests/{commit}.json (`ref_key` is None).
    Costs one GET of the ref (and one of manifest.json for main) when everything is already in place.
    """
    commit = manifest["commit"]
    ref_key = root_key = None
    if has_ref(revision):
        candidate = layout.ref_key(prefix, repo_id, revision)
        if _move_ref(s3, bucket, candidate, commit, is_head):
            ref_key = candidate
            if revision == DEFAULT_BRANCH:
                candidate_root = layout.root_manifest_key(prefix, repo_id)
                if _move_root_manifest(s3, bucket, candidate, candidate_root, manifest):
                    root_key = candidate_root
    return Published(
        commit=commit,
        manifest_key=layout.manifest_key(prefix, repo_id, commit),
        ref_key=ref_key,
        root_manifest_key=root_key,
        files=len(manifest["files"]),
        total_bytes=int(manifest["total_size"]),
    )


def _move_ref(s3: Any, bucket: str, key: str, commit: str, is_head: HeadCheck) -> bool:
    wanted = commit.encode("ascii")
    checked = False
    for _ in range(CONDITIONAL_ATTEMPTS):
        current, etag = get_with_etag(s3, bucket, key)
        if current == wanted:
            return True
        if not checked:
            if not is_head():
                return False  # the revision moved on at the Hub: an older commit never takes the ref
            checked = True
        previous = current.decode("ascii", "replace") if current else ""
        metadata = {PREVIOUS_COMMIT_METADATA: previous} if ids.is_commit_id(previous) else None
        try:
            put_bytes(s3, bucket, key, wanted, "text/plain", if_match=etag, create=etag is None, metadata=metadata)
        except Conflict:
            checked = False  # someone else moved it: ask the Hub again before overriding them
            continue
        return True
    raise errors.TransferError(f"s3://{bucket}/{key} kept changing under {CONDITIONAL_ATTEMPTS} writes; retry")


def _move_root_manifest(s3: Any, bucket: str, ref_key: str, root_key: str, manifest: dict[str, Any]) -> bool:
    body = manifest_mod.dumps(manifest)
    for _ in range(CONDITIONAL_ATTEMPTS):
        current, etag = get_with_etag(s3, bucket, root_key)
        if current == body:
            return True
        # Read after manifest.json, so a writer that moved refs/main on is seen before we overwrite it.
        if get_bytes(s3, bucket, ref_key) != manifest["commit"].encode("ascii"):
            return False
        try:
            put_bytes(s3, bucket, root_key, body, "application/json", if_match=etag, create=etag is None)
        except Conflict:
            continue
        return True
    raise errors.TransferError(f"s3://{bucket}/{root_key} kept changing under {CONDITIONAL_ATTEMPTS} writes; retry")


def publish(
    s3: Any, plan: Plan, records: list[FileRecord], *, is_head: HeadCheck, policy: RequestPolicy | None = None
) -> Published:
    """Write hash, manifest, ref and root manifest, in that order, for files already verified in S3;
    `policy`'s per-repo quota is held on the manifest written (write_manifest)."""
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
        selection={"include": list(plan.include), "exclude": list(plan.exclude)},
        requested_by=plan.requested_by,
    )
    if plan.write_hash_file:
        put_once(
            s3, plan.bucket, layout.hash_key(plan.prefix, plan.repo_id, plan.commit), plan.commit.encode(), "text/plain"
        )
    published = write_manifest(s3, plan.bucket, plan.manifest_key, manifest, policy=policy)
    return point_refs(s3, plan.bucket, plan.prefix, plan.repo_id, plan.revision, published, is_head=is_head)


def hub_head_check(repo_id: str, revision: str, commit: str, *, token: str | None) -> HeadCheck:
    """`is_head` for publish: asks the Hub, at publish time, whether `revision` still names `commit`."""

    def is_head() -> bool:
        return head_commit(repo_id, revision, token=token) == commit

    return is_head
