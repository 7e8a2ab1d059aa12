"""How the loader's write size and stream count cost CPU (issue 25, item 1).

The loader receives, writes and hashes `READ_CHUNK` bytes at a time. Whether the kernel then fills the
page cache in small pages or in large folios depends on the write size; on a VM whose freed memory goes
back to its host, large folios were measured to cost several times the CPU (docs/explanation/performance.md).
This sweep runs the real loader (`model-cache-loader pull`, crc64nvme so the hash does not hide the
write cost, and sha256) with READ_CHUNK set per run, against the low-cost server (bench/s3_files.py)
so the client is what is measured; every run a whole process, its CPU from wait4, rounds interleaved.

Run: `python -m bench write_size`. Knobs: BENCH_WRITE_GIB (2), BENCH_WRITE_ROUNDS (3),
BENCH_WRITE_KIB (64,252,256,1024), BENCH_WRITE_STREAMS (16,32).
Writes bench/results/write_size.json and the `write_size` section of docs/explanation/performance.md.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import s3_files
from bench.common import free_port, results_path, use_bench_environment, write_results, write_section
from bench.loader import GIB, MIB, PREFIX, REGION, server
from bench.peers import BUCKET, REPO, publish

NAME = "write_size"
RESULTS = results_path(NAME)

# The loader with READ_CHUNK and its part schedule set before anything reads them, then its own CLI.
PULL = """
import sys
import model_cache_loader.transfer as transfer
transfer.READ_CHUNK = int(sys.argv[1])
transfer.HASH_WAVES = int(sys.argv[2])
transfer.INTERLEAVE_BLOBS = sys.argv[3] == "1"
transfer.HASH_READ_CHUNK = int(sys.argv[4])
from model_cache_loader.cli import main
raise SystemExit(main(sys.argv[5:]))
"""
TAIL = re.compile(r"checked ([0-9.]+) s and in place ([0-9.]+) s after the last byte")
# The part schedule before issue 25 (one wave of parts, blobs queued one after another, read back and
# hashed READ_CHUNK at a time) and now (None: the loader's own values).
SCHEDULES: dict[str, tuple[int | None, bool, int | None]] = {
    "before": (1, False, 256 * 1024),
    "after": (None, True, None),
}


def run(chunk: int, streams: int, check: str, endpoint: str, dest: Path, schedule: str = "after") -> dict[str, Any]:
    from model_cache_loader import transfer

    waves, interleave, hash_chunk = SCHEDULES[schedule]
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    os.sync()  # each run starts on a quiet disk (see bench/peers.py)
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "MODEL_CACHE_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-c", PULL, str(chunk), str(waves or transfer.HASH_WAVES), "1" if interleave else "0",
               str(hash_chunk or transfer.HASH_READ_CHUNK),
               "pull", REPO, "--bucket", BUCKET, "--prefix", PREFIX, "--cache-dir", str(dest), "--fallback", "error",
               "--verbose", "--verify", check, "--concurrency", str(streams)]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stderr = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(stderr[-2000:])
    tails = TAIL.findall(stderr)
    return {
        "seconds": seconds,
        "cpu": usage.ru_utime + usage.ru_stime,
        "sys": usage.ru_stime,
        "check_tail": sum(float(checked) for checked, _ in tails),
        "tail": sum(float(placed) for _, placed in tails),
    }


def main() -> None:
    gib = float(os.environ.get("BENCH_WRITE_GIB", "2"))
    rounds = int(os.environ.get("BENCH_WRITE_ROUNDS", "3"))
    sizes = [int(k) for k in os.environ.get("BENCH_WRITE_KIB", "64,252,256,1024").split(",")]
    streams_list = [int(s) for s in os.environ.get("BENCH_WRITE_STREAMS", "16,32").split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-write-size-"))
    use_bench_environment(work, REGION)
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        port = free_port()
        moto_cmd = [sys.executable, "-m", "model_cache_devtools.moto_ranges", "-H", "127.0.0.1", "-p", str(port)]
        with server(moto_cmd, port) as moto_url:
            import boto3

            s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
            s3.create_bucket(Bucket=BUCKET)
            # Versioned, as the stack's bucket is: the manifest pins each version, so the default check is the CRC.
            s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
            manifest = publish(s3, int(gib * GIB), 1024 * MIB)
            total = manifest["total_size"]
            s3_files.mirror(s3, BUCKET, work / "store")
        files_port = free_port()
        cases = [
            (kib, streams, check) for check in ("crc64nvme", "sha256") for streams in streams_list for kib in sizes
        ]
        from model_cache_loader import transfer

        chunk = transfer.READ_CHUNK
        with server(s3_files.command(work / "store", files_port), files_port) as files_url:
            for number in range(rounds):
                shift = number % len(cases)
                for kib, streams, check in cases[shift:] + cases[:shift]:
                    figure = run(kib * 1024, streams, check, files_url, work / "dest")
                    runs.setdefault(f"{check}/{streams}/{kib}", []).append(figure)
                for schedule in list(SCHEDULES) if number % 2 == 0 else list(reversed(SCHEDULES)):
                    figure = run(chunk, 32, "sha256", files_url, work / "dest", schedule)
                    runs.setdefault(f"schedule/{schedule}", []).append(figure)
                # The default check on these pinned reads (CRC64NVME: no hash to wait for).
                runs.setdefault("schedule/default", []).append(run(chunk, 32, "auto", files_url, work / "dest"))
                print(f"  round {number + 1} done", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = {
        key: {
            "cpu_s_per_gib": statistics.median(r["cpu"] for r in found) / (total / GIB),
            "sys_s_per_gib": statistics.median(r["sys"] for r in found) / (total / GIB),
            "seconds": statistics.median(r["seconds"] for r in found),
            "tail_s_per_gib": statistics.median(r["tail"] for r in found) / (total / GIB),
            "check_tail_s_per_gib": statistics.median(r["check_tail"] for r in found) / (total / GIB),
            "all_cpu": [round(r["cpu"], 2) for r in found],
        }
        for key, found in runs.items()
    }
    results = {"name": NAME, "bytes": total, "rounds": rounds, "sizes_kib": sizes, "streams": streams_list,
               "read_chunk_kib": chunk // 1024, "runs": table}  # fmt: skip
    write_results(NAME, results)
    write_section(NAME, render(results))
    print(render(results))


TAIL_ROWS = (
    ("before", "sha256: one wave of parts, blobs one after another, 256 KiB read-back (before)"),
    ("after", "sha256: 4 waves, blobs in turn, 8 MiB read-back (now)"),
    ("default", "the default check on pinned reads, CRC64NVME (now)"),
)


def render(results: dict[str, Any]) -> str:
    sizes, table = results["sizes_kib"], results["runs"]
    lines = [
        f"<!-- {NAME}:begin -->",
        "## The loader's write size (READ_CHUNK) and streams",
        "",
        f"`python -m bench write_size`: `model-cache-loader pull` of {results['bytes'] / GIB:.2f} GiB (two 1 GiB "
        f"shards) from the low-cost server, READ_CHUNK set per run, {results['rounds']} interleaved rounds, "
        "whole processes; client CPU-s/GiB (median; system part in brackets) and median seconds.",
        "",
        "| check | streams | " + " | ".join(f"{kib} KiB" for kib in sizes) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in sizes) + " |",
    ]
    for check in ("crc64nvme", "sha256"):
        for streams in results["streams"]:
            cells = []
            for kib in sizes:
                figure = table.get(f"{check}/{streams}/{kib}")
                cells.append(
                    "-"
                    if figure is None
                    else f"{figure['cpu_s_per_gib']:.2f} ({figure['sys_s_per_gib']:.2f}), {figure['seconds']:.2f} s"
                )
            lines.append(f"| {check} | {streams} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The check's tail: seconds per GiB from the last byte received to the last digest compared, and to "
        f"every blob fsynced and renamed (the loader's `-v` line), READ_CHUNK {results['read_chunk_kib']} KiB, "
        "32 streams, medians. Every blob is checked before any is fsynced, so the first column is the check's "
        "own tail and the second adds the disk's:",
        "",
        "| part schedule | to checked, s/GiB | to in place, s/GiB | CPU-s/GiB | seconds |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for schedule, label in TAIL_ROWS:
        figure = table.get(f"schedule/{schedule}")
        if figure:
            lines.append(
                f"| {label} | {figure['check_tail_s_per_gib']:.3f} | {figure['tail_s_per_gib']:.3f} | "
                f"{figure['cpu_s_per_gib']:.2f} | "
                f"{figure['seconds']:.2f} |"
            )
    lines.append(f"<!-- {NAME}:end -->")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
