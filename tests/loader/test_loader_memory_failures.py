"""Straight to memory on the paths a review attacked (issue 23, rows 5, 6, 7 and 13's headers):
the last tensor of a corrupt file, the bound under many small tensors, which files make the model,
and headers safetensors itself refuses."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import pytest
import safetensors
from loader_seed import RequestCounter, seed_snapshot
from safetensors.numpy import save

from model_cache_loader import IntegrityError, UsageError
from model_cache_loader.api import make_s3_client
from model_cache_loader.memory import TENSOR_OVERHEAD, load_state_dict, parse_header, stream_safetensors

pytestmark = pytest.mark.integration

KIB = 1024


def tensors(count: int, elements: int, seed: int = 3) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {f"t.{i:05d}": rng.standard_normal(elements).astype("<f4") for i in range(count)}


# ---- row 5: the digest is compared before a file's last tensor leaves ------------------------


def test_a_consumer_that_stops_at_the_last_tensor_still_gets_integrity_error(s3: Any, bucket: str) -> None:
    """GIVEN a cached file whose last tensor has one flipped byte in S3 (the manifest is the true file's)
    WHEN a consumer streams it and stops as soon as it has the last tensor it expects
    THEN IntegrityError is raised before that tensor is handed out: the consumer never holds it."""
    body = save(tensors(8, 1024), metadata={"format": "pt"})
    corrupt = bytearray(body)
    corrupt[-10] ^= 0xFF
    seed_snapshot(
        s3,
        bucket,
        "org/last-tensor",
        {"model.safetensors": body},
        object_override={"model.safetensors": bytes(corrupt)},
    )
    names = sorted(tensors(8, 1024))
    received: list[str] = []

    def consume_until_the_last_expected_tensor() -> None:
        for name, _tensor in stream_safetensors("org/last-tensor", bucket=bucket, part_size=64 * KIB):
            received.append(name)
            if len(received) == len(names):
                return

    with pytest.raises(IntegrityError, match="sha256"):
        consume_until_the_last_expected_tensor()
    assert len(received) == len(names) - 1


# ---- row 6: memory_limit bounds what is held, overhead included -----------------------------


class RangeCounter(RequestCounter):
    def __init__(self, client: Any) -> None:
        self.ranges: list[tuple[str, int]] = []
        super().__init__(client)

    def _on_send(self, request: Any, **kwargs: Any) -> None:
        super()._on_send(request, **kwargs)
        header = request.headers.get("Range")
        if header:
            text = header.decode() if isinstance(header, bytes) else header
            start, _, end = text.removeprefix("bytes=").partition("-")
            self.ranges.append((request.url, int(end) - int(start) + 1))


def test_memory_limit_bounds_the_bytes_held_when_small_tensors_are_packed(s3: Any, bucket: str) -> None:
    """GIVEN 256 tensors of 4 KiB (1 MiB) and 1 MiB parts
    WHEN streamed with a 64 KiB memory_limit
    THEN at most 64 KiB was ever held (tensor bytes and per-tensor overhead) and no GET asked for more."""
    seed_snapshot(s3, bucket, "org/packed", {"model.safetensors": save(tensors(256, 1024))})
    client = make_s3_client(8)
    counter = RangeCounter(client)
    limit = 64 * KIB

    stream = stream_safetensors("org/packed", bucket=bucket, memory_limit=limit, part_size=1024 * KIB, s3_client=client)
    count = sum(1 for _ in stream)

    assert count == 256
    assert 0 < stream.stats.peak_buffered_bytes <= limit
    assert max(length for _, length in counter.ranges) <= limit


def test_many_tiny_tensors_are_held_a_few_at_a_time(s3: Any, bucket: str) -> None:
    """GIVEN 10,000 tensors of 4 bytes (40 KB of data, ~14 MB of tensor objects once allocated)
    WHEN streamed with a 64 KiB memory_limit
    THEN the tensors in flight never cost more than the limit: no GET covers more tensors than the
    limit holds with their overhead, so the stream needs at least that many GETs."""
    count = 10_000
    seed_snapshot(s3, bucket, "org/tiny-tensors", {"model.safetensors": save(tensors(count, 1))})
    client = make_s3_client(8)
    counter = RangeCounter(client)
    limit = 64 * KIB

    stream = stream_safetensors("org/tiny-tensors", bucket=bucket, memory_limit=limit, s3_client=client)
    assert sum(1 for _ in stream) == count

    per_get = limit // (4 + TENSOR_OVERHEAD)
    data_gets = [length for _, length in counter.ranges if length > 8]  # not the header's two probes
    assert len(data_gets) - 1 >= math.ceil(count / per_get) - 1
    assert max(data_gets[1:]) <= per_get * 4  # each data GET: at most `per_get` tensors of 4 bytes
    assert stream.stats.peak_buffered_bytes <= limit


# ---- row 7: the model's weights are chosen, never summed ------------------------------------


def sharded_repo() -> dict[str, bytes]:
    first, second = tensors(4, 256, seed=1), {f"u.{i}": v for i, v in enumerate(tensors(4, 256, seed=2).values())}
    shards = {"model-00001-of-00002.safetensors": save(first), "model-00002-of-00002.safetensors": save(second)}
    weight_map = dict.fromkeys(first, "model-00001-of-00002.safetensors")
    weight_map.update(dict.fromkeys(second, "model-00002-of-00002.safetensors"))
    index = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return {**shards, "model.safetensors.index.json": index, "config.json": b"{}"}


def test_a_consolidated_copy_beside_the_shards_is_not_loaded(s3: Any, bucket: str) -> None:
    """GIVEN sharded weights with their index and a consolidated.safetensors holding the same tensors
    WHEN the state dict is streamed
    THEN only the index's shards are read: each tensor once, and no byte of the consolidated file."""
    files = sharded_repo()
    both = {**tensors(4, 256, seed=1), **{f"u.{i}": v for i, v in enumerate(tensors(4, 256, seed=2).values())}}
    files["consolidated.safetensors"] = save(both)
    seed_snapshot(s3, bucket, "org/consolidated", files)
    client = make_s3_client(4)
    counter = RequestCounter(client)

    state = load_state_dict("org/consolidated", bucket=bucket, s3_client=client)

    assert sorted(state) == sorted(both)
    assert counter.gets("consolidated.safetensors") == []


def test_a_variant_is_chosen_not_summed(s3: Any, bucket: str) -> None:
    """GIVEN model.safetensors and a model.fp16.safetensors variant with the same tensor names
    WHEN streamed without a variant, and with variant='fp16'
    THEN the first reads model.safetensors only, the second the fp16 file only (both load)."""
    full = tensors(3, 64)
    half = {name: value.astype("<f2") for name, value in full.items()}
    seed_snapshot(s3, bucket, "org/variants", {"model.safetensors": save(full), "model.fp16.safetensors": save(half)})

    default = load_state_dict("org/variants", bucket=bucket)
    fp16 = load_state_dict("org/variants", bucket=bucket, variant="fp16")

    assert {str(t.dtype) for t in default.values()} == {"torch.float32"}
    assert {str(t.dtype) for t in fp16.values()} == {"torch.float16"}
    assert sorted(default) == sorted(fp16) == sorted(full)


def test_several_candidates_and_no_index_is_a_usage_error(s3: Any, bucket: str) -> None:
    """GIVEN two unrelated top-level safetensors files and neither an index nor model.safetensors
    WHEN streamed THEN UsageError names both files and the way out (variant= or a pull to disk)."""
    seed_snapshot(
        s3, bucket, "org/ambiguous", {"a.safetensors": save(tensors(1, 4)), "b.safetensors": save(tensors(1, 4))}
    )
    with pytest.raises(UsageError, match=r"a\.safetensors, b\.safetensors"):
        stream_safetensors("org/ambiguous", bucket=bucket)


# ---- row 13: headers are accepted exactly when safetensors accepts them ---------------------


def file_with_header(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


HEADERS = {
    "valid": file_with_header(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
    "utf-16 header": file_with_header(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'.encode("utf-16"), b"\0" * 4
    ),
    "utf-32 header": file_with_header(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'.encode("utf-32-le"), b"\0" * 4
    ),
    "empty tensor, overflow before the zero": file_with_header(
        b'{"a":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}'
    ),
    "empty tensor, large but valid dimensions": file_with_header(
        b'{"a":{"dtype":"U8","shape":[0,4294967296],"data_offsets":[0,0]}}'
    ),
    "leading space": file_with_header(b' {"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
}


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_a_header_is_accepted_exactly_when_safetensors_accepts_it(case: str) -> None:
    """GIVEN a safetensors file's bytes WHEN our header check and safetensors' own deserializer read it
    THEN both accept it or both refuse it (ours with IntegrityError), never a TypeError from torch."""
    raw = HEADERS[case]
    try:
        safetensors.deserialize(raw)  # type: ignore[no-untyped-call]  # the Rust extension ships no stubs
        upstream_accepts = True
    except Exception:
        upstream_accepts = False
    try:
        parse_header(raw, len(raw), case)
        ours_accepts = True
    except IntegrityError:
        ours_accepts = False
    assert ours_accepts == upstream_accepts, case


def test_an_empty_tensor_torch_cannot_shape_is_an_integrity_error(s3: Any, bucket: str) -> None:
    """GIVEN a zero-size tensor with a dimension of 2^63 (safetensors accepts it; torch cannot shape it)
    WHEN its file is streamed THEN IntegrityError names the tensor, not torch's TypeError."""
    body = file_with_header(b'{"a":{"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[0,0]}}')
    seed_snapshot(s3, bucket, "org/huge-empty", {"model.safetensors": body})
    with pytest.raises(IntegrityError, match="'a'"):
        load_state_dict("org/huge-empty", bucket=bucket)
