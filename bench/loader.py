"""Benchmark of the loader (issue 5): moto S3 -> model_cache_loader -> the local Hugging Face cache.

One run, a synthetic >= 2 GiB model (safetensors shards of SyntheticFile bytes plus small config and
tokenizer files) published in moto's S3 server exactly as the pipeline publishes it. moto and the S3
proxy run as their own processes, and every measured method runs in its own process too, timed
from its first request (imports excluded), so no two share a GIL.

- CPU-bound (direct to moto): R = raw S3 GET throughput alone (the very GETs the loader makes, same
  part plan, concurrency and way of reading the body, bodies discarded) against the loader with each
  verification mode: sha256 (the default), crc64nvme (the manifest's S3 full-object CRC), size-only.
  R0 is the same GETs read with botocore's body.read(1 MiB), the way the loader read before. Rounds
  are interleaved and the best of each kept, because the cores are shared; each run also records the
  CPU seconds of its own process and of moto's server, which the other tenants of the machine do not
  disturb as much as wall time. Target: loader >= 0.90 R.
- Latency- and stream-capped (through model_cache_devtools.s3proxy: per-request latency and a
  per-connection bandwidth cap, as real S3 has): the seed's load_model_from_s3 (list the prefix,
  download_file per object in turn, default TransferConfig) and `aws s3 cp --recursive` (one
  s3transfer TransferManager, default TransferConfig, every file submitted at once) against the
  loader. Target: loader >= 3x the seed.
- Warm restart: pull again with the snapshot complete on disk (by branch: one GET of refs/main; by
  commit: no request at all). Target < 1 s.

Run: `python -m bench loader`. Knobs: BENCH_LOADER_GIB (2), BENCH_LOADER_SHARD_MIB (64),
BENCH_LOADER_LATENCY_MS (30), BENCH_LOADER_CAP_MIBPS (8, per connection), BENCH_LOADER_ROUNDS (3),
BENCH_LOADER_CONCURRENCY and BENCH_LOADER_PART_MIB (the loader's defaults).
Writes bench/results/loader.json and the `loader` section of docs/explanation/performance.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    free_port,
    publish_snapshot,
    results_path,
    use_bench_environment,
    write_results,
    write_section,
)

NAME = "loader"
RESULTS = results_path(NAME)
MIB = 1 << 20
GIB = 1 << 30
REPO = "bench-org/synthetic-llm"
BUCKET = "loader-bench"
PREFIX = "models"
REGION = "us-east-1"
SMALL_FILES = {
    "config.json": 700,
    "generation_config.json": 150,
    "tokenizer_config.json": 3_000,
    "tokenizer.json": 2 * MIB,
    "special_tokens_map.json": 400,
    "README.md": 5_000,
}


# ---------------------------------------------------------------------------------------------
# Workers: each runs in its own process and prints one JSON line
# ---------------------------------------------------------------------------------------------


def _s3(concurrency: int) -> Any:
    from model_cache_loader.api import make_s3_client

    return make_s3_client(concurrency)


def _snapshot_objects(s3: Any) -> list[tuple[str, int]]:
    from model_cache.contract import layout

    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=layout.root_manifest_key(PREFIX, REPO))["Body"].read().decode()
    )
    return [(f["key"], f["size"]) for f in manifest["files"]]


def worker_raw_get(args: dict[str, Any]) -> dict[str, Any]:
    """The very GETs the loader makes (its part plan, same concurrency), bodies read and discarded:
    into a reused buffer as the loader reads them, or with botocore's body.read (args["read"])."""
    from model_cache_loader.transfer import BodyReader, plan_part_size, read_buffer

    s3 = _s3(args["concurrency"])
    started, cpu_started = time.perf_counter(), time.process_time()
    objects = _snapshot_objects(s3)
    total = sum(size for _, size in objects)
    tasks: list[tuple[str, str | None]] = []
    for key, size in objects:
        part = plan_part_size(size, total, concurrency=args["concurrency"], part_size=args["part_size"])
        if size <= part:
            tasks.append((key, None))
        else:
            tasks.extend((key, f"bytes={start}-{min(start + part, size) - 1}") for start in range(0, size, part))

    def fetch(task: tuple[str, str | None]) -> int:
        key, byte_range = task
        request = {"Bucket": BUCKET, "Key": key, **({"Range": byte_range} if byte_range else {})}
        body = s3.get_object(**request)["Body"]
        count = 0
        if args.get("read") == "botocore":
            while chunk := body.read(args.get("chunk", MIB)):
                count += len(chunk)
            return count
        reader, buffer = BodyReader(body), read_buffer()
        while received := reader.readinto(buffer):
            count += received
        reader.at_end()
        return count

    with ThreadPoolExecutor(args["concurrency"]) as pool:
        total = sum(pool.map(fetch, tasks))
    return {"seconds": time.perf_counter() - started, "bytes": total, "cpu_seconds": time.process_time() - cpu_started}


def worker_loader(args: dict[str, Any]) -> dict[str, Any]:
    """A pull. Throughput runs build the S3 client before the clock starts, as the raw GET run does;
    warm restarts build it inside, as a pod starting up does."""
    from model_cache_loader import pull

    client = None if args.get("cold_client") else _s3(args["concurrency"])
    started, cpu_started = time.perf_counter(), time.process_time()
    result = pull(
        args.get("ref", REPO),
        bucket=BUCKET,
        prefix=PREFIX,
        cache_dir=args["cache_dir"],
        fallback="error",
        verify=args.get("verify", "sha256"),
        concurrency=args["concurrency"],
        part_size=args["part_size"],
        s3_client=client,
    )
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "bytes": result.bytes_downloaded,
        "source": result.source,
        "commit": result.commit,
    }


def worker_seed(args: dict[str, Any]) -> dict[str, Any]:
    """The seed's load_model_from_s3: list the prefix, download_file each object in turn into a folder.
    (bench.peers runs it on its own bucket and repo, as a whole process.)"""
    import boto3

    bucket, repo, prefix = args.get("bucket", BUCKET), args.get("repo", REPO), args.get("prefix", PREFIX)
    s3 = boto3.client("s3", region_name=REGION)
    dest = Path(args["dest"])
    started, cpu_started = time.perf_counter(), time.process_time()
    snapshot_prefix = _snapshot_prefix(s3, bucket, repo, prefix)
    total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=snapshot_prefix):
        for obj in page.get("Contents", []):
            target = dest / obj["Key"][len(snapshot_prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            total += obj["Size"]
    return {"seconds": time.perf_counter() - started, "bytes": total, "cpu_seconds": time.process_time() - cpu_started}


def worker_aws_cp(args: dict[str, Any]) -> dict[str, Any]:
    """`aws s3 cp --recursive`: one TransferManager (default TransferConfig), every object submitted at once."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from s3transfer.manager import TransferManager

    s3 = boto3.client("s3", region_name=REGION)
    dest = Path(args["dest"])
    started, cpu_started = time.perf_counter(), time.process_time()
    snapshot_prefix = _snapshot_prefix(s3)
    futures = []
    total = 0
    with TransferManager(s3, TransferConfig()) as manager:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=snapshot_prefix):
            for obj in page.get("Contents", []):
                target = dest / obj["Key"][len(snapshot_prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                futures.append(manager.download(BUCKET, obj["Key"], str(target)))
                total += obj["Size"]
        for future in futures:
            future.result()
    return {"seconds": time.perf_counter() - started, "bytes": total, "cpu_seconds": time.process_time() - cpu_started}


def _snapshot_prefix(s3: Any, bucket: str = BUCKET, repo: str = REPO, prefix: str = PREFIX) -> str:
    from model_cache.contract import layout

    commit = s3.get_object(Bucket=bucket, Key=layout.ref_key(prefix, repo, "main"))["Body"].read().decode()
    return layout.snapshot_prefix(prefix, repo, commit)


WORKERS = {
    "raw_get": worker_raw_get,
    "loader": worker_loader,
    "seed": worker_seed,
    "aws_cp": worker_aws_cp,
}


def worker_main(name: str, raw: str) -> None:
    print(json.dumps(WORKERS[name](json.loads(raw))), flush=True)


SERVER_PIDS: dict[str, int] = {}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process (Linux /proc), 0 where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_worker(name: str, args: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """Run one method in its own process; also the CPU seconds of its timed part (all its threads) and
    those of the S3 server it read from over the whole run."""
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "MODEL_CACHE_LOG_LEVEL": "WARNING"}
    server_pid = SERVER_PIDS.get(endpoint)
    server_before = process_cpu_seconds(server_pid) if server_pid else 0.0
    done = subprocess.run(
        [sys.executable, "-m", "bench.loader", "worker", name, json.dumps(args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["client_cpu_seconds"] = result.pop("cpu_seconds")
    if server_pid:
        result["server_cpu_seconds"] = process_cpu_seconds(server_pid) - server_before
    result["mb_per_s"] = result["bytes"] / result["seconds"] / 1e6 if result["seconds"] > 0 else 0.0
    return result


# ---------------------------------------------------------------------------------------------
# Servers and the model
# ---------------------------------------------------------------------------------------------


def wait_for_port(port: int, process: subprocess.Popen[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


@contextmanager
def server(command: list[str], port: int) -> Iterator[str]:
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, process)
        SERVER_PIDS[url] = process.pid
        yield url
    finally:
        SERVER_PIDS.pop(url, None)
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def publish_model(s3: Any, total_bytes: int, shard_bytes: int) -> dict[str, Any]:
    """Upload the synthetic model and publish it in contract order: files, manifest, ref, manifest.json."""
    from awscrt import checksums

    from model_cache.contract import layout
    from model_cache.pipeline.verify import crc64nvme_b64
    from model_cache_devtools.synthetic import SyntheticFile, git_blob_oid, lfs_pointer

    shards = max(1, -(-total_bytes // shard_bytes))
    contents: dict[str, tuple[int, int]] = {}  # path -> (size, seed)
    for index in range(shards):
        contents[f"model-{index + 1:05d}-of-{shards:05d}.safetensors"] = (shard_bytes, 1000 + index)
    for index, (path, size) in enumerate(SMALL_FILES.items()):
        contents[path] = (size, 50 + index)
    hashes = {path: SyntheticFile(size, seed).sha256() for path, (size, seed) in contents.items()}
    commit = hashlib.sha1("".join(sorted(hashes.values())).encode(), usedforsecurity=False).hexdigest()

    def upload(path: str) -> dict[str, Any]:
        size, seed = contents[path]
        data = SyntheticFile(size, seed).read(0, size)
        key = layout.file_key(PREFIX, REPO, commit, path)
        crc = crc64nvme_b64(checksums.crc64nvme(data))
        # As the pipeline stores it: S3 checks the CRC64NVME sent and keeps it as the object's checksum.
        stored = s3.put_object(Bucket=BUCKET, Key=key, Body=data, ChecksumCRC64NVME=crc)
        if stored.get("ChecksumCRC64NVME", crc) != crc:
            raise RuntimeError(f"S3 recorded CRC64NVME {stored['ChecksumCRC64NVME']} for {path}, computed {crc}")
        lfs = path.endswith(".safetensors")
        sha = hashes[path]
        return {
            "path": path,
            "size": size,
            "sha256": sha,
            "git_oid": git_blob_oid(lfs_pointer(sha, size) if lfs else data),
            "lfs": lfs,
            "key": key,
            "version_id": None,
            "crc64nvme": crc,
        }

    with ThreadPoolExecutor(4) as pool:
        files = sorted(pool.map(upload, contents), key=lambda f: f["path"])
    return publish_snapshot(s3, BUCKET, PREFIX, REPO, commit, files)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


VERIFY_ROWS = ("sha256", "crc64nvme", "size")


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    chosen = dict(max(runs, key=lambda r: r["mb_per_s"]))
    chosen["all_mb_per_s"] = [round(r["mb_per_s"], 1) for r in runs]
    return chosen


def main() -> None:
    from model_cache_loader.api import DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE

    gib = float(os.environ.get("BENCH_LOADER_GIB", "2"))
    shard_mib = int(os.environ.get("BENCH_LOADER_SHARD_MIB", "64"))
    latency = float(os.environ.get("BENCH_LOADER_LATENCY_MS", "30")) / 1000
    cap = int(float(os.environ.get("BENCH_LOADER_CAP_MIBPS", "8")) * MIB)
    rounds = int(os.environ.get("BENCH_LOADER_ROUNDS", "3"))
    concurrency = int(os.environ.get("BENCH_LOADER_CONCURRENCY", DEFAULT_CONCURRENCY))
    part_size = int(float(os.environ.get("BENCH_LOADER_PART_MIB", DEFAULT_PART_SIZE / MIB)) * MIB)

    work = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    moto_port, proxy_port = free_port(), free_port()
    use_bench_environment(work, REGION)
    try:
        # moto with S3's cost model for ranged GETs (O(range)); stock moto reads the whole object for each.
        moto_cmd = [sys.executable, "-m", "model_cache_devtools.moto_ranges", "-H", "127.0.0.1", "-p", str(moto_port)]
        with server(moto_cmd, moto_port) as moto_url:
            import boto3

            s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
            s3.create_bucket(Bucket=BUCKET)
            print(f"publishing a {gib:g} GiB synthetic model in {shard_mib} MiB shards ...", flush=True)
            started = time.perf_counter()
            manifest = publish_model(s3, int(gib * GIB), shard_mib * MIB)
            print(f"  published in {time.perf_counter() - started:.1f}s", flush=True)
            total = manifest["total_size"]
            common = {"concurrency": concurrency, "part_size": part_size}

            def fresh(name: str) -> str:
                path = work / name
                shutil.rmtree(path, ignore_errors=True)
                return str(path)

            cpu: dict[str, list[dict[str, Any]]] = {
                "raw_get": [],
                "raw_get_botocore_read": [],
                **{f"loader_{verify}": [] for verify in VERIFY_ROWS},
            }
            for number in range(rounds):
                cpu["raw_get"].append(run_worker("raw_get", common, moto_url))
                cpu["raw_get_botocore_read"].append(run_worker("raw_get", {**common, "read": "botocore"}, moto_url))
                for verify in VERIFY_ROWS:
                    run = run_worker("loader", {**common, "verify": verify, "cache_dir": fresh("cache")}, moto_url)
                    if run["source"] != "s3" or run["bytes"] != total:
                        raise RuntimeError(f"the loader did not download the whole model from S3: {run}")
                    cpu[f"loader_{verify}"].append(run)
                print(
                    f"  CPU-bound round {number + 1}: "
                    + ", ".join(
                        f"{k} {v[-1]['mb_per_s']:.0f} MB/s ({v[-1]['client_cpu_seconds']:.2f} + "
                        f"{v[-1].get('server_cpu_seconds', 0):.2f} CPU s)"
                        for k, v in cpu.items()
                    ),
                    flush=True,
                )
            cpu_best = {name: best(runs) for name, runs in cpu.items()}

            warm_cache = fresh("warm")
            run_worker("loader", {**common, "cache_dir": warm_cache}, moto_url)
            cold = {**common, "cache_dir": warm_cache, "cold_client": True}
            warm = [run_worker("loader", cold, moto_url) for _ in range(rounds)]
            pinned_ref = f"{REPO}@{manifest['commit']}"
            pinned = [run_worker("loader", {**cold, "ref": pinned_ref}, moto_url) for _ in range(rounds)]
            if any(r["source"] != "local" or r["bytes"] for r in warm + pinned):
                raise RuntimeError(f"a warm restart downloaded something: {warm + pinned}")
            print(f"  warm restart: {[round(r['seconds'], 3) for r in warm]} s", flush=True)

            proxy_cmd = [
                sys.executable, "-m", "model_cache_devtools.s3proxy", "--upstream", moto_url,
                "--port", str(proxy_port), "--latency", str(latency), "--bandwidth", str(cap),
            ]  # fmt: skip
            with server(proxy_cmd, proxy_port) as proxy_url:
                capped = {
                    "seed": run_worker("seed", {"dest": fresh("seed")}, proxy_url),
                    "aws_cp": run_worker("aws_cp", {"dest": fresh("aws-cp")}, proxy_url),
                    "loader": run_worker("loader", {**common, "cache_dir": fresh("capped")}, proxy_url),
                }
                for name, run in capped.items():
                    print(f"  capped {name}: {run['seconds']:.1f}s {run['mb_per_s']:.0f} MB/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results = {
        "name": NAME,
        "machine": f"{os.cpu_count()} shared CPU cores, {platform.python_implementation()} {platform.python_version()}",
        "model": {"bytes": total, "files": len(manifest["files"]), "shard_mib": shard_mib},
        "loader_config": {"concurrency": concurrency, "part_size_mib": part_size // MIB},
        "cpu_bound": {
            **cpu_best,
            "loader_vs_raw": cpu_best["loader_sha256"]["mb_per_s"] / cpu_best["raw_get"]["mb_per_s"],
            "loader_crc64nvme_vs_raw": cpu_best["loader_crc64nvme"]["mb_per_s"] / cpu_best["raw_get"]["mb_per_s"],
            "loader_size_vs_raw": cpu_best["loader_size"]["mb_per_s"] / cpu_best["raw_get"]["mb_per_s"],
            "median_cpu_seconds": {
                name: {
                    "client": statistics.median(r["client_cpu_seconds"] for r in runs),
                    "server": statistics.median(r.get("server_cpu_seconds", 0.0) for r in runs),
                }
                for name, runs in cpu.items()
            },
            "all_runs": cpu,
            "rounds": rounds,
        },
        "capped": {
            **capped,
            "latency_ms": latency * 1000,
            "cap_mib_per_s_per_connection": cap / MIB,
            "loader_vs_seed": capped["loader"]["mb_per_s"] / capped["seed"]["mb_per_s"],
            "loader_vs_aws_cp": capped["loader"]["mb_per_s"] / capped["aws_cp"]["mb_per_s"],
        },
        "warm_restart": {
            "by_branch_seconds": [r["seconds"] for r in warm],
            "by_commit_seconds": [r["seconds"] for r in pinned],
            "by_branch_median": statistics.median(r["seconds"] for r in warm),
            "by_commit_median": statistics.median(r["seconds"] for r in pinned),
        },
    }
    write_results(NAME, results)
    write_doc(results)
    print(render(results))


def render(results: dict[str, Any]) -> str:
    cpu, capped, warm = results["cpu_bound"], results["capped"], results["warm_restart"]
    model = results["model"]
    config = results["loader_config"]

    def row(label: str, run: dict[str, Any], extra: str = "") -> str:
        return f"| {label} | {run['seconds']:.2f} | {run['mb_per_s']:.0f} | {extra} |"

    def cpu_row(label: str, name: str) -> str:
        run, used = cpu[name], cpu["median_cpu_seconds"][name]
        return (
            f"| {label} | {run['seconds']:.2f} | {run['mb_per_s']:.0f} | {used['client']:.2f} | "
            f"{used['server']:.2f} | {spread(run)} |"
        )

    def spread(run: dict[str, Any]) -> str:
        return "runs: " + ", ".join(f"{v:.0f}" for v in run["all_mb_per_s"])

    return "\n".join(
        [
            f"<!-- {NAME}:begin -->",
            "## Loader (S3 → local Hugging Face cache)",
            "",
            f"`python -m bench loader` on {results['machine']}; moto's S3 server, the S3 proxy and every "
            "measured method run as separate processes on the same cores. Model: "
            f"{model['bytes'] / GIB:.2f} GiB synthetic, {model['files']} files ({model['shard_mib']} MiB "
            f"safetensors shards + config/tokenizer files). Loader: concurrency {config['concurrency']}, "
            f"part size {config['part_size_mib']} MiB.",
            "",
            f"### CPU-bound (direct to moto), best of {cpu['rounds']} interleaved rounds",
            "",
            "| method | seconds | MB/s | client CPU s | moto CPU s | |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
            cpu_row("R: raw S3 GET (the loader's GETs and reads, bodies discarded)", "raw_get"),
            cpu_row("R0: the same GETs read with botocore `body.read(1 MiB)`", "raw_get_botocore_read"),
            cpu_row("**loader**, verify=sha256", "loader_sha256"),
            cpu_row("**loader**, verify=crc64nvme", "loader_crc64nvme"),
            cpu_row("loader, verify=size", "loader_size"),
            "",
            f"loader / R, best run against best run = **{cpu['loader_vs_raw']:.2f}** with sha256, "
            f"**{cpu['loader_crc64nvme_vs_raw']:.2f}** with crc64nvme, {cpu['loader_size_vs_raw']:.2f} with size-only "
            f"verification (target ≥ 0.90); median against median {median_ratio(cpu, 'loader_sha256'):.2f}, "
            f"{median_ratio(cpu, 'loader_crc64nvme'):.2f} and {median_ratio(cpu, 'loader_size'):.2f}. "
            "Seconds and MB/s are the best run; CPU seconds are medians over the rounds: the client's from its "
            "first request to its last byte (all threads), moto's over the whole run.",
            "",
            f"### Latency- and stream-capped (S3 proxy: {capped['latency_ms']:g} ms per request, "
            f"{capped['cap_mib_per_s_per_connection']:g} MiB/s per connection)",
            "",
            "| method | seconds | MB/s | |",
            "| --- | ---: | ---: | --- |",
            row("seed `load_model_from_s3` (download_file per object, in turn)", capped["seed"]),
            row("`aws s3 cp --recursive` (TransferManager, default TransferConfig)", capped["aws_cp"]),
            row("**loader**", capped["loader"]),
            "",
            f"loader / seed = **{capped['loader_vs_seed']:.1f}x** (target ≥ 3x); loader / aws s3 cp = "
            f"{capped['loader_vs_aws_cp']:.1f}x.",
            "",
            "### Warm restart (snapshot complete on disk)",
            "",
            "| pull | median seconds | runs |",
            "| --- | ---: | --- |",
            f"| by branch (one GET of refs/main) | {warm['by_branch_median']:.3f} | "
            + ", ".join(f"{s:.3f}" for s in warm["by_branch_seconds"])
            + " |",
            f"| by commit (no request) | {warm['by_commit_median']:.3f} | "
            + ", ".join(f"{s:.3f}" for s in warm["by_commit_seconds"])
            + " |",
            "",
            "Target < 1 s.",
            "",
            NOTES.format(**notes_figures(results)),
            f"<!-- {NAME}:end -->",
        ]
    )


NOTES = """Where the time goes. *CPU-bound:* moto's server is one Python process whose request handling is
bound by its GIL to about one core: during R it is busy {server_busy:.0%} of one core ({server:.1f} CPU s for {gib:.0f}
GiB in {raw_seconds:.2f} s, medians), the client uses {raw_client:.2f} s, and R is about as fast as moto can serve.
The loader's own work shares the two cores with it, so CPU alone bounds its time from below by max(moto's
CPU on its one core, all CPU over two cores); against R's median that caps the ratio at {cap_sha:.2f} for sha256
and {cap_crc:.2f} for crc64nvme. Extra client CPU over R (medians): page-cache writes, files, layout, manifest
and ref {size_extra:.2f} s (the size row); sha256 {sha_extra:.2f} s more; CRC64NVME {crc_extra:+.2f} s. Profiled
separately (thread CPU time around each step of the loader's read loop, 2 GiB, 256 KiB chunks): the
GetObject calls 0.05 s, receiving the bodies 0.4 s, os.pwrite 0.43 s, sha256 1.25 s (OpenSSL SHA-NI alone:
1.07 s for 2 GiB here, ~0.5 s per GiB on one core), CRC64NVME 0.07-0.10 s. So sha256 cannot reach 0.90 of
R on this machine even with perfect scheduling; it gets less than that cap in practice, most likely (not
proven here) because 32 hashing threads take time slices from moto's busy thread, the critical path. What closes
the gap here is verify=crc64nvme (the manifest's S3 full-object CRC, which the pipeline recorded after
checking the file's sha256 against the Hub; docs/reference/loader.md says what it does not guard against). On a pod
the gap does not arise: the network, not the CPU, is the limit (the capped table: {capped_mb:.0f} MB/s over 32
streams; a 10 Gbit/s link is 1.25 GB/s), and sha256 at ~2 GB/s per core runs on cores otherwise idle
during a pod start. What made the sha256 path cheaper in this round (side-by-side runs with R, client
process CPU, medians of 3): receiving, writing and hashing in 256 KiB chunks that stay in the core's L2
instead of 1 MiB (size-only pull 1.2 s instead of 3.3 s; sha256 2.4 s instead of 3.1-4.5 s), and
receiving straight into a reused buffer through http.client's readinto instead of botocore's `body.read`
at the same chunk size (sha256 2.44 s instead of 2.79 s). R reads the loader's way; R0 shows botocore's
`body.read(1 MiB)`, cheaper when the bytes are thrown away (bigger chunks, fewer calls), but in the
loader 1 MiB chunks cost more than they save. Kept as they were: posix_fallocate (without it the sha256
pull cost 4.1-4.8 s), and the hashing frontier, which never reads back here (64 MiB shards are fetched
whole). Thread count, side by side in three rounds (MB/s): sha256 with concurrency 32 made 561/745/923, with
8 650/775/1053, with 4 728/823/999 (R 1289/1294/1583), which fits the time-slice explanation; on a node
where the CPU is the limit, `--concurrency 8` buys sha256 about 10%. The default stays 32, because on a pod
the streams in flight, not the CPU, set the speed (the capped table).
*Capped:* the throughput is the number of streams in flight times the per-connection cap. The seed fetches
one object at a time (download_file splits a 64 MiB shard into 8 parts on 8 of its 10 threads, after a
HeadObject, at 30 ms a request); `aws s3 cp` keeps 10 requests in flight over all files; the loader keeps
`concurrency` (32) streams busy across all files. *Warm restart:* by branch includes building the boto3
client and one GET of the ref; by commit is stat calls only."""


def median_ratio(cpu: dict[str, Any], name: str) -> float:
    return float(statistics.median(cpu[name]["all_mb_per_s"]) / statistics.median(cpu["raw_get"]["all_mb_per_s"]))


def notes_figures(results: dict[str, Any]) -> dict[str, float]:
    cpu = results["cpu_bound"]["median_cpu_seconds"]
    raw_client, server = cpu["raw_get"]["client"], cpu["raw_get"]["server"]
    raw_seconds = statistics.median(
        results["model"]["bytes"] / 1e6 / mb for mb in results["cpu_bound"]["raw_get"]["all_mb_per_s"]
    )
    cores = int(results["machine"].split()[0])

    def cap(name: str) -> float:
        """R's median time over the least time the CPU allows: moto on one core, all CPU over all cores."""
        used = cpu[name]
        return float(raw_seconds / max(used["server"], (used["server"] + used["client"]) / cores))

    return {
        "gib": results["model"]["bytes"] / GIB,
        "server": server,
        "server_busy": server / raw_seconds,
        "raw_client": raw_client,
        "raw_seconds": raw_seconds,
        "size_extra": cpu["loader_size"]["client"] - raw_client,
        "sha_extra": cpu["loader_sha256"]["client"] - cpu["loader_size"]["client"],
        "crc_extra": cpu["loader_crc64nvme"]["client"] - cpu["loader_size"]["client"],
        "cap_sha": cap("loader_sha256"),
        "cap_crc": cap("loader_crc64nvme"),
        "capped_mb": results["capped"]["loader"]["mb_per_s"],
    }


def write_doc(results: dict[str, Any]) -> None:
    write_section(NAME, render(results))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "worker":
        worker_main(sys.argv[2], sys.argv[3])
    elif sys.argv[1:] == ["render"]:  # rewrite the docs section from bench/results/loader.json
        write_doc(json.loads(RESULTS.read_text()))
    else:
        main()
