"""A 2,000-file repo through the plan task: small state, units packed, plan kept in S3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import incomplete_uploads

from model_cache.pipeline import steps
from model_cache_devtools import modelgen
from model_cache_devtools.hub import HubServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WIDE = "test-org/wide"
FILES = 2000


@pytest.fixture(scope="module")
def wide_hub(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("wide-hub")
    modelgen.write_synthetic_repo(
        modelgen.repo_dir(root, WIDE),
        {f"shards/part-{index:05d}.json": (64 + index % 7, index) for index in range(FILES)},
    )
    server = HubServer(Path(root), host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_plan_of_a_2000_file_repo_fits_the_state(
    wide_hub: Any, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a repo of 2,000 small files WHEN the plan task runs THEN its result is a few KB (no inline unit
    list beyond 200 units), small files are packed into a handful of units, units.json lists them all,
    and a unit copies its files."""
    monkeypatch.setenv("HF_ENDPOINT", wide_hub.url)
    planned = steps.plan({"repo_id": WIDE, "bucket": bucket}, s3=s3)
    assert planned["files"] == FILES
    assert len(json.dumps(planned)) < 8192
    assert planned["unit_count"] == (FILES + 255) // 256
    items = json.loads(s3.get_object(Bucket=bucket, Key=planned["units_key"])["Body"].read())
    assert sum(item["files"] for item in items) == FILES
    result = steps.copy_unit(items[0], s3=s3)
    assert result["parts"] == 256
    steps.cleanup({**planned, "failed": True}, s3=s3)
    assert incomplete_uploads(s3, bucket) == []
