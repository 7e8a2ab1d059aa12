"""Which models a scheduled refresh covers: the configured list plus every repo already cached.

A refresh re-plans each of them at its branch; the plan step finds an unchanged commit already
published and stops there, so a model that has not moved costs one Hub API call and no copy work.
Repos found in the bucket are refreshed at every branch or tag they have a ref for, with the
selection their published manifest records (docs/architecture.md 3.2 `selection`: the union of what the
requests asked for), so a refresh never copies more of a repo than was asked; a manifest written
before `selection` existed was written for the default selection.
"""

from __future__ import annotations

import json
from typing import Any

from model_cache.contract import ids, layout
from model_cache.contract.errors import InvalidRequest
from model_cache.pipeline.publish import get_bytes, get_json, put_bytes
from model_cache.pipeline.request_message import CacheRequest

REFRESH_REQUESTER = "schedule"


def parse_tracked(text: str) -> list[CacheRequest]:
    """'org/a, org/b@v1' -> requests; blank entries are ignored, bad ones raise InvalidRequest."""
    requests: list[CacheRequest] = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        repo_id, revision = ids.parse_repo_ref(entry)
        requests.append(
            CacheRequest(repo_id=repo_id, revision=revision or layout.DEFAULT_REVISION, requested_by=REFRESH_REQUESTER)
        )
    return requests


def cached_refs(s3: Any, bucket: str, prefix: str) -> list[CacheRequest]:
    """Every (repo, ref) that has a `refs/{revision}` object under the cache prefix."""
    base = layout.repo_prefix(prefix, "x").removesuffix("x/")
    found: list[CacheRequest] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=base, Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            slug = common["Prefix"][len(base) :].rstrip("/")
            try:
                repo_id = ids.validate_repo_id(layout.repo_id_from_slug(slug))
            except InvalidRequest:
                continue  # not a repo folder of ours (e.g. a stray key); nothing to refresh
            refs_prefix = layout.ref_key(prefix, repo_id, "")
            for refs_page in paginator.paginate(Bucket=bucket, Prefix=refs_prefix):
                for entry in refs_page.get("Contents", []):
                    revision = entry["Key"][len(refs_prefix) :]
                    try:
                        ids.validate_revision(revision)
                    except InvalidRequest:
                        continue
                    include, exclude = recorded_selection(s3, bucket, prefix, repo_id, revision)
                    found.append(
                        CacheRequest(
                            repo_id=repo_id,
                            revision=revision,
                            include=include,
                            exclude=exclude,
                            requested_by=REFRESH_REQUESTER,
                        )
                    )
    return found


def recorded_selection(
    s3: Any, bucket: str, prefix: str, repo_id: str, revision: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The include/exclude the manifest `refs/{revision}` names was published for; ((), ()) is the default."""
    ref = get_bytes(s3, bucket, layout.ref_key(prefix, repo_id, revision))
    commit = ref.decode("ascii", "replace").strip() if ref else ""
    if not ids.is_commit_id(commit):
        return (), ()
    manifest = get_json(s3, bucket, layout.manifest_key(prefix, repo_id, commit)) or {}
    selection = manifest.get("selection") or {}
    include = selection.get("include") or []
    exclude = selection.get("exclude") or []
    if not all(isinstance(glob, str) for glob in [*include, *exclude]):
        return (), ()
    return tuple(include), tuple(exclude)


def tracked_models(
    s3: Any, bucket: str, prefix: str, configured: str, gated_prefix: str | None = None
) -> list[dict[str, Any]]:
    """State machine inputs for every tracked model, configured ones first, without duplicates; the repos
    cached under `gated_prefix` too (the plan puts a gated repo back there)."""
    seen: set[tuple[str, str]] = set()
    models: list[dict[str, Any]] = []
    gated = cached_refs(s3, bucket, gated_prefix) if gated_prefix else []
    for request in [*parse_tracked(configured), *cached_refs(s3, bucket, prefix), *gated]:
        key = (request.repo_id, request.revision)
        if key not in seen:
            seen.add(key)
            models.append(request.to_input())
    return models


def write_tracked_list(
    s3: Any,
    bucket: str,
    prefix: str,
    configured: str,
    *,
    work_prefix: str,
    run_id: str,
    gated_prefix: str | None = None,
) -> dict[str, Any]:
    """List the tracked models into `{work_prefix}/refresh/{run_id}/tracked.json` (the refresh's Distributed Map
    reads its items from there) and return where, and how many: a result of constant size, whatever the count."""
    models = tracked_models(s3, bucket, prefix, configured, gated_prefix)
    key = layout.tracked_key(work_prefix, run_id)
    put_bytes(s3, bucket, key, json.dumps(models, separators=(",", ":")).encode(), "application/json")
    return {"bucket": bucket, "items_key": key, "count": len(models)}
