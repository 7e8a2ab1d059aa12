"""`make adopt-transcript`: adopt a cached model in Ray Serve LLM, vLLM and KServe by changing only the
model's URI, offline, and print what happened (docs/how-to/adopt.md holds a run of it).

1. a Hub double serving the tiny real model, moto's S3 server, a versioned bucket
2. `model-cache sync` caches the model; `model-cache show --uri` prints the snapshot folder's URI
3. Ray Serve LLM: the model_loading_config change, validated by Ray's own `ModelLoadingConfig`, then the
   download Ray Serve LLM runs for a `bucket_uri` (`CloudFileSystem.download_model`); huggingface_hub,
   offline, resolves the model in the cache it wrote
4. vLLM: the `vllm serve` change, then what `--load-format runai_streamer` runs for the weights: the
   Run:ai Model Streamer lists and streams the URI's safetensors; every tensor equals safetensors' load
5. KServe: the InferenceService change, then its storage initializer's download (`kserve_storage`, from
   .venv-kserve when it is there)

No GPU and no serving process runs here: each step is the library call the framework makes for that URI.
MODEL_CACHE_ADOPT_DIR (default .demo/adopt) holds what it writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from model_cache_devtools import local_pipeline, modelgen, s3_authz

BUCKET = "model-cache-adopt"
REGION = local_pipeline.REGION
MODEL = modelgen.TINY_MODEL
KSERVE_PYTHON = local_pipeline.repo_root() / ".venv-kserve" / "bin" / "python"

RUNAI_STREAM = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    from runai_model_streamer import SafetensorsStreamer, list_safetensors

    files = sorted(list_safetensors(sys.argv[1]))
    tensors = {}
    with SafetensorsStreamer() as streamer:
        streamer.stream_files(files)
        for name, tensor in streamer.get_tensors():
            flat = tensor.contiguous().view(-1).view(torch.uint8)
            tensors[name] = hashlib.sha256(flat.numpy().tobytes()).hexdigest()
    print(json.dumps({"files": files, "tensors": tensors}))
    """
)


class AdoptError(RuntimeError):
    """A step did not give what adopting the model needs; the message says which."""


def say(text: str = "") -> None:
    print(text, flush=True)


def shell(line: str) -> None:
    say(f"$ {line}")


def model_cache(*argv: str) -> str:
    """`model-cache ARGV` in-process, its stdout returned (and printed)."""
    import io

    from model_cache.cli import main as cli

    shell("model-cache " + " ".join(argv))
    out = io.StringIO()
    code = cli.main(list(argv), out=out, err=sys.stdout)
    say(out.getvalue().rstrip())
    if code != 0:
        raise AdoptError(f"`model-cache {' '.join(argv)}` exited with {code}")
    return out.getvalue()


def ray_serve_llm(uri: str, work: Path, hub_root: Path) -> None:
    from huggingface_hub import snapshot_download
    from ray.llm._internal.common.utils.cloud_utils import CloudFileSystem
    from ray.llm._internal.serve.core.configs.llm_config import ModelLoadingConfig

    say("Ray Serve LLM: in the app's LLMConfig, only model_source changes")
    say("  - model_loading_config: {model_id: tiny, model_source: " + MODEL + "}")
    say("  + model_loading_config: {model_id: tiny, model_source: {bucket_uri: " + uri + "}}")
    # As the app's YAML gives it: a mapping, which Ray's pydantic model turns into its mirror config.
    config = ModelLoadingConfig.model_validate({"model_id": "tiny", "model_source": {"bucket_uri": uri}})
    say(f"  validated by Ray's ModelLoadingConfig: model_source is a {type(config.model_source).__name__}")
    cache = work / "ray-hf-cache"
    destination = cache / f"models--{MODEL.replace('/', '--')}"
    CloudFileSystem.download_model(str(destination), uri, tokenizer_only=False)
    commit = (destination / "refs" / "main").read_text()
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        found = Path(snapshot_download(MODEL, cache_dir=str(cache), local_files_only=True))
    finally:
        os.environ.pop("HF_HUB_OFFLINE")
    source = modelgen.repo_dir(hub_root, MODEL)
    files = [p for p in found.rglob("*") if p.is_file() and p.name != "hash"]  # Ray also copies our `hash`
    same = sum(1 for p in files if p.read_bytes() == (source / p.relative_to(found)).read_bytes())
    say(f"  CloudFileSystem.download_model -> refs/main = {commit[:12]}, {len(files)} files, {same} byte-identical")
    say("  huggingface_hub (HF_HUB_OFFLINE=1) resolves the model to that snapshot")
    if same != len(files) or not files:
        raise AdoptError("Ray's download differs from the Hub's files")


def vllm(uri: str, hub_root: Path) -> None:
    import torch
    from safetensors.torch import load_file

    say("vLLM: only the model argument changes, and the load format names the streamer")
    say(f"  - vllm serve {MODEL}")
    say(f"  + vllm serve {uri} --load-format runai_streamer")
    env = {**os.environ, "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0", "RUNAI_STREAMER_LOG_LEVEL": "WARNING"}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    done = subprocess.run(
        [sys.executable, "-c", RUNAI_STREAM, uri], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise AdoptError(f"the Run:ai streamer failed: {done.stderr[-2000:]}")
    streamed = json.loads(done.stdout.strip().splitlines()[-1])
    expected: dict[str, str] = {}
    for path in sorted(modelgen.repo_dir(hub_root, MODEL).glob("*.safetensors")):
        for name, tensor in load_file(path).items():
            flat = tensor.contiguous().view(-1).view(torch.uint8)
            expected[name] = hashlib.sha256(flat.numpy().tobytes()).hexdigest()
    equal = sum(1 for name, digest in streamed["tensors"].items() if expected.get(name) == digest)
    say(
        f"  runai_model_streamer.SafetensorsStreamer: {len(streamed['files'])} safetensors files, "
        f"{len(streamed['tensors'])} tensors, {equal} equal to safetensors' own load"
    )
    if equal != len(expected) or len(streamed["tensors"]) != len(expected):
        raise AdoptError("the streamed tensors differ from the Hub's")


def kserve(uri: str, work: Path, hub_root: Path) -> None:
    say("KServe: only storageUri changes in the InferenceService")
    say(f"  - storageUri: hf://{MODEL}")
    say(f"  + storageUri: {uri}")
    if not KSERVE_PYTHON.exists():
        say("  (.venv-kserve is not installed here: `make install` builds it; the download step is skipped)")
        return
    out_dir = work / "kserve-mnt-models"
    env = {**os.environ, "S3_USE_HTTPS": "0", "S3_VERIFY_SSL": "0", "AWS_EC2_METADATA_DISABLED": "true"}
    code = "import sys; from kserve_storage import Storage; Storage.download(sys.argv[1], sys.argv[2])"
    done = subprocess.run(
        [str(KSERVE_PYTHON), "-c", code, uri, str(out_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise AdoptError(f"KServe's storage initializer failed: {done.stderr[-2000:]}")
    source = modelgen.repo_dir(hub_root, MODEL)
    files = [p for p in out_dir.rglob("*") if p.is_file() and p.name != "hash"]
    same = sum(1 for p in files if p.read_bytes() == (source / p.relative_to(out_dir)).read_bytes())
    say(f"  kserve_storage.Storage.download -> /mnt/models: {len(files)} files, {same} byte-identical")
    if same != len(files) or not files:
        raise AdoptError("KServe's download differs from the Hub's files")


def main() -> int:
    from model_cache_devtools.hub import HubServer

    work = Path(os.environ.get("MODEL_CACHE_ADOPT_DIR", ".demo/adopt")).resolve()
    shutil.rmtree(work, ignore_errors=True)
    hub_root = work / "hub"
    modelgen.write_tiny_model(modelgen.repo_dir(hub_root, MODEL), seed=0, shards=2)
    hub = HubServer(hub_root, host="127.0.0.1", port=0)
    hub.start()
    aws = local_pipeline.LocalAws().start()
    saved = dict(os.environ)
    try:
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": aws.url,
                "AWS_ACCESS_KEY_ID": s3_authz.ADMIN_ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": s3_authz.ADMIN_ACCESS_KEY,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "HF_ENDPOINT": hub.url,
                "HF_HOME": str(work / "hf-home"),
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            }
        )
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "HF_TOKEN", "HF_HUB_OFFLINE"):
            os.environ.pop(name, None)
        import boto3

        s3: Any = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        say(f"Hub double {hub.url} (HF_ENDPOINT), moto {aws.url} (AWS_ENDPOINT_URL), bucket s3://{BUCKET}")
        say()
        model_cache("sync", MODEL, "--bucket", BUCKET, "--quiet")
        uri = model_cache("show", MODEL, "--bucket", BUCKET, "--uri").strip()
        say()
        ray_serve_llm(uri, work, hub_root)
        say()
        vllm(uri, hub_root)
        say()
        kserve(uri, work, hub_root)
    except AdoptError as exc:
        print(f"adopt: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
        hub.stop()
        aws.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
