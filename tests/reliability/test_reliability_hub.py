"""Hub faults during engine.sync, over real HTTP: each kind tried repeatedly at random offsets.

The Hub double (its own instance, serving reliability_support.FAULT_REPO) injects the fault; boto3
talks to moto's server. Every trial ends recovered (published, every byte verified) or failed clean
(a domain error, nothing published, nothing left behind); the figures go to docs/explanation/reliability.md.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from reliability_support import (
    FAULT_REPO,
    FILE_SIZES,
    PART_SIZE,
    SEED,
    WEIGHT,
    FaultTable,
    RetryLog,
    assert_trial,
    attempt,
    new_bucket,
)

from model_cache.pipeline.engine import sync
from model_cache_devtools.hub import HubServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRIALS = 6


Inject = Callable[[HubServer, random.Random], tuple[bool, str]]


def run_trials(kind: str, hub: HubServer, s3: Any, inject: Inject, seed_offset: int) -> FaultTable:
    """TRIALS syncs, each with a fresh bucket and the fault `inject` adds (it says whether the run
    should recover); asserts every trial's outcome and end state, then writes the kind's row."""
    rng = random.Random(SEED + seed_offset)
    table = FaultTable(kind)
    for trial in range(TRIALS):
        hub.faults.clear()
        bucket = new_bucket(s3)
        should_recover, what = inject(hub, rng)
        label = f"trial {trial} ({what})"
        outcome = attempt(sync, FAULT_REPO, bucket=bucket, part_size=PART_SIZE, concurrency=3, s3=s3)
        assert_trial(table, s3, bucket, outcome, should_recover=should_recover, label=label)
    hub.faults.clear()
    table.write()
    return table


def random_file(rng: random.Random) -> str:
    """The weight (3 parts) two times in three, a small single-PUT file otherwise."""
    return WEIGHT if rng.random() < 0.67 else rng.choice(sorted(set(FILE_SIZES) - {WEIGHT}))


def test_hub_connection_dropped_mid_file(fault_hub_endpoint: HubServer, s3: Any, hub_retries: RetryLog) -> None:
    """GIVEN the Hub drops the connection after a random number of body bytes, 1-3 times
    WHEN the repo is synced THEN every trial resumes by range and publishes verified bytes."""

    def inject(hub: HubServer, rng: random.Random) -> tuple[bool, str]:
        path = random_file(rng)
        after = rng.randrange(1, FILE_SIZES[path])
        times = rng.randint(1, 3)
        hub.faults.add(FAULT_REPO, path, kind="drop", after_bytes=after, times=times)
        return True, f"drop {path} after {after} B x{times}"

    table = run_trials("Hub connection dropped mid-file", fault_hub_endpoint, s3, inject, 1)
    assert table.row.recovered == TRIALS
    assert hub_retries.delays, "the drops were absorbed by retries"


def test_hub_5xx_bursts(fault_hub_endpoint: HubServer, s3: Any, hub_retries: RetryLog) -> None:
    """GIVEN bursts of 500/502/503 on file downloads, of 1-5 responses, or an outage that never ends
    WHEN synced THEN a burst is retried away and an outage fails clean with TransferError."""

    def inject(hub: HubServer, rng: random.Random) -> tuple[bool, str]:
        path = random_file(rng)
        status = rng.choice([500, 502, 503])
        outage = rng.random() < 0.3
        times = None if outage else rng.randint(1, 5)
        hub.faults.add(FAULT_REPO, path, kind="status", status=status, times=times)
        return not outage, f"HTTP {status} on {path} x{times or 'forever'}"

    table = run_trials("Hub 500/502/503 bursts", fault_hub_endpoint, s3, inject, 2)
    assert table.row.recovered >= 1


def test_hub_429_with_retry_after(fault_hub_endpoint: HubServer, s3: Any, hub_retries: RetryLog) -> None:
    """GIVEN 429 Too Many Requests with a random Retry-After (1-30 s)
    WHEN synced THEN the reader waits exactly what the Hub asked (recorded, not slept) and recovers."""
    asked: list[int] = []

    def inject(hub: HubServer, rng: random.Random) -> tuple[bool, str]:
        path = random_file(rng)
        retry_after = rng.randint(1, 30)
        asked.append(retry_after)
        hub.faults.add(FAULT_REPO, path, kind="status", status=429, retry_after=retry_after, times=rng.randint(1, 2))
        return True, f"429 Retry-After {retry_after} on {path}"

    table = run_trials("Hub 429 with Retry-After", fault_hub_endpoint, s3, inject, 3)
    assert table.row.recovered == TRIALS
    assert set(asked) <= {round(delay) for delay in hub_retries.delays}


def test_hub_stalls_past_the_read_timeout(fault_hub_endpoint: HubServer, s3: Any, hub_retries: RetryLog) -> None:
    """GIVEN the Hub stalls 3 s (read timeout 1 s) before answering or after a random number of bytes
    WHEN synced THEN the read times out, the part is retried from the byte it stopped at, and it recovers."""

    def inject(hub: HubServer, rng: random.Random) -> tuple[bool, str]:
        path = random_file(rng)
        after = rng.choice([None, rng.randrange(1, FILE_SIZES[path])])
        extra: dict[str, Any] = {} if after is None else {"after_bytes": after}
        hub.faults.add(FAULT_REPO, path, kind="stall", seconds=3.0, times=1, **extra)
        return True, f"stall {path} after {after} B"

    table = run_trials("Hub stalls past the read timeout", fault_hub_endpoint, s3, inject, 4)
    assert table.row.recovered == TRIALS


def test_hub_serves_a_corrupted_byte(fault_hub_endpoint: HubServer, s3: Any, hub_retries: RetryLog) -> None:
    """GIVEN one byte flipped at a random offset of a random file, once
    WHEN synced THEN the hash check fails the run with IntegrityError and nothing is published."""

    def inject(hub: HubServer, rng: random.Random) -> tuple[bool, str]:
        path = random_file(rng)
        offset = rng.randrange(FILE_SIZES[path])
        hub.faults.add(FAULT_REPO, path, kind="corrupt", offset=offset, times=1)
        return False, f"corrupt {path} at {offset}"

    table = run_trials("Hub serves a corrupted byte", fault_hub_endpoint, s3, inject, 5)
    assert table.row.failed_clean == TRIALS
