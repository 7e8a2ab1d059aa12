"""The S3 layout (docs/architecture.md 3.1) and the Hugging Face cache names, as the loader needs them.

A copy of the key functions in `model_cache.layout` (the core package is not installed in pods);
tests/loader/test_loader_layout.py proves the two agree, so they cannot drift.
"""

from __future__ import annotations

import re

from model_cache_loader.errors import UsageError

DEFAULT_PREFIX = "models"
DEFAULT_REVISION = "main"

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REPO_ID_RE = re.compile(rf"^(?:{_NAME}/)?{_NAME}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,254}$")
MAX_REPO_ID_LENGTH = 96


def validate_repo_id(repo_id: str) -> str:
    if (
        not repo_id
        or len(repo_id) > MAX_REPO_ID_LENGTH
        or not repo_id.isascii()
        or "--" in repo_id
        or ".." in repo_id
        or not _REPO_ID_RE.match(repo_id)
    ):
        raise UsageError(
            f"repo id {repo_id!r} is not a Hugging Face model id: expected 'org/name' or 'name' "
            f"(letters, digits, '-', '_', '.'; at most {MAX_REPO_ID_LENGTH} characters; no '--' or '..')"
        )
    return repo_id


def validate_revision(revision: str) -> str:
    if (
        not _REVISION_RE.match(revision)
        or ".." in revision
        or "//" in revision
        or revision.endswith(("/", ".", ".lock"))
        or "@{" in revision
    ):
        raise UsageError(
            f"revision {revision!r} is not a valid branch, tag or commit id "
            "(letters, digits, '.', '_', '-', '+', '/'; no '..', '//' or trailing '/')"
        )
    return revision


def is_commit_id(revision: str) -> bool:
    return bool(_COMMIT_RE.match(revision))


def parse_repo_ref(text: str, default_revision: str = DEFAULT_REVISION) -> tuple[str, str]:
    """'org/name@rev' -> ('org/name', 'rev'); 'org/name' -> ('org/name', default_revision)."""
    repo_id, sep, revision = text.strip().partition("@")
    validate_repo_id(repo_id)
    return repo_id, validate_revision(revision if sep else default_revision)


def repo_slug(repo_id: str) -> str:
    """'org/name' -> 'org--name'; 'gpt2' -> 'gpt2'."""
    return repo_id.replace("/", "--")


def _base(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def repo_prefix(prefix: str, repo_id: str) -> str:
    return f"{_base(prefix)}{repo_slug(repo_id)}/"


def snapshot_prefix(prefix: str, repo_id: str, commit: str) -> str:
    return f"{repo_prefix(prefix, repo_id)}snapshots/{commit}/"


def file_key(prefix: str, repo_id: str, commit: str, path: str) -> str:
    return f"{snapshot_prefix(prefix, repo_id, commit)}{path}"


def manifest_key(prefix: str, repo_id: str, commit: str) -> str:
    return f"{repo_prefix(prefix, repo_id)}manifests/{commit}.json"


def ref_key(prefix: str, repo_id: str, revision: str) -> str:
    return f"{repo_prefix(prefix, repo_id)}refs/{revision}"


def root_manifest_key(prefix: str, repo_id: str) -> str:
    return f"{repo_prefix(prefix, repo_id)}manifest.json"


def hf_repo_folder(repo_id: str) -> str:
    """The Hugging Face cache folder name of a model repo: 'models--org--name'."""
    return "models--" + repo_id.replace("/", "--")


# S3's general purpose bucket naming rules (Amazon S3 User Guide, "General purpose bucket naming
# rules"): 3-63 characters, lowercase letters, digits, dots and hyphens, starting and ending with a
# letter or digit. Checked at the edge: botocore turns a bad name into a parameter error that reads
# like "S3 unreachable", which the fallback then took for a miss.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def validate_bucket(bucket: str, *, source: str = "MODEL_CACHE_BUCKET") -> str:
    """`bucket` if it is an S3 bucket name, else UsageError naming the fix."""
    if _BUCKET_RE.match(bucket):
        return bucket
    if "://" in bucket or "/" in bucket:
        name = bucket.split("://", 1)[-1].split("/", 1)[0]
        raise UsageError(
            f"{source} is {bucket!r}: give the bucket's name, not a URI or path (e.g. {name!r}); "
            "the prefix is MODEL_CACHE_PREFIX"
        )
    raise UsageError(
        f"{source} is {bucket!r}, which is not an S3 bucket name "
        "(3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit)"
    )
