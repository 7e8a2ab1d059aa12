"""Resolve a Hub repo at a revision to a `Snapshot`: the commit id and every file's size and hashes.

Talks to the Hub only through `huggingface_hub` (`HF_ENDPOINT` and `HF_TOKEN` honoured; an explicit
`token=` wins) and turns its errors into `model_cache.contract.errors` with a message that names the fix.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub import errors as hf_errors

from model_cache.contract import errors, ids

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_OID_RE = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_API_TIMEOUT_SECONDS = 30.0
API_ATTEMPTS = 3
API_RETRY_BASE_SECONDS = 0.5


@dataclass(frozen=True)
class HubFile:
    """One repo file as the Hub declares it at a commit."""

    path: str
    size: int
    git_oid: str  # git blob id: of the content for a regular file, of the LFS pointer for an LFS file
    lfs_sha256: str | None  # the content's sha256 for an LFS file, None for a regular one

    @property
    def lfs(self) -> bool:
        return self.lfs_sha256 is not None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "git_oid": self.git_oid, "lfs_sha256": self.lfs_sha256}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HubFile:
        return cls(
            path=str(data["path"]),
            size=int(data["size"]),
            git_oid=str(data["git_oid"]),
            lfs_sha256=data.get("lfs_sha256"),
        )


@dataclass(frozen=True)
class Snapshot:
    repo_id: str
    revision: str
    commit: str
    endpoint: str
    files: tuple[HubFile, ...]
    # The Hub lists a gated repo's files to anyone; only the bytes need access, so it is probed before any work.
    gated: bool = False


def hub_endpoint() -> str:
    """The Hub base URL, read at call time so a test or the demo may change HF_ENDPOINT after import."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT or DEFAULT_ENDPOINT).rstrip("/")


def resolve_token(token: str | None) -> str | None:
    """An explicit token wins; otherwise HF_TOKEN; never the token file on a shared machine's disk."""
    if token:
        return token
    return os.environ.get("HF_TOKEN") or None


def translate_hub_error(
    exc: BaseException, repo_id: str, revision: str, *, token_given: bool
) -> errors.ModelCacheError:
    """Map a huggingface_hub exception to the domain error whose message names the fix."""
    if isinstance(exc, hf_errors.GatedRepoError):
        if token_given:
            return errors.GatedRepo(
                f"{repo_id} is gated and the token given has no access: accept the model's terms on the Hub "
                "with the token's account, or use a token that has access"
            )
        return errors.GatedRepo(f"{repo_id} is gated: set HF_TOKEN to a token with access")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        hint = "check the spelling" if token_given else "check the spelling, or set HF_TOKEN if it is private"
        return errors.RepoNotFound(f"repo {repo_id} not found at the Hub: {hint}")
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return errors.RevisionNotFound(
            f"revision {revision!r} not found in {repo_id}: use an existing branch, tag or full commit id"
        )
    if isinstance(exc, hf_errors.EntryNotFoundError):
        return errors.EntryNotFound(f"a file of {repo_id}@{revision} is missing at the Hub: {exc}")
    if isinstance(exc, hf_errors.DisabledRepoError):
        return errors.RepoNotFound(f"repo {repo_id} is disabled at the Hub")
    if isinstance(exc, hf_errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            return errors.GatedRepo(f"the Hub refused access to {repo_id} (HTTP {status}): check HF_TOKEN")
        return errors.TransferError(f"the Hub failed to list {repo_id}@{revision} (HTTP {status}): retry later")
    return errors.TransferError(f"could not reach the Hub at {hub_endpoint()} for {repo_id}: {type(exc).__name__}")


def resolve(repo_id: str, revision: str = "main", *, token: str | None = None) -> Snapshot:
    """One Hub API call: `repo_id`@`revision` -> `Snapshot` with every file validated.

    The id and revision come validated from the edge (`pipeline.events.PlanRequest`), and are not
    checked again here."""
    token = resolve_token(token)
    endpoint = hub_endpoint()
    info = _model_info(repo_id, revision, token=token, endpoint=endpoint, files_metadata=True)
    commit = info.sha
    if not isinstance(commit, str) or not _OID_RE.match(commit):
        raise errors.IntegrityError(f"the Hub returned no valid commit id for {repo_id}@{revision}: {commit!r}")
    if ids.is_commit_id(revision) and commit != revision:
        raise errors.IntegrityError(f"asked for commit {revision} of {repo_id}, the Hub answered with {commit}")
    files = tuple(_hub_files(repo_id, info.siblings or []))
    gated = bool(getattr(info, "gated", False))
    return Snapshot(repo_id=repo_id, revision=revision, commit=commit, endpoint=endpoint, files=files, gated=gated)


def api_timeout() -> float:
    """Seconds huggingface_hub may wait to connect and for each read of a Hub API answer.

    The client's default is no timeout at all: a stalled Hub would hold a plan Lambda until its own
    timeout and hang the CLI. `MODEL_CACHE_HUB_TIMEOUT` overrides it.
    """
    raw = os.environ.get("MODEL_CACHE_HUB_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_API_TIMEOUT_SECONDS
    except ValueError:
        value = DEFAULT_API_TIMEOUT_SECONDS
    return value if value > 0 else DEFAULT_API_TIMEOUT_SECONDS


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, hf_errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status in (408, 429, 500, 502, 503, 504)
    return isinstance(exc, (httpx2.TimeoutException, httpx2.TransportError, TimeoutError, ConnectionError))


def _model_info(repo_id: str, revision: str, *, token: str | None, endpoint: str, files_metadata: bool) -> Any:
    """One model_info call with connect/read timeouts, retried a few times on a stall or a 5xx."""
    # token=False stops huggingface_hub from falling back to a token file on disk when none is given.
    api = HfApi(endpoint=endpoint, token=token if token else False)
    for attempt in range(API_ATTEMPTS):
        try:
            return api.model_info(repo_id, revision=revision, files_metadata=files_metadata, timeout=api_timeout())
        except Exception as exc:  # every huggingface_hub and network error becomes a domain error
            if attempt + 1 < API_ATTEMPTS and _transient(exc):
                time.sleep(API_RETRY_BASE_SECONDS * 2**attempt)
                continue
            raise translate_hub_error(exc, repo_id, revision, token_given=bool(token)) from exc
    raise AssertionError("unreachable")  # the loop returns or raises


def head_commit(repo_id: str, revision: str, *, token: str | None = None) -> str:
    """The commit `revision` names on the Hub right now (one light API call, no file metadata)."""
    token = resolve_token(token)
    info = _model_info(repo_id, revision, token=token, endpoint=hub_endpoint(), files_metadata=False)
    commit = info.sha
    if not isinstance(commit, str) or not _OID_RE.match(commit):
        raise errors.IntegrityError(f"the Hub returned no valid commit id for {repo_id}@{revision}: {commit!r}")
    return commit


def check_access(snapshot: Snapshot, path: str, *, token: str | None = None) -> None:
    """Fail with GatedRepo before any upload starts when the repo is gated and `token` cannot read it.

    A gated repo's listing is public, so without this the first file read would be the first refusal,
    after multipart uploads had been started. One HEAD of `path`, and only for gated repos.
    """
    if not snapshot.gated:
        return
    token = resolve_token(token)
    if not token:
        raise errors.GatedRepo(f"{snapshot.repo_id} is gated: set HF_TOKEN to a token with access")
    url = hf_hub_url(snapshot.repo_id, path, revision=snapshot.commit, endpoint=snapshot.endpoint)
    try:
        get_hf_file_metadata(url, token=token)
    except Exception as exc:  # every huggingface_hub and network error becomes a domain error
        raise translate_hub_error(exc, snapshot.repo_id, snapshot.revision, token_given=True) from exc


def _hub_files(repo_id: str, siblings: Iterable[Any]) -> Iterable[HubFile]:
    seen: set[str] = set()
    for sibling in siblings:
        path = ids.validate_repo_path(sibling.rfilename)
        if path in seen:
            raise errors.InvalidRequest(f"the Hub listed {path!r} twice in {repo_id}")
        seen.add(path)
        size, blob_id, lfs = sibling.size, sibling.blob_id, sibling.lfs
        if not isinstance(blob_id, str) or not _OID_RE.match(blob_id):
            raise errors.IntegrityError(f"the Hub gave no valid blob id for {path!r} in {repo_id}")
        lfs_sha256: str | None = None
        if lfs is not None:
            lfs_sha256 = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
            lfs_size = lfs.get("size") if isinstance(lfs, dict) else getattr(lfs, "size", None)
            if not isinstance(lfs_sha256, str) or not _SHA256_RE.match(lfs_sha256):
                raise errors.IntegrityError(f"the Hub gave no valid LFS sha256 for {path!r} in {repo_id}")
            if size is None:
                size = lfs_size
            elif lfs_size is not None and lfs_size != size:
                raise errors.IntegrityError(f"the Hub gave two sizes for {path!r} in {repo_id}: {size} and {lfs_size}")
        if not isinstance(size, int) or size < 0:
            raise errors.IntegrityError(f"the Hub gave no valid size for {path!r} in {repo_id}")
        yield HubFile(path=path, size=size, git_oid=blob_id, lfs_sha256=lfs_sha256)
