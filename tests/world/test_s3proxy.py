"""s3proxy over real HTTP: boto3 -> S3Proxy -> moto's server, byte for byte, with latency,
bandwidth caps and injected faults that botocore and s3transfer must recover from."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import os
import socket
import subprocess
import sys
import zlib
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, ResponseStreamingError
from conftest import REGION, MotoEndpoint, incomplete_uploads

from model_cache_devtools.s3proxy import S3Proxy

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
# Small multipart sizes (S3's minimum part is 5 MiB) keep the uploads fast but still multipart.
MULTIPART = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2)


@pytest.fixture
def proxy(s3_proxy: S3Proxy) -> S3Proxy:
    """The shared conftest fixture, under a short name."""
    return s3_proxy


def client_through(proxy: S3Proxy, *, total_attempts: int = 5) -> Any:
    return boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=proxy.url,
        config=Config(
            retries={"mode": "standard", "total_max_attempts": total_attempts}, s3={"addressing_style": "path"}
        ),
    )


def payload(size: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "little")).digest(size)


# ---------------------------------------------------------------------------------------------
# Plain forwarding
# ---------------------------------------------------------------------------------------------


def test_put_get_head_are_byte_identical_and_logged(proxy: S3Proxy, bucket: str, s3: Any) -> None:
    """GIVEN boto3 pointed at the proxy
    WHEN it puts a bytes body and a file-like body (Expect: 100-continue), then gets and heads them
    THEN moto holds exactly those bytes, the client reads them back, and the log counts each body."""
    client = client_through(proxy)
    small, large = payload(1000, 1), payload(3 * MIB + 7, 2)

    client.put_object(Bucket=bucket, Key="small.json", Body=small)
    client.put_object(Bucket=bucket, Key="dir/large.bin", Body=io.BytesIO(large))

    assert s3.get_object(Bucket=bucket, Key="dir/large.bin")["Body"].read() == large  # straight from moto
    assert client.get_object(Bucket=bucket, Key="small.json")["Body"].read() == small
    assert client.get_object(Bucket=bucket, Key="dir/large.bin")["Body"].read() == large
    assert client.head_object(Bucket=bucket, Key="dir/large.bin")["ContentLength"] == len(large)

    puts = proxy.requests.of("PutObject")
    assert [entry.bytes_in for entry in puts] == [len(small), len(large)]
    assert [entry.status for entry in puts] == [200, 200]
    gets = proxy.requests.of("GetObject")
    assert [entry.bytes_out for entry in gets] == [len(small), len(large)]
    assert [entry.bytes_out for entry in proxy.requests.of("HeadObject")] == [0]
    assert all(entry.fault is None and entry.throttle_seconds == 0 for entry in proxy.requests)


def test_multipart_upload_and_ranged_download_are_byte_identical(proxy: S3Proxy, bucket: str) -> None:
    """GIVEN a 12 MiB object WHEN s3transfer uploads it in 5 MiB parts and downloads it in ranges
    THEN the bytes round-trip exactly and the proxy classified every multipart operation."""
    client = client_through(proxy)
    data = payload(12 * MIB, 3)

    client.upload_fileobj(io.BytesIO(data), bucket, "model.safetensors", Config=MULTIPART)
    downloaded = io.BytesIO()
    client.download_fileobj(bucket, "model.safetensors", downloaded, Config=MULTIPART)

    assert downloaded.getvalue() == data
    operations = proxy.requests.operations()
    assert operations.count("CreateMultipartUpload") == 1
    assert operations.count("UploadPart") == 3
    assert operations.count("CompleteMultipartUpload") == 1
    assert sum(entry.bytes_in for entry in proxy.requests.of("UploadPart")) == len(data)
    assert sum(entry.bytes_out for entry in proxy.requests.of("GetObject")) == len(data)
    assert {entry.status for entry in proxy.requests.of("GetObject")} == {206}


def test_list_and_abort_are_classified(proxy: S3Proxy, bucket: str) -> None:
    """GIVEN an open multipart upload WHEN listing objects and aborting it through the proxy
    THEN ListObjectsV2 / ListMultipartUploads / AbortMultipartUpload appear in the log."""
    client = client_through(proxy)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    client.list_objects_v2(Bucket=bucket)
    client.list_multipart_uploads(Bucket=bucket)
    client.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)

    assert proxy.requests.operations() == [
        "CreateMultipartUpload",
        "ListObjectsV2",
        "ListMultipartUploads",
        "AbortMultipartUpload",
    ]
    assert incomplete_uploads(client, bucket) == []


def test_chunked_request_body_is_relayed_and_connection_kept_alive(proxy: S3Proxy, bucket: str, s3: Any) -> None:
    """GIVEN a raw HTTP/1.1 client on one kept-alive connection
    WHEN it PUTs a body with Transfer-Encoding: chunked, then a second one with Content-Length
    THEN moto stores both bodies exactly, over a single client connection."""
    data = payload(300 * 1024 + 5, 4)
    url = urlsplit(proxy.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request("PUT", f"/{bucket}/chunked.bin", body=iter([data[:1000], data[1000:]]))
        first = connection.getresponse()
        first.read()
        connection.request("PUT", f"/{bucket}/plain.bin", body=data)
        second = connection.getresponse()
        second.read()
        socket_after_second = connection.sock
    finally:
        connection.close()

    assert (first.status, second.status) == (200, 200)
    assert socket_after_second is not None, "the proxy kept the connection open"
    assert s3.get_object(Bucket=bucket, Key="chunked.bin")["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="plain.bin")["Body"].read() == data
    chunked_entry = proxy.requests.of("PutObject")[0]
    assert chunked_entry.bytes_in > len(data), "chunk framing is relayed (and counted) opaquely"


def test_aws_chunked_body_with_trailer_is_relayed_opaquely(proxy: S3Proxy, bucket: str, s3: Any) -> None:
    """GIVEN a PutObject framed as botocore's flexible checksums frame it over TLS
    (Content-Encoding: aws-chunked, Content-Length of the encoded body, a CRC32 trailer)
    WHEN it goes through the proxy THEN moto decodes it to exactly the original bytes."""
    data = payload(100_000, 11)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    encoded = (
        b"%x\r\n%s\r\n" % (60_000, data[:60_000])
        + b"%x\r\n%s\r\n" % (40_000, data[60_000:])
        + f"0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n".encode()
    )
    url = urlsplit(proxy.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request(
            "PUT",
            f"/{bucket}/aws-chunked.bin",
            body=encoded,
            headers={
                "Content-Encoding": "aws-chunked",
                "Content-Length": str(len(encoded)),
                "x-amz-decoded-content-length": str(len(data)),
                "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                "x-amz-trailer": "x-amz-checksum-crc32",
            },
        )
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()

    assert response.status == 200
    assert s3.get_object(Bucket=bucket, Key="aws-chunked.bin")["Body"].read() == data
    assert proxy.requests.of("PutObject")[0].bytes_in == len(encoded)


def raw_exchange(proxy: S3Proxy, request: bytes) -> bytes:
    """Send raw bytes to the proxy and read until it closes the connection."""
    url = urlsplit(proxy.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while piece := sock.recv(65536):
            received += piece
    return received


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", b"Content-Length 'ten'"),
        (b"PUT /b/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"malformed chunk size"),
    ],
)
def test_malformed_request_framing_is_a_400_naming_the_problem(
    proxy: S3Proxy, request_bytes: bytes, reason: bytes
) -> None:
    """GIVEN a request whose body cannot be framed WHEN it reaches the proxy
    THEN it answers 400 naming the problem and closes, without forwarding anything."""
    answer = raw_exchange(proxy, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert reason in answer
    assert [entry.status for entry in proxy.requests] == [400]


def test_unreachable_upstream_is_a_502() -> None:
    """GIVEN a proxy whose upstream port is closed WHEN a request arrives THEN it answers 502 with the reason."""
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed_port = placeholder.getsockname()[1]
    with S3Proxy(f"http://127.0.0.1:{closed_port}") as proxy:
        answer = raw_exchange(proxy, b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 502 ")
        assert b"ConnectionRefusedError" in answer
        assert [(entry.operation, entry.status) for entry in proxy.requests] == [("GetObject", 502)]


# ---------------------------------------------------------------------------------------------
# Latency and bandwidth
# ---------------------------------------------------------------------------------------------


def test_latency_is_applied_to_every_request(proxy: S3Proxy, bucket: str) -> None:
    """GIVEN 30 ms of added latency WHEN three requests go through THEN each records 30 ms applied;
    after setting it back to 0 the next request records none."""
    client = client_through(proxy)
    proxy.latency = 0.03
    client.put_object(Bucket=bucket, Key="a", Body=b"x")
    client.head_object(Bucket=bucket, Key="a")
    client.list_objects_v2(Bucket=bucket)
    proxy.latency = 0.0
    client.get_object(Bucket=bucket, Key="a")["Body"].read()

    assert [entry.latency_seconds for entry in proxy.requests] == [0.03, 0.03, 0.03, 0.0]


def test_bandwidth_cap_throttles_bodies_both_ways(proxy: S3Proxy, bucket: str) -> None:
    """GIVEN a cap of 4 MiB/s per connection
    WHEN 1 MiB goes up and comes back down
    THEN the proxy paced each body: its recorded throttle delay is most of the 1 MiB's time on the
    wire at 4 MiB/s (0.25 s, minus the first piece and the proxy's own working time)."""
    client = client_through(proxy)
    data = payload(MIB, 5)
    proxy.bandwidth_limit = 4 * MIB
    client.put_object(Bucket=bucket, Key="paced", Body=data)
    assert client.get_object(Bucket=bucket, Key="paced")["Body"].read() == data
    proxy.bandwidth_limit = None
    client.get_object(Bucket=bucket, Key="paced")["Body"].read()

    put, paced_get, free_get = proxy.requests.snapshot()[-3:]
    minimum_time_on_wire = (MIB - 64 * 1024) / (4 * MIB)
    assert put.operation == "PutObject"
    assert put.throttle_seconds > 0.5 * minimum_time_on_wire
    assert paced_get.throttle_seconds > 0.5 * minimum_time_on_wire
    assert put.throttle_seconds <= minimum_time_on_wire + 0.01
    assert free_get.throttle_seconds == 0


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------


def test_slowdown_fires_k_times_then_botocore_retries_succeed(proxy: S3Proxy, bucket: str, s3: Any) -> None:
    """GIVEN SlowDown on the next 2 PutObject requests
    WHEN boto3 (standard retries) puts an object
    THEN it sees two 503s, retries, and the third attempt stores the bytes; the fault is used up."""
    client = client_through(proxy)
    fault = proxy.faults.add("PutObject", "slowdown", times=2)
    data = payload(2 * MIB, 6)

    client.put_object(Bucket=bucket, Key="retried", Body=io.BytesIO(data))

    assert [entry.status for entry in proxy.requests.of("PutObject")] == [503, 503, 200]
    assert [entry.fault for entry in proxy.requests.of("PutObject")] == ["slowdown", "slowdown", None]
    assert (fault.fired, fault.remaining) == (2, 0)
    assert s3.get_object(Bucket=bucket, Key="retried")["Body"].read() == data


def test_slowdown_is_s3s_error_and_only_hits_the_chosen_operation(proxy: S3Proxy, bucket: str) -> None:
    """GIVEN SlowDown on the next GetObject and a client that does not retry
    WHEN it heads then gets an object THEN HeadObject passes and GetObject fails with S3's
    `SlowDown` error code and HTTP 503, which botocore parsed from the XML body; the next get works."""
    client = client_through(proxy, total_attempts=1)
    client.put_object(Bucket=bucket, Key="k", Body=b"hello")
    proxy.faults.add("GetObject", "slowdown", times=1)

    client.head_object(Bucket=bucket, Key="k")
    with pytest.raises(ClientError) as raised:
        client.get_object(Bucket=bucket, Key="k")

    assert raised.value.response["Error"]["Code"] == "SlowDown"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"hello"


def test_slowdown_without_expect_drains_the_body_and_keeps_the_connection(proxy: S3Proxy, bucket: str) -> None:
    """GIVEN SlowDown on the next PutObject and a raw client that sends its body without Expect
    WHEN it PUTs, then PUTs again on the same connection
    THEN the first gets S3's 503 XML, the second succeeds: the proxy drained the first body."""
    proxy.faults.add("PutObject", "slowdown", times=1)
    data = payload(200 * 1024, 7)
    url = urlsplit(proxy.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request("PUT", f"/{bucket}/k", body=data)
        refused = connection.getresponse()
        refused_body = refused.read()
        connection.request("PUT", f"/{bucket}/k", body=data)
        accepted = connection.getresponse()
        accepted.read()
    finally:
        connection.close()

    assert refused.status == 503
    assert b"<Code>SlowDown</Code>" in refused_body
    assert accepted.status == 200
    assert [entry.bytes_in for entry in proxy.requests.of("PutObject")] == [len(data), len(data)]


def test_reset_on_upload_part_is_retried_by_boto3(proxy: S3Proxy, bucket: str, s3: Any) -> None:
    """GIVEN connection resets on the next 2 UploadPart requests
    WHEN s3transfer uploads 12 MiB in 5 MiB parts
    THEN botocore retries the cut parts, the object is byte-identical and no upload is left open."""
    client = client_through(proxy)
    fault = proxy.faults.add("UploadPart", "reset", times=2)
    data = payload(12 * MIB, 8)

    client.upload_fileobj(io.BytesIO(data), bucket, "weights.bin", Config=MULTIPART)

    parts = proxy.requests.of("UploadPart")
    cut = [entry for entry in parts if entry.fault == "reset"]
    assert len(cut) == 2
    assert all(entry.status is None for entry in cut), "cut in the request: moto never answered"
    assert all(0 < entry.bytes_in < 5 * MIB for entry in cut)
    assert len(parts) == 3 + 2
    assert fault.remaining == 0
    assert s3.get_object(Bucket=bucket, Key="weights.bin")["Body"].read() == data
    assert incomplete_uploads(s3, bucket) == []


def test_reset_in_the_middle_of_a_download_then_recovery(proxy: S3Proxy, bucket: str) -> None:
    """GIVEN a reset on the next GetObject (cut halfway through the response body)
    WHEN the client reads the object directly THEN the read fails;
    WHEN s3transfer downloads it with the fault armed again THEN it retries and gets every byte."""
    client = client_through(proxy)
    data = payload(2 * MIB, 9)
    client.put_object(Bucket=bucket, Key="k", Body=data)

    proxy.faults.add("GetObject", "reset", times=1)
    with pytest.raises(ResponseStreamingError):
        client.get_object(Bucket=bucket, Key="k")["Body"].read()

    proxy.faults.add("GetObject", "reset", times=1)
    downloaded = io.BytesIO()
    client.download_fileobj(bucket, "k", downloaded)
    assert downloaded.getvalue() == data

    cut = [entry for entry in proxy.requests.of("GetObject") if entry.fault == "reset"]
    assert [entry.bytes_out for entry in cut] == [len(data) // 2, len(data) // 2]


def test_reset_after_upstream_applied_the_request(proxy: S3Proxy, bucket: str, s3: Any) -> None:
    """GIVEN a reset on the next PutObject in the response phase (moto stores the object, the client
    never hears) WHEN boto3 puts it THEN it retries on its own and the object is stored once, intact."""
    client = client_through(proxy)
    proxy.faults.add("PutObject", "reset", times=1, phase="response")
    data = payload(MIB, 10)

    client.put_object(Bucket=bucket, Key="k", Body=data)

    puts = proxy.requests.of("PutObject")
    assert [entry.fault for entry in puts] == ["reset", None]
    assert puts[0].bytes_in == len(data), "the whole body reached moto before the cut"
    versions = s3.list_object_versions(Bucket=bucket, Prefix="k")["Versions"]
    assert len(versions) == 2, "moto applied both attempts: the first one's answer was lost"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == data


def test_faults_on_any_operation_and_clear(proxy: S3Proxy, bucket: str) -> None:
    """GIVEN a '*' SlowDown fault for 3 requests, then cleared after one fired
    WHEN requests go through THEN only the first is refused."""
    client = client_through(proxy, total_attempts=1)
    proxy.faults.add("*", "slowdown", times=3)
    with pytest.raises(ClientError):
        client.list_objects_v2(Bucket=bucket)
    proxy.faults.clear()
    client.list_objects_v2(Bucket=bucket)
    assert [entry.status for entry in proxy.requests] == [503, 200]


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_prints_its_url_first_and_proxies(aws: MotoEndpoint, bucket: str) -> None:
    """GIVEN `python -m model_cache_devtools.s3proxy --upstream <moto> --port 0 --latency 0.01`
    WHEN a client uses the URL it prints on its first line THEN requests reach moto; SIGTERM stops it."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "model_cache_devtools.s3proxy",
            "--upstream",
            aws.url,
            "--port",
            "0",
            "--latency",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = boto3.client("s3", region_name=REGION, endpoint_url=url)
        client.put_object(Bucket=bucket, Key="via-cli", Body=b"hi")
        assert client.get_object(Bucket=bucket, Key="via-cli")["Body"].read() == b"hi"
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0


def test_cli_rejects_a_bad_upstream() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "model_cache_devtools.s3proxy", "--upstream", "ftp://nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "upstream_url must be an http://host:port URL" in result.stderr


def peak_resident_bytes(pid: int) -> int:
    """The process's peak resident set size (VmHWM), from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads peak memory from Linux /proc")
def test_large_bodies_stream_through_without_buffering(aws: MotoEndpoint, bucket: str, tmp_path: Any) -> None:
    """GIVEN the proxy in its own process (the CLI) and a 128 MiB file
    WHEN boto3 puts it as ONE PutObject and reads it back as one GetObject through the proxy
    THEN the bytes match and the proxy's peak memory stays far below the object's size."""
    size = 128 * MIB
    source = tmp_path / "big.bin"
    expected = hashlib.sha256()
    with source.open("wb") as out:
        for index in range(size // MIB):
            block = payload(MIB, 1000 + index)
            expected.update(block)
            out.write(block)

    process = subprocess.Popen(
        [sys.executable, "-m", "model_cache_devtools.s3proxy", "--upstream", aws.url, "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        client = boto3.client("s3", region_name=REGION, endpoint_url=process.stdout.readline().strip())
        with source.open("rb") as body:
            client.put_object(Bucket=bucket, Key="big.bin", Body=body)
        received = hashlib.sha256()
        for piece in client.get_object(Bucket=bucket, Key="big.bin")["Body"].iter_chunks(MIB):
            received.update(piece)
        peak = peak_resident_bytes(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=15)

    assert received.hexdigest() == expected.hexdigest()
    assert peak < 64 * MIB, f"proxy peaked at {peak / MIB:.0f} MiB for a {size // MIB} MiB object"
