"""What happens on a miss: the Hugging Face Hub (optional extra `hub`) and a cache request to the
pipeline's queue so the next pod hits."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from model_cache_loader.errors import HubFallbackError, IntegrityError, UsageError
from model_cache_loader.hfcache import RepoCache, mark_verified, sha256_of, staging_tag
from model_cache_loader.manifest import Manifest

log = logging.getLogger("model_cache_loader")

REQUEST_QUEUE_ENV = "MODEL_CACHE_REQUEST_QUEUE_URL"
T = TypeVar("T")


# The Hub fallback's whole budget unless MODEL_CACHE_HUB_DEADLINE says otherwise (seconds). Each HTTP
# call also has huggingface_hub's own connect/read timeouts (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT,
# 10 s each by default); the deadline bounds the whole: retries, slow bodies, many files.
DEFAULT_HUB_DEADLINE = 3600.0
HUB_DEADLINE_ENV = "MODEL_CACHE_HUB_DEADLINE"
STAGING_DIR = ".model-cache-loader/hub-staging"


def hub_deadline(value: float | None = None) -> float:
    """The fallback's deadline in seconds: `value`, else MODEL_CACHE_HUB_DEADLINE, else one hour."""
    if value is None:
        text = os.environ.get(HUB_DEADLINE_ENV, "").strip()
        if not text:
            return DEFAULT_HUB_DEADLINE
        try:
            value = float(text)
        except ValueError:
            value = -1.0
    if not value > 0:
        raise UsageError(f"{HUB_DEADLINE_ENV} must be a number of seconds > 0, got {value!r}")
    return float(value)


def _import_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as exc:
        raise HubFallbackError(
            "the S3 cache missed and the Hub fallback needs huggingface_hub: "
            "install huggingface_hub beside the loader (the wheel's [hub] extra), or pass fallback='error'"
        ) from exc
    return huggingface_hub


def _hub_options() -> dict[str, Any]:
    # huggingface_hub reads HF_ENDPOINT and HF_TOKEN once, at import; read them now instead.
    return {"endpoint": os.environ.get("HF_ENDPOINT") or None, "token": os.environ.get("HF_TOKEN") or None}


def _hub_failed(repo_id: str, revision: str, exc: BaseException) -> HubFallbackError:
    # The message of a Hub error never carries the token; keep only the class and message.
    return HubFallbackError(
        f"{repo_id}@{revision}: the S3 cache missed and the Hub download failed too "
        f"({type(exc).__name__}: {exc}). Check HF_ENDPOINT/HF_TOKEN, or cache the model first "
        "(model-cache request)"
    )


class _Worker(threading.Thread):
    """Runs the Hub download; the caller waits for it until the deadline, then walks away.

    A blocking HTTP call cannot be interrupted from outside, so the deadline is kept by not waiting
    any longer: `cancelled` is set, and the worker, at its next step, installs nothing (it only ever
    works in its own staging directory, which it removes on the way out)."""

    def __init__(self, work: Callable[[threading.Event], T]) -> None:
        super().__init__(name="model-cache-hub-fallback", daemon=True)
        self.work = work
        self.cancelled = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work(self.cancelled)
        except BaseException as exc:  # handed to the waiting thread, which raises it
            self.error = exc


def within_deadline(work: Callable[[threading.Event], T], *, deadline: float, what: str) -> T:
    """`work(cancelled)` on a worker thread, waited for at most `deadline` seconds."""
    worker = _Worker(work)
    worker.start()
    try:
        worker.join(deadline)
    except BaseException:
        worker.cancelled.set()  # Ctrl-C while waiting: the worker installs nothing more
        raise
    if worker.is_alive():
        worker.cancelled.set()
        raise HubFallbackError(
            f"{what}: the Hub did not finish within {deadline:g} s ({HUB_DEADLINE_ENV}); nothing was installed. "
            "Check HF_ENDPOINT and the network, or cache the model first (model-cache request)"
        )
    if worker.error is not None:
        raise worker.error
    return cast(T, worker.result)


def hub_snapshot(repo_id: str, revision: str, cache: RepoCache, *, deadline: float) -> tuple[Path, str, int, int]:
    """No manifest to check against (the model is not in the S3 cache at all): huggingface_hub's
    snapshot_download into the same cache, with its own checks and locks, at `revision` (the commit
    when S3 resolved one). Returns (snapshot path, commit, bytes added, files)."""
    hub = _import_hub()

    def work(cancelled: threading.Event) -> tuple[Path, str, int, int]:
        before = _blob_bytes(cache.repo_dir)
        try:
            path = hub.snapshot_download(repo_id, revision=revision, cache_dir=str(cache.cache_dir), **_hub_options())
        except Exception as exc:
            raise _hub_failed(repo_id, revision, exc) from exc
        snapshot = Path(path)
        files = sum(1 for p in snapshot.rglob("*") if not p.is_dir())
        return snapshot, snapshot.name, max(0, _blob_bytes(cache.repo_dir) - before), files

    return within_deadline(work, deadline=deadline, what=f"{repo_id}@{revision}")


def hub_manifest_files(manifest: Manifest, body: bytes, cache: RepoCache, *, revision: str, deadline: float) -> int:
    """The manifest's files from the Hub at the manifest's commit, each hashed and compared with the
    manifest's sha256 and size in a staging directory of this process's own before it is renamed
    into its blob: the Hub is a second source under the same rules as S3. No lock is held while
    the Hub answers; the node's lock is taken only to install verified blobs. Returns bytes added."""
    hub = _import_hub()
    label = f"{manifest.repo_id}@{manifest.commit}"

    def work(cancelled: threading.Event) -> int:
        staging = cache.repo_dir / STAGING_DIR / staging_tag()
        staging.mkdir(parents=True, exist_ok=True)
        try:
            return _fetch_verified(hub, manifest, body, cache, staging, cancelled, revision)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    return within_deadline(work, deadline=deadline, what=label)


def _fetch_verified(
    hub: Any,
    manifest: Manifest,
    body: bytes,
    cache: RepoCache,
    staging: Path,
    cancelled: threading.Event,
    revision: str,
) -> int:
    fetched: dict[str, Path] = {}
    added = 0
    for entry in manifest.files:
        if entry.blob_name in fetched or cache.blob_ok(entry, rehash=False):
            continue
        if cancelled.is_set():
            raise HubFallbackError(f"{manifest.repo_id}: the Hub fallback was stopped")
        try:
            local = Path(
                hub.hf_hub_download(
                    manifest.repo_id,
                    entry.path,
                    revision=manifest.commit,  # the commit S3 resolved, never the branch
                    local_dir=str(staging / "files"),
                    **_hub_options(),
                )
            )
        except Exception as exc:
            raise _hub_failed(manifest.repo_id, manifest.commit, exc) from exc
        size = local.stat().st_size
        digest = sha256_of(local)
        if size != entry.size or digest != entry.sha256:
            raise IntegrityError(
                f"{entry.path}: the Hub served {size} bytes with sha256 {digest} at {manifest.commit}, the "
                f"manifest says {entry.size} bytes, sha256 {entry.sha256}; nothing was installed. The Hub's "
                "file or the cached manifest is wrong: check with model-cache audit"
            )
        fetched[entry.blob_name] = local
        added += size
    with cache.locked():
        if cancelled.is_set():
            raise HubFallbackError(f"{manifest.repo_id}: the Hub fallback was stopped before installing")
        for name, local in fetched.items():
            blob = cache.blob_path(name)
            blob.parent.mkdir(parents=True, exist_ok=True)
            _fsync_file(local)
            os.replace(local, blob)
            mark_verified(blob, cache.marker_path(name), "sha256")
        cache.link_snapshot(manifest)
        cache.save_manifest(manifest.commit, body)
        cache.write_ref(revision, manifest.commit)
    return added


def _fsync_file(path: Path) -> None:
    """On disk before its name says "complete", as the S3 path does."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _blob_bytes(repo_dir: Path) -> int:
    blobs = repo_dir / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(p.stat().st_size for p in blobs.iterdir() if p.is_file() and not p.name.endswith(".incomplete"))


def requested_by() -> str:
    return os.environ.get("MODEL_CACHE_REQUESTED_BY") or f"model-cache-loader@{socket.gethostname()}"


def send_cache_request(repo_id: str, revision: str, queue_url: str | None, sqs_client: Any = None) -> bool:
    """Ask the pipeline to cache the model (docs/architecture.md 3.3). Logged, never fatal."""
    if not queue_url:
        log.warning("a cache request for %s was asked for but no queue URL is set (%s)", repo_id, REQUEST_QUEUE_ENV)
        return False
    body = json.dumps({"repo_id": repo_id, "revision": revision, "requested_by": requested_by()})
    try:
        if sqs_client is None:
            import boto3

            sqs_client = boto3.client("sqs")
        sqs_client.send_message(QueueUrl=queue_url, MessageBody=body)
    except Exception as exc:
        log.warning("could not send a cache request for %s@%s to %s: %s", repo_id, revision, queue_url, exc)
        return False
    log.info("sent a cache request for %s@%s to %s", repo_id, revision, queue_url)
    return True
