"""bench/s3_files.py, the bench's low-cost S3 stand-in, answers like S3 (issue 25, item 5).

A bench figure is only as good as its server: every answer the clients rely on is compared here with
moto's for the same objects (HEAD, whole and ranged GETs, a version pin, If-Match, the listing), and
the loader pulls from it byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import REGION, REPO_ROOT, seed_snapshot

pytestmark = pytest.mark.integration

sys.path.insert(0, str(REPO_ROOT))
from bench import s3_files  # noqa: E402 - bench/ is not a package on the tests' path

REPO = "bench-org/files"
FILES = {"config.json": b'{"model_type": "llama"}\n', "model.safetensors": os.urandom(3 << 20)}


@pytest.fixture
def file_server(s3: Any, bucket: str, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    seed_snapshot(s3, bucket, REPO, FILES)
    s3_files.mirror(s3, bucket, tmp_path / "store")
    server = s3_files.serve(tmp_path / "store", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield url, boto3.client("s3", region_name=REGION, endpoint_url=url)
    finally:
        server.shutdown()
        server.server_close()


def snapshot_key(s3: Any, bucket: str, name: str) -> str:
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    [key] = [key for key in keys if key.endswith(f"/snapshots/{key.split('/snapshots/')[-1]}") and key.endswith(name)]
    return key


HEADERS = ("ContentLength", "ETag", "VersionId", "LastModified", "ContentRange", "AcceptRanges")


def test_the_file_server_answers_each_read_as_moto_does(s3: Any, bucket: str, file_server: tuple[str, Any]) -> None:
    _, files = file_server
    key = snapshot_key(s3, bucket, "model.safetensors")
    version = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
    # GIVEN the same object on moto and on the file server
    for request in (
        {},
        {"Range": "bytes=0-99"},
        {"Range": "bytes=1048576-3145727"},
        {"Range": "bytes=-10"},
        {"VersionId": version},
        {"Range": "bytes=5-9", "VersionId": version},
    ):
        # WHEN each reads it the same way
        want = s3.get_object(Bucket=bucket, Key=key, **request)
        got = files.get_object(Bucket=bucket, Key=key, **request)
        # THEN the bytes and every header a client checks are equal
        assert got["Body"].read() == want["Body"].read(), request
        for header in HEADERS:
            assert got.get(header) == want.get(header), (request, header)
    head = files.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(FILES["model.safetensors"])
    assert files.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"])["Body"].read() == FILES["model.safetensors"]
    # AND what S3 refuses, it refuses with S3's codes
    for call, code in (
        (lambda: files.get_object(Bucket=bucket, Key=key, IfMatch='"0"'), "PreconditionFailed"),
        (lambda: files.get_object(Bucket=bucket, Key=key + ".absent"), "NoSuchKey"),
        (lambda: files.get_object(Bucket=bucket, Key=key, VersionId="not-a-version"), "NoSuchVersion"),
        (lambda: files.get_object(Bucket=bucket, Key=key, Range="bytes=99999999-"), "InvalidRange"),
    ):
        with pytest.raises(ClientError) as raised:
            call()
        assert raised.value.response["Error"]["Code"] in (code, "416"), code


def test_the_file_server_lists_as_moto_does(s3: Any, bucket: str, file_server: tuple[str, Any]) -> None:
    _, files = file_server

    def listing(client: Any, **options: Any) -> tuple[list[str], list[str]]:
        keys: list[str] = []
        prefixes: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, **options):
            keys += [(item["Key"], item["Size"], item["ETag"]) for item in page.get("Contents", [])]
            prefixes += [item["Prefix"] for item in page.get("CommonPrefixes", [])]
        return keys, prefixes

    # GIVEN both servers WHEN each lists whole, by prefix, by delimiter and one key a page
    for options in (
        {},
        {"Prefix": "models/"},
        {"Delimiter": "/"},
        {"Prefix": "models/", "PaginationConfig": {"PageSize": 1}},
    ):
        # THEN the listings are equal
        assert listing(files, **options) == listing(s3, **options), options


def test_the_loader_pulls_byte_for_byte_from_the_file_server(
    bucket: str, file_server: tuple[str, Any], tmp_path: Path
) -> None:
    url, _ = file_server
    # GIVEN the loader pointed at the file server WHEN it pulls the model (sha256, the default)
    env = {**os.environ, "AWS_ENDPOINT_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "model_cache_loader", "pull", REPO, "--bucket", bucket, "--cache-dir",
         str(tmp_path / "hub"), "--fallback", "error", "--quiet"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    # THEN it succeeds with every file byte for byte
    assert done.returncode == 0, done.stderr[-2000:]
    [snapshot] = (tmp_path / "hub" / "models--bench-org--files" / "snapshots").iterdir()
    assert {name: (snapshot / name).read_bytes() for name in FILES} == FILES
