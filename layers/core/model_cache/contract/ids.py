"""Validation of repo ids, revisions and repo file paths (docs/architecture.md 3.2, 3.3), as InvalidRequest.

The rules themselves are the loader's (`model_cache_loader.layout`); the work area's names are the pipeline's own."""

from __future__ import annotations

import re
from typing import cast

from model_cache.contract.errors import InvalidRequest
from model_cache_loader.layout import (
    MAX_REPO_ID_LENGTH,
    bucket_problem,
    is_commit_id,
    repo_id_problem,
    repo_path_problem,
    revision_problem,
)

__all__ = [
    "MAX_REPO_ID_LENGTH",
    "is_commit_id",
    "parse_repo_ref",
    "validate_bucket",
    "validate_plan_id",
    "validate_prefix",
    "validate_repo_id",
    "validate_repo_path",
    "validate_revision",
    "validate_work_prefix",
]


# The rules are the loader's (model_cache_loader.layout, the contract's one owner); the pipeline raises
# them as InvalidRequest, the state machine's name for a request it refuses.
def validate_repo_id(repo_id: object) -> str:
    """Return `repo_id` if it is a valid Hub model id, else raise InvalidRequest naming why."""
    problem = repo_id_problem(repo_id)
    if problem:
        raise InvalidRequest(problem)
    return cast(str, repo_id)  # a str: repo_id_problem said so


def validate_revision(revision: object) -> str:
    """Return `revision` (branch, tag or 40-hex commit) or raise InvalidRequest naming why."""
    problem = revision_problem(revision)
    if problem:
        raise InvalidRequest(problem)
    return cast(str, revision)  # a str: revision_problem said so


def validate_repo_path(path: object) -> str:
    """Return `path` if it is a safe relative POSIX path inside a repo, else raise InvalidRequest."""
    if not isinstance(path, str):
        raise InvalidRequest(f"file path must be a string, got {type(path).__name__}")
    problem = repo_path_problem(path)
    if problem:
        raise InvalidRequest(f"file path {path[:60]!a} {problem}")
    return path


def parse_repo_ref(text: str) -> tuple[str, str | None]:
    """Split 'org/name@rev' into (repo_id, revision or None), both validated."""
    repo_id, sep, revision = text.strip().partition("@")
    validate_repo_id(repo_id)
    if sep:
        validate_revision(revision)
        return repo_id, revision
    return repo_id, None


_PLAN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_WORK_PREFIX_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$")


def validate_bucket(bucket: object) -> str:
    """Return `bucket` if it is an S3 bucket name (the loader's rule), else raise InvalidRequest naming why."""
    problem = bucket_problem(bucket)
    if problem:
        raise InvalidRequest(f"bucket {problem}")
    return cast(str, bucket)  # a str: bucket_problem said so


def validate_plan_id(plan_id: object) -> str:
    if not isinstance(plan_id, str) or not _PLAN_ID_RE.match(plan_id):
        raise InvalidRequest(f"plan_id {plan_id!r} must be 1-80 letters, digits, '.', '_' or '-'")
    return plan_id


def validate_work_prefix(work_prefix: object) -> str:
    if not isinstance(work_prefix, str) or not _WORK_PREFIX_RE.match(work_prefix) or ".." in work_prefix:
        raise InvalidRequest(f"work_prefix {work_prefix!r} is not a safe S3 prefix")
    return work_prefix.strip("/")


def validate_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise InvalidRequest(f"prefix must be a string, got {type(prefix).__name__}")
    stripped = prefix.strip("/")
    if stripped:
        validate_repo_path(stripped)
    return stripped
