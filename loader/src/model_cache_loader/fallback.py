"""What happens on a miss: the Hugging Face Hub (optional extra `hub`) and a cache request to the
pipeline's queue so the next pod hits."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from model_cache_loader.errors import HubFallbackError

log = logging.getLogger("model_cache_loader")

REQUEST_QUEUE_ENV = "MODEL_CACHE_REQUEST_QUEUE_URL"


def _blob_bytes(repo_dir: Path) -> int:
    blobs = repo_dir / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(p.stat().st_size for p in blobs.iterdir() if p.is_file() and not p.name.endswith(".incomplete"))


def hub_download(repo_id: str, revision: str, cache_dir: Path, repo_dir: Path) -> tuple[Path, str, int, int]:
    """snapshot_download into the same cache; returns (snapshot path, commit, bytes added, files)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise HubFallbackError(
            f"{repo_id}@{revision} is not in the S3 cache and the Hub fallback needs huggingface_hub: "
            "pip install 'model-cache-loader[hub]', or pass fallback='error'"
        ) from exc
    before = _blob_bytes(repo_dir)
    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(cache_dir),
            # huggingface_hub reads HF_ENDPOINT and HF_TOKEN once, at import; read them now instead.
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            token=os.environ.get("HF_TOKEN") or None,
        )
    except Exception as exc:
        # The message of a Hub error never carries the token; keep only the class and message.
        raise HubFallbackError(
            f"{repo_id}@{revision}: the S3 cache missed and the Hub download failed too "
            f"({type(exc).__name__}: {exc}). Check HF_ENDPOINT/HF_TOKEN, or cache the model first "
            "(model-cache request)"
        ) from exc
    snapshot = Path(path)
    files = sum(1 for p in snapshot.rglob("*") if not p.is_dir())
    return snapshot, snapshot.name, max(0, _blob_bytes(repo_dir) - before), files


def requested_by() -> str:
    return os.environ.get("MODEL_CACHE_REQUESTED_BY") or f"model-cache-loader@{socket.gethostname()}"


def send_cache_request(repo_id: str, revision: str, queue_url: str | None, sqs_client: Any = None) -> bool:
    """Ask the pipeline to cache the model (ARCHITECTURE.md 3.3). Logged, never fatal."""
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
