"""The DeepSeek-V3-shaped listing, every size divided by 1,000, through the deployed ASL in moto's engine.

The point is that the plan the scale model describes is the one that executes: the same units by runner,
the same completions, the same files, and a published manifest of them all. S3's 5 MiB part minimum is
divided by 1,000 with everything else (in moto and in the planner, for this test only), so every file is
a multipart upload of as many parts as at full size.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MotoEndpoint, incomplete_uploads, shared_test_module

from bench import scale
from model_cache.pipeline import limits, plan
from model_cache.pipeline.plan import PlanOptions
from model_cache_devtools import modelgen, synthetic
from model_cache_devtools.local_pipeline import Router, create_stack, executing_state_machines

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

sfn_harness = shared_test_module("sfn_harness", "tests/pipeline/sfn_harness.py")
SCALE = 1000
SHAPE = next(shape for shape in scale.SHAPES if shape.name == "deepseek-v3")


@pytest.fixture
def router(aws: MotoEndpoint, hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    import moto.s3.models

    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", plan.S3_MIN_PART_SIZE // SCALE)
    monkeypatch.setattr(plan, "S3_MIN_PART_SIZE", plan.S3_MIN_PART_SIZE // SCALE)
    with executing_state_machines(aws):
        yield sfn_harness.install_routes(monkeypatch, aws)


def scaled_options() -> PlanOptions:
    """The default options divided by SCALE, in the layout the full-size plan takes."""
    full = scale.plan_of(SHAPE)
    assert limits.split_paths(full) == set(), "the full-size DeepSeek-V3 plan keeps every shard whole"
    defaults = PlanOptions()
    return PlanOptions(
        part_size=defaults.part_size // SCALE,
        unit_size=defaults.unit_size // SCALE,
        fargate_threshold=defaults.fargate_threshold // SCALE,
        layout="whole",
    )


def serve_scaled(hub_root: Path) -> str:
    """The shape's files at 1/SCALE of their size, synthetic bytes served by the Hub double."""
    repo_id = f"scale-org/deepseek-v3-{uuid.uuid4().hex[:8]}"
    declared = {path: (max(1, size // SCALE), index) for index, (path, size) in enumerate(SHAPE.files)}
    modelgen.write_synthetic_repo(hub_root / repo_id, declared)
    return repo_id


def test_the_scaled_deepseek_v3_run_executes_the_plan_the_scale_model_describes(
    hub_root: Path, router: Router, aws: MotoEndpoint, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the shape at 1/1000 served by the Hub double, and the scale model's figures for the same listing
    options = scaled_options()
    predicted = scale.model(SHAPE, options=options, scale=SCALE)
    repo_id = serve_scaled(hub_root)
    stack = create_stack(
        aws,
        router,
        bucket,
        part_size=options.part_size,
        unit_size=options.unit_size,
        fargate_threshold=options.fargate_threshold,
        layout=options.layout,
    )

    # WHEN its request runs through the deployed ASL
    execution = stack.run({"repo_id": repo_id})

    # THEN it succeeds, with exactly the units and completions the model counted
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    planned = router.calls("plan")[0].result
    assert planned["unit_count"] == predicted["units"]["total"] == 164
    assert (planned["lambda_units"], planned["fargate_units"]) == (
        predicted["units"]["lambda"],
        predicted["units"]["fargate"],
    )
    assert planned["completion_count"] == predicted["multipart_files"] == 163
    assert planned["files"] == predicted["files"] == len(SHAPE.files)
    assert sorted(call.event["unit_id"] for call in router.calls("copy_unit")) == list(range(164))
    completions = [call for call in router.calls("finalize") if "path" in call.event]
    assert len(completions) == predicted["multipart_files"]
    assert sum(call.result["read_back"] for call in completions) == predicted["split_files"] == 0
    assert max(call.event["bytes"] for call in router.calls("copy_unit")) == predicted["largest_unit_bytes"]
    # and every file of the listing is published, at its declared size and the Hub's sha256
    manifest_key = planned["manifest_key"]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    sizes = {entry["path"]: entry["size"] for entry in manifest["files"]}
    assert sizes == {path: max(1, size // SCALE) for path, size in SHAPE.files}
    for index, (path, size) in enumerate(SHAPE.files):
        entry = next(entry for entry in manifest["files"] if entry["path"] == path)
        assert entry["sha256"] == synthetic.SyntheticFile(max(1, size // SCALE), index).sha256(), path
    # and the parent's history has the events the model counts (no retry happened): the children keep their own
    assert len(stack.history(execution["executionArn"])) == predicted["history"]["parent_events"]
    assert incomplete_uploads(s3, bucket) == []
