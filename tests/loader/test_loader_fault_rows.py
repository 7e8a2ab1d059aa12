"""The fault table's rows for the loader's failure paths (issue 23, rows 1, 2, 5 and 7): each fault is tried
at seeded offsets and moments, and after every trial the cache (or what the consumer received) is checked
byte for byte. `make reliability-figures` writes the rows into docs/explanation/reliability.md; `make test` only checks.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import shared_test_module
from loader_seed import Seeded, repo_files, seed_snapshot
from safetensors.numpy import save

from model_cache_devtools.modelgen import TINY_MODEL, repo_dir
from model_cache_loader import HubFallbackError, IntegrityError, pull
from model_cache_loader.hfcache import RepoCache
from model_cache_loader.memory import stream_safetensors

pytestmark = pytest.mark.integration

support = shared_test_module("reliability_support", "tests/reliability/reliability_support.py")
SEED = 20261207
KIB = 1024
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def fresh_copy_of_tiny(hub_root: Path) -> str:
    repo_id = f"tiny-org/rows-{uuid.uuid4().hex[:8]}"
    shutil.copytree(repo_dir(hub_root, TINY_MODEL), repo_dir(hub_root, repo_id))
    return repo_id


def published_with_a_shard_gone(s3: Any, bucket: str, hub: Any, hub_root: Path, repo_id: str, shard: str) -> Seeded:
    """The repo published at the Hub's commit, then one shard's every version deleted from S3."""
    seeded = seed_snapshot(
        s3, bucket, repo_id, repo_files(repo_dir(hub_root, repo_id)), commit=hub.store.snapshot(repo_id).commit
    )
    key = seeded.entry(shard)["key"]
    for version in s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
    return seeded


def wrong_blobs(cache: Path, repo_id: str, seeded: Seeded) -> int:
    """Blobs whose bytes are not those of the manifest entry named like them, and snapshot links of
    the manifest's commit that resolve to bytes other than the manifest's."""
    repo = RepoCache(cache, repo_id)
    wrong = len(support.check_loader_cache(cache))
    for path, data in seeded.files.items():
        link = repo.snapshot_dir(seeded.commit) / path
        if link.exists() and link.read_bytes() != data:
            wrong += 1
    return wrong


def test_fault_row_the_hub_fallback_serves_a_corrupted_byte(
    s3: Any, bucket: str, hub: Any, hub_root: Path, tmp_path: Path
) -> None:
    """GIVEN a shard gone from S3 and the Hub flipping one byte at a seeded offset of it (once, or every time)
    WHEN a pod pulls into a fresh cache, and pulls again
    THEN a flipped byte always ends in IntegrityError with nothing installed under the manifest's name, and
    the pull after a one-time fault installs exactly the manifest's bytes: corrupted 0."""
    rng = random.Random(SEED + 1)
    row = support.FaultTable("Hub fallback serves a corrupted byte (loader)")
    for trial in range(6):
        repo_id = fresh_copy_of_tiny(hub_root)
        shard = rng.choice(SHARDS)
        seeded = published_with_a_shard_gone(s3, bucket, hub, hub_root, repo_id, shard)
        once = trial % 2 == 0
        hub.faults.clear()
        offset = rng.randrange(seeded.entry(shard)["size"])
        hub.faults.add(repo_id, shard, kind="corrupt", offset=offset, times=1 if once else None)
        cache = tmp_path / f"cache-{trial}"
        with pytest.raises(IntegrityError, match=shard):
            pull(repo_id, bucket=bucket, cache_dir=cache)
        assert not RepoCache(cache, repo_id).blob_path(seeded.blob_name(shard)).exists()
        recovered = False
        if once:
            recovered = pull(repo_id, bucket=bucket, cache_dir=cache).source == "hub"
        row.trial(recovered=recovered, corrupted=wrong_blobs(cache, repo_id, seeded), orphaned=0)
    hub.faults.clear()
    row.write()


def test_fault_row_the_hub_fallback_while_the_branch_moves(
    s3: Any, bucket: str, hub: Any, hub_root: Path, tmp_path: Path
) -> None:
    """GIVEN S3 at main = c1 with a shard gone, and (in every other trial) the Hub's main moved on to c2
    WHEN a pod falls back to the Hub
    THEN it installs c1's bytes (every Hub download names c1), or, when the Hub no longer serves c1, fails
    clean: never a c2 snapshot, never refs/main at c2, corrupted 0."""
    rng = random.Random(SEED + 2)
    row = support.FaultTable("Hub fallback while the branch moves (loader)")
    for trial in range(6):
        hub.faults.clear()
        repo_id = fresh_copy_of_tiny(hub_root)
        seeded = published_with_a_shard_gone(s3, bucket, hub, hub_root, repo_id, rng.choice(SHARDS))
        moved = trial % 2 == 1
        if moved:
            (repo_dir(hub_root, repo_id) / f"moved-{trial}.txt").write_text(f"main moved on {rng.random()}\n")
        head = hub.store.snapshot(repo_id).commit
        hub.requests.clear()
        cache = tmp_path / f"cache-{trial}"
        try:
            result = pull(repo_id, bucket=bucket, cache_dir=cache)
        except HubFallbackError:
            recovered = False
        else:
            recovered = result.source == "hub" and result.commit == seeded.commit
        repo = RepoCache(cache, repo_id)
        downloads = hub.requests.matching(repo_id=repo_id, endpoint="resolve")
        strays = sum(1 for record in downloads if f"/resolve/{seeded.commit}/" not in record.path)
        if moved:
            strays += int(repo.snapshot_dir(head).exists()) + int(repo.read_ref("main") == head)
        row.trial(recovered=recovered, corrupted=wrong_blobs(cache, repo_id, seeded) + strays, orphaned=0)
        assert recovered != moved
    row.write()


def tensors(count: int, elements: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {f"t.{i:04d}": rng.standard_normal(elements).astype("<f4") for i in range(count)}


def test_fault_row_the_memory_stream_gets_a_flipped_byte(s3: Any, bucket: str) -> None:
    """GIVEN a cached file with one byte flipped in S3 at a seeded offset of its data (the manifest is the
    true file's)  WHEN a consumer streams the file and stops at the last tensor it expects
    THEN the stream ends in IntegrityError before that tensor leaves: no consumer ever finishes holding a
    wrong byte (corrupted 0)."""
    rng = random.Random(SEED + 5)
    row = support.FaultTable("memory stream gets a flipped byte (loader)")
    for trial in range(6):
        true = tensors(rng.randint(2, 12), rng.choice([16, 3000, 40000]), seed=trial)
        body = save(true, metadata={"format": "pt"})
        corrupt = bytearray(body)
        data_start = 8 + int.from_bytes(body[:8], "little")
        corrupt[rng.randrange(data_start, len(body))] ^= 1 << rng.randrange(8)
        repo_id = f"org/flip-{trial}-{uuid.uuid4().hex[:6]}"
        seed_snapshot(
            s3, bucket, repo_id, {"model.safetensors": body}, object_override={"model.safetensors": bytes(corrupt)}
        )
        received: dict[str, bytes] = {}
        try:
            stream = stream_safetensors(repo_id, bucket=bucket, part_size=rng.choice([64, 128, 256]) * KIB)
            for name, tensor in stream:
                received[name] = tensor.numpy().tobytes()
                if len(received) == len(true):
                    break
            finished = True
        except IntegrityError:
            finished = False
        wrong = sum(1 for name, data in received.items() if data != true[name].tobytes())
        # A consumer that finished without IntegrityError holds whatever arrived: that is the corruption.
        row.trial(recovered=False, corrupted=int(finished), orphaned=0)
        assert wrong <= 1 or not finished
        assert not finished
    row.write()


def test_fault_row_the_memory_stream_beside_other_weight_files(s3: Any, bucket: str) -> None:
    """GIVEN a repo whose weights sit beside other safetensors files (a consolidated copy, a variant, a
    subfolder's weights), in seeded layouts  WHEN the state dict is streamed (with the variant when one is
    asked for)  THEN exactly the intended tensors arrive, each once, byte for byte (corrupted 0)."""
    rng = random.Random(SEED + 7)
    row = support.FaultTable("memory stream beside other weight files (loader)")
    layouts = [
        "shards+consolidated",
        "single+fp16",
        "fp16 asked",
        "shards+subfolder",
        "shards+consolidated",
        "single+fp16",
    ]
    for trial, layout in enumerate(layouts):
        first, second = tensors(3, 128, seed=10 * trial), tensors(3, 128, seed=10 * trial + 1)
        second = {name.replace("t.", "u."): value for name, value in second.items()}
        variant = None
        if layout.startswith("shards"):
            index = {
                "metadata": {},
                "weight_map": {**dict.fromkeys(first, "a.safetensors"), **dict.fromkeys(second, "b.safetensors")},
            }
            files = {
                "a.safetensors": save(first),
                "b.safetensors": save(second),
                "model.safetensors.index.json": json.dumps(index).encode(),
            }
            extra = "consolidated.safetensors" if layout.endswith("consolidated") else "sub/model.safetensors"
            files[extra] = save({**first, **second})
            intended = {**first, **second}
        else:
            both = {**first, **second}
            half = {name: value.astype("<f2") for name, value in both.items()}
            files = {"model.safetensors": save(both), "model.fp16.safetensors": save(half)}
            variant = "fp16" if layout == "fp16 asked" else None
            intended = half if variant else both
        repo_id = f"org/layout-{trial}-{uuid.uuid4().hex[:6]}"
        seed_snapshot(s3, bucket, repo_id, files)
        names: list[str] = []
        wrong = 0
        for name, tensor in stream_safetensors(
            repo_id, bucket=bucket, variant=variant, part_size=rng.choice([64, 256]) * KIB
        ):
            names.append(name)
            wrong += int(name not in intended or tensor.numpy().tobytes() != intended[name].tobytes())
        wrong += abs(len(names) - len(intended)) + (len(names) - len(set(names)))
        row.trial(recovered=wrong == 0, corrupted=wrong, orphaned=0)
        assert sorted(names) == sorted(intended)
    row.write()


def test_the_rows_digest_helper_sees_a_wrong_blob(tmp_path: Path) -> None:
    """GIVEN a blob whose bytes differ from its name  WHEN the cache is checked  THEN it is counted (the
    corrupted column can be non-zero)."""
    blob = tmp_path / "models--org--x" / "blobs" / hashlib.sha256(b"right").hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"wrong")
    assert support.check_loader_cache(tmp_path) != []
