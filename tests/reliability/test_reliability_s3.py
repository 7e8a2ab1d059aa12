"""S3 faults during engine.sync: 503 SlowDown and connection resets on UploadPart and
CompleteMultipartUpload, injected by the S3 proxy (model_cache_devtools.s3proxy) in front of moto.

The engine's own S3 client (s3.s3_client: botocore standard retries, 6 attempts) goes through
the proxy; the checks read moto directly. Each trial picks the operation, the fault and how often
it fires from random.Random(SEED); every one must end published with verified bytes, no upload open.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from reliability_support import (
    FAULT_REPO,
    PART_SIZE,
    SEED,
    FaultTable,
    RetryLog,
    assert_trial,
    attempt,
    new_bucket,
)

from model_cache.adapters.s3 import s3_client
from model_cache.pipeline.engine import sync
from model_cache_devtools.hub import HubServer
from model_cache_devtools.s3proxy import S3Proxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRIALS = 5
OPERATIONS = ("UploadPart", "CompleteMultipartUpload")


@pytest.fixture
def proxied_engine_client(
    fault_hub: HubServer, s3_proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> tuple[S3Proxy, Any]:
    """The engine's own S3 client, built as in production but with the proxy as its endpoint."""
    monkeypatch.setenv("HF_ENDPOINT", fault_hub.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_proxy.url)
    return s3_proxy, s3_client(3)


def run_s3_trials(kind: str, fault: Any, proxied: tuple[S3Proxy, Any], s3: Any, seed_offset: int) -> FaultTable:
    proxy, engine_s3 = proxied
    rng = random.Random(SEED + seed_offset)
    table = FaultTable(kind)
    fired = 0
    for trial in range(TRIALS):
        proxy.faults.clear()
        bucket = new_bucket(s3)
        operation = rng.choice(OPERATIONS)
        times = rng.randint(1, 2)
        extra: dict[str, Any] = {"phase": rng.choice(["request", "response"])} if fault == "reset" else {}
        added = proxy.faults.add(operation, fault, times=times, **extra)
        label = f"trial {trial} ({fault} {extra} on {operation} x{times})"
        outcome = attempt(sync, FAULT_REPO, bucket=bucket, part_size=PART_SIZE, concurrency=3, s3=engine_s3)
        assert_trial(table, s3, bucket, outcome, should_recover=True, label=label)
        fired += added.fired
    proxy.faults.clear()
    table.write()
    assert fired >= TRIALS, "every trial's fault fired at least once"
    return table


def test_s3_slowdown_on_upload_part_and_complete(
    proxied_engine_client: tuple[S3Proxy, Any], s3: Any, hub_retries: RetryLog
) -> None:
    """GIVEN S3 answers 503 SlowDown 1-2 times to UploadPart or CompleteMultipartUpload
    WHEN the repo is synced THEN botocore retries them and every trial publishes verified bytes."""
    table = run_s3_trials(
        "S3 503 SlowDown (UploadPart, CompleteMultipartUpload)", "slowdown", proxied_engine_client, s3, 11
    )
    assert table.row.recovered == TRIALS


def test_s3_connection_reset_on_upload_part_and_complete(
    proxied_engine_client: tuple[S3Proxy, Any], s3: Any, hub_retries: RetryLog
) -> None:
    """GIVEN the connection is reset mid-request or after S3 applied it (a lost answer), on UploadPart
    or CompleteMultipartUpload WHEN synced THEN the request is retried and every trial publishes verified bytes."""
    table = run_s3_trials(
        "S3 connection reset (UploadPart, CompleteMultipartUpload)", "reset", proxied_engine_client, s3, 12
    )
    assert table.row.recovered == TRIALS
