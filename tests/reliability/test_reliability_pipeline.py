"""Pipeline-level faults: a copy unit killed mid-part and retried, and two executions of one model at once.

The state machine's tasks are driven as Step Functions drives them (model_cache.pipeline.steps: plan ->
copy_unit per Map item -> finalize -> publish, cleanup on every way out). The killed unit is a real
`python -m model_cache.pipeline.copier` process SIGKILLed while a part is streaming (the Hub double caps the
weight's bandwidth so a part takes about a second), then the same Map item runs again, as a
Step Functions retry would.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from reliability_support import (
    FAULT_REPO,
    PART_SIZE,
    SEED,
    WEIGHT,
    FaultTable,
    MiB,
    Outcome,
    RetryLog,
    attempt,
    check_bucket,
    new_bucket,
)

from model_cache.contract import layout
from model_cache.pipeline import steps
from model_cache.pipeline.engine import sync
from model_cache_devtools.hub import HubServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRIALS = 5
# The weight's 3 parts in one unit, copied one part at a time; the small files in a second unit.
OPTIONS = {"part_size": PART_SIZE, "unit_size": 4 * PART_SIZE, "unit_concurrency": 1, "layout": "split"}


def parts_uploaded(s3: Any, bucket: str, plan: dict[str, Any]) -> int:
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sum(
        len(s3.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"]).get("Parts", [])) for up in uploads
    )


def kill_copier_mid_part(s3: Any, bucket: str, planned: dict[str, Any], item: dict[str, Any], parts: int) -> int:
    """Run the unit as the Fargate copier process; SIGKILL it once `parts` parts are in S3 (the next
    one is streaming through the capped Hub). Returns the process's exit status."""
    victim = subprocess.Popen(
        [sys.executable, "-m", "model_cache.pipeline.copier", "--event", json.dumps(item)],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while victim.poll() is None and time.monotonic() < deadline:
            if parts_uploaded(s3, bucket, planned) >= parts:
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        return victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


def test_copy_unit_killed_mid_part_then_retried(fault_hub_endpoint: HubServer, s3: Any, hub_retries: RetryLog) -> None:
    """GIVEN a plan whose weight unit runs as the copier process, SIGKILLed after 1 or 2 of its 3 parts
    WHEN the same Map item runs again (a Step Functions retry), then finalize, publish, cleanup
    THEN the model is published with verified bytes, and no upload or work file is left."""
    rng = random.Random(SEED + 21)
    table = FaultTable("copy unit SIGKILLed mid-part, then retried")
    for trial in range(TRIALS):
        bucket = new_bucket(s3)
        fault_hub_endpoint.faults.clear()
        planned = steps.plan({"repo_id": FAULT_REPO, "bucket": bucket, "options": OPTIONS}, s3=s3)
        weight_unit = next(item for item in planned["units"] if item["path"] == WEIGHT)
        parts_before_kill = rng.randint(1, 2)
        fault_hub_endpoint.faults.add(FAULT_REPO, WEIGHT, kind="bandwidth", bytes_per_second=4 * MiB)
        status = kill_copier_mid_part(s3, bucket, planned, weight_unit, parts_before_kill)
        fault_hub_endpoint.faults.clear()
        assert status == -signal.SIGKILL, f"trial {trial}: the copier finished before it was killed"
        assert check_bucket(s3, bucket).manifests == []

        for item in planned["units"]:  # the retry of the killed unit, and the units not yet run
            steps.copy_unit(item, s3=s3)
        finalized = steps.finalize(steps.complete_files(planned, s3=s3), s3=s3)
        published = steps.publish(finalized, s3=s3)
        steps.cleanup({**planned, "failed": False}, s3=s3)

        state = check_bucket(s3, bucket)
        table.bucket_trial(state, recovered=True, note=f"killed after {parts_before_kill} parts")
        assert state.published(published["manifest_key"])
        assert state.problems == []
        assert state.open_uploads == 0
        assert not [k for k in state.manifests if "_model-cache-work" in k]
    table.write()
    assert table.row.recovered == TRIALS


# ---------------------------------------------------------------------------------------------
# Two executions of one model at once
# ---------------------------------------------------------------------------------------------


def execution_steps(s3: Any, bucket: str, name: str, log: list[str]) -> Iterator[Callable[[], Any]]:
    """One state-machine execution as a sequence of tasks; the caller interleaves two of them."""
    state: dict[str, Any] = {}

    def plan() -> None:
        state["plan"] = steps.plan(
            {"repo_id": FAULT_REPO, "bucket": bucket, "plan_id": name, "options": OPTIONS}, s3=s3
        )
        log.append(f"{name}: plan {state['plan']['status']}")

    yield plan
    if state["plan"]["status"] == "already_published":
        return
    for item in state["plan"]["units"]:
        yield functools.partial(steps.copy_unit, item, s3=s3)
    yield lambda: state.update(finalized=steps.finalize(steps.complete_files(state["plan"], s3=s3), s3=s3))
    yield lambda: log.append(f"{name}: published {steps.publish(state['finalized'], s3=s3)['commit'][:8]}")
    yield lambda: steps.cleanup({**state["plan"], "failed": False}, s3=s3)


def fail_with_cleanup(s3: Any, bucket: str, name: str) -> None:
    """The Catch path: cleanup(failed=true) with this execution's plan."""
    plan_key = f"_model-cache-work/{name}/plan.json"
    steps.cleanup({"bucket": bucket, "plan_key": plan_key, "failed": True}, s3=s3)


def interleave(
    rng: random.Random,
    runs: dict[str, Iterator[Callable[[], Any]]],
    fail_at: dict[str, int],
    on_failure: Callable[[str], None],
) -> None:
    """Advance the executions in random order; an execution in `fail_at` stops after that many tasks
    and runs its Catch path (`on_failure`) instead."""
    done: dict[str, int] = dict.fromkeys(runs, 0)
    active = dict(runs)
    while active:
        name = rng.choice(sorted(active))
        if name in fail_at and done[name] >= fail_at[name]:
            on_failure(name)
            del active[name]
            continue
        task = next(active[name], None)
        if task is None:
            del active[name]
            continue
        task()
        done[name] += 1


def test_two_executions_of_one_model_at_once(fault_hub_endpoint: HubServer, s3: Any, hub_retries: RetryLog) -> None:
    """GIVEN two executions of one model interleaved task by task in a random order (steps), or two
    engine.sync threads started together; in some trials one execution fails part-way (its Catch path
    runs cleanup) WHEN both have ended THEN the bucket holds exactly one published snapshot of the
    commit, every file its manifest names verifies, refs point at it, and no upload is open."""
    rng = random.Random(SEED + 31)
    table = FaultTable("two executions of one model at once")
    snapshot = fault_hub_endpoint.store.snapshot(FAULT_REPO)
    assert snapshot is not None
    commit = snapshot.commit
    manifest_key = layout.manifest_key("models", FAULT_REPO, commit)
    # (driver, one execution fails part-way, versioned bucket): an existing bucket may be unversioned.
    trials = [
        (driver, fails, versioned) for driver in ("steps",) for fails in (False, True) for versioned in (True, False)
    ]
    trials += [("steps", True, False), ("steps", True, True), ("engine", False, True), ("engine", False, False)]
    # The worst order, fixed: b copies, a copies over it, b fails and cleans up, then a publishes.
    trials += [("worst order", True, False), ("worst order", True, True)]
    for trial, (driver, fails, versioned) in enumerate(trials):
        bucket = new_bucket(s3, versioned=versioned)
        log: list[str] = []
        label = f"{driver}, one fails={fails}, versioned={versioned}"
        if driver == "steps":
            runs = {name: execution_steps(s3, bucket, name, log) for name in ("exec-a", "exec-b")}
            # exec-b stops after its plan and 1-2 copy units, or right after them (before finalize).
            fail_at = {"exec-b": rng.randint(2, 3)} if fails else {}
            interleave(rng, runs, fail_at, functools.partial(fail_with_cleanup, s3, bucket))
        elif driver == "worst order":
            first, second = execution_steps(s3, bucket, "exec-a", log), execution_steps(s3, bucket, "exec-b", log)
            for run in (first, second, second, second, first, first):
                next(run)()
            fail_with_cleanup(s3, bucket, "exec-b")
            for task in first:
                task()
        else:
            outcomes = race_engine_syncs(s3, bucket)
            assert any(outcome.error is None for outcome in outcomes), [o.error for o in outcomes]
        state = check_bucket(s3, bucket)
        table.bucket_trial(state, recovered=state.published(manifest_key), note=label)
        assert state.problems == [], f"trial {trial} ({label}) {log}: {state.problems}"
        assert state.open_uploads == 0, f"trial {trial} ({label})"
        assert state.published(manifest_key), f"trial {trial} ({label}) {log}"
        ref = s3.get_object(Bucket=bucket, Key=layout.ref_key("models", FAULT_REPO, "main"))["Body"].read()
        assert ref == commit.encode()
    table.write()
    assert table.row.recovered == len(trials)


def race_engine_syncs(s3: Any, bucket: str) -> list[Outcome]:
    start = threading.Barrier(2)
    outcomes: list[Outcome] = [Outcome(), Outcome()]

    def run(index: int) -> None:
        start.wait()
        outcomes[index] = attempt(sync, FAULT_REPO, bucket=bucket, part_size=PART_SIZE, concurrency=2)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes
