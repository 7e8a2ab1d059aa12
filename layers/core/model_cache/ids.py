"""Validation of repo ids, revisions and repo file paths (docs/architecture.md 3.2, 3.3)."""

from __future__ import annotations

import re
import unicodedata

from model_cache.errors import InvalidRequest

# The Hub's own rule: an optional namespace, a name; letters, digits, '-', '_', '.';
# no leading/trailing '-' or '.', no '--' or '..'; at most 96 characters.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REPO_ID_RE = re.compile(rf"^(?:{_NAME}/)?{_NAME}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# Branch and tag names as git allows them, minus anything that could escape a key or a URL.
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,254}$")
MAX_REPO_ID_LENGTH = 96


def validate_repo_id(repo_id: object) -> str:
    """Return `repo_id` if it is a valid Hub model id, else raise InvalidRequest naming why."""
    if not isinstance(repo_id, str):
        raise InvalidRequest(f"repo_id must be a string, got {type(repo_id).__name__}")
    if not repo_id:
        raise InvalidRequest("repo_id is empty")
    if len(repo_id) > MAX_REPO_ID_LENGTH:
        raise InvalidRequest(f"repo_id is {len(repo_id)} characters long; the Hub allows at most {MAX_REPO_ID_LENGTH}")
    if not repo_id.isascii():
        raise InvalidRequest(f"repo_id {repo_id!a} has non-ASCII characters; Hub ids are ASCII only")
    if "--" in repo_id or ".." in repo_id or not _REPO_ID_RE.fullmatch(repo_id):
        raise InvalidRequest(
            f"repo_id {repo_id!r} is not a Hub model id: expected 'org/name' or 'name' with letters, "
            "digits, '-', '_' or '.', not starting or ending with '-' or '.', and no '--' or '..'"
        )
    return repo_id


def validate_revision(revision: object) -> str:
    """Return `revision` (branch, tag or 40-hex commit) or raise InvalidRequest naming why."""
    if not isinstance(revision, str):
        raise InvalidRequest(f"revision must be a string, got {type(revision).__name__}")
    if not revision:
        raise InvalidRequest("revision is empty")
    if (
        not _REVISION_RE.fullmatch(revision)
        or ".." in revision
        or "//" in revision
        or revision.endswith(("/", ".", ".lock"))
        or "@{" in revision
    ):
        raise InvalidRequest(
            f"revision {revision!r} is not a valid branch, tag or commit id "
            "(letters, digits, '.', '_', '-', '+', '/'; no '..', '//' or trailing '/')"
        )
    return revision


def is_commit_id(revision: str) -> bool:
    return bool(_COMMIT_RE.fullmatch(revision))


def validate_repo_path(path: object) -> str:
    """Return `path` if it is a safe relative POSIX path inside a repo, else raise InvalidRequest.

    Rejected: absolute paths, '..' or '.' segments, empty segments, backslashes, NUL and other
    control characters, and non-NFC unicode (two spellings of one name could collide on disk).
    """
    if not isinstance(path, str):
        raise InvalidRequest(f"file path must be a string, got {type(path).__name__}")
    if not path:
        raise InvalidRequest("file path is empty")
    if len(path.encode("utf-8")) > 1024:
        raise InvalidRequest(f"file path {path[:60]!r}... is longer than S3's 1024-byte key limit")
    if path.startswith("/"):
        raise InvalidRequest(f"file path {path!r} is absolute")
    if "\\" in path:
        raise InvalidRequest(f"file path {path!r} contains a backslash")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise InvalidRequest(f"file path {path!a} contains a NUL or control character")
    segments = path.split("/")
    if any(segment == "" for segment in segments):
        raise InvalidRequest(f"file path {path!r} has an empty segment")
    if any(segment in (".", "..") for segment in segments):
        raise InvalidRequest(f"file path {path!r} has a '.' or '..' segment")
    if unicodedata.normalize("NFC", path) != path:
        raise InvalidRequest(f"file path {path!a} is not in Unicode NFC form")
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
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def validate_bucket(bucket: object) -> str:
    if not isinstance(bucket, str) or not _BUCKET_RE.match(bucket):
        raise InvalidRequest(f"bucket {bucket!r} is not a valid S3 bucket name")
    return bucket


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
