"""Synthetic files: deterministic bytes, consistent ranges, misplaced ranges detectable, hashes cached on disk."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_cache_devtools import synthetic
from model_cache_devtools.synthetic import BLOCK_SIZE, SyntheticFile

pytestmark = pytest.mark.unit

SIZE = 2 * BLOCK_SIZE + 12_345  # two whole blocks and a short last one


@pytest.fixture(autouse=True)
def private_hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    cache = tmp_path / "synthetic-cache"
    monkeypatch.setenv(synthetic.CACHE_DIR_ENV, str(cache))
    synthetic.clear_memory_cache()
    yield cache
    synthetic.clear_memory_cache()


@pytest.fixture(scope="module")
def whole() -> bytes:
    return SyntheticFile(SIZE, 7).read()


def test_same_size_and_seed_give_the_same_bytes(whole: bytes) -> None:
    # GIVEN two independent instances  WHEN both are read whole  THEN the bytes are equal and of the right size
    again = SyntheticFile(SIZE, 7).read()
    assert len(whole) == SIZE
    assert again == whole


def test_the_bytes_are_pinned_across_versions() -> None:
    # A digest recorded when the layout was written: if generation changes, ALGORITHM_VERSION must change too.
    assert synthetic.ALGORITHM_VERSION == 2
    assert hashlib.sha256(SyntheticFile(BLOCK_SIZE + 100, 42).read()).hexdigest() == (
        "7f73371ceebda66255584347eaabca6bffdc1c7f80088eeb1ed1441389f99621"
    )


def test_the_bytes_do_not_compress(whole: bytes) -> None:
    # Weights are incompressible; a transfer path that compressed would otherwise look faster than it is.
    assert len(zlib.compress(whole[:BLOCK_SIZE])) > 0.99 * BLOCK_SIZE


def test_different_seeds_differ_everywhere() -> None:
    # GIVEN two seeds  WHEN the same range is read  THEN every 4 KiB page differs
    first, second = SyntheticFile(SIZE, 1).read(), SyntheticFile(SIZE, 2).read()
    pages = range(0, SIZE, synthetic.PAGE_SIZE)
    assert all(first[p : p + 8] != second[p : p + 8] for p in pages)
    assert all(first[p + 8 : p + 64] != second[p + 8 : p + 64] for p in pages)


def test_a_range_from_the_wrong_offset_is_detectable(whole: bytes) -> None:
    # GIVEN the base block repeats every BLOCK_SIZE bytes  WHEN a range is taken one block off
    # THEN it still differs from the range asked for (the page stamps carry the absolute offset)
    assert whole[100:5000] != whole[BLOCK_SIZE + 100 : BLOCK_SIZE + 5000]
    assert whole[4096 : 4096 + 4096] != whole[8192 : 8192 + 4096]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_read_of_any_range_equals_the_slice_of_the_whole(whole: bytes, data: st.DataObject) -> None:
    # GIVEN any [start, end) within the file
    start = data.draw(st.integers(0, SIZE))
    end = data.draw(st.integers(start, SIZE))
    chunk = data.draw(st.integers(1, 3 * BLOCK_SIZE))
    file = SyntheticFile(SIZE, 7)
    # WHEN it is read directly and in chunks
    direct = file.read(start, end)
    pieces = list(file.iter_range(start, end, chunk))
    # THEN both equal the slice of the whole, and chunks respect the size asked for
    assert direct == whole[start:end]
    assert b"".join(pieces) == whole[start:end]
    assert all(0 < len(p) <= chunk for p in pieces)


def test_out_of_range_reads_and_bad_arguments_are_refused() -> None:
    file = SyntheticFile(10, 0)
    with pytest.raises(ValueError, match="not within"):
        file.read(5, 11)
    with pytest.raises(ValueError, match="not within"):
        file.read(6, 5)
    with pytest.raises(ValueError, match="size must be an int >= 0"):
        SyntheticFile(-1, 0)
    with pytest.raises(ValueError, match="seed must be an int"):
        SyntheticFile(1, "0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        list(file.iter_range(0, 10, 0))


def test_empty_file() -> None:
    file = SyntheticFile(0, 3)
    assert file.read() == b""
    assert file.sha256() == hashlib.sha256(b"").hexdigest()


def test_hashes_match_hashlib_and_git(whole: bytes) -> None:
    # WHEN the file's hashes are asked for  THEN they equal hashes of the bytes computed here
    file = SyntheticFile(SIZE, 7)
    sha256 = hashlib.sha256(whole).hexdigest()
    assert file.sha256() == sha256
    assert file.git_blob_oid() == hashlib.sha1(b"blob %d\0" % SIZE + whole, usedforsecurity=False).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {SIZE}\n".encode()
    assert file.lfs_pointer() == pointer
    assert (
        file.git_blob_oid_of_pointer()
        == hashlib.sha1(b"blob %d\0" % len(pointer) + pointer, usedforsecurity=False).hexdigest()
    )


def test_hashes_are_computed_once_then_read_from_the_disk_cache(
    private_hash_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a hash computed once
    expected = SyntheticFile(SIZE, 9).sha256()
    cached = private_hash_cache / f"v{synthetic.ALGORITHM_VERSION}-size{SIZE}-seed9.json"
    assert json.loads(cached.read_text())["sha256"] == expected
    # WHEN the process forgets it and generating bytes is made impossible
    synthetic.clear_memory_cache()

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hash was recomputed instead of read from the cache")

    monkeypatch.setattr(SyntheticFile, "iter_range", no_generation)
    # THEN a new instance still answers, from the file on disk
    assert SyntheticFile(SIZE, 9).sha256() == expected


def test_a_corrupt_cache_file_is_recomputed(private_hash_cache: Path) -> None:
    # GIVEN a cache file that is not JSON
    private_hash_cache.mkdir(parents=True)
    cached = private_hash_cache / f"v{synthetic.ALGORITHM_VERSION}-size1000-seed5.json"
    cached.write_text("{not json")
    # WHEN the hash is asked for  THEN it is recomputed correctly and the cache repaired
    expected = hashlib.sha256(SyntheticFile(1000, 5).read()).hexdigest()
    assert SyntheticFile(1000, 5).sha256() == expected
    assert json.loads(cached.read_text())["sha256"] == expected
