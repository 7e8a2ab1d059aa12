"""Benchmark of the incremental refresh (issue 8): what a moved branch costs with and without reuse.

A synthetic model of four shards plus small files, served by the Hub double with a per-connection
bandwidth cap that models the real Hub (25 MB/s by default, `REFRESH_BENCH_HUB_MBPS`), copied by the
engine into moto's S3 server (both in this process, loopback HTTP). Scenarios:

1. first sync of the model into an empty bucket;
2. one shard changes at the Hub (main moves): the incremental refresh into that bucket;
3. the same new commit copied into an empty bucket (what the refresh would cost without reuse);
4. a refresh when nothing changed (the no-op).

Figures: wall seconds, bytes the Hub sent, bytes reused inside S3, Hub and S3 request counts. They go to
bench/results/refresh.json and the `refresh` section of docs/explanation/performance.md. Not a test.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3

from bench.common import measure_and_record
from model_cache.pipeline.engine import sync
from model_cache_devtools.hub import HubServer

NAME = "refresh"
MIB = 1 << 20
REPO = "bench-org/refresh-model"
SHARDS = 4


def _shard_size() -> int:
    return int(float(os.environ.get("REFRESH_BENCH_SHARD_MIB", "128")) * MIB)


def _write_repo(root: Path, changed_seed: int) -> None:
    repo = root / REPO
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 32}\n')
    (repo / "tokenizer.json").write_text(json.dumps({"vocab": {f"t{i}": i for i in range(20000)}}))
    files = {
        f"model-{index:05d}-of-{SHARDS:05d}.safetensors": {
            "size": _shard_size(),
            "seed": changed_seed if index == SHARDS else 1000 + index,
        }
        for index in range(1, SHARDS + 1)
    }
    (repo / ".hub-synthetic.json").write_text(json.dumps({"files": files}))


class _CountingS3:
    """Counts the S3 operations a run makes (boto3's event hooks), whatever the client does."""

    def __init__(self, endpoint: str) -> None:
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.calls: Counter[str] = Counter()
        self.client.meta.events.register("before-call.s3.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def take(self) -> dict[str, int]:
        taken = dict(self.calls)
        self.calls.clear()
        return taken


def _hub_bytes(hub: HubServer) -> int:
    return sum(r.bytes_sent for r in hub.requests if r.endpoint in ("resolve", "cdn") and r.status in (200, 206))


def _scenario(hub: HubServer, s3: _CountingS3, bucket: str) -> dict[str, Any]:
    hub.requests.clear()
    s3.take()
    began = time.perf_counter()
    result = sync(REPO, bucket=bucket, part_size=16 * MIB, concurrency=8, s3=s3.client)
    seconds = time.perf_counter() - began
    requests = hub.requests.snapshot()
    return {
        "status": result.status,
        "seconds": round(seconds, 2),
        "total_bytes": result.total_bytes,
        "hub_bytes": _hub_bytes(hub),
        "reused_bytes": result.reused_bytes,
        "reused_files": result.reused_files,
        "hub_api_requests": sum(1 for r in requests if r.endpoint == "api"),
        "hub_file_requests": sum(1 for r in requests if r.endpoint in ("resolve", "cdn")),
        "s3_requests": s3.take(),
    }


def run() -> dict[str, Any]:
    from moto.server import ThreadedMotoServer

    from model_cache_devtools import moto_ranges

    moto_ranges.install()  # ranged GETs at O(range), as on S3
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    workdir = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    hub_mbps = float(os.environ.get("REFRESH_BENCH_HUB_MBPS", "25"))
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        s3 = _CountingS3(endpoint)
        for bucket in ("refreshed", "from-scratch"):
            s3.client.create_bucket(Bucket=bucket)
            s3.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        _write_repo(workdir / "root", changed_seed=1004)
        with HubServer(workdir / "root") as hub:
            os.environ["HF_ENDPOINT"] = hub.url
            hub.warm()
            hub.bandwidth_limit = int(hub_mbps * 1e6)
            first = _scenario(hub, s3, "refreshed")
            _write_repo(workdir / "root", changed_seed=2004)  # one shard's bytes change: main moves
            hub.warm()
            incremental = _scenario(hub, s3, "refreshed")
            scratch = _scenario(hub, s3, "from-scratch")
            unchanged = _scenario(hub, s3, "refreshed")
    finally:
        moto.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "machine": f"{os.cpu_count()} shared CPU cores, Python {platform.python_version()}",
        "hub_mb_per_s_per_connection": hub_mbps,
        "shards": SHARDS,
        "shard_bytes": _shard_size(),
        "first_sync": first,
        "refresh_one_shard_changed": incremental,
        "same_commit_without_reuse": scratch,
        "refresh_unchanged": unchanged,
        "speedup_vs_without_reuse": round(scratch["seconds"] / incremental["seconds"], 2),
        "hub_bytes_saved": scratch["hub_bytes"] - incremental["hub_bytes"],
    }


def _markdown(figures: dict[str, Any]) -> str:
    rows = [
        ("first sync (empty bucket)", figures["first_sync"]),
        ("refresh, one shard changed (incremental)", figures["refresh_one_shard_changed"]),
        ("same new commit, empty bucket (no reuse)", figures["same_commit_without_reuse"]),
        ("refresh, nothing changed", figures["refresh_unchanged"]),
    ]
    lines = [
        f"<!-- {NAME}:begin -->",
        "## Incremental refresh",
        "",
        f"`python -m bench refresh` on {figures['machine']}: a model of {figures['shards']} synthetic shards of "
        f"{figures['shard_bytes'] // MIB} MiB plus config/tokenizer, the Hub double capped at "
        f"{figures['hub_mb_per_s_per_connection']:.0f} MB/s per connection (the real Hub's per-connection rate), "
        "moto's S3 server in the same process, the engine at 8 parts in flight of 16 MiB.",
        "",
        "| scenario | seconds | bytes from the Hub | bytes copied inside S3 | Hub requests (API / file) "
        "| S3 requests |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, row in rows:
        s3_calls = ", ".join(f"{name} {count}" for name, count in sorted(row["s3_requests"].items()))
        lines.append(
            f"| {label} | {row['seconds']} | {row['hub_bytes']:,} | {row['reused_bytes']:,} | "
            f"{row['hub_api_requests']} / {row['hub_file_requests']} | {s3_calls} |"
        )
    lines += [
        "",
        f"The refresh fetched only the changed shard from the Hub ({figures['hub_bytes_saved']:,} bytes saved) and "
        f"finished {figures['speedup_vs_without_reuse']}x faster than copying the same commit from scratch; the "
        "unchanged files were copied inside S3 (CopyObject, verified by CRC64NVME, no bytes through the client) "
        "while the changed shard streamed. Here moto performs each CopyObject on the same two shared cores (it "
        "copies and checksums the bytes in Python), so the time saved is smaller than the bytes saved; against "
        "S3 a server-side copy costs the client nothing but waiting, and the time of a refresh approaches the "
        "time to fetch what changed.",
        f"<!-- {NAME}:end -->",
    ]
    return "\n".join(lines)


def main() -> None:
    measure_and_record(NAME, run, _markdown)


if __name__ == "__main__":
    main()
