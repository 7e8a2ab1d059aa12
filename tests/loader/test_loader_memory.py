"""Straight to memory (model_cache_loader.memory): a cached snapshot's safetensors streamed from
moto's S3 into CPU tensors, verified, with bounded memory, and a model built from them that
generates what the disk snapshot generates."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from loader_seed import repo_files, seed_snapshot
from safetensors.numpy import save
from safetensors.torch import load_file

from model_cache_devtools.modelgen import TINY_MODEL, repo_dir
from model_cache_loader import IntegrityError, pull
from model_cache_loader.memory import (
    TENSOR_OVERHEAD,
    TensorSpec,
    load_state_dict,
    parse_header,
    plan_ranges,
    stream_safetensors,
)

pytestmark = pytest.mark.integration

KIB = 1024
REPO = "test-org/many-tensors"


def many_tensors() -> dict[str, Any]:
    """64 float32 tensors of 64 KiB and a few odd ones: a bf16-shaped int16, a 0-size, a scalar-like."""
    rng = np.random.default_rng(7)
    tensors: dict[str, Any] = {
        f"layer.{i:02d}.weight": rng.standard_normal((128, 128)).astype("<f4") for i in range(64)
    }
    tensors["odd.int16"] = rng.integers(-(2**15), 2**15, size=(3, 5, 7), dtype="<i2")
    tensors["odd.empty"] = np.zeros((0, 4), dtype="<f4")
    tensors["odd.one"] = np.array([42], dtype="<i8")
    return tensors


def seed_many(s3: Any, bucket: str, **extra: Any) -> tuple[Any, bytes]:
    body = save(many_tensors(), metadata={"format": "pt"})
    return seed_snapshot(s3, bucket, REPO, {"model.safetensors": body, "config.json": b"{}"}, **extra), body


def test_every_tensor_equals_safetensors_loading_the_same_file(
    s3: Any, bucket: str, hub_root: Path, tmp_path: Path
) -> None:
    # GIVEN the tiny real model (two shards) cached in S3
    files = repo_files(repo_dir(hub_root, TINY_MODEL))
    seed_snapshot(s3, bucket, TINY_MODEL, files)
    # WHEN its state dict is streamed to memory
    state = load_state_dict(TINY_MODEL, bucket=bucket, part_size=64 * KIB, concurrency=4)
    # THEN it holds exactly the tensors safetensors reads from the files, bit for bit
    expected: dict[str, torch.Tensor] = {}
    for path, content in files.items():
        if path.endswith(".safetensors"):
            (tmp_path / path).write_bytes(content)
            expected.update(load_file(tmp_path / path))
    assert sorted(state) == sorted(expected)
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype, name
        assert state[name].shape == tensor.shape, name
        assert torch.equal(state[name], tensor), name


def test_memory_held_is_bounded_by_the_limit_not_by_the_file(s3: Any, bucket: str) -> None:
    # GIVEN a 4 MiB safetensors file of 64 KiB tensors, and a 256 KiB memory limit
    _seeded, body = seed_many(s3, bucket)
    limit = 256 * KIB
    # WHEN it is streamed with the tensors dropped as they arrive
    stream = stream_safetensors(REPO, bucket=bucket, memory_limit=limit, part_size=64 * KIB, concurrency=8)
    names = [name for name, _tensor in stream]
    # THEN every tensor came, all bytes were fetched once, and no more than the limit was ever held
    assert len(names) == len(many_tensors())
    assert stream.stats.bytes_downloaded == len(body)
    assert 0 < stream.stats.peak_buffered_bytes <= limit
    assert stream.stats.peak_buffered_bytes < len(body) / 8


def test_a_tensor_larger_than_the_limit_is_fetched_alone(s3: Any, bucket: str) -> None:
    # GIVEN a limit smaller than every tensor
    seed_many(s3, bucket)
    stream = stream_safetensors(REPO, bucket=bucket, memory_limit=1, part_size=64 * KIB)
    # WHEN streamed THEN it still completes, holding one tensor at a time
    state = dict(stream)
    assert torch.equal(state["layer.05.weight"], torch.from_numpy(many_tensors()["layer.05.weight"]))
    assert stream.stats.peak_buffered_bytes == 64 * KIB + TENSOR_OVERHEAD


@pytest.mark.parametrize("verify", ["sha256", "crc64nvme"])
def test_an_object_with_other_bytes_fails_its_file_and_load_returns_nothing(s3: Any, bucket: str, verify: str) -> None:
    # GIVEN an object whose last tensor's bytes differ from what the manifest's hashes describe
    body = save(many_tensors(), metadata={"format": "pt"})
    tampered = bytearray(body)
    tampered[-3] ^= 0x01
    seed_snapshot(
        s3,
        bucket,
        REPO,
        {"model.safetensors": body},
        object_override={"model.safetensors": bytes(tampered)},
        with_crc=True,
    )
    # WHEN loaded THEN the file fails its check, naming it
    with pytest.raises(IntegrityError, match=r"model\.safetensors.*must not be used"):
        load_state_dict(REPO, bucket=bucket, verify=verify, part_size=64 * KIB)


def test_verify_crc64nvme_without_a_recorded_crc_checks_sha256(s3: Any, bucket: str) -> None:
    # GIVEN a manifest that records no CRC64NVME, and an object with one byte changed
    body = save(many_tensors(), metadata={"format": "pt"})
    tampered = bytearray(body)
    tampered[len(body) // 2] ^= 0x01
    seed_snapshot(s3, bucket, REPO, {"model.safetensors": body}, object_override={"model.safetensors": bytes(tampered)})
    # WHEN loaded asking for crc64nvme THEN the file is checked by sha256 instead, and fails
    with pytest.raises(IntegrityError, match=r"sha256 .* is not the manifest's"):
        load_state_dict(REPO, bucket=bucket, verify="crc64nvme", part_size=64 * KIB)


def test_an_object_of_another_size_is_refused_though_its_first_bytes_match(s3: Any, bucket: str) -> None:
    # GIVEN an object that is the manifest's file with bytes appended (its tensors all match)
    body = save(many_tensors(), metadata={"format": "pt"})
    seed_snapshot(s3, bucket, REPO, {"model.safetensors": body}, object_override={"model.safetensors": body + b"x" * 9})
    # WHEN loaded THEN S3's answer to the first range already names the other size, and nothing is returned
    with pytest.raises(IntegrityError, match="not the one the manifest describes"):
        load_state_dict(REPO, bucket=bucket, part_size=64 * KIB)


def test_a_body_cut_mid_tensor_is_resumed_and_the_tensors_are_exact(s3_proxy: Any, s3: Any, bucket: str) -> None:
    # GIVEN the S3 proxy cuts the first data range of the file 10,000 bytes into its body (the two
    # small header GETs before it pass untouched: a flip far past their end strikes nothing)
    _seeded, body = seed_many(s3, bucket)
    import boto3

    client = boto3.client("s3", region_name="us-east-1", endpoint_url=s3_proxy.url)
    s3_proxy.faults.add("GetObject", "flip", times=2, key="*model.safetensors", offset=10**9)
    s3_proxy.faults.add("GetObject", "cut", key="*model.safetensors", offset=10_000)
    # WHEN streamed through the proxy, one range at a time
    stream = stream_safetensors(REPO, bucket=bucket, part_size=256 * KIB, concurrency=1, s3_client=client)
    state = dict(stream)
    # THEN the cut was struck on a data range, the rest was fetched from the first byte not received
    # (every byte of the file counted once), and every tensor is exact
    assert s3_proxy.faults.fired("GetObject") == 3
    assert stream.stats.bytes_downloaded == len(body)
    for name, array in many_tensors().items():
        assert torch.equal(state[name], torch.from_numpy(array)), name


@pytest.mark.unit
@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, "spans 4 bytes"),
        ({"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}}, "dtype 'Q9'"),
        (
            {
                "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]},
            },
            "gap or overlap",
        ),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, "gap or overlap"),
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, "shape"),
    ],
)
def test_a_header_that_does_not_describe_its_file_is_refused(header: dict[str, Any], problem: str) -> None:
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + b"\0" * 8
    with pytest.raises(IntegrityError, match=problem):
        parse_header(data, len(data), "model.safetensors")


@pytest.mark.unit
def test_a_header_length_past_the_file_is_refused() -> None:
    data = struct.pack("<Q", 10**9) + b"{}"
    with pytest.raises(IntegrityError, match="does not fit"):
        parse_header(data, len(data), "model.safetensors")


@pytest.mark.unit
def test_ranges_cover_the_data_region_once_cut_at_tensor_boundaries() -> None:
    # GIVEN tensors of 10, 300, 5 and 5 bytes from offset 8, and 100-byte parts
    sizes = [10, 300, 5, 5]
    specs, cursor = [], 8
    for index, size in enumerate(sizes):
        specs.append(TensorSpec(f"t{index}", "U8", (size,), cursor, cursor + size))
        cursor += size
    ranges = plan_ranges(specs, 100)
    # THEN they tile the region in order, the big tensor alone, and each tensor is new exactly once
    assert [(r.start, r.end) for r in ranges] == [(8, 18), (18, 118), (118, 218), (218, 318), (318, 328)]
    assert [i for r in ranges for i in r.new_tensors] == [0, 1, 2, 3]


@pytest.mark.e2e
@pytest.mark.slow
def test_a_model_built_from_memory_generates_the_tokens_the_disk_snapshot_does(
    s3: Any, bucket: str, hub_root: Path, hf_cache: Path
) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    # GIVEN the tiny model cached in S3, pulled to disk once as the reference
    seed_snapshot(s3, bucket, TINY_MODEL, repo_files(repo_dir(hub_root, TINY_MODEL)))
    snapshot = pull(TINY_MODEL, bucket=bucket, cache_dir=hf_cache, fallback="error").path
    tokenizer = AutoTokenizer.from_pretrained(snapshot)
    inputs = tokenizer("the cache", return_tensors="pt")
    from_disk = AutoModelForCausalLM.from_pretrained(snapshot)
    # WHEN a model is built from its config and the state dict streamed to memory
    state = load_state_dict(TINY_MODEL, bucket=bucket)
    from_memory = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(snapshot))
    missing, unexpected = from_memory.load_state_dict(state, strict=False)
    # THEN every weight was set, and both generate the same tokens
    assert unexpected == []
    assert all("rotary" in name or "lm_head" in name for name in missing), missing
    from_memory.tie_weights()
    from_memory.eval()
    generate = {"max_new_tokens": 12, "min_new_tokens": 12, "do_sample": False}
    expected = from_disk.generate(**inputs, **generate)
    assert torch.equal(from_memory.generate(**inputs, **generate), expected)
    assert expected.shape[-1] == inputs["input_ids"].shape[-1] + 12
