"""Capacity matches the fan-out: the worst case of one scheduled refresh, computed from the template and the
very ASL, fits the copy-unit function's reserved concurrency, and a throttle waits long enough to drain."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cfnlint.decode import decode
from conftest import REPO_ROOT

pytestmark = pytest.mark.unit

LAMBDA_TIMEOUT_SECONDS = 900


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, problems = decode(str(REPO_ROOT / "template.yaml"))
    assert not problems
    assert decoded is not None
    return dict(decoded)


@pytest.fixture(scope="module")
def asl() -> dict[str, Any]:
    return dict(json.loads((REPO_ROOT / "statemachine" / "model_cache.asl.json").read_text()))


def test_one_refresh_at_its_widest_fits_the_reserved_concurrency(template: dict[str, Any], asl: dict[str, Any]) -> None:
    """GIVEN the refresh Map's parallelism and the copy Map's concurrency in the ASL
    THEN their product, every model of a refresh copying at once, is the least reserved concurrency the
    template's CopyUnitConcurrency setting allows, and the copy-unit function reserves exactly that setting.
    (Failed on 94042d4: 4 x 32 = 128 units against a fixed 50.)"""
    refresh_parallelism = asl["States"]["RefreshEachModel"]["MaxConcurrency"]
    units_per_execution = asl["States"]["CopyUnits"]["MaxConcurrency"]
    worst_case = refresh_parallelism * units_per_execution
    setting = template["Mappings"]["Settings"]["Stack"]["CopyUnitConcurrency"]
    assert int(setting) >= worst_case
    reserved = template["Resources"]["CopyUnitFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert reserved == {"Fn::FindInMap": ["Settings", "Stack", "CopyUnitConcurrency"]}


def expected_wait_seconds(retrier: dict[str, Any]) -> float:
    """The mean total wait of a retrier's attempts: with full jitter each delay is uniform on [0, d]."""
    total, delay = 0.0, float(retrier.get("IntervalSeconds", 1))
    for _ in range(int(retrier.get("MaxAttempts", 3))):
        total += min(delay, float(retrier.get("MaxDelaySeconds", delay)))
        delay *= float(retrier.get("BackoffRate", 2.0))
    return total / 2 if retrier.get("JitterStrategy") == "FULL" else total


def test_a_throttled_unit_waits_long_enough_for_running_units_to_drain(asl: dict[str, Any]) -> None:
    """GIVEN units beyond the reserved concurrency (request executions on top of a refresh)  THEN the copy unit's
    first retrier for Lambda.TooManyRequestsException waits, on average, at least two Lambda timeouts, so units
    holding slots for up to 15 minutes finish before a throttled one gives up.
    (Failed on 94042d4: about 122 s at most, 61 s on average.)"""
    retriers = asl["States"]["CopyUnits"]["ItemProcessor"]["States"]["CopyUnitOnLambda"]["Retry"]
    throttle = next(r for r in retriers if "Lambda.TooManyRequestsException" in r["ErrorEquals"])
    assert throttle["JitterStrategy"] == "FULL"
    assert expected_wait_seconds(throttle) >= 2 * LAMBDA_TIMEOUT_SECONDS


def test_one_refresh_completing_at_its_widest_fits_the_finalize_reserved_concurrency(
    template: dict[str, Any], asl: dict[str, Any]
) -> None:
    """GIVEN the refresh Map's parallelism and the CompleteFiles Map's concurrency in the ASL
    THEN every model of a refresh completing files at once fits the finalize function's reserved concurrency,
    and a throttled completion waits as long as a throttled copy unit does."""
    worst_case = asl["States"]["RefreshEachModel"]["MaxConcurrency"] * asl["States"]["CompleteFiles"]["MaxConcurrency"]
    reserved = template["Resources"]["FinalizeFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert reserved >= worst_case
    completion = asl["States"]["CompleteFiles"]["ItemProcessor"]["States"]["CompleteFile"]["Retry"][0]
    assert completion["ErrorEquals"] == ["Lambda.TooManyRequestsException"]
    assert expected_wait_seconds(completion) >= 2 * 900
