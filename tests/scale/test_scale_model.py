"""The scale model (`make scale`, bench/scale.py) holds every figure of the largest public models to its AWS limit.

The figures come from the real planner (`limits.make_run_plan`), the real limits and the Plan task's real
result, with the Map concurrencies read from the ASL and the template; these tests are the limits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import scale
from model_cache.pipeline import limits
from model_cache.pipeline.plan import S3_MAX_PART_SIZE, S3_MIN_PART_SIZE

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
TIME_LIMITS = ("lambda_900s_copy_unit", "lambda_900s_complete_file", "lambda_900s_finalize", "fargate_task_timeout")


@pytest.fixture(scope="module")
def figures() -> dict[str, dict[str, Any]]:
    deployment = scale.Deployment.load()
    return {shape.name: scale.model(shape, deployment) for shape in scale.SHAPES}


def test_the_model_reads_the_concurrencies_and_timeouts_the_limits_assume_from_the_deployed_definitions() -> None:
    """GIVEN the ASL and the template  THEN the constants limits.py judges plans by are theirs: the copy and
    completion Maps' MaxConcurrency, the Fargate task's timeout and every copying function's 900 s."""
    deployment = scale.Deployment.load()
    assert deployment.copy_concurrency == limits.COPY_SLOTS
    assert deployment.complete_concurrency == limits.COMPLETE_SLOTS
    assert deployment.fargate_timeout_s == limits.FARGATE_TASK_TIMEOUT_S
    template = scale.load_template()
    for name in ("CopyUnitFunction", "FinalizeFunction"):
        assert template["Resources"][name]["Properties"]["Timeout"] == limits.LAMBDA_TIMEOUT_S
    asl = json.loads((REPO_ROOT / "statemachine" / "model_cache.asl.json").read_text())
    complete = asl["States"]["CompleteFiles"]["ItemProcessor"]["States"]["CompleteFile"]
    assert complete["TimeoutSeconds"] >= limits.LAMBDA_TIMEOUT_S


@pytest.mark.parametrize("shape", [shape.name for shape in scale.SHAPES])
def test_every_shape_fits_every_limit_with_headroom(figures: dict[str, dict[str, Any]], shape: str) -> None:
    """GIVEN a real repo's shape through the real planner  THEN its plan breaches nothing, every duration fits
    its limit HEADROOM times over at the slow rates, and every other figure (payloads, history events, units,
    parts, request rates, memory, vCPU) stays under its limit."""
    model = figures[shape]
    assert model["breaches"] == []
    headroom = model["headroom"]
    for name in TIME_LIMITS:
        if name in headroom:
            assert headroom[name] >= limits.HEADROOM, (name, headroom[name])
    for name, ratio in headroom.items():
        assert ratio > 1.0, (name, ratio)
    assert {"sfn_payload_256kib", "history_25000_parent", "units_10000", "s3_put_3500_per_prefix"} <= set(headroom)
    assert all(S3_MIN_PART_SIZE <= size <= S3_MAX_PART_SIZE for size in model["part_sizes"])


def test_finalize_reads_nothing_back_and_its_work_stays_bounded_at_the_largest_plan(
    figures: dict[str, dict[str, Any]],
) -> None:
    """GIVEN every shape  THEN Finalize reads 0 bytes back; its only work grows with the count of result
    records, and even a plan at MAX_UNITS with as many completions fits 900 s with headroom."""
    for model in figures.values():
        assert model["slow"]["finalize"]["read_back_bytes"] == 0
    records_at_the_limit = 2 * limits.MAX_UNITS
    seconds = -(-records_at_the_limit // 16) * scale.SMALL_GET_S
    assert seconds * limits.HEADROOM <= limits.LAMBDA_TIMEOUT_S


def test_the_serial_read_back_that_outlived_finalize_is_gone(figures: dict[str, dict[str, Any]]) -> None:
    """GIVEN Llama-3-70B's 30 shards of 4.7 GB  WHEN planned as before (4 GiB units, every split shard read
    back by the one Finalize)  THEN that Finalize would read 141 GB and outlive 900 s; now no invocation reads
    back more than one file, and each fits 900 s with headroom."""
    before = figures["llama-3-70b"]["slow"]["finalize_before"]
    assert before["read_back_bytes"] > 140e9
    assert before["seconds"] > limits.LAMBDA_TIMEOUT_S
    for model in figures.values():
        completion = model["slow"]["complete_file"]
        if completion is not None:
            assert completion["read_back_bytes"] <= model["largest_file"]
            assert completion["seconds"] * limits.HEADROOM <= limits.LAMBDA_TIMEOUT_S


def test_the_targets_a_15_gb_model_in_a_minute_and_a_405b_model_in_15_minutes(
    figures: dict[str, dict[str, Any]],
) -> None:
    """GIVEN the stated rates  THEN Mistral-7B (14.5 GB) is cached in at most 60 s and Llama-3.1-405B (812 GB)
    in at most 15 minutes, at the slow rates as at the fast ones."""
    for rates in ("slow", "fast"):
        assert figures["mistral-7b"][rates]["wall_s"] <= 60
        assert figures["llama-3.1-405b"][rates]["wall_s"] <= 15 * 60


def test_the_layout_is_chosen_by_the_model_split_for_few_files_whole_for_many(
    figures: dict[str, dict[str, Any]],
) -> None:
    """GIVEN three shards (fewer than the 32 copy slots) and 191 shards  THEN the planner splits the first
    (wide fan-out, split files read back in parallel) and keeps each of the second whole (no read-back)."""
    assert figures["mistral-7b"]["split_files"] == 3
    assert figures["mistral-7b"]["units"]["total"] > limits.COPY_SLOTS / 2
    assert figures["llama-3.1-405b"]["split_files"] == 0
    assert figures["llama-3.1-405b"]["units"]["total"] == figures["llama-3.1-405b"]["multipart_files"] + 1
