"""engine.sync over real HTTP: the Hub double (huggingface_hub through HF_ENDPOINT) and moto's S3 server."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from conftest import all_keys, failed_clean_problems, incomplete_uploads

from model_cache.contract import errors, layout
from model_cache.pipeline.engine import sync
from model_cache.pipeline.plan import MiB
from model_cache_devtools import modelgen

pytestmark = pytest.mark.integration


def hub_bytes(hub: Any, repo_id: str, path: str) -> bytes:
    entry = hub.store.snapshot(repo_id).files[path]
    return bytes(entry.read(0, entry.size))


def read(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def manifest_at(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return dict(json.loads(read(s3, bucket, key)))


def test_nested_repo_is_mirrored_byte_for_byte_and_published(
    hub: Any, s3: Any, bucket: str, manifest_schema: Any
) -> None:
    """GIVEN the nested fixture repo (nested paths, unicode name, an 11 MiB file)
    WHEN it is synced with 5 MiB parts (so the big file is a 3-part multipart upload)
    THEN every object equals the double's bytes, the manifest is schema-valid and lists them all,
    refs/main and manifest.json point at the commit, `hash` holds it, and no upload is left open."""
    result = sync(modelgen.NESTED, bucket=bucket, part_size=5 * MiB, concurrency=4, s3=s3)

    snapshot = hub.store.snapshot(modelgen.NESTED)
    assert result.status == "published"
    assert result.commit == snapshot.commit
    manifest = manifest_at(s3, bucket, result.manifest_key)
    jsonschema.validate(manifest, manifest_schema)
    assert {f["path"] for f in manifest["files"]} == set(snapshot.files)
    assert modelgen.NESTED_LARGE_FILE_PATH in manifest["files"][0]["path"] or any(
        f["path"] == modelgen.NESTED_LARGE_FILE_PATH and f["size"] > 10 * MiB for f in manifest["files"]
    )
    for entry in manifest["files"]:
        assert read(s3, bucket, entry["key"]) == hub_bytes(hub, modelgen.NESTED, entry["path"]), entry["path"]
        assert entry["sha256"] == snapshot.files[entry["path"]].sha256
        assert entry["crc64nvme"]
    assert read(s3, bucket, layout.ref_key("models", modelgen.NESTED, "main")) == snapshot.commit.encode()
    assert read(s3, bucket, layout.hash_key("models", modelgen.NESTED, snapshot.commit)) == snapshot.commit.encode()
    assert manifest_at(s3, bucket, layout.root_manifest_key("models", modelgen.NESTED)) == manifest
    assert incomplete_uploads(s3, bucket) == []
    assert not [key for key in all_keys(s3, bucket) if key.startswith("_model-cache-work")]


def test_default_skips_duplicate_weight_formats_and_globs_filter(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN a repo holding the same weights in several formats
    WHEN synced with the default selection, THEN only safetensors (and non-weight files) are copied;
    WHEN synced with --include '*.bin' --exclude 'README*', THEN exactly the .bin files are copied;
    and a repo with only a .bin keeps it by default."""
    default = sync(modelgen.MULTI_FORMAT, bucket=bucket, s3=s3)
    paths = {f["path"] for f in manifest_at(s3, bucket, default.manifest_key)["files"]}
    assert any(p.endswith(".safetensors") for p in paths)
    assert not any(p.endswith((".bin", ".pt", ".h5", ".msgpack", ".onnx", ".gguf", ".ckpt", ".pth")) for p in paths)

    other = bucket + "-globs"
    s3.create_bucket(Bucket=other)
    chosen = sync(modelgen.MULTI_FORMAT, bucket=other, include=["*.bin", "README*"], exclude=["README*"], s3=s3)
    chosen_paths = {f["path"] for f in manifest_at(s3, other, chosen.manifest_key)["files"]}
    expected = {p for p in hub.store.snapshot(modelgen.MULTI_FORMAT).files if p.endswith(".bin")}
    assert chosen_paths == expected
    assert expected

    bin_only = sync(modelgen.BIN_ONLY, bucket=bucket, s3=s3)
    assert "pytorch_model.bin" in {f["path"] for f in manifest_at(s3, bucket, bin_only.manifest_key)["files"]}


def test_gated_repo_needs_a_token(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN the gated fixture repo
    WHEN synced without a token THEN GatedRepo names HF_TOKEN and nothing is written;
    WHEN synced with the right token THEN it is published."""
    with pytest.raises(errors.GatedRepo, match="HF_TOKEN"):
        sync(modelgen.GATED, bucket=bucket, s3=s3)
    assert failed_clean_problems(s3, bucket) == []
    result = sync(modelgen.GATED, bucket=bucket, token=modelgen.GATED_TOKEN, s3=s3)
    assert result.status == "published"
    assert incomplete_uploads(s3, bucket) == []


def test_gated_repo_without_access_fails_before_any_upload_or_download(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN the gated fixture repo, whose file listing the Hub shows to anyone
    WHEN planned without a token, or with a wrong one
    THEN GatedRepo is raised at plan time: no multipart upload was ever started and no file byte was read."""
    for token, message in [(None, "set HF_TOKEN"), ("hf_wrong_token_0000000000", "has no access")]:
        hub.requests.clear()
        with pytest.raises(errors.GatedRepo, match=message):
            sync(modelgen.GATED, bucket=bucket, token=token, s3=s3)
        file_reads = [r for r in hub.requests if r.method == "GET" and r.endpoint in ("resolve", "cdn")]
        assert file_reads == []
        assert incomplete_uploads(s3, bucket) == []
        assert failed_clean_problems(s3, bucket) == []


@pytest.mark.parametrize(
    ("repo_id", "revision", "error", "message"),
    [
        ("nobody/nothing-here", "main", errors.RepoNotFound, "not found"),
        (modelgen.NESTED, "no-such-branch", errors.RevisionNotFound, "no-such-branch"),
        (modelgen.NESTED, "0" * 40, errors.RevisionNotFound, "0000"),
        ("bad--id", "main", errors.InvalidRequest, "not a Hub model id"),
    ],
)
def test_hub_errors_become_domain_errors(
    s3: Any, bucket: str, hub: Any, repo_id: str, revision: str, error: type[Exception], message: str
) -> None:
    """GIVEN a repo or revision the Hub does not have WHEN synced THEN the matching domain error, nothing written."""
    with pytest.raises(error, match=message):
        sync(repo_id, revision, bucket=bucket, s3=s3)
    assert failed_clean_problems(s3, bucket) == []


def test_missing_bucket_is_named(s3: Any, hub: Any) -> None:
    """GIVEN a bucket that does not exist WHEN synced THEN BucketNotFound names it and the fix."""
    with pytest.raises(errors.BucketNotFound, match="no-such-bucket-xyz"):
        sync(modelgen.NO_ORG, bucket="no-such-bucket-xyz", s3=s3)


def test_file_gone_at_the_hub_fails_at_once(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN the Hub answers 404 for one file's download WHEN synced THEN EntryNotFound, no retries,
    nothing published and no upload left open."""
    hub.faults.add(modelgen.BIG, "model.safetensors", kind="status", status=404, times=None, endpoint="resolve")
    with pytest.raises(errors.EntryNotFound):
        sync(modelgen.BIG, bucket=bucket, part_size=8 * MiB, s3=s3)
    served = [r for r in hub.requests if r.file == "model.safetensors"]
    assert len(served) <= 8  # at most one try per in-flight part: a 404 is never retried
    assert incomplete_uploads(s3, bucket) == []
    assert failed_clean_problems(s3, bucket) == []


def test_dropped_connection_mid_part_is_resumed(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN the double drops the connection 1 MiB into a file body, twice, and answers one 503
    WHEN the big repo is synced THEN the engine retries by range and the object is still byte-identical."""
    hub.faults.add(modelgen.BIG, "model.safetensors", kind="drop", after_bytes=MiB, times=2)
    hub.faults.add(modelgen.BIG, "model.safetensors", kind="status", status=503, retry_after=0, times=1)
    result = sync(modelgen.BIG, bucket=bucket, part_size=8 * MiB, concurrency=3, s3=s3)
    assert result.retries >= 3
    key = layout.file_key("models", modelgen.BIG, result.commit, "model.safetensors")
    assert read(s3, bucket, key) == hub_bytes(hub, modelgen.BIG, "model.safetensors")
    assert any(r.aborted for r in hub.requests)
    starts = [
        int(r.range.split("=")[1].split("-")[0]) for r in hub.requests if r.range and r.file == "model.safetensors"
    ]
    resumed_mid_part = [start for start in starts if start % (8 * MiB) != 0]
    assert resumed_mid_part  # a retry asked only for the bytes not yet received, not the whole part again


def test_flipped_byte_publishes_nothing(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN the double flips one byte of the big file (every time it serves it)
    WHEN synced THEN IntegrityError names the file, no manifest/ref/snapshot object exists, no upload is open."""
    hub.faults.add(modelgen.BIG, "model.safetensors", kind="corrupt", offset=20 * MiB + 5, times=None)
    with pytest.raises(errors.IntegrityError, match=r"model\.safetensors"):
        sync(modelgen.BIG, bucket=bucket, part_size=8 * MiB, concurrency=4, s3=s3)
    assert incomplete_uploads(s3, bucket) == []
    assert failed_clean_problems(s3, bucket) == []


def test_flipped_byte_in_small_file_is_never_written(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN a corrupted byte in a small (single PUT) file WHEN synced THEN nothing at all stays in the bucket."""
    hub.faults.add(modelgen.TINY_MODEL, "config.json", kind="corrupt", offset=3, times=None)
    with pytest.raises(errors.IntegrityError, match=r"config\.json"):
        sync(modelgen.TINY_MODEL, bucket=bucket, s3=s3)
    assert failed_clean_problems(s3, bucket) == []
    assert incomplete_uploads(s3, bucket) == []


def count_s3_requests(s3: Any) -> list[str]:
    calls: list[str] = []

    def record(**kwargs: Any) -> None:
        calls.append(kwargs["event_name"].split(".")[-1])

    s3.meta.events.register("before-send.s3", record)
    return calls


def test_rerun_at_published_commit_is_a_cheap_no_op(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN a repo already published WHEN synced again THEN one Hub API call, no file download,
    three small S3 reads (manifest, ref, root manifest), and the run's claim for gc (written, its folder
    listed, released): no other write."""
    sync(modelgen.TINY_MODEL, bucket=bucket, s3=s3)
    hub.requests.clear()
    calls = count_s3_requests(s3)

    again = sync(modelgen.TINY_MODEL, bucket=bucket, s3=s3)

    assert again.status == "already_published"
    assert [r.endpoint for r in hub.requests] == ["api"]
    assert calls == ["PutObject", "ListObjectsV2", "GetObject", "GetObject", "GetObject", "DeleteObject"]


def test_force_recopies_and_refs_follow(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN a published repo WHEN synced with force THEN it is copied again (files downloaded) and stays valid."""
    sync(modelgen.NO_ORG, bucket=bucket, s3=s3)
    hub.requests.clear()
    again = sync(modelgen.NO_ORG, bucket=bucket, force=True, s3=s3)
    assert again.status == "published"
    assert any(r.endpoint in ("resolve", "cdn") for r in hub.requests)
    assert layout.repo_prefix("models", modelgen.NO_ORG) == "models/solo-model/"


def test_resolve_is_called_once_per_file_and_the_token_stays_on_the_hub(s3: Any, bucket: str, hub: Any) -> None:
    """GIVEN the gated repo synced with its token, and the big repo (6 parts of 8 MiB)
    WHEN copied THEN the big file costs one resolve call (parts go straight to the CDN URL), and no request
    to the CDN origin ever carried the Authorization header."""
    sync(modelgen.GATED, bucket=bucket, token=modelgen.GATED_TOKEN, s3=s3)
    assert [r for r in hub.requests if r.endpoint == "cdn" and r.authorized] == []
    assert any(r.authorized for r in hub.requests if r.endpoint in ("api", "resolve"))

    hub.requests.clear()
    sync(modelgen.BIG, bucket=bucket, part_size=8 * MiB, concurrency=4, s3=s3)
    big = [r for r in hub.requests if r.file == "model.safetensors"]
    assert len([r for r in big if r.endpoint == "resolve"]) == 1
    assert len([r for r in big if r.endpoint == "cdn" and r.method == "GET"]) == modelgen.BIG_WEIGHT_SIZE // (8 * MiB)
