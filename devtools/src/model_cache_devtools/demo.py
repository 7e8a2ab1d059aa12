"""`make demo`: the whole story offline, in stages, each timed (docs/tutorial/demo.md explains each one).

1. build a demo Hub: the tiny real model and a 1 GiB synthetic weight repo (generated, nothing downloaded)
2. start the Hub double and moto's server (S3, SQS, Lambda, Step Functions, ECS) on free loopback ports
3. deploy the stack into moto: the Lambda functions, the state machine from statemachine/model_cache.asl.json
   with the template's DefinitionSubstitutions, the request queue and its event source mapping
4. request the tiny model the way a team does: a message on the SQS queue -> the request Lambda ->
   StartExecution -> moto's engine runs the ASL, Lambda invocations run functions/<name>/app.py in-process
5. `model-cache sync` the synthetic repo (the CLI engine, same building blocks): throughput
6. `model-cache sync` again: a no-op at a published commit
7. `model-cache show` and `model-cache ls`
8. `model_cache_loader.pull` of the tiny model from S3 into a fresh Hugging Face cache under .demo/
9. the same pull again: served from the local cache
10. transformers loads the pulled snapshot with the Hub double stopped and HF_HUB_OFFLINE=1, and generates

MODEL_CACHE_DEMO_DIR (default .demo) holds everything it writes; MODEL_CACHE_DEMO_SYNTHETIC_MB
(default 1024) sizes the synthetic repo.

--playground (`make playground`) runs stages 1-3 only, then prints the environment that points the CLIs at
this world and stays up until Ctrl-C; --keep does the same after the whole demo.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_cache_devtools import local_pipeline, modelgen, s3_authz

DEMO_DIR_ENV = "MODEL_CACHE_DEMO_DIR"
SYNTHETIC_MB_ENV = "MODEL_CACHE_DEMO_SYNTHETIC_MB"
BUCKET = "model-cache-demo"
PREFIX = "models"
SYNTHETIC_REPO = "demo-org/synthetic-1g"
DEFAULT_SYNTHETIC_MB = 1024
REGION = local_pipeline.REGION
PROMPT = "The model cache"
NEW_TOKENS = 16
MIB = 1024 * 1024
# What the pipeline's Lambda handlers need outside Lambda; their JSON logs and EMF metrics would
# drown the demo's own lines, so only warnings are printed.
HANDLER_ENVIRONMENT = {
    "POWERTOOLS_SERVICE_NAME": "model-cache-demo",
    "POWERTOOLS_METRICS_NAMESPACE": "ModelCacheDemo",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}


class DemoError(RuntimeError):
    """A stage did not produce what the story needs; the message says which and why."""


@dataclass
class DemoWorld:
    root: Path
    synthetic_size: int = DEFAULT_SYNTHETIC_MB * MIB
    hub: Any = None
    aws: local_pipeline.LocalAws | None = None
    patches: local_pipeline.Patches = field(default_factory=local_pipeline.Patches)
    router: local_pipeline.Router | None = None
    stack: local_pipeline.Stack | None = None
    hf_cache: Path | None = None
    snapshot: Path | None = None
    generated_text: str = ""
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def hub_root(self) -> Path:
        return self.root / "hub"


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def synthetic_size_from_env() -> int:
    raw = os.environ.get(SYNTHETIC_MB_ENV, str(DEFAULT_SYNTHETIC_MB))
    try:
        megabytes = int(raw)
    except ValueError:
        raise DemoError(f"{SYNTHETIC_MB_ENV}={raw!r} is not a whole number of MiB") from None
    if megabytes < 1:
        raise DemoError(f"{SYNTHETIC_MB_ENV}={raw!r}: the synthetic repo needs at least 1 MiB")
    return megabytes * MIB


def human_bytes(count: int) -> str:
    if count >= 1024 * MIB:
        return f"{count / (1024 * MIB):.2f} GiB"
    if count >= MIB:
        return f"{count / MIB:.1f} MiB"
    return f"{count / 1024:.1f} KiB"


def point_huggingface_hub(**settings: str) -> None:
    """Set HF_* in the environment and in huggingface_hub's constants, which it reads only at import."""
    from huggingface_hub import constants

    for name, value in settings.items():
        os.environ[name] = value
    if "HF_ENDPOINT" in settings:
        constants.ENDPOINT = settings["HF_ENDPOINT"]
        constants.HUGGINGFACE_CO_URL_TEMPLATE = settings["HF_ENDPOINT"] + "/{repo_id}/resolve/{revision}/{filename}"
    if "HF_HOME" in settings:
        constants.HF_HOME = settings["HF_HOME"]
    if "HF_HUB_CACHE" in settings:
        constants.HF_HUB_CACHE = settings["HF_HUB_CACHE"]
    if "HF_HUB_OFFLINE" in settings:
        constants.HF_HUB_OFFLINE = settings["HF_HUB_OFFLINE"] == "1"


def s3_client() -> Any:
    import boto3

    return boto3.client("s3", region_name=REGION)


def read_manifest(repo_id: str) -> dict[str, Any]:
    from model_cache.contract import layout

    key = layout.root_manifest_key(PREFIX, repo_id)
    manifest: dict[str, Any] = json.loads(s3_client().get_object(Bucket=BUCKET, Key=key)["Body"].read())
    return manifest


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def stage_build_hub(world: DemoWorld) -> None:
    if world.hub_root.exists():
        shutil.rmtree(world.hub_root)
    modelgen.write_tiny_model(modelgen.repo_dir(world.hub_root, modelgen.TINY_MODEL), seed=0, shards=2)
    modelgen.write_synthetic_repo(
        modelgen.repo_dir(world.hub_root, SYNTHETIC_REPO),
        {"model.safetensors": (world.synthetic_size, 42)},
        small_files={"config.json": b'{"model_type": "synthetic", "note": "deterministic bytes"}\n'},
    )
    print(f"hub root {world.hub_root}")
    print(f"  {modelgen.TINY_MODEL}: a tiny real Llama (random weights, 2 safetensors shards, tokenizer)")
    print(f"  {SYNTHETIC_REPO}: {human_bytes(world.synthetic_size)} of deterministic weight bytes (served, not stored)")


def stage_start_servers(world: DemoWorld) -> None:
    from model_cache_devtools.hub import HubServer

    world.hub = HubServer(world.hub_root, host="127.0.0.1", port=0)
    world.hub.start()
    world.aws = local_pipeline.LocalAws().start()
    # moto's ASL engine logs every Choice test of an absent path (`Refresh?` on `$.refresh`) as an
    # exception; the execution's own status and history say what matters.
    logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": world.aws.url,
            # The deployer's keys (an operator of the stack); the pipeline's tasks run as their own roles.
            "AWS_ACCESS_KEY_ID": s3_authz.ADMIN_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": s3_authz.ADMIN_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            **HANDLER_ENVIRONMENT,
        }
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "HF_TOKEN", "HF_HUB_OFFLINE"):
        os.environ.pop(name, None)
    # A private HF home: the demo never reads or writes the user's own cache or token.
    point_huggingface_hub(
        HF_ENDPOINT=world.hub.url,
        HF_HOME=str(world.root / "hf-home"),
        HF_HUB_CACHE=str(world.root / "hf-home" / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    s3 = s3_client()
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    print(f"Hub double  {world.hub.url}   (HF_ENDPOINT)")
    print(f"moto        {world.aws.url}   (AWS_ENDPOINT_URL: S3, SQS, Lambda, Step Functions, ECS)")
    print(f"bucket      s3://{BUCKET} (versioned)")


def stage_deploy(world: DemoWorld) -> None:
    assert world.aws is not None
    world.router = local_pipeline.install_routes(world.patches, world.aws)
    world.aws.configure({"stepfunctions": {"execute_state_machine": True}})
    world.stack = local_pipeline.create_stack(
        world.aws, world.router, BUCKET, prefix=PREFIX, part_size=5 * MIB, unit_size=5 * MIB
    )
    local_pipeline.add_request_queue(world.stack)
    root = local_pipeline.repo_root()
    print(f"state machine  {world.stack.state_machine_arn}")
    print(f"  definition   {local_pipeline.asl_path().relative_to(root)} (template DefinitionSubstitutions applied)")
    print(f"request queue  {world.stack.request_queue_url}  -> request Lambda (event source mapping)")
    folders = sorted(set(world.router.functions.values()))
    print(f"Lambda code    functions/{{{','.join(folders)}}}/app.py, run in-process when moto invokes them")


def stage_request(world: DemoWorld) -> None:
    from model_cache.contract import layout
    from model_cache.pipeline.request_message import parse_request

    assert world.stack is not None
    assert world.router is not None
    body = json.dumps({"repo_id": modelgen.TINY_MODEL, "requested_by": "demo"})
    print(f"$ aws sqs send-message --queue-url {world.stack.request_queue_url} --message-body '{body}'")
    world.stack.send_request(body)
    requests = world.router.calls(local_pipeline.REQUEST_FOLDER)
    if not requests or requests[-1].error is not None or requests[-1].result.get("batchItemFailures"):
        raise DemoError(f"the request Lambda did not accept the message: {requests[-1:] or 'never invoked'}")
    name = parse_request(body).execution_name()
    print(f"request Lambda: started execution {name}")
    execution_arn = world.stack.execution_arn(name)
    execution = world.stack.wait(execution_arn)
    if execution["status"] != "SUCCEEDED":
        raise DemoError(f"execution {name} {execution['status']}: {execution.get('error')}: {execution.get('cause')}")
    seconds = (execution["stopDate"] - execution["startDate"]).total_seconds()
    print(f"Step Functions (moto's engine): {execution['status']} in {seconds:.1f} s")
    visited: list[str] = []
    for state in local_pipeline.states_entered(world.stack.history(execution_arn)):
        if not visited or visited[-1] != state:
            visited.append(state)
    print(f"  states: {' -> '.join(visited)}")
    counts: dict[str, int] = {}
    for call in world.router.invocations:
        if call.folder != local_pipeline.REQUEST_FOLDER:
            counts[call.folder] = counts.get(call.folder, 0) + 1
    print("  Lambda invocations: " + ", ".join(f"{folder} x{count}" for folder, count in counts.items()))
    for call in world.router.calls("copy_unit"):
        result = call.result or {}
        files = int(call.event.get("files", 0))
        what = f"{files} small files packed in one unit" if files > 1 else str(call.event.get("path"))
        print(
            f"    copy_unit #{result.get('unit_id')} ({call.event.get('runner')}): {what}, "
            f"{human_bytes(int(result.get('bytes', 0)))} Hub -> S3 in {call.seconds:.2f} s"
        )
    manifest = read_manifest(modelgen.TINY_MODEL)
    commit = manifest["commit"]
    print(f"published {manifest['total_size']} bytes, {len(manifest['files'])} files at commit {commit[:12]}:")
    print(f"  s3://{BUCKET}/{layout.root_manifest_key(PREFIX, modelgen.TINY_MODEL)}")
    print(f"  s3://{BUCKET}/{layout.ref_key(PREFIX, modelgen.TINY_MODEL, 'main')}")
    hub_url = world.hub.url
    for entry in manifest["files"]:
        if entry["path"].endswith(".safetensors"):
            print(f"  {hub_url}/{modelgen.TINY_MODEL}/resolve/{commit[:12]}…/{entry['path']}")
            print(f"    -> s3://{BUCKET}/{entry['key']}")


def run_cli(*argv: str) -> None:
    from model_cache.cli import main as cli

    print(f"$ model-cache {' '.join(argv)}", flush=True)
    code = cli.main(list(argv))
    if code != 0:
        raise DemoError(f"`model-cache {' '.join(argv)}` exited with {code}")


def stage_sync(world: DemoWorld) -> None:
    run_cli("sync", SYNTHETIC_REPO, "--bucket", BUCKET, "--concurrency", "8", "--part-size", "16MiB")


def stage_resync(world: DemoWorld) -> None:
    before = len(world.hub.requests)
    run_cli("sync", SYNTHETIC_REPO, "--bucket", BUCKET)
    print(f"Hub requests for the re-run: {len(world.hub.requests) - before} (one API call, no download)")


def stage_show(world: DemoWorld) -> None:
    run_cli("show", modelgen.TINY_MODEL, "--bucket", BUCKET)
    run_cli("ls", "--bucket", BUCKET)


def checks_used(cache_dir: Path, repo_id: str) -> str:
    """The checks the pull's blobs passed, from their verified markers: the loader chooses per file
    (CRC64NVME for a read pinned to the manifest's version, sha256 otherwise)."""
    from model_cache_loader.hfcache import RepoCache

    cache = RepoCache(cache_dir, repo_id)
    counts: dict[str, int] = {}
    for marker in sorted(cache.verified_dir.iterdir()) if cache.verified_dir.is_dir() else []:
        check = cache.recorded_check(marker.name) or "unreadable"
        counts[check] = counts.get(check, 0) + 1
    return ", ".join(f"{check} ({count} blobs)" for check, count in sorted(counts.items())) or "nothing"


def stage_pull(world: DemoWorld) -> None:
    from model_cache_loader import pull

    world.hf_cache = world.root / "hf-cache"
    if world.hf_cache.exists():
        shutil.rmtree(world.hf_cache)
    print(f"$ model-cache-loader pull {modelgen.TINY_MODEL} --bucket {BUCKET} --cache-dir {world.hf_cache}")
    # fallback="error": the demo proves the bytes came from S3, never from the Hub.
    result = pull(modelgen.TINY_MODEL, bucket=BUCKET, prefix=PREFIX, cache_dir=world.hf_cache, fallback="error")
    if result.source != "s3":
        raise DemoError(f"the first pull into an empty cache came from {result.source}, not s3")
    world.snapshot = result.path
    rate = result.bytes_downloaded / result.seconds / 1e6 if result.seconds > 0 else 0.0
    print(
        f"source {result.source}: {result.files} files, {human_bytes(result.bytes_downloaded)} in "
        f"{result.seconds:.2f} s ({rate:.1f} MB/s), verified by {checks_used(world.hf_cache, modelgen.TINY_MODEL)}"
    )
    manifest = read_manifest(modelgen.TINY_MODEL)
    for entry in manifest["files"]:
        if not entry["path"].endswith(".safetensors"):
            continue
        local = result.path / entry["path"]
        print(f"  s3://{BUCKET}/{entry['key']}")
        print(f"    -> {local}")
        print(f"       -> {local.resolve()}")


def stage_warm_pull(world: DemoWorld) -> None:
    from model_cache_loader import pull

    assert world.hf_cache is not None
    result = pull(modelgen.TINY_MODEL, bucket=BUCKET, prefix=PREFIX, cache_dir=world.hf_cache, fallback="error")
    if result.source != "local" or result.path != world.snapshot:
        raise DemoError(f"the warm re-pull came from {result.source} ({result.path}), not the local snapshot")
    print(
        f"source {result.source}: {result.bytes_downloaded} bytes downloaded, {result.seconds:.3f} s "
        f"(refs/main read from S3, snapshot {result.commit[:12]} already complete on disk)"
    )


def _is_ascii_word(piece: str) -> bool:
    return piece.isascii() and piece.strip().isalpha()


def stage_generate(world: DemoWorld) -> None:
    assert world.snapshot is not None
    # Nothing to fall back on: the Hub double is gone and huggingface_hub is told it is offline.
    world.hub.stop()
    world.hub = None
    point_huggingface_hub(HF_HUB_OFFLINE="1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # The "Loading weights" bar would interleave with the demo's lines (an untyped transformers function).
    disable_progress_bar: Callable[[], None] = transformers_logging.disable_progress_bar
    disable_progress_bar()

    print(f"Hub double stopped, HF_HUB_OFFLINE=1; loading {world.snapshot}")
    tokenizer = AutoTokenizer.from_pretrained(world.snapshot, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(world.snapshot, local_files_only=True, dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(PROMPT, return_tensors="pt")
    # Random weights pick arbitrary byte-level tokens, many of them halves of multi-byte characters
    # that print as U+FFFD; letting the model choose only among tokens that decode to ASCII letters
    # keeps the line readable without hiding that the weights are random.
    unreadable = [
        token_id for token_id in range(len(tokenizer)) if not _is_ascii_word(str(tokenizer.decode([token_id])))
    ]
    started = time.monotonic()
    with torch.no_grad():
        output = model.generate(
            **encoded,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            suppress_tokens=unreadable,
        )
    new_tokens = output[0][encoded["input_ids"].shape[1] :]
    world.generated_text = str(tokenizer.decode(new_tokens, skip_special_tokens=True))
    parameters = sum(parameter.numel() for parameter in model.parameters())
    print(
        f"{type(model).__name__}, {parameters:,} parameters, {len(new_tokens)} new tokens in "
        f"{time.monotonic() - started:.2f} s (random weights: the words are random by design)"
    )
    if not world.generated_text.strip():
        raise DemoError("the model generated no text")


STAGES: list[tuple[str, Callable[[DemoWorld], None]]] = [
    ("build the demo Hub repos", stage_build_hub),
    ("start the Hub double and local AWS (moto)", stage_start_servers),
    ("deploy the stack into moto", stage_deploy),
    ("request the tiny model: SQS -> request Lambda -> Step Functions", stage_request),
    ("model-cache sync the synthetic repo (CLI engine)", stage_sync),
    ("model-cache sync again (already cached)", stage_resync),
    ("model-cache show / ls", stage_show),
    ("model-cache-loader pull into a fresh HF cache", stage_pull),
    ("pull again (warm: local cache)", stage_warm_pull),
    ("transformers generates from the pulled snapshot, offline", stage_generate),
]


def print_summary(world: DemoWorld, total: float) -> None:
    banner("summary")
    for title, seconds in world.timings:
        print(f"  {seconds:7.1f} s  {title}")
    print(f"  {total:7.1f} s  total")
    print("\nthe path the bytes took:")
    print("  Hub double   GET /<org>/<name>/resolve/<commit>/<file>   (HF_ENDPOINT, streamed, never on disk)")
    print("    -> copy_unit Lambda (state machine) | model-cache sync (CLI engine)")
    print(
        f"    -> s3://{BUCKET}/{PREFIX}/<org>--<name>/snapshots/<commit>/<file>, then manifests/, refs/, manifest.json"
    )
    print("    -> model-cache-loader: ranged GETs, each blob checked (CRC64NVME at the pinned version, else sha256)")
    print(f"    -> {world.hf_cache}/models--<org>--<name>/blobs/<sha256> <- snapshots/<commit>/<file>")
    print("    -> transformers from_pretrained(snapshot), offline")
    if world.aws is not None:
        counts = world.aws.authorizer.counts
        print(
            f"\nS3 authorization, as AWS decides it (every task under its own template role): "
            f"{counts['authorized']} granted, {counts['refused']} refused"
        )


def stop_aws(aws: local_pipeline.LocalAws) -> None:
    # moto's config is process-wide: leave the engine off for whoever uses moto in this process next.
    try:
        aws.configure({"stepfunctions": {"execute_state_machine": False}})
    finally:
        aws.stop()


PLAYGROUND_STAGES = 3  # build the Hub, start the servers, deploy the stack


def playground_environment(world: DemoWorld) -> dict[str, str]:
    """What a shell needs for `model-cache` and `model-cache-loader` to talk to this world."""
    assert world.hub is not None
    assert world.aws is not None
    assert world.stack is not None
    return {
        "AWS_ENDPOINT_URL": world.aws.url,
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "AWS_REGION": REGION,
        "HF_ENDPOINT": world.hub.url,
        "HF_HUB_CACHE": str(world.root / "playground-hf-cache"),
        "MODEL_CACHE_BUCKET": BUCKET,
        "MODEL_CACHE_PREFIX": PREFIX,
        "MODEL_CACHE_REQUEST_QUEUE_URL": world.stack.request_queue_url or "",
    }


def stay_up(world: DemoWorld) -> None:
    """Print the exports and wait for Ctrl-C (or SIGTERM) with everything running."""
    from model_cache_devtools.servers import stop_requested

    stopped = stop_requested()
    banner("playground: up until Ctrl-C")
    print("Paste into another shell:")
    for name, value in playground_environment(world).items():
        print(f"export {name}={shlex.quote(value)}")
    print(f"\nthen, e.g.: model-cache ls; model-cache request {SYNTHETIC_REPO}")
    print(f"           model-cache-loader pull {modelgen.TINY_MODEL}")
    print(f"Hub repos: {modelgen.TINY_MODEL}, {SYNTHETIC_REPO}", flush=True)
    stopped.wait()
    print("\nplayground: stopping", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m model_cache_devtools.demo",
        description=(__doc__ or "").split("\n\n", 1)[0],
        epilog="Stages: " + "; ".join(f"{n}. {title}" for n, (title, _) in enumerate(STAGES, start=1)),
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--playground", action="store_true", help="stages 1-3, then stay up with the env printed")
    mode.add_argument("--keep", action="store_true", help="the whole demo, then stay up with the env printed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    demo_dir = Path(os.environ.get(DEMO_DIR_ENV, ".demo"))
    demo_dir.mkdir(parents=True, exist_ok=True)
    world = DemoWorld(root=demo_dir.resolve(), synthetic_size=synthetic_size_from_env())
    stages = STAGES[:PLAYGROUND_STAGES] if args.playground else STAGES
    started_all = time.monotonic()
    try:
        for number, (title, stage) in enumerate(stages, start=1):
            banner(f"{number}. {title}")
            started = time.monotonic()
            stage(world)
            world.timings.append((title, time.monotonic() - started))
            print(f"--- {title}: {world.timings[-1][1]:.1f} s", flush=True)
        if not args.playground:
            print_summary(world, time.monotonic() - started_all)
            print(f'\nprompt: "{PROMPT}"')
            print(f"generated: {world.generated_text}")
        if args.playground or args.keep:
            stay_up(world)
    except (DemoError, local_pipeline.LocalPipelineError) as exc:
        print(f"\ndemo: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        world.patches.undo()
        if world.hub is not None:
            world.hub.stop()
        if world.aws is not None:
            stop_aws(world.aws)
    return 0


if __name__ == "__main__":
    sys.exit(main())
