"""The O(range) moto patch (model_cache_devtools.moto_ranges) answers exactly as stock moto does,
and reads only the range it serves.

Stock moto runs as its own process (the patch is process-wide, and this session's server has it);
both are asked the same ranged GETs, the valid, the suffix, the open-ended, the past-the-end and the
malformed, and must return the same status, Content-Range, Content-Length and bytes.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.conftest import REGION, MotoEndpoint, unique_name

pytestmark = pytest.mark.integration

MIB = 1 << 20
SIZE = 6 * MIB + 12_345  # two parts when uploaded multipart: 5 MiB and the rest
DATA = bytes((i * 7 + i // 251) % 256 for i in range(SIZE))
RANGES = [
    "bytes=0-0",
    "bytes=0-1048575",
    f"bytes={MIB}-{2 * MIB - 1}",
    f"bytes={SIZE - 10}-{SIZE + 100}",  # end past the object: clipped
    f"bytes={SIZE - 1}-",
    "bytes=1000-",
    "bytes=-4096",
    f"bytes=-{SIZE + 5}",  # suffix longer than the object: the whole object
    f"bytes={SIZE}-",  # starts past the end: 416
    "bytes=10-5",  # start after end: S3 ignores the range
    "bytes=abc-def",  # malformed: the whole object
    "bytes=0-10,20-30",  # multi-range: the whole object
    "bytes=-0",  # an empty suffix: 416
]


@pytest.fixture(scope="module")
def stock_moto() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("stock moto server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


def put_object(endpoint: str, bucket: str, key: str, multipart: bool) -> None:
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    if not multipart:
        s3.put_object(Bucket=bucket, Key=key, Body=DATA)
        return
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for number, body in enumerate((DATA[: 5 * MIB], DATA[5 * MIB :]), start=1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})


def raw_get(endpoint: str, bucket: str, key: str, byte_range: str) -> tuple[int, dict[str, str], bytes]:
    """An unsigned GET (moto accepts it), so both servers see byte-identical requests."""
    request = urllib.request.Request(f"{endpoint}/{bucket}/{key}", headers={"Range": byte_range})  # noqa: S310 (loopback moto servers)
    try:
        with urllib.request.urlopen(request) as response:  # noqa: S310 (loopback moto servers)
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def comparable(answer: tuple[int, dict[str, str], bytes]) -> tuple[Any, ...]:
    status, headers, body = answer
    lowered = {k.lower(): v for k, v in headers.items()}
    if status >= 400:  # the error XML carries a request id of its own
        return status, lowered.get("content-range"), b"<Code>InvalidRange</Code>" in body
    return status, lowered.get("content-range"), lowered.get("content-length"), body


@pytest.mark.parametrize("multipart", [False, True], ids=["put", "multipart"])
def test_every_range_form_answers_as_stock_moto(aws: MotoEndpoint, stock_moto: str, multipart: bool) -> None:
    # GIVEN the same object in stock moto and in this session's patched server
    bucket, key = unique_name("ranges"), "dir/object.bin"
    put_object(stock_moto, bucket, key, multipart)
    put_object(aws.url, bucket, key, multipart)

    for byte_range in RANGES:
        # WHEN each server is asked for the same range
        stock = comparable(raw_get(stock_moto, bucket, key, byte_range))
        patched = comparable(raw_get(aws.url, bucket, key, byte_range))
        # THEN the answers are the same
        assert patched == stock, byte_range


def test_a_ranged_get_reads_only_its_range(aws: MotoEndpoint, s3: Any) -> None:
    # GIVEN an object whose buffer counts the bytes read out of it
    from moto.s3.models import s3_backends

    bucket, key = unique_name("ranges"), "big.bin"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=DATA)
    fake_key = s3_backends["123456789012"]["aws"].buckets[bucket].keys[key]
    buffer = fake_key._value_buffer
    read_sizes: list[int] = []

    class CountingBuffer:
        def __getattr__(self, name: str) -> Any:
            return getattr(buffer, name)

        def read(self, size: int = -1) -> bytes:
            data = buffer.read(size)
            read_sizes.append(len(data))
            return bytes(data)

    fake_key._value_buffer = CountingBuffer()
    try:
        # WHEN a 64 KiB range is fetched through boto3
        client = boto3.client(
            "s3", region_name=REGION, endpoint_url=aws.url, config=Config(retries={"max_attempts": 1})
        )
        body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={MIB}-{MIB + 65_535}")["Body"].read()
        ranged_reads = sum(read_sizes)
        read_sizes.clear()
        whole = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    finally:
        fake_key._value_buffer = buffer

    # THEN the right bytes came back, and only they were read out of the object
    assert body == DATA[MIB : MIB + 65_536]
    assert ranged_reads == 65_536
    # while a whole-object GET still reads (and returns) everything
    assert whole == DATA
    assert sum(read_sizes) == SIZE
