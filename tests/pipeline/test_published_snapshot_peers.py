"""A snapshot our pipeline published is read correctly by the peers people already run, unmodified:

- Ray Serve LLM's `CloudFileSystem.download_model` (bucket_uri = the snapshot prefix): it writes
  `refs/main` from our `hash` object and the files byte-identical, and huggingface_hub, offline,
  finds the snapshot it wrote;
- the Run:ai Model Streamer's `SafetensorsStreamer` (the library behind vLLM's
  `--load-format runai_streamer`): every tensor equals what `safetensors` loads from the same file;
- KServe's storage initializer (`kserve_storage.Storage.download`, what its storage-initializer init
  container runs for a `storageUri: s3://...`), from its own venv (.venv-kserve): every file byte-identical,
  except that it skips empty objects, by design.

Both talk to moto's S3 server through AWS_ENDPOINT_URL, like any boto3 or AWS SDK client.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MotoEndpoint
from sfn_harness import Router, create_stack, executing_state_machines, install_routes

from model_cache.contract import layout
from model_cache_devtools.modelgen import TINY_MODEL, repo_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def router(aws: MotoEndpoint, hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    with executing_state_machines(aws):
        yield install_routes(monkeypatch, aws)


@pytest.fixture
def published(router: Router, aws: MotoEndpoint, bucket: str, s3: Any) -> dict[str, Any]:
    """The tiny real model, published by the state machine; its root manifest."""
    stack = create_stack(aws, router, bucket)
    execution = stack.run({"repo_id": TINY_MODEL})
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    body = s3.get_object(Bucket=bucket, Key=layout.root_manifest_key(stack.prefix, TINY_MODEL))["Body"].read()
    return dict(json.loads(body))


def test_ray_cloud_filesystem_downloads_our_snapshot_into_a_cache_huggingface_hub_reads(
    published: dict[str, Any], hub_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import snapshot_download
    from ray.llm._internal.common.utils.cloud_utils import CloudFileSystem

    # GIVEN our published snapshot, and an empty HF cache
    hub_cache = tmp_path / "hub"
    destination = hub_cache / f"models--{TINY_MODEL.replace('/', '--')}"
    bucket_uri = f"s3://{published['bucket']}/{published['prefix']}"
    # WHEN Ray's downloader fetches it the way Ray Serve LLM does for a model_source in S3
    CloudFileSystem.download_model(str(destination), bucket_uri, tokenizer_only=False)
    # THEN refs/main names our commit (read from our `hash` object) and every file is byte-identical
    commit = published["commit"]
    assert (destination / "refs" / "main").read_text() == commit
    snapshot = destination / "snapshots" / commit
    source = repo_dir(hub_root, TINY_MODEL)
    for entry in published["files"]:
        assert (snapshot / entry["path"]).read_bytes() == (source / entry["path"]).read_bytes(), entry["path"]
    # AND huggingface_hub, offline, resolves the model to that snapshot
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = snapshot_download(TINY_MODEL, cache_dir=str(hub_cache), local_files_only=True)
    assert Path(found) == snapshot


RUNAI_READ = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    from runai_model_streamer import SafetensorsStreamer, list_safetensors

    files = sorted(list_safetensors(sys.argv[1]))
    digests = {}
    with SafetensorsStreamer() as streamer:
        streamer.stream_files(files)
        for name, tensor in streamer.get_tensors():
            flat = tensor.contiguous().view(-1).view(torch.uint8)
            digests[name] = [str(tensor.dtype), list(tensor.shape), hashlib.sha256(flat.numpy().tobytes()).hexdigest()]
    print(json.dumps({"files": files, "tensors": digests}))
    """
)


def test_runai_streamer_reads_every_tensor_of_our_snapshot_exactly(
    published: dict[str, Any], hub_root: Path, aws: MotoEndpoint
) -> None:
    import torch
    from safetensors.torch import load_file

    # GIVEN our published snapshot
    prefix_uri = f"s3://{published['bucket']}/{published['prefix']}"
    # WHEN the Run:ai streamer lists and streams its safetensors from S3 (its own native S3 client)
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": aws.url,
        "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
        "AWS_EC2_METADATA_DISABLED": "true",
        "RUNAI_STREAMER_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNAI_READ, prefix_uri],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    streamed = json.loads(done.stdout.strip().splitlines()[-1])
    # THEN it found our shards and every tensor equals what safetensors loads from the same file
    shards = sorted(e["path"] for e in published["files"] if e["path"].endswith(".safetensors"))
    assert [uri.rsplit("/", 1)[-1] for uri in streamed["files"]] == shards
    expected = {}
    for shard in shards:
        for name, tensor in load_file(repo_dir(hub_root, TINY_MODEL) / shard).items():
            flat = tensor.contiguous().view(-1).view(torch.uint8)
            expected[name] = [str(tensor.dtype), list(tensor.shape), hashlib.sha256(flat.numpy().tobytes()).hexdigest()]
    assert streamed["tensors"] == expected


KSERVE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-kserve" / "bin" / "python"
KSERVE_DOWNLOAD = "import sys; from kserve_storage import Storage; print(Storage.download(sys.argv[1], sys.argv[2]))"


def test_kserve_storage_initializer_downloads_our_snapshot_byte_for_byte(
    published: dict[str, Any], hub_root: Path, aws: MotoEndpoint, tmp_path: Path
) -> None:
    # GIVEN our published snapshot, and KServe's storage initializer as its init container runs it
    assert KSERVE_PYTHON.exists(), "make install builds .venv-kserve (requirements/kserve.txt)"
    storage_uri = f"s3://{published['bucket']}/{published['prefix']}"
    out_dir = tmp_path / "mnt-models"
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": aws.url,
        "S3_USE_HTTPS": "0",
        "S3_VERIFY_SSL": "0",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    # WHEN it downloads storageUri into the model directory
    done = subprocess.run(
        [str(KSERVE_PYTHON), "-c", KSERVE_DOWNLOAD, storage_uri, str(out_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # THEN every non-empty file is there, byte-identical to the Hub's, beside the snapshot's `hash` object
    # (the commit, written for Ray); empty files are the one thing it leaves out (it skips zero-size objects)
    source = repo_dir(hub_root, TINY_MODEL)
    got = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    non_empty = sorted(e["path"] for e in published["files"] if e["size"] > 0)
    assert got == sorted([*non_empty, "hash"])
    assert (out_dir / "hash").read_text() == published["commit"]
    for path in non_empty:
        assert (out_dir / path).read_bytes() == (source / path).read_bytes(), path
