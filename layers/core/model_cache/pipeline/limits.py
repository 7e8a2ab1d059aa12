"""The AWS limits a plan must fit, the rates it is judged at, and the check that refuses a plan breaching one.

`check_plan` runs in the Plan task before any upload starts (docs/architecture.md 3.1: a refused plan writes
nothing), and `bench/scale.py` (`make scale`) reports the same figures for the shapes of real repos.
Durations are judged at the SLOW rates with HEADROOM to spare: a plan that only fits at good rates is
refused, because a unit that outlives its Lambda is retried and outlives it again.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from model_cache.adapters.hubapi import HubFile, Snapshot
from model_cache.contract import errors
from model_cache.pipeline import plan as plan_module
from model_cache.pipeline.plan import (
    DEFAULT_UNIT_CONCURRENCY,
    S3_MAX_PART_SIZE,
    S3_MAX_PARTS,
    CopyUnit,
    Plan,
    PlannedFile,
    make_plan,
)

MB = 10**6

# AWS's limits (service quotas that cannot be raised, or that this design does not ask to raise).
LAMBDA_TIMEOUT_S = 900
LAMBDA_MAX_MEMORY_MB = 10_240
SFN_MAX_PAYLOAD_BYTES = 256 * 1024
SFN_MAX_HISTORY_EVENTS = 25_000
DISTRIBUTED_MAP_MAX_CONCURRENCY = 10_000
DISTRIBUTED_MAP_MAX_ITEM_BYTES = 256 * 1024
S3_PUT_PER_PREFIX_PER_S = 3_500
S3_GET_PER_PREFIX_PER_S = 5_500
FARGATE_MAX_VCPU = 16
FARGATE_MAX_MEMORY_MB = 120 * 1024
# Ours, held equal to the ASL by tests/scale: the copier's TimeoutSeconds (12 h) and how many units a
# plan may have (each leaves one result record that Finalize reads; 10,000 keep that under a minute).
FARGATE_TASK_TIMEOUT_S = 43_200
MAX_UNITS = 10_000
HEADROOM = 2.0  # every duration must fit its limit twice over at the SLOW rates
# The ASL's MaxConcurrency of CopyUnits and CompleteFiles (tests/scale holds them equal).
COPY_SLOTS = 32
COMPLETE_SLOTS = 16
# Fixed costs of a run, seconds (stated, not measured): the Plan task, a Map Run starting its children,
# a Lambda cold start, a Fargate task's start (capacity, ENI, image pull), Finalize + Publish + Cleanup.
PLAN_S = 3.0
MAP_START_S = 2.0
COLD_START_S = 1.0
FARGATE_START_S = 60.0
TAIL_S = 4.0
READ_BACK_CONCURRENCY = 8  # s3.iter_object_ranges
COPY_PARTS_IN_FLIGHT = 4  # DEFAULT_UNIT_CONCURRENCY UploadPartCopy requests at once


@dataclass(frozen=True)
class Rates:
    """Assumed throughputs, MB/s (10^6 bytes): what one task achieves, not what the network could."""

    name: str
    lambda_unit: float  # one Lambda unit, Hub -> S3, its parts in flight together
    fargate_unit: float  # the Fargate copier: one whole file
    hub_connection: float  # one Range request to the Hub (its CDN), the per-connection ceiling
    read_back: float  # one Lambda reading an object back with ranged GETs and hashing it (sha256)
    s3_copy_request: float  # one UploadPartCopy/CopyObject inside S3
    per_file_s: float  # round trips of one small file (Hub GET, PutObject), before its bytes count

    def unit_rate(self, runner: str, connections: int) -> float:
        ceiling = self.hub_connection * max(1, connections)
        return min(self.fargate_unit if runner == "fargate" else self.lambda_unit, ceiling)


SLOW = Rates(
    "slow", lambda_unit=60, fargate_unit=120, hub_connection=40, read_back=150, s3_copy_request=100, per_file_s=0.1
)
FAST = Rates(
    "fast", lambda_unit=120, fargate_unit=240, hub_connection=100, read_back=400, s3_copy_request=250, per_file_s=0.03
)


@dataclass(frozen=True)
class TaskWork:
    """The worst-case work of one task invocation: what it streams, reads back and asks of S3."""

    task: str  # "copy-unit", "complete-file"
    runner: str  # "lambda" or "fargate"
    label: str
    streamed_bytes: int
    read_back_bytes: int
    requests: int
    seconds: float

    @property
    def limit_s(self) -> int:
        return FARGATE_TASK_TIMEOUT_S if self.runner == "fargate" else LAMBDA_TIMEOUT_S


def unit_work(plan: Plan, unit: CopyUnit, rates: Rates) -> TaskWork:
    """One copy unit: bytes from the Hub (or copied inside S3), one request per part (and per file)."""
    parts = sum(item.last_part - item.first_part + 1 for item in unit.items)
    if unit.kind == "copy-from":
        # Server-side copies: COPY_PARTS_IN_FLIGHT requests at once, each at the per-request rate.
        largest_part = max(plan.file(item.path).part_size for item in unit.items)
        per_request = min(largest_part, unit.bytes) / (rates.s3_copy_request * MB)
        seconds = math.ceil(parts / COPY_PARTS_IN_FLIGHT) * per_request
        return TaskWork("copy-unit", unit.runner, _label(unit), 0, 0, parts, seconds)
    connections = plan.options.unit_concurrency
    seconds = unit.bytes / (rates.unit_rate(unit.runner, connections) * MB)
    seconds += len(unit.items) * rates.per_file_s / max(1, connections)
    # Hub: one Range GET per part; S3: one UploadPart or PutObject per part, plus its result record.
    return TaskWork("copy-unit", unit.runner, _label(unit), unit.bytes, 0, 2 * parts + 1, seconds)


def completion_work(planned: PlannedFile, split: bool, rates: Rates) -> TaskWork:
    """Completing one multipart file: CompleteMultipartUpload, and a read-back when no one unit saw it whole."""
    read_back = planned.size if split else 0
    gets = math.ceil(read_back / (16 * 1024 * 1024)) if split else 0
    seconds = read_back / (rates.read_back * MB)
    return TaskWork("complete-file", "lambda", planned.path, 0, read_back, 2 + gets, seconds)


def split_paths(plan: Plan) -> set[str]:
    """The Hub files whose parts are spread over more than one unit: no unit hashed them whole, so
    completing them reads them back. A copied file is not among them: its digests are the previous
    manifest's, and S3 checks its CRC64NVME at completion."""
    holders: dict[str, int] = {}
    for unit in plan.units:
        if unit.kind == "hub":
            for item in unit.items:
                holders[item.path] = holders.get(item.path, 0) + 1
    return {path for path, count in holders.items() if count > 1}


def _label(unit: CopyUnit) -> str:
    first = unit.items[0]
    more = f" +{len(unit.items) - 1} files" if len(unit.items) > 1 else ""
    return f"unit {unit.unit_id} {first.path}[{first.first_part}-{first.last_part}]{more}"


def breaches(plan: Plan, rates: Rates = SLOW, headroom: float = HEADROOM) -> list[str]:
    """Every limit the plan would break, each in one sentence; empty when it fits them all."""
    found: list[str] = []
    if len(plan.units) > MAX_UNITS:
        found.append(
            f"{len(plan.units)} copy units exceed the limit of {MAX_UNITS}: select fewer files or raise unit_size"
        )
    for planned in plan.files:
        # Read from the module, not bound at import: the scaled-down test divides S3's minimum too.
        if planned.multipart and not plan_module.S3_MIN_PART_SIZE <= planned.part_size <= S3_MAX_PART_SIZE:
            found.append(f"{planned.path}: part size {planned.part_size} is outside S3's 5 MiB..5 GiB")
        if planned.part_count > S3_MAX_PARTS:
            found.append(f"{planned.path}: {planned.part_count} parts exceed S3's {S3_MAX_PARTS} per upload")
    works = [unit_work(plan, unit, rates) for unit in plan.units]
    split = split_paths(plan)
    works += [completion_work(planned, planned.path in split, rates) for planned in plan.files if planned.multipart]
    for work in works:
        if work.seconds * headroom > work.limit_s:
            found.append(
                f"{work.label}: {work.task} would take {work.seconds:,.0f} s at the {rates.name} rates, more than "
                f"1/{headroom:g} of the {work.runner} limit of {work.limit_s:,} s"
            )
            if len(found) >= 5:
                break
    return found


def check_plan(plan: Plan, rates: Rates = SLOW, headroom: float = HEADROOM) -> None:
    """Raise PlanLimitExceeded naming what the plan would break (the first five), before anything is written."""
    found = breaches(plan, rates, headroom)
    if found:
        raise errors.PlanLimitExceeded(
            f"{plan.repo_id}@{plan.commit[:12]} cannot be cached inside AWS's limits: " + "; ".join(found)
        )


def whole_file_max(rates: Rates = SLOW, headroom: float = HEADROOM) -> int:
    """The biggest file one Lambda unit streams whole inside its limit with headroom at `rates` (27 GB at SLOW)."""
    rate = rates.unit_rate("lambda", DEFAULT_UNIT_CONCURRENCY)
    return int(LAMBDA_TIMEOUT_S / headroom * rate * MB)


def makespan(durations: list[float], slots: int) -> float:
    """Wall time of tasks started in order on `slots` parallel workers (a Map with MaxConcurrency)."""
    if not durations:
        return 0.0
    free = [0.0] * min(slots, len(durations))
    heapq.heapify(free)
    end = 0.0
    for duration in durations:
        finish = heapq.heappop(free) + duration
        end = max(end, finish)
        heapq.heappush(free, finish)
    return end


@dataclass(frozen=True)
class WallTime:
    copy_s: float
    complete_s: float
    total_s: float


def wall_time(plan: Plan, rates: Rates = SLOW) -> WallTime:
    """The run's wall time at `rates`: the copy Map, then the completion Map, plus the fixed costs."""
    split = split_paths(plan)
    copies = [
        unit_work(plan, unit, rates).seconds + (FARGATE_START_S if unit.runner == "fargate" else COLD_START_S)
        for unit in plan.units
    ]
    completions = [
        completion_work(planned, planned.path in split, rates).seconds + COLD_START_S
        for planned in plan.files
        if planned.multipart
    ]
    copy_s = makespan(copies, COPY_SLOTS)
    complete_s = makespan(completions, COMPLETE_SLOTS)
    total = PLAN_S + MAP_START_S + copy_s + (MAP_START_S + complete_s if completions else 0.0) + TAIL_S
    return WallTime(copy_s=copy_s, complete_s=complete_s, total_s=total)


def fastest_plan(build: Callable[[int | None], Plan], rates: Rates = SLOW) -> Plan:
    """The plan of the layout its options ask for; for "auto", of the two layouts the one whose run is
    faster at `rates`: files split into units (wide fan-out, each split file read back by its completion
    task) or each file whole in one unit up to `whole_file_max` (hashed in-stream, nothing read back).
    A model with fewer files than copy slots gains from splitting, one with many from whole files."""
    split = build(None)
    if split.options.layout == "split":
        return split
    whole = build(whole_file_max(rates))
    if split.options.layout == "whole":
        return whole
    return split if wall_time(split, rates).total_s < wall_time(whole, rates).total_s else whole


def make_run_plan(snapshot: Snapshot, selected: list[HubFile], **options: Any) -> Plan:
    """`make_plan` with the layout the options ask for (or the faster one): what the Plan task runs."""
    return fastest_plan(lambda whole: make_plan(snapshot, selected, whole_file_max=whole, **options))
