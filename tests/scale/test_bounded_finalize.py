"""No invocation's work grows with the model: each completion does one file's, Finalize reads only records.

Watched through the S3 proxy in front of moto: every request each task makes, by operation and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import REGION, incomplete_uploads, shared_test_module

from model_cache.pipeline import steps, work_files
from model_cache_devtools.s3proxy import S3Proxy

pytestmark = pytest.mark.integration

ops = shared_test_module("ops_support", "tests/operations/ops_support.py")
MiB = 1024 * 1024
OPTIONS = {"part_size": 5 * MiB, "unit_size": 10 * MiB, "unit_concurrency": 2, "layout": "split"}


def snapshot_requests(proxy: S3Proxy) -> list[tuple[str, str]]:
    return [(entry.operation, entry.path) for entry in proxy.requests.snapshot() if "/snapshots/" in entry.path]


def test_each_completion_touches_only_its_file_and_finalize_reads_no_file(
    hub_root: Path, hf_endpoint: str, s3: Any, bucket: str, s3_proxy: S3Proxy
) -> None:
    # GIVEN two files split over units (40 MiB over 4, 12 MiB over 2) and a small one, every unit copied
    files = {
        "a.safetensors": ops.deterministic_bytes(40 * MiB, 151),
        "b.safetensors": ops.deterministic_bytes(12 * MiB, 152),
        "config.json": b"{}",
    }
    repo_id = ops.make_repo(hub_root, files)
    proxied = boto3.client("s3", region_name=REGION, endpoint_url=s3_proxy.url)
    planned = steps.plan({"repo_id": repo_id, "bucket": bucket, "options": OPTIONS}, s3=s3)
    for item in steps.unit_items(work_files.load_plan(s3, planned)):
        steps.copy_unit(item, s3=s3)
    items = work_files.completion_items(work_files.load_plan(s3, planned))
    assert [item["path"] for item in items] == ["a.safetensors", "b.safetensors"]

    # WHEN each file is completed by its own task  THEN that task completes and reads back its own key only
    for item in items:
        s3_proxy.requests.clear()
        completed = steps.complete_file(item, s3=proxied)
        assert completed["read_back"] is True
        touched = {path for _, path in snapshot_requests(s3_proxy)}
        assert touched
        assert all(path.split("?")[0].endswith("/" + item["path"]) for path in touched), touched
        operations = [operation for operation, _ in snapshot_requests(s3_proxy)]
        assert operations.count("CompleteMultipartUpload") == 1
        read = sum(entry.bytes_out for entry in s3_proxy.requests.of("GetObject") if "/snapshots/" in entry.path)
        assert read >= len(files[item["path"]])

    # WHEN finalize gathers  THEN it touches no snapshot key at all: no completion, no read-back, no HEAD
    s3_proxy.requests.clear()
    finalized = steps.finalize(planned, s3=proxied)
    assert snapshot_requests(s3_proxy) == []
    assert finalized["files"] == 3
    assert finalized["verified_by_read_back"] == 2
    published = steps.publish(finalized, s3=s3)
    assert published["files"] == 3
    steps.cleanup(planned, s3=s3)
    assert incomplete_uploads(s3, bucket) == []
