"""Benchmark of the offline Hub double and its synthetic files: is the test world fast enough?

Figures: synthetic generation rate, first and cached sha256 of a synthetic file, the double's
throughput for one stream and for parallel ranged streams (synthetic bytes, and a real file via
sendfile), an end-to-end `hf_hub_download` of a synthetic LFS file, how exactly a bandwidth cap
holds, and the per-request cost of re-scanning a 2,000-file repo.

Run: `python -m bench.hub_double` (writes bench/results/hub_double.json and its section of
docs/explanation/performance.md). Sizes scale with `HUB_BENCH_GIB` (default 1).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2

from bench.common import measure_and_record
from model_cache_devtools import synthetic
from model_cache_devtools.hub import HubServer
from model_cache_devtools.synthetic import SyntheticFile

NAME = "hub_double"
MIB = 1 << 20


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = action()
    return time.perf_counter() - began, result


def _drain(url: str, headers: dict[str, str] | None = None) -> int:
    received = 0
    with httpx2.stream("GET", url, headers=headers or {}, follow_redirects=True, timeout=120) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(MIB):
            received += len(chunk)
    return received


def _write_repo(root: Path, gib: float) -> dict[str, int]:
    big = int(gib * (1 << 30))
    repo = root / "bench" / "model"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text('{"model_type": "llama"}\n')
    real_size = 256 * MIB
    with (repo / "real.safetensors").open("wb") as handle:
        block = os.urandom(MIB)
        for _ in range(real_size // MIB):
            handle.write(block)
    files = {"model.safetensors": {"size": big, "seed": 101}, "half.safetensors": {"size": big // 2, "seed": 102}}
    (repo / ".hub-synthetic.json").write_text(json.dumps({"files": files}))
    wide = root / "bench" / "wide"
    for index in range(2000):
        target = wide / f"shard{index // 100:02d}" / f"file{index:04d}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"index": index}))
    old = time.time() - 3600  # outside the double's racy window, so hashes are cached as in a long run
    for path in wide.rglob("*"):
        os.utime(path, (old, old))
    return {"synthetic": big, "half": big // 2, "real": real_size}


def run() -> dict[str, Any]:
    gib = float(os.environ.get("HUB_BENCH_GIB", "1"))
    figures: dict[str, Any] = {"gib": gib, "cpus": os.cpu_count(), "python": platform.python_version()}
    workdir = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    os.environ[synthetic.CACHE_DIR_ENV] = str(workdir / "synthetic-cache")
    try:
        sizes = _write_repo(workdir / "root", gib)

        generated = SyntheticFile(sizes["synthetic"], 101)
        seconds, _ = _timed(lambda: sum(len(c) for c in generated.iter_range(0, generated.size)))
        figures["synthetic_generation_gb_per_s"] = round(generated.size / seconds / 1e9, 2)
        seconds, _ = _timed(generated.sha256)
        figures["synthetic_sha256_first_s"] = round(seconds, 2)
        synthetic.clear_memory_cache()
        seconds, _ = _timed(lambda: SyntheticFile(sizes["synthetic"], 101).sha256())
        figures["synthetic_sha256_cached_ms"] = round(seconds * 1000, 3)
        SyntheticFile(sizes["half"], 102).sha256()  # warm, so the serving figures measure serving

        with HubServer(workdir / "root") as hub:
            url = f"{hub.url}/bench/model/resolve/main"
            seconds, received = _timed(lambda: _drain(f"{url}/model.safetensors"))
            assert received == sizes["synthetic"]
            figures["serve_synthetic_one_stream_mb_per_s"] = round(received / seconds / 1e6)

            streams = 4
            part = sizes["synthetic"] // streams
            ranges = [f"bytes={i * part}-{(i + 1) * part - 1}" for i in range(streams)]
            with ThreadPoolExecutor(streams) as pool:
                seconds, counts = _timed(
                    lambda: list(pool.map(lambda r: _drain(f"{url}/model.safetensors", {"Range": r}), ranges))
                )
            figures["serve_synthetic_4_ranged_streams_mb_per_s"] = round(sum(counts) / seconds / 1e6)

            seconds, received = _timed(lambda: _drain(f"{url}/real.safetensors"))
            figures["serve_real_file_sendfile_mb_per_s"] = round(received / seconds / 1e6)

            from huggingface_hub import hf_hub_download

            cache = workdir / "hf-cache"
            seconds, _ = _timed(
                lambda: hf_hub_download("bench/model", "half.safetensors", endpoint=hub.url, cache_dir=cache)
            )
            figures["hf_hub_download_synthetic_mb_per_s"] = round(sizes["half"] / seconds / 1e6)
            shutil.rmtree(cache)

            cap = 50_000_000
            hub.bandwidth_limit = cap
            seconds, received = _timed(lambda: _drain(f"{url}/model.safetensors", {"Range": "bytes=0-99999999"}))
            hub.bandwidth_limit = None
            figures["bandwidth_cap_mb_per_s"] = cap / 1e6
            figures["bandwidth_cap_measured_mb_per_s"] = round(received / seconds / 1e6, 1)

            info_url = f"{hub.url}/api/models/bench/wide/revision/main?blobs=true"
            seconds, _ = _timed(lambda: httpx2.get(info_url, timeout=120).raise_for_status())
            figures["wide_repo_files"] = 2000
            figures["wide_repo_model_info_cold_ms"] = round(seconds * 1000)
            warm = []
            for _ in range(5):
                seconds, _ = _timed(lambda: httpx2.get(info_url, timeout=120).raise_for_status())
                warm.append(seconds)
            figures["wide_repo_model_info_warm_ms"] = round(sorted(warm)[len(warm) // 2] * 1000, 1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def _markdown(figures: dict[str, Any]) -> str:
    rows = [
        ("synthetic generation (one core)", f"{figures['synthetic_generation_gb_per_s']} GB/s"),
        (f"sha256 of a {figures['gib']} GiB synthetic file, first time", f"{figures['synthetic_sha256_first_s']} s"),
        ("same, from the on-disk cache", f"{figures['synthetic_sha256_cached_ms']} ms"),
        ("double → client, one stream, synthetic LFS file", f"{figures['serve_synthetic_one_stream_mb_per_s']} MB/s"),
        ("double → client, 4 ranged streams", f"{figures['serve_synthetic_4_ranged_streams_mb_per_s']} MB/s"),
        ("double → client, real 256 MiB file (sendfile)", f"{figures['serve_real_file_sendfile_mb_per_s']} MB/s"),
        ("`hf_hub_download` of a synthetic LFS file, to disk", f"{figures['hf_hub_download_synthetic_mb_per_s']} MB/s"),
        (
            f"bandwidth cap {figures['bandwidth_cap_mb_per_s']:.0f} MB/s, measured",
            f"{figures['bandwidth_cap_measured_mb_per_s']} MB/s",
        ),
        ("model_info?blobs=true, 2,000-file repo, first (hashing)", f"{figures['wide_repo_model_info_cold_ms']} ms"),
        ("same, later requests (re-scan, hashes cached)", f"{figures['wide_repo_model_info_warm_ms']} ms"),
    ]
    lines = [
        f"<!-- {NAME}:begin -->",
        "## The Hub double",
        "",
        f"`python -m bench.hub_double` on {figures['cpus']} shared CPU cores, loopback HTTP, Python "
        f"{figures['python']}. Client: httpx2 (what huggingface_hub uses) reading into memory.",
        "",
        "| measure | figure |",
        "| --- | --- |",
        *[f"| {name} | {value} |" for name, value in rows],
        f"<!-- {NAME}:end -->",
    ]
    return "\n".join(lines)


def main() -> None:
    measure_and_record(NAME, run, _markdown)


if __name__ == "__main__":
    main()
