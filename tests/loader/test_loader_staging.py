"""Staging files: every writer of the loader's cache stages in a file of its own, then renames it over the
final name, so two writers of one process (two threads of a Ray worker) never share a staging file.

The race test in tests/reliability/test_integrity_loader.py pulls from two threads and finds a shared
staging file only when the threads happen to meet inside the window; this holds one writer inside it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from model_cache_loader import hfcache

pytestmark = pytest.mark.unit


def test_two_threads_writing_one_file_at_once_each_stage_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a first thread of this process holding its staging file of refs/main open (stopped at its fsync)
    final = tmp_path / "refs" / "main"
    final.parent.mkdir()
    inside, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def fsync_holding_the_first_writer(fd: int) -> None:
        if threading.current_thread().name == "first-writer":
            inside.set()
            release.wait(timeout=30)
        real_fsync(fd)

    monkeypatch.setattr(hfcache.os, "fsync", fsync_holding_the_first_writer)
    failures: list[BaseException] = []

    def write_first() -> None:
        try:
            hfcache.write_atomically(final, b"first")
        except BaseException as exc:  # whatever the writer raised is the test's failure
            failures.append(exc)

    first = threading.Thread(target=write_first, name="first-writer")
    first.start()
    try:
        assert inside.wait(timeout=30), "the first writer never reached its fsync"
        # WHEN a second thread of the same process writes the same file meanwhile
        hfcache.write_atomically(final, b"second")
    finally:
        release.set()
        first.join(timeout=30)
    # THEN both writes succeed, each from its own staging file, the last rename wins, and no staging file is left
    assert failures == []
    assert final.read_bytes() == b"first"
    assert sorted(path.name for path in final.parent.iterdir()) == ["main"]


def test_staging_tags_differ_between_threads_and_calls() -> None:
    # GIVEN tags taken by two threads of one process, and twice by one thread
    tags: list[str] = []
    worker = threading.Thread(target=lambda: tags.append(hfcache.staging_tag()))
    worker.start()
    worker.join(timeout=30)
    tags += [hfcache.staging_tag(), hfcache.staging_tag()]
    # THEN no two are the same
    assert len(set(tags)) == 3
