"""The S3 layout contract (docs/architecture.md 3.1). Every key the system reads or writes comes from here."""

from __future__ import annotations

DEFAULT_PREFIX = "models"
DEFAULT_REVISION = "main"
HASH_FILE = "hash"


def repo_slug(repo_id: str) -> str:
    """'org/name' -> 'org--name'; 'gpt2' -> 'gpt2'."""
    return repo_id.replace("/", "--")


def repo_id_from_slug(slug: str) -> str:
    return slug.replace("--", "/", 1)


def _base(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def repo_prefix(prefix: str, repo_id: str) -> str:
    return f"{_base(prefix)}{repo_slug(repo_id)}/"


def snapshot_prefix(prefix: str, repo_id: str, commit: str) -> str:
    return f"{repo_prefix(prefix, repo_id)}snapshots/{commit}/"


def file_key(prefix: str, repo_id: str, commit: str, path: str) -> str:
    return f"{snapshot_prefix(prefix, repo_id, commit)}{path}"


def hash_key(prefix: str, repo_id: str, commit: str) -> str:
    return f"{snapshot_prefix(prefix, repo_id, commit)}{HASH_FILE}"


def manifest_key(prefix: str, repo_id: str, commit: str) -> str:
    return f"{repo_prefix(prefix, repo_id)}manifests/{commit}.json"


def ref_key(prefix: str, repo_id: str, revision: str) -> str:
    return f"{repo_prefix(prefix, repo_id)}refs/{revision}"


def root_manifest_key(prefix: str, repo_id: str) -> str:
    return f"{repo_prefix(prefix, repo_id)}manifest.json"
