"""One structured log line per resolve, optional CloudWatch EMF, and in-process hit/miss counts.

EMF (CloudWatch Embedded Metric Format) is a JSON line on stdout that the CloudWatch agent or
Fluent Bit turns into metrics; enable it with emit_emf=True or MODEL_CACHE_EMF=1. Nothing logged
here ever contains a token: only repo, revision, commit, source, sizes, timings and a reason.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

log = logging.getLogger("model_cache_loader")

EMF_NAMESPACE_ENV = "MODEL_CACHE_EMF_NAMESPACE"
DEFAULT_NAMESPACE = "ModelCache/Loader"

_counts: Counter[str] = Counter()
_counts_lock = threading.Lock()


def counts() -> dict[str, int]:
    """Counts since the process started: hit (s3 or local), miss and fallback (hub), error (raised)."""
    with _counts_lock:
        return dict(_counts)


def _count(*names: str) -> None:
    with _counts_lock:
        _counts.update(names)


def emf_enabled(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return os.environ.get("MODEL_CACHE_EMF", "").lower() in ("1", "true", "yes", "on")


def record(
    *,
    repo_id: str,
    revision: str,
    commit: str | None,
    source: str,
    bytes_downloaded: int,
    seconds: float,
    files: int,
    reason: str | None,
    emit_emf: bool | None,
) -> dict[str, Any]:
    """Log the resolve as one JSON line (and EMF if enabled); returns the logged record."""
    mbps = bytes_downloaded / seconds / 1e6 if seconds > 0 else 0.0
    hit = source in ("s3", "local")
    if source == "error":
        _count("error")
    else:
        _count("hit" if hit else "miss", *(("fallback",) if source == "hub" else ()))
    line: dict[str, Any] = {
        "event": "model_cache_loader.resolve",
        "repo": repo_id,
        "revision": revision,
        "commit": commit,
        "source": source,
        "bytes": bytes_downloaded,
        "seconds": round(seconds, 3),
        "mb_per_s": round(mbps, 1),
        "files": files,
    }
    if reason:
        line["reason"] = reason
    log.info(json.dumps(line, sort_keys=True))
    if emf_enabled(emit_emf):
        emf = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": os.environ.get(EMF_NAMESPACE_ENV, DEFAULT_NAMESPACE),
                        "Dimensions": [["Source"], []],
                        "Metrics": [
                            {"Name": "CacheHit", "Unit": "Count"},
                            {"Name": "CacheMiss", "Unit": "Count"},
                            {"Name": "HubFallback", "Unit": "Count"},
                            {"Name": "BytesDownloaded", "Unit": "Bytes"},
                            {"Name": "ResolveSeconds", "Unit": "Seconds"},
                            {"Name": "Throughput", "Unit": "Megabytes/Second"},
                        ],
                    }
                ],
            },
            "Source": source,
            "Repo": repo_id,
            "Commit": commit,
            "CacheHit": int(hit),
            "CacheMiss": int(not hit),
            "HubFallback": int(source == "hub"),
            "BytesDownloaded": bytes_downloaded,
            "ResolveSeconds": round(seconds, 3),
            "Throughput": round(mbps, 1),
        }
        sys.stdout.write(json.dumps(emf, sort_keys=True) + "\n")
        sys.stdout.flush()
    return line
