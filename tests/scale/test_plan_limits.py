"""A listing whose plan would break an AWS limit is refused at plan time, with nothing written.

The Hub double lists each repo for real (its files are synthetic, declared by size; their hashes are taken
as declared because no byte is ever read), and the Plan task runs against moto's S3 server.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MotoEndpoint, incomplete_uploads, shared_test_module

from model_cache.contract import errors
from model_cache.pipeline import steps
from model_cache.pipeline.plan import GiB, TiB
from model_cache_devtools import modelgen, synthetic
from model_cache_devtools.local_pipeline import Router, create_stack, executing_state_machines

sfn_harness = shared_test_module("sfn_harness", "tests/pipeline/sfn_harness.py")

pytestmark = pytest.mark.integration


def listed_repo(hub_root: Path, files: dict[str, int]) -> str:
    """A repo of synthetic files `path -> size` whose bytes are never read: their sha256 is declared."""
    repo_id = f"scale-org/limits-{uuid.uuid4().hex[:10]}"
    declared = {path: (size, 9_000 + index) for index, (path, size) in enumerate(sorted(files.items()))}
    for path, (size, seed) in declared.items():
        synthetic.declare_sha256(size, seed, hashlib.sha256(f"{repo_id}/{path}".encode()).hexdigest())
    modelgen.write_synthetic_repo(hub_root / repo_id, declared, small_files={"config.json": b"{}"})
    return repo_id


def bucket_is_untouched(s3: Any, bucket: str) -> None:
    versions = s3.list_object_versions(Bucket=bucket)
    assert versions.get("Versions", []) == []
    assert versions.get("DeleteMarkers", []) == []
    assert incomplete_uploads(s3, bucket) == []


@pytest.mark.parametrize(
    ("files", "options", "names"),
    [
        pytest.param(
            {"weights.bin": 5 * TiB}, {}, ["fargate limit of 43,200 s"], id="a 5 TiB file outlives the Fargate task"
        ),
        pytest.param(
            {f"shard-{i:04d}.safetensors": 39 * GiB for i in range(260)},
            {"layout": "split"},
            ["copy units exceed the limit of 10000"],
            id="10,000+ units",
        ),
        pytest.param(
            {"weights.bin": 100 * GiB},
            {"fargate_threshold": 200 * GiB, "layout": "split"},
            ["complete-file would take", "lambda limit of 900 s"],
            id="a split 100 GiB file cannot be read back inside a Lambda",
        ),
    ],
)
def test_a_plan_that_would_breach_a_limit_is_refused_before_anything_is_written(
    hub_root: Path,
    hf_endpoint: str,
    s3: Any,
    bucket: str,
    files: dict[str, int],
    options: dict[str, Any],
    names: list[str],
) -> None:
    """GIVEN a listing whose plan breaks a limit  WHEN the Plan task runs  THEN it fails with PlanLimitExceeded
    naming the repo and the limit, and the bucket holds no object, version, claim or upload."""
    repo_id = listed_repo(hub_root, files)
    with pytest.raises(errors.PlanLimitExceeded) as refused:
        steps.plan({"repo_id": repo_id, "bucket": bucket, "options": options or None}, s3=s3)
    assert repo_id in str(refused.value)
    for name in names:
        assert name in str(refused.value)
    bucket_is_untouched(s3, bucket)


def test_the_same_listing_within_the_limits_is_planned(hub_root: Path, hf_endpoint: str, s3: Any, bucket: str) -> None:
    """GIVEN the 100 GiB file with the default options (it goes to Fargate, hashed in-stream)  THEN it is planned:
    the refusal above is the limit's, not the size's."""
    repo_id = listed_repo(hub_root, {"weights.bin": 100 * GiB})
    planned = steps.plan({"repo_id": repo_id, "bucket": bucket}, s3=s3)
    assert planned["fargate_units"] == 1
    steps.cleanup(planned, s3=s3)
    assert incomplete_uploads(s3, bucket) == []


@pytest.fixture
def router(aws: MotoEndpoint, hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    with executing_state_machines(aws):
        yield sfn_harness.install_routes(monkeypatch, aws)


def test_the_state_machine_ends_a_refused_plan_at_plan_failed(
    hub_root: Path, router: Router, aws: MotoEndpoint, s3: Any, bucket: str
) -> None:
    """GIVEN the 5 TiB listing  WHEN its request runs through the deployed ASL in moto's engine  THEN the
    execution fails with PlanLimitExceeded at PlanFailed (never retried), and nothing is written."""
    repo_id = listed_repo(hub_root, {"weights.bin": 5 * TiB})
    stack = create_stack(aws, router, bucket, layout="auto", unit_size=512 * 1024 * 1024, part_size=16 * 1024 * 1024)
    execution = stack.run({"repo_id": repo_id})
    assert execution["status"] == "FAILED"
    assert execution["error"] == "PlanLimitExceeded", execution.get("cause")
    assert len(router.calls("plan")) == 1
    assert router.calls("copy_unit") == []
    bucket_is_untouched(s3, bucket)
