"""What every benchmark suite shares: where results and docs/explanation/performance.md live, and how a suite
replaces its own section there without touching the others'."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
PERFORMANCE_DOC = ROOT / "docs" / "explanation" / "performance.md"


def results_path(name: str) -> Path:
    return RESULTS_DIR / f"{name}.json"


def write_results(name: str, figures: dict[str, Any]) -> None:
    path = results_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


def write_section(name: str, section: str, doc: Path = PERFORMANCE_DOC) -> None:
    """Put `section` between the suite's `<!-- name:begin -->` / `<!-- name:end -->` markers.

    `section` carries the markers itself; a doc without them gets the section appended.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else "# Performance\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        after = rest.split(end, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def measure_and_record(name: str, run: Callable[[], dict[str, Any]], render: Callable[[dict[str, Any]], str]) -> None:
    """A suite's whole `main`: measure, keep the figures in bench/results/<name>.json, rewrite its
    section of docs/explanation/performance.md, and print the figures."""
    figures = run()
    write_results(name, figures)
    write_section(name, render(figures))
    print(json.dumps(figures, indent=2, sort_keys=True))


def publish_snapshot(
    s3: Any, bucket: str, prefix: str, repo_id: str, commit: str, files: list[dict[str, Any]]
) -> dict[str, Any]:
    """Publish uploaded files (their manifest records) in the contract's order (docs/architecture.md 3.1):
    the `hash` object, manifests/{commit}.json, refs/main, then manifest.json. Returns the manifest."""
    import time

    from model_cache.contract import layout

    s3.put_object(Bucket=bucket, Key=layout.hash_key(prefix, repo_id, commit), Body=commit.encode())
    manifest = {
        "schema_version": 1,
        "repo_id": repo_id,
        "repo_type": "model",
        "revision": "main",
        "commit": commit,
        "source": "https://huggingface.co",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bucket": bucket,
        "prefix": layout.snapshot_prefix(prefix, repo_id, commit),
        "total_size": sum(f["size"] for f in files),
        "files": files,
    }
    body = json.dumps(manifest).encode()
    s3.put_object(Bucket=bucket, Key=layout.manifest_key(prefix, repo_id, commit), Body=body)
    s3.put_object(Bucket=bucket, Key=layout.ref_key(prefix, repo_id, "main"), Body=commit.encode())
    s3.put_object(Bucket=bucket, Key=layout.root_manifest_key(prefix, repo_id), Body=body)
    return manifest


def use_bench_environment(work: Path, region: str) -> None:
    """Fake credentials and a region for the local servers (no profile can reach real AWS), and the
    synthetic files' hash cache in the run's own work folder."""
    import os

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "MODEL_CACHE_SYNTHETIC_CACHE": str(work / "synthetic-hashes"),
        }
    )
    os.environ.pop("AWS_PROFILE", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
