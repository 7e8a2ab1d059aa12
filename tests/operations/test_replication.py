"""Multi-region: what Cross-Region Replication hands the pods of another region, and how the loader uses it.

moto does not replicate, so the test copies every current object under the prefix to the replica bucket
with the same keys, as S3 CRR does. The loader in the replica's region picks its bucket from
`MODEL_CACHE_BUCKET=region=bucket,...`, reads the replicated manifest (whose `bucket` field still names the
source) and gets the model from the replica alone; a file that has not replicated yet is a miss that
falls back to the Hub, never bad bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import unique_name
from ops_support import PART_SIZE, make_repo

from model_cache.pipeline.engine import sync

pytestmark = pytest.mark.integration


def replicate(s3: Any, source: str, replica: str, prefix: str = "models/", skip: str | None = None) -> int:
    """Copy every current object under `prefix` from `source` to `replica` (what CRR does); returns the count."""
    copied = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=source, Prefix=prefix):
        for item in page.get("Contents", []):
            if skip and item["Key"].endswith(skip):
                continue
            s3.copy_object(Bucket=replica, Key=item["Key"], CopySource={"Bucket": source, "Key": item["Key"]})
            copied += 1
    return copied


@pytest.fixture
def replica(s3: Any) -> str:
    name: str = unique_name("model-cache-replica")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def test_a_pod_in_the_replica_region_loads_the_model_from_the_replica_alone(
    hub: Any, hub_root: Path, s3: Any, bucket: str, replica: str, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a model cached in the source bucket and replicated, then the source emptied
    WHEN a pod in eu-west-1 pulls with MODEL_CACHE_BUCKET listing both regions
    THEN it loads from S3 (the replica), every file equals the Hub's bytes, and the Hub sent no file."""
    from model_cache_loader import pull

    repo_id = make_repo(hub_root)
    result = sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=2, s3=s3)
    assert replicate(s3, bucket, replica) > 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("MODEL_CACHE_BUCKET", f"us-east-1={bucket},eu-west-1={replica}")
    hub.requests.clear()

    pulled = pull(repo_id, cache_dir=hf_cache, fallback="error")

    assert pulled.source == "s3"
    assert pulled.commit == result.commit
    for path in hub.repo_info(repo_id).files:
        assert (pulled.path / path).read_bytes() == hub.read_file(repo_id, path), path
    assert not [r for r in hub.requests if r.endpoint in ("resolve", "cdn")]


def test_a_file_not_replicated_yet_is_a_miss_that_falls_back_to_the_hub(
    hub: Any, hub_root: Path, s3: Any, bucket: str, replica: str, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a replica that already has the manifest but not yet one file (replication lag)
    WHEN a pod in the replica's region pulls with the Hub fallback
    THEN it does not fail and serves no partial snapshot: it falls back to the Hub and gets the right bytes."""
    from model_cache_loader import pull

    repo_id = make_repo(hub_root)
    sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=2, s3=s3)
    replicate(s3, bucket, replica, skip="config.json")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("MODEL_CACHE_BUCKET", f"us-east-1={bucket},eu-west-1={replica}")

    pulled = pull(repo_id, cache_dir=hf_cache, fallback="hub")

    assert pulled.source == "hub"
    assert (pulled.path / "config.json").read_bytes() == hub.read_file(repo_id, "config.json")
