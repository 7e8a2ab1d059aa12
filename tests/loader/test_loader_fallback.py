"""Misses and fallbacks: the Hub double (huggingface_hub through HF_ENDPOINT) and the cache request queue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from loader_seed import RequestCounter

from model_cache_devtools.modelgen import TINY_MODEL
from model_cache_loader import AccessError, HubFallbackError, NotCachedError, metrics, pull
from model_cache_loader.api import make_s3_client

pytestmark = pytest.mark.integration


def test_miss_falls_back_to_the_hub_into_the_same_cache(
    bucket: str, hub: Any, hf_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """GIVEN a model not in S3 WHEN pulled with fallback='hub'
    THEN it comes from the Hub into the same HF cache, and the log line says why."""
    before = metrics.counts()
    with caplog.at_level("INFO", logger="model_cache_loader"):
        result = pull(TINY_MODEL, bucket=bucket, cache_dir=hf_cache)

    assert result.source == "hub"
    assert result.path == hf_cache / "models--tiny-org--tiny-llm" / "snapshots" / result.commit
    assert (result.path / "config.json").is_file()
    assert result.bytes_downloaded > 0
    assert result.reason is not None
    assert "not cached" in result.reason
    assert hub.requests.matching(repo_id=TINY_MODEL)
    assert (hf_cache / "models--tiny-org--tiny-llm" / "refs" / "main").read_text() == result.commit
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith("{")]
    assert [line["source"] for line in logged] == ["hub"]
    assert "not cached" in logged[0]["reason"]
    after = metrics.counts()
    assert after.get("fallback", 0) == before.get("fallback", 0) + 1
    assert after.get("miss", 0) == before.get("miss", 0) + 1


def test_miss_sends_a_cache_request_to_the_queue(bucket: str, hub: Any, hf_cache: Path, sqs: Any) -> None:
    """GIVEN a request queue WHEN a pull misses THEN a request message (docs/architecture.md 3.3) lands on it."""
    queue_url = sqs.create_queue(QueueName=f"requests-{bucket}")["QueueUrl"]
    pull(f"{TINY_MODEL}@main", bucket=bucket, cache_dir=hf_cache, request_on_miss=True, request_queue_url=queue_url)

    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert len(messages) == 1
    body = json.loads(messages[0]["Body"])
    assert body["repo_id"] == TINY_MODEL
    assert body["revision"] == "main"
    assert body["requested_by"].startswith("model-cache-loader@")


def test_a_failing_cache_request_is_not_fatal(
    bucket: str, hub: Any, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a request queue that does not exist WHEN a pull misses THEN the Hub fallback still succeeds."""
    monkeypatch.setenv("MODEL_CACHE_REQUEST_QUEUE_URL", "http://127.0.0.1:9/123456789012/no-such-queue")
    result = pull(TINY_MODEL, bucket=bucket, cache_dir=hf_cache)
    assert result.source == "hub"


def test_unreachable_s3_falls_back_to_the_hub(hub: Any, hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN S3 unreachable WHEN pulled THEN the Hub serves the model and the reason says S3 was unreachable."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    result = pull(TINY_MODEL, bucket="some-bucket", cache_dir=hf_cache)
    assert result.source == "hub"
    assert result.reason is not None
    assert "unreachable" in result.reason


def test_unreachable_s3_with_fallback_error_raises_access_error(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN S3 unreachable and nothing on disk WHEN pulled with fallback='error' THEN AccessError names the fix."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(AccessError, match="AWS_ENDPOINT_URL"):
        pull(TINY_MODEL, bucket="some-bucket", cache_dir=hf_cache, fallback="error")


def test_missing_bucket_is_an_access_error(aws: Any, hf_cache: Path) -> None:
    """GIVEN a bucket that does not exist WHEN pulled with fallback='error'
    THEN AccessError names MODEL_CACHE_BUCKET."""
    with pytest.raises(AccessError, match="MODEL_CACHE_BUCKET"):
        pull(TINY_MODEL, bucket="no-such-bucket-for-loader", cache_dir=hf_cache, fallback="error")


def test_use_model_cache_false_goes_straight_to_the_hub(
    bucket: str, hub: Any, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN USE_MODEL_CACHE=false WHEN pulled THEN S3 is not asked at all."""
    monkeypatch.setenv("USE_MODEL_CACHE", "false")
    client = make_s3_client()
    counter = RequestCounter(client)
    result = pull(TINY_MODEL, bucket=bucket, cache_dir=hf_cache, s3_client=client)
    assert result.source == "hub"
    assert counter.requests == []


def test_hub_failure_after_a_miss_is_a_clear_error(bucket: str, hub: Any, hf_cache: Path) -> None:
    """GIVEN a model neither in S3 nor on the Hub WHEN pulled THEN HubFallbackError says both failed."""
    with pytest.raises(HubFallbackError, match="S3 cache missed and the Hub download failed"):
        pull("tiny-org/does-not-exist", bucket=bucket, cache_dir=hf_cache)


def test_an_object_missing_mid_download_falls_back_to_the_hub(
    s3: Any, bucket: str, hub: Any, hub_root: Path, hf_cache: Path
) -> None:
    """GIVEN a published snapshot one of whose objects has since disappeared
    WHEN pulled THEN fallback='error' raises NotCachedError naming it, and fallback='hub' gets the model."""
    from loader_seed import repo_files, seed_snapshot

    from model_cache_devtools.modelgen import repo_dir

    seeded = seed_snapshot(
        s3, bucket, TINY_MODEL, repo_files(repo_dir(hub_root, TINY_MODEL)), commit=hub.store.snapshot(TINY_MODEL).commit
    )
    shard = next(f["key"] for f in seeded.manifest["files"] if f["path"].endswith(".safetensors"))
    for version in s3.list_object_versions(Bucket=bucket, Prefix=shard).get("Versions", []):
        s3.delete_object(Bucket=bucket, Key=shard, VersionId=version["VersionId"])

    with pytest.raises(NotCachedError, match=r"safetensors does not exist"):
        pull(TINY_MODEL, bucket=bucket, cache_dir=hf_cache, fallback="error")
    result = pull(TINY_MODEL, bucket=bucket, cache_dir=hf_cache)
    assert result.source == "hub"
    assert (result.path / "config.json").is_file()
