"""hub_reader.HubReader against the Hub double: Retry-After honoured, bounded retries, permanent errors at once."""

from __future__ import annotations

from typing import Any

import pytest

from model_cache.adapters.hub_reader import HubReader, RetryPolicy
from model_cache.adapters.hubapi import resolve
from model_cache.contract import errors
from model_cache.pipeline.plan import MiB
from model_cache_devtools import modelgen

pytestmark = pytest.mark.integration
PATH = "model.safetensors"


def reader_with_recorded_sleeps(hub: Any, max_attempts: int = 4) -> tuple[HubReader, list[float]]:
    slept: list[float] = []
    snapshot = resolve(modelgen.BIG)
    policy = RetryPolicy(max_attempts=max_attempts, sleep=slept.append)
    return HubReader(modelgen.BIG, snapshot.commit, hub.url, None, policy=policy), slept


def expected(hub: Any, start: int, end: int) -> bytes:
    return bytes(hub.store.snapshot(modelgen.BIG).files[PATH].read(start, end - start))


def test_429_waits_as_long_as_retry_after_says(hub: Any) -> None:
    """GIVEN the Hub answers 429 with Retry-After: 7 once WHEN a range is read THEN the reader waits 7 s
    (recorded, not slept) and then returns the right bytes."""
    reader, slept = reader_with_recorded_sleeps(hub)
    hub.faults.add(modelgen.BIG, PATH, kind="status", status=429, retry_after=7, times=1)
    data = reader.read(PATH, MiB, 2 * MiB, ranged=True, on_bytes=lambda _: None)
    assert data == expected(hub, MiB, 2 * MiB)
    assert slept == [7.0]
    assert reader.retries == 1


def test_persistent_5xx_gives_up_after_bounded_attempts(hub: Any) -> None:
    """GIVEN the Hub answers 500 forever WHEN a range is read THEN TransferError after max_attempts requests."""
    reader, slept = reader_with_recorded_sleeps(hub, max_attempts=3)
    hub.faults.add(modelgen.BIG, PATH, kind="status", status=500, times=None)
    with pytest.raises(errors.TransferError, match="3 attempts"):
        reader.read(PATH, 0, MiB, ranged=True, on_bytes=lambda _: None)
    assert len(slept) == 2
    assert all(0 < delay <= RetryPolicy().max_delay for delay in slept)  # backoff with jitter, capped


@pytest.mark.parametrize(
    ("status", "error"), [(401, errors.GatedRepo), (403, errors.GatedRepo), (404, errors.EntryNotFound)]
)
def test_permanent_statuses_fail_without_retry(hub: Any, status: int, error: type[Exception]) -> None:
    """GIVEN a 401/403/404 from the Hub WHEN a range is read THEN the matching error at once, no sleep."""
    reader, slept = reader_with_recorded_sleeps(hub)
    hub.faults.add(modelgen.BIG, PATH, kind="status", status=status, times=None)
    with pytest.raises(error):
        reader.read(PATH, 0, MiB, ranged=True, on_bytes=lambda _: None)
    assert slept == []
    assert len([r for r in hub.requests if r.file == PATH]) == 1


def test_stalled_response_times_out_and_resumes(hub: Any) -> None:
    """GIVEN the Hub stalls 3 s mid-body once WHEN read with a 0.5 s read timeout THEN it retries and resumes."""
    snapshot = resolve(modelgen.BIG)
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=4, read_timeout=0.5, sleep=slept.append)
    reader = HubReader(modelgen.BIG, snapshot.commit, hub.url, None, policy=policy)
    hub.faults.add(modelgen.BIG, PATH, kind="stall", seconds=3, after_bytes=MiB // 2, times=1)
    data = reader.read(PATH, 0, 2 * MiB, ranged=True, on_bytes=lambda _: None)
    assert data == expected(hub, 0, 2 * MiB)
    assert reader.retries == 1
