"""`make demo`: the whole copy story offline, in stages, each timed.

1. build a demo Hub: the tiny real model and a 1 GiB synthetic weight repo (generated, nothing downloaded)
2. start the Hub double and moto's S3 server on free loopback ports; point HF_ENDPOINT / AWS_ENDPOINT_URL at them
3. `model-cache sync` both repos (the real CLI entrypoint, same code as the Lambda/Fargate steps)
4. `model-cache sync` again: a no-op at a published commit
5. `model-cache show` and `model-cache ls`

Later stages (the loader, text generation) append to STAGES.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_cache import cli
from model_cache.devtools import modelgen

DEMO_DIR = Path(os.environ.get("MODEL_CACHE_DEMO_DIR", ".demo"))
BUCKET = "model-cache-demo"
SYNTHETIC_REPO = "demo-org/synthetic-1g"
SYNTHETIC_SIZE = 1024 * 1024 * 1024
REGION = "us-east-1"


@dataclass
class DemoWorld:
    root: Path
    hub: Any = None
    s3_server: Any = None
    timings: list[tuple[str, float]] = field(default_factory=list)


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def stage_build_hub(world: DemoWorld) -> None:
    hub_root = world.root / "hub"
    if hub_root.exists():
        shutil.rmtree(hub_root)
    modelgen.write_tiny_model(modelgen.repo_dir(hub_root, modelgen.TINY_MODEL), seed=0, shards=2)
    modelgen.write_synthetic_repo(
        modelgen.repo_dir(hub_root, SYNTHETIC_REPO),
        {"model.safetensors": (SYNTHETIC_SIZE, 42)},
        small_files={"config.json": b'{"model_type": "synthetic", "note": "1 GiB of deterministic bytes"}\n'},
    )
    print(f"hub root {hub_root}: {modelgen.TINY_MODEL} (tiny real Llama), {SYNTHETIC_REPO} (1 GiB synthetic)")


def stage_start_servers(world: DemoWorld) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    from model_cache.devtools.hub import HubServer

    world.hub = HubServer(world.root / "hub", host="127.0.0.1", port=0)
    world.hub.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per S3 request would drown the demo
    world.s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    world.s3_server.start()
    host, port = world.s3_server.get_host_and_port()
    os.environ.update(
        {
            "HF_ENDPOINT": world.hub.url,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }
    )
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("HF_TOKEN", None)
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    print(f"Hub double  {world.hub.url}   (HF_ENDPOINT)")
    print(f"S3 (moto)   http://{host}:{port}   (AWS_ENDPOINT_URL), bucket {BUCKET}, versioned")


def run_cli(*argv: str) -> None:
    print(f"$ model-cache {' '.join(argv)}", flush=True)
    code = cli.main(list(argv))
    if code != 0:
        raise SystemExit(f"demo: `model-cache {' '.join(argv)}` exited with {code}")


def stage_sync(world: DemoWorld) -> None:
    run_cli("sync", modelgen.TINY_MODEL, "--bucket", BUCKET)
    run_cli("sync", SYNTHETIC_REPO, "--bucket", BUCKET, "--concurrency", "8", "--part-size", "16MiB")


def stage_resync(world: DemoWorld) -> None:
    before = len(world.hub.requests)
    run_cli("sync", SYNTHETIC_REPO, "--bucket", BUCKET)
    print(f"Hub requests for the re-run: {len(world.hub.requests) - before} (one API call, no download)")


def stage_show(world: DemoWorld) -> None:
    run_cli("show", modelgen.TINY_MODEL, "--bucket", BUCKET)
    run_cli("ls", "--bucket", BUCKET)


STAGES: list[tuple[str, Callable[[DemoWorld], None]]] = [
    ("build the demo Hub repos", stage_build_hub),
    ("start the Hub double and local S3", stage_start_servers),
    ("model-cache sync", stage_sync),
    ("model-cache sync again (already cached)", stage_resync),
    ("model-cache show / ls", stage_show),
]


def main() -> int:
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    world = DemoWorld(root=DEMO_DIR.resolve())
    try:
        for number, (title, stage) in enumerate(STAGES, start=1):
            banner(f"{number}. {title}")
            started = time.monotonic()
            stage(world)
            world.timings.append((title, time.monotonic() - started))
            print(f"--- {title}: {world.timings[-1][1]:.1f} s", flush=True)
    finally:
        if world.hub is not None:
            world.hub.stop()
        if world.s3_server is not None:
            world.s3_server.stop()
    banner("summary")
    for title, seconds in world.timings:
        print(f"  {seconds:7.1f} s  {title}")
    print(f"  bytes went: Hub double -> (stream, no disk) -> s3://{BUCKET}/models/<org>--<name>/snapshots/<commit>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
