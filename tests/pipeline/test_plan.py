"""Plan: part and unit sizes within S3's limits for any file size; units cover every part exactly once."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_cache.adapters.hubapi import HubFile, Snapshot
from model_cache.contract.errors import InvalidRequest
from model_cache.pipeline.plan import (
    S3_MAX_PARTS,
    S3_MIN_PART_SIZE,
    GiB,
    MiB,
    Plan,
    PlanOptions,
    TiB,
    make_plan,
    part_size_for,
)

pytestmark = pytest.mark.unit
COMMIT = "a" * 40


def snapshot(sizes: dict[str, int]) -> Snapshot:
    files = tuple(HubFile(path=p, size=s, git_oid="b" * 40, lfs_sha256="c" * 64) for p, s in sizes.items())
    return Snapshot(repo_id="org/name", revision="main", commit=COMMIT, endpoint="http://hub", files=files)


def plan_for(sizes: dict[str, int], **options: int) -> Plan:
    snap = snapshot(sizes)
    return make_plan(snap, list(snap.files), bucket="bucket-x", options=PlanOptions(**options))


def covered_parts(plan: Plan) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for unit in plan.units:
        for item in unit.items:
            seen.setdefault(item.path, []).extend(range(item.first_part, item.last_part + 1))
    return seen


@settings(max_examples=200, deadline=None)
@given(size=st.integers(min_value=0, max_value=5 * TiB), requested=st.integers(min_value=5 * MiB, max_value=5 * GiB))
def test_part_size_is_always_within_s3_limits(size: int, requested: int) -> None:
    """GIVEN any file size up to 5 TiB and any requested part size WHEN planned THEN 5 MiB..5 GiB, <= 10,000 parts."""
    part = part_size_for(size, requested)
    assert S3_MIN_PART_SIZE <= part <= 5 * GiB
    assert math.ceil(size / part) <= S3_MAX_PARTS
    assert part >= requested


def test_file_over_5_tib_is_refused() -> None:
    """GIVEN a file beyond S3's object limit WHEN planned THEN InvalidRequest."""
    with pytest.raises(InvalidRequest, match="5 TiB"):
        part_size_for(5 * TiB + 1, 16 * MiB)


def test_units_cover_every_part_once_and_small_files_are_packed() -> None:
    """GIVEN a 100 MiB file, a 60 GiB file and small files WHEN planned with 16 MiB parts and 64 MiB units
    THEN the big file is split into runs of 4 parts, the huge one is one Fargate unit, small files share a unit."""
    plan = plan_for(
        {"a.json": 10, "b.json": 20, "big.safetensors": 100 * MiB, "huge.safetensors": 60 * GiB},
        part_size=16 * MiB,
        unit_size=64 * MiB,
    )
    parts = covered_parts(plan)
    assert parts["big.safetensors"] == list(range(1, 8))
    assert parts["huge.safetensors"] == list(range(1, plan.file("huge.safetensors").part_count + 1))
    runners = {unit.items[0].path: unit.runner for unit in plan.units}
    assert runners["huge.safetensors"] == "fargate"
    assert [len(u.items) for u in plan.units if u.items[0].path == "a.json"] == [2]
    assert sum(unit.bytes for unit in plan.units) == plan.total_bytes
    assert not plan.file("a.json").multipart
    assert plan.file("big.safetensors").part_range(7) == (96 * MiB, 100 * MiB)


def test_plan_round_trips_through_json() -> None:
    """GIVEN a plan WHEN serialized and parsed THEN it is equal (plans travel through S3 between tasks)."""
    plan = plan_for({"x.bin": 30 * MiB, "y.txt": 5}, part_size=8 * MiB, unit_size=16 * MiB)
    plan.set_upload_id("x.bin", "upload-1")
    again = Plan.from_json(plan.to_json())
    assert again.to_json() == plan.to_json()
    assert again.file("x.bin").upload_id == "upload-1"


def test_repo_with_top_level_hash_file_keeps_it() -> None:
    """GIVEN a repo with its own top-level `hash` WHEN planned THEN no hash file is written over it."""
    assert plan_for({"hash": 3}).write_hash_file is False
    assert plan_for({"x/hash": 3}).write_hash_file is True


@pytest.mark.parametrize(
    "options",
    [{"part_size": MiB}, {"part_size": 6 * GiB}, {"unit_size": 0}, {"part_size": 64 * MiB, "unit_size": 32 * MiB}],
)
def test_bad_options_are_refused(options: dict[str, int]) -> None:
    """GIVEN sizes outside S3's limits or inconsistent WHEN building options THEN InvalidRequest."""
    with pytest.raises(InvalidRequest):
        PlanOptions(**options)
