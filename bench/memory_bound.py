"""What `memory_limit` bounds, measured (issue 23, row 6): the peak RSS of `stream_safetensors` over a
1 GiB model of 10,000 tensors, at three `memory_limit` settings, each a whole process.

One O(range) moto server (model_cache_devtools.moto_ranges), one snapshot: two real safetensors shards
of 5,000 float16 tensors each (~107 KB a tensor, 1 GiB in all) with their `model.safetensors.index.json`,
published as the pipeline publishes it. Each run streams every tensor and drops it (a consumer that moves
tensors on as they come, e.g. onto a GPU), and is measured with GNU time's peak RSS (the client's own
pages), beside a baseline process that imports the same modules (torch, boto3, the loader) and streams
nothing: peak RSS minus the baseline is what the stream held. Rounds interleave the settings.

Run: `python -m bench memory_bound`. Knobs: BENCH_MEMORY_TENSORS (10000), BENCH_MEMORY_GIB (1),
BENCH_MEMORY_ROUNDS (2), BENCH_MEMORY_LIMITS_MIB ("64,256,1024").
Writes bench/results/memory_bound.json and the `memory_bound` section of docs/reference/loader.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, free_port, publish_snapshot, use_bench_environment, write_results, write_section
from bench.loader import GIB, MIB, PREFIX, REGION, server

NAME = "memory_bound"
REPO = "bench-org/ten-thousand-tensors"
BUCKET = "memory-bound-bench"
LOADER_DOC = ROOT / "docs" / "reference" / "loader.md"

STREAM = """
import sys
from model_cache_loader.memory import stream_safetensors
stream = stream_safetensors(sys.argv[1], bucket=sys.argv[2], prefix=sys.argv[3], memory_limit=int(sys.argv[4]))
count = tensors = 0
for _name, tensor in stream:
    count += tensor.numel() * tensor.element_size()
    tensors += 1
print(count, tensors, stream.stats.peak_buffered_bytes)
"""

BASELINE = """
import boto3, torch
import model_cache_loader.memory
print(0, 0, 0)
"""


def build_shards(total: int, tensors: int, folder: Path) -> dict[str, Path]:
    """Two safetensors shards and their index, written with the safetensors package itself."""
    import numpy as np
    from safetensors.numpy import save_file

    elements = max(1, total // tensors // 2)  # float16
    rng = np.random.default_rng(23)
    half = tensors // 2
    paths: dict[str, Path] = {}
    weight_map: dict[str, str] = {}
    for shard, names in enumerate((range(half), range(half, tensors))):
        name = f"model-{shard + 1:05d}-of-00002.safetensors"
        arrays = {
            f"layers.{i:05d}.weight": rng.standard_normal(elements, dtype=np.float32).astype("<f2") for i in names
        }
        save_file(arrays, str(folder / name))
        weight_map.update(dict.fromkeys(arrays, name))
        paths[name] = folder / name
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    paths[index.name] = index
    return paths


def publish(s3: Any, paths: dict[str, Path]) -> dict[str, Any]:
    from boto3.s3.transfer import TransferConfig

    from model_cache.contract import layout
    from model_cache_devtools.synthetic import git_blob_oid, lfs_pointer

    digests = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in paths.items()}
    commit = hashlib.sha1("".join(sorted(digests.values())).encode(), usedforsecurity=False).hexdigest()
    config = TransferConfig(multipart_threshold=64 * MIB, multipart_chunksize=64 * MIB, max_concurrency=4)
    files = []
    for name in sorted(paths):
        key = layout.file_key(PREFIX, REPO, commit, name)
        s3.upload_file(str(paths[name]), BUCKET, key, Config=config)
        size = paths[name].stat().st_size
        lfs = name.endswith(".safetensors")
        data = None if lfs else paths[name].read_bytes()
        files.append(
            {
                "path": name,
                "size": size,
                "sha256": digests[name],
                "git_oid": git_blob_oid(lfs_pointer(digests[name], size) if lfs or data is None else data),
                "lfs": lfs,
                "key": key,
                "version_id": None,
                "crc64nvme": None,
            }
        )
    return publish_snapshot(s3, BUCKET, PREFIX, REPO, commit, files)


def run(name: str, script: str, args: list[str], endpoint: str, work: Path) -> dict[str, Any]:
    rss_file = work / f"{name}.rss"
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "MODEL_CACHE_LOG_LEVEL": "WARNING"}
    command = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), sys.executable, "-c", script, *args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    streamed, tensors, peak_buffered = (int(x) for x in done.stdout.split())
    return {
        "seconds": seconds,
        "bytes": streamed,
        "tensors": tensors,
        "peak_buffered_bytes": peak_buffered,
        "peak_rss_mib": int(rss_file.read_text().split()[-1]) / 1024,
    }


def main() -> None:
    tensors = int(os.environ.get("BENCH_MEMORY_TENSORS", "10000"))
    total = int(float(os.environ.get("BENCH_MEMORY_GIB", "1")) * GIB)
    rounds = int(os.environ.get("BENCH_MEMORY_ROUNDS", "2"))
    limits = [int(x) * MIB for x in os.environ.get("BENCH_MEMORY_LIMITS_MIB", "64,256,1024").split(",")]
    if not Path("/usr/bin/time").exists():
        raise SystemExit("bench memory_bound needs GNU time (/usr/bin/time) for the client's own peak RSS")
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    use_bench_environment(work, REGION)
    try:
        print(f"building {total / GIB:g} GiB of safetensors in {tensors:,} tensors ...", flush=True)
        paths = build_shards(total, tensors, work)
        port = free_port()
        moto_cmd = [sys.executable, "-m", "model_cache_devtools.moto_ranges", "-H", "127.0.0.1", "-p", str(port)]
        with server(moto_cmd, port) as moto_url:
            import boto3

            s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
            s3.create_bucket(Bucket=BUCKET)
            manifest = publish(s3, paths)
            for path in paths.values():
                path.unlink()
            runs: dict[str, list[dict[str, Any]]] = {"baseline": []}
            runs.update({str(limit): [] for limit in limits})
            for number in range(rounds):
                runs["baseline"].append(run("baseline", BASELINE, [], moto_url, work))
                order = limits[number % len(limits) :] + limits[: number % len(limits)]
                for limit in order:
                    args = [REPO, BUCKET, PREFIX, str(limit)]
                    runs[str(limit)].append(run(f"limit-{limit}", STREAM, args, moto_url, work))
                    last = runs[str(limit)][-1]
                    rss = last["peak_rss_mib"]
                    print(f"  round {number + 1} limit {limit // MIB} MiB: {rss:.0f} MiB RSS", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    baseline = max(r["peak_rss_mib"] for r in runs["baseline"])
    figures = {
        "model_bytes": manifest["total_size"],
        "tensors": tensors,
        "rounds": rounds,
        "baseline_rss_mib": baseline,
        "limits": {
            key: {
                "memory_limit_mib": int(key) // MIB,
                "peak_rss_mib": max(r["peak_rss_mib"] for r in value),
                "held_mib": max(r["peak_rss_mib"] for r in value) - baseline,
                "peak_buffered_mib": max(r["peak_buffered_bytes"] for r in value) / MIB,
                "seconds": min(r["seconds"] for r in value),
                "tensors_streamed": value[-1]["tensors"],
            }
            for key, value in runs.items()
            if key != "baseline"
        },
    }
    write_results(NAME, figures)
    write_section(NAME, render(figures), doc=LOADER_DOC)
    print(render(figures))


def render(figures: dict[str, Any]) -> str:
    rows = [
        f"| {row['memory_limit_mib']:,} MiB | {row['peak_buffered_mib']:.0f} MiB | {row['peak_rss_mib']:.0f} MiB "
        f"| {row['held_mib']:.0f} MiB | {row['seconds']:.1f} s |"
        for row in sorted(figures["limits"].values(), key=lambda row: row["memory_limit_mib"])
    ]
    return "\n".join(
        [
            f"<!-- {NAME}:begin -->",
            f"`stream_safetensors` over a {figures['model_bytes'] / GIB:.2f} GiB model "
            f"of {figures['tensors']:,} tensors "
            f"(two shards and their index, ~{figures['model_bytes'] // figures['tensors'] // 1024} KB a tensor), "
            "every tensor dropped as it arrives; each run a whole process, peak RSS from GNU time; "
            f"{figures['rounds']} interleaved rounds, the highest peak kept. *held* is the peak RSS minus a "
            f"process that imports the same modules and streams nothing ({figures['baseline_rss_mib']:.0f} MiB).",
            "",
            "| `memory_limit` | peak buffered (reported) | peak RSS | held (RSS - baseline) | wall |",
            "| ---: | ---: | ---: | ---: | ---: |",
            *rows,
            "",
            "Measured by `python -m bench memory_bound` (part of `make bench`); figures in "
            "`bench/results/memory_bound.json`.",
            f"<!-- {NAME}:end -->",
        ]
    )
