"""Preparing a plan: resolve the revision (one Hub call), apply the request policy and the AWS limits, claim
the snapshot, re-point refs of a commit already published or plan the copy and start its uploads. The
Plan task and `engine.sync` both run `prepare_plan`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model_cache.adapters.hubapi import check_access, resolve
from model_cache.contract import errors, layout
from model_cache.contract.selection import select_paths
from model_cache.pipeline import claims
from model_cache.pipeline import publish as publish_mod
from model_cache.pipeline.events import PlanRequest
from model_cache.pipeline.governance import RequestPolicy
from model_cache.pipeline.limits import check_plan, make_run_plan
from model_cache.pipeline.multipart import (
    abort_uploads,
    start_uploads,
)
from model_cache.pipeline.plan import Plan
from model_cache.pipeline.publish import Published
from model_cache.pipeline.refresh import reusable_sources
from model_cache.pipeline.tracked import REFRESH_REQUESTER


@dataclass(frozen=True)
class SkippedGated:
    """A scheduled refresh of a gated repo on a stack without a Hub token: nothing to do, nothing written."""

    repo_id: str
    revision: str
    commit: str


def prepare_plan(
    s3: Any,
    request: PlanRequest,
    *,
    token: str | None = None,
    policy: RequestPolicy | None = None,
) -> Plan | Published | SkippedGated:
    """Resolve (one Hub call), and either re-point refs of an already published commit (no copy)
    or select files, plan units and start their multipart uploads.

    `request` was validated when it was built (`PlanRequest.create` / `from_event`), and is not checked
    again. `policy` (the platform's allow lists and quotas) refuses the request before the Hub is asked for
    more than the listing, and before anything is written."""
    repo_id, revision, bucket, prefix = request.repo_id, request.revision, request.bucket, request.prefix
    include, exclude, force, requested_by = request.include, request.exclude, request.force, request.requested_by
    policy = policy or RequestPolicy()
    policy.check_repo(repo_id)
    policy.check_force(force, requested_by)
    snapshot = resolve(repo_id, revision, token=token)
    if snapshot.gated and token is None and requested_by == REFRESH_REQUESTER:
        # A scheduled refresh of a gated model on a stack without a token could only fail (GatedRepo) and
        # page someone every night: it is skipped, before anything is written, and counted instead.
        return SkippedGated(repo_id=repo_id, revision=revision, commit=snapshot.commit)
    if snapshot.gated and request.gated_prefix:
        # A gated repo lives under its own prefix, readable only by the teams given GatedReadOnlyPolicy.
        prefix = request.gated_prefix
    by_path = {hub_file.path: hub_file for hub_file in snapshot.files}
    chosen = select_paths(list(by_path), include, exclude)
    if not chosen:
        raise errors.InvalidRequest(
            f"include {list(include)} / exclude {list(exclude)} select none of the {len(by_path)} files "
            f"of {repo_id}@{revision}"
        )
    # Refused before anything is written (the claim included) when the plan would break an AWS limit.
    every_file = [by_path[path] for path in chosen]
    if policy.limits_repo_size:
        # The quota is on the repo the manifest would hold: what is published for the commit plus this
        # selection (a superset of the selection, so the selection alone needs no check of its own).
        # Publish checks the same union again, since a concurrent run may add to it meanwhile.
        held = publish_mod.get_json(s3, bucket, layout.manifest_key(prefix, repo_id, snapshot.commit))
        policy.check_union(repo_id, revision, (held or {}).get("files", []), every_file)
    check_plan(make_run_plan(snapshot, every_file, bucket=bucket, prefix=prefix, options=request.options))
    plan_id = request.plan_id
    # Claimed before the manifest is read, so gc, which marks before it looks for claims, either sees
    # this run and keeps the snapshot, or this run sees gc at work and stops (model_cache.pipeline.claims).
    claim_key = claims.claim(s3, bucket, request.work_prefix, prefix, repo_id, snapshot.commit, plan_id)
    try:
        if not force:
            existing = publish_mod.get_json(s3, bucket, layout.manifest_key(prefix, repo_id, snapshot.commit))
            if existing is not None:
                # "Published" means published for this selection (docs/architecture.md 3.2): a manifest that
                # lacks some chosen file is not; only the missing files are copied, and publish writes the union.
                have = {entry.get("path") for entry in existing.get("files", [])}
                if all(path in have for path in chosen):
                    # The revision was resolved to this commit a moment ago: it is the head.
                    published = publish_mod.point_refs(
                        s3, bucket, prefix, repo_id, revision, existing, is_head=lambda: True
                    )
                    claims.release(s3, bucket, claim_key)
                    return published
                chosen = [path for path in chosen if path not in have]
        selected = [by_path[path] for path in chosen]
        check_access(snapshot, selected[0].path, token=token)
        # Incremental refresh: files whose bytes the previous snapshot of this revision already holds are
        # copied inside S3; --force means "everything from the Hub again".
        reuse = {} if force else reusable_sources(s3, bucket, prefix, repo_id, revision, selected)
        # Split files or whole ones, whichever finishes sooner (limits.fastest_plan).
        plan = make_run_plan(
            snapshot,
            selected,
            bucket=bucket,
            prefix=prefix,
            options=request.options,
            plan_id=plan_id,
            work_prefix=request.work_prefix,
            reuse=reuse,
            include=include,
            exclude=exclude,
        )
        plan.claim_key = claim_key
        plan.requested_by = requested_by
        check_plan(plan)
        try:
            start_uploads(s3, plan)
        except BaseException:
            abort_uploads(s3, plan)
            raise
    except BaseException:
        claims.release(s3, bucket, claim_key)
        raise
    return plan
