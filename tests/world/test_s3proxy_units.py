"""s3proxy's pure pieces: S3 operation classification, the fault plan and the bandwidth throttle."""

from __future__ import annotations

import pytest

from model_cache_devtools.s3proxy import FaultPlan, S3Proxy, Throttle, classify_operation, virtual_host_bucket

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("method", "target", "extra", "expected"),
    [
        ("GET", "/", {}, "ListBuckets"),
        ("PUT", "/bkt", {}, "CreateBucket"),
        ("PUT", "/bkt?versioning", {}, "PutBucketVersioning"),
        ("HEAD", "/bkt", {}, "HeadBucket"),
        ("DELETE", "/bkt/", {}, "DeleteBucket"),
        ("GET", "/bkt?list-type=2&prefix=models%2F", {}, "ListObjectsV2"),
        ("GET", "/bkt/?list-type=2", {}, "ListObjectsV2"),
        ("GET", "/bkt", {}, "ListObjects"),
        ("GET", "/bkt?uploads", {}, "ListMultipartUploads"),
        ("GET", "/bkt?versions&prefix=k", {}, "ListObjectVersions"),
        ("POST", "/bkt?delete", {}, "DeleteObjects"),
        ("PUT", "/bkt/models/a/b.safetensors", {}, "PutObject"),
        ("PUT", "/bkt/k?partNumber=3&uploadId=abc", {}, "UploadPart"),
        ("PUT", "/bkt/k?uploadId=abc&partNumber=3", {"copy_source": True}, "UploadPartCopy"),
        ("PUT", "/bkt/k", {"copy_source": True}, "CopyObject"),
        ("PUT", "/bkt/k?tagging", {}, "PutObjectTagging"),
        ("POST", "/bkt/k?uploads", {}, "CreateMultipartUpload"),
        ("POST", "/bkt/k?uploadId=abc", {}, "CompleteMultipartUpload"),
        ("DELETE", "/bkt/k?uploadId=abc", {}, "AbortMultipartUpload"),
        ("DELETE", "/bkt/k", {}, "DeleteObject"),
        ("GET", "/bkt/k", {}, "GetObject"),
        ("GET", "/bkt/k?versionId=v1", {}, "GetObject"),
        ("GET", "/bkt/k?uploadId=abc", {}, "ListParts"),
        ("GET", "/bkt/k?attributes", {}, "GetObjectAttributes"),
        ("HEAD", "/bkt/dir/k", {}, "HeadObject"),
        ("POST", "/moto-api/reset", {}, "MotoApi"),
        ("PATCH", "/bkt/k", {}, "PATCH:object"),
        # virtual-hosted style: the bucket is in the Host header, the whole path is the key
        ("GET", "/k", {"host": "bkt.localhost:9000"}, "GetObject"),
        ("GET", "/?list-type=2", {"host": "bkt.localhost"}, "ListObjectsV2"),
        ("PUT", "/a/b?partNumber=1&uploadId=x", {"host": "bkt.localhost:1"}, "UploadPart"),
    ],
)
def test_classify_operation(method: str, target: str, extra: dict[str, object], expected: str) -> None:
    """GIVEN a request's method, target and Host WHEN classified THEN it is the S3 API operation boto3 called."""
    assert classify_operation(method, target, **extra) == expected  # type: ignore[arg-type]


def test_virtual_host_bucket() -> None:
    assert virtual_host_bucket("bkt.localhost:5000") == "bkt"
    assert virtual_host_bucket("127.0.0.1:5000") is None
    assert virtual_host_bucket("localhost:5000") is None
    assert virtual_host_bucket(None) is None


def test_fault_plan_fires_k_times_in_order_then_recovers() -> None:
    """GIVEN two faults on UploadPart and one on any operation WHEN requests are taken
    THEN the UploadPart ones fire first, in order, each exactly its times, then '*', then nothing."""
    plan = FaultPlan()
    first = plan.add("UploadPart", "reset", times=2)
    second = plan.add("UploadPart", "slowdown")
    anything = plan.add("*", "slowdown")

    assert plan.take("GetObject") is anything
    taken = [plan.take("UploadPart") for _ in range(4)]
    assert taken == [first, first, second, None]
    assert (first.fired, second.fired, anything.fired) == (2, 1, 1)
    assert plan.fired("UploadPart") == 3
    assert plan.pending() == 0
    plan.add("PutObject", "reset", times=5)
    plan.clear()
    assert plan.take("PutObject") is None
    assert len(plan) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "explode"}, "unknown fault kind 'explode'"),
        ({"times": 0}, "times must be an int >= 1"),
        ({"operation": ""}, "operation is empty"),
        ({"kind": "slowdown", "phase": "request"}, "phase 'request' only applies to kind='reset'"),
        ({"kind": "reset", "phase": "midway"}, "phase 'midway' only applies"),
    ],
)
def test_fault_plan_rejects_bad_faults(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultPlan().add(**kwargs)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_throttle_paces_pieces_to_the_rate() -> None:
    """GIVEN 1000 B/s and no time spent working WHEN four 250-byte pieces go out back to back
    THEN the first goes at once and each later one waits its predecessor's 0.25 s on the wire."""
    fake = FakeClock()
    throttle = Throttle(lambda: 1000, clock=fake.clock, sleep=fake.sleep)
    delays = [throttle.pace(250) for _ in range(4)]
    assert delays == pytest.approx([0.0, 0.25, 0.25, 0.25])
    assert fake.slept == pytest.approx([0.25, 0.25, 0.25])


def test_throttle_counts_working_time_and_idles_without_a_limit() -> None:
    """GIVEN 1000 B/s WHEN 0.1 s of work passes between pieces THEN only the rest of the piece's time is slept;
    WHEN the limit is lifted THEN nothing is slept."""
    fake = FakeClock()
    rate: list[int | None] = [1000]
    throttle = Throttle(lambda: rate[0], clock=fake.clock, sleep=fake.sleep)
    throttle.pace(500)
    fake.now += 0.1
    assert throttle.pace(500) == pytest.approx(0.4)
    fake.now += 1.0
    assert throttle.pace(500) == 0.0, "an idle connection does not bank credit beyond its schedule"
    rate[0] = None
    assert [throttle.pace(10_000) for _ in range(3)] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1:1", "must be an http://host:port URL"),
        ("127.0.0.1:5000", "must be an http://host:port URL"),
        ("http://127.0.0.1:5000/prefix", "must not have a path or query"),
    ],
)
def test_proxy_rejects_bad_upstreams(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3Proxy(url)


def test_proxy_url_needs_start() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = S3Proxy("http://127.0.0.1:5000").url
