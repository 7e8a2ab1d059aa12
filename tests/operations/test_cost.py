"""`model-cache cost`: storage priced from the manifests' sizes (current vs old vs noncurrent versions),
GETs from the pulls per month, PUTs from how the engine splits files; a table and --json."""

from __future__ import annotations

import io
import json
import math
import uuid
from typing import Any

import pytest
from ops_support import put_manifest

from model_cache.cli import main as cli
from model_cache.contract import errors, layout
from model_cache.contract.manifest import FileRecord
from model_cache.operations.cost import GB, Prices, estimate, gets_per_pull, puts_to_write
from model_cache.pipeline.plan import GiB, MiB


def publish_fake(s3: Any, bucket: str, repo_id: str, commit: str, sizes: list[int]) -> None:
    """A schema-valid manifest declaring files of `sizes` (cost reads sizes from manifests, not objects)."""
    records = [
        FileRecord(
            f"f{i}.bin",
            size,
            "0" * 64,
            "1" * 40,
            True,
            layout.file_key("models", repo_id, commit, f"f{i}.bin"),
            None,
            None,
        )
        for i, size in enumerate(sizes)
    ]
    put_manifest(s3, bucket, repo_id, commit, records)


@pytest.mark.unit
def test_request_counts_follow_the_loader_and_the_engine_splits() -> None:
    """GIVEN files of 0 B, 1 MiB, 16 MiB, 16 MiB + 1 and 1 GiB
    WHEN GETs per pull (16 MiB ranges) and PUTs to write (16 MiB parts) are counted
    THEN a small file is one request, a big one its ranges/parts (+ create and complete for PUTs)."""
    sizes = [0, MiB, 16 * MiB, 16 * MiB + 1, GiB]
    assert gets_per_pull(sizes) == 2 + 1 + 1 + 1 + 2 + 64
    assert puts_to_write(sizes) == 4 + 1 + 1 + 1 + (2 + 2) + (2 + 64)


@pytest.mark.unit
def test_negative_prices_are_refused() -> None:
    """GIVEN a negative price  WHEN Prices is built  THEN InvalidRequest names the price."""
    with pytest.raises(errors.InvalidRequest, match="per_gb_month"):
        Prices(per_gb_month=-1)


@pytest.mark.integration
def test_cost_prices_current_old_and_noncurrent_bytes(s3: Any, bucket: str) -> None:
    """GIVEN a repo whose main moved from an old snapshot (3 GB) to a new one (5 GB + 1 MB), and a second
    repo (2 GB) named only by a tag, plus an overwritten object (a noncurrent version)
    WHEN cost runs with 100 pulls a month and custom prices
    THEN current = 7 GB + 1 MB, old = 3 GB, noncurrent = the overwritten bytes, and the dollars follow."""
    first, second = f"cost-org/a-{uuid.uuid4().hex[:6]}", f"cost-org/b-{uuid.uuid4().hex[:6]}"
    old, new, other = "a" * 40, "b" * 40, "c" * 40
    publish_fake(s3, bucket, first, old, [3 * GB])
    publish_fake(s3, bucket, first, new, [5 * GB, 10**6])
    publish_fake(s3, bucket, second, other, [2 * GB])
    s3.put_object(Bucket=bucket, Key=layout.ref_key("models", first, "main"), Body=old.encode())
    s3.put_object(Bucket=bucket, Key=layout.ref_key("models", first, "main"), Body=new.encode())  # old -> noncurrent
    s3.put_object(Bucket=bucket, Key=layout.ref_key("models", second, "v1"), Body=other.encode())
    prices = Prices(per_gb_month=0.05, get_per_1000=0.001, put_per_1000=0.01)

    report = estimate(s3, bucket, prices=prices, pulls_per_month=100)

    assert report.current_bytes == 7 * GB + 10**6
    assert report.old_bytes == 3 * GB
    assert report.noncurrent_bytes == 40  # the ref's first version
    gets = 100 * ((2 + math.ceil(5 * GB / (16 * MiB)) + 1) + (2 + math.ceil(2 * GB / (16 * MiB))))
    assert report.gets_per_month == gets
    monthly = report.monthly
    assert monthly["storage_current"] == pytest.approx((7 * GB + 10**6) / GB * 0.05)
    assert monthly["storage_old"] == pytest.approx(3 * 0.05)
    assert monthly["get_requests"] == pytest.approx(gets / 1000 * 0.001)
    assert monthly["total"] == pytest.approx(sum(v for k, v in monthly.items() if k != "total"))

    out = io.StringIO()
    code = cli.main(
        ["cost", "--bucket", bucket, "--json", "--pulls-per-month", "100", "--price-per-gb-month", "0.05"], out=out
    )
    assert code == 0
    data = json.loads(out.getvalue())
    assert data["bytes"]["current"] == 7 * GB + 10**6
    assert {(s["repo_id"], s["current"]) for s in data["snapshots"]} == {(first, True), (first, False), (second, True)}
    out = io.StringIO()
    assert cli.main(["cost", "--bucket", bucket], out=out) == 0
    table = out.getvalue()
    assert "current" in table
    assert "old" in table
    assert "total per month" in table
