"""Deterministic big files that cost no disk: bytes generated on the fly from (size, seed).

The Hub double serves them, and tests and benchmarks use this same module to know the
expected bytes and hashes. The bytes are a seeded 1 MiB base block repeated, with the
absolute offset of every 4 KiB page stamped into its first 8 bytes: generation is a copy
plus a few strided slice assignments per MiB (several GB/s), yet any range served from the wrong offset
differs from the expected bytes, so misplaced ranges are caught by byte comparison.

Hashes of a whole file take seconds for multi-GiB files, so they are computed once and
cached on disk, keyed by (size, seed, algorithm version), in `MODEL_CACHE_SYNTHETIC_CACHE`
(default `~/.cache/model-cache/synthetic`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

# Bump when the byte layout changes: cached hashes of older layouts are then ignored.
ALGORITHM_VERSION = 2
BLOCK_SIZE = 1 << 20
PAGE_SIZE = 4096
PAGES_PER_BLOCK = BLOCK_SIZE // PAGE_SIZE
DEFAULT_CHUNK_SIZE = BLOCK_SIZE
CACHE_DIR_ENV = "MODEL_CACHE_SYNTHETIC_CACHE"
LFS_POINTER_TEMPLATE = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"

# The 8-byte little-endian stamps of one block's pages, packed together, then scattered to the
# page starts by 8 strided slice assignments (C loops, no per-page Python).
_PAGE_STAMPS = struct.Struct(f"<{PAGES_PER_BLOCK}Q")
_STAMP_SIZE = 8
_MASK64 = (1 << 64) - 1

_hash_locks: dict[tuple[int, int, str], threading.Lock] = {}
_hash_locks_guard = threading.Lock()
_memory_hashes: dict[tuple[int, int, str], str] = {}


def declare_sha256(size: int, seed: int, sha256: str) -> None:
    """Take `sha256` as the hash of the synthetic file (size, seed) in this process, without reading it.

    For listings at the scale of real models (a 5 TiB file, thousands of 40 GiB ones) whose bytes no
    test ever reads: a plan refused at plan time only needs the Hub double to list them. A test that
    did read such a file would find its bytes do not match, as they should not.
    """
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a hex sha256: {sha256!r}")
    _memory_hashes[(size, seed, "sha256")] = sha256


def cache_dir() -> Path:
    """Where whole-file hashes are kept between runs."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "model-cache" / "synthetic"


def git_blob_oid(content: bytes) -> str:
    """Git's object id of a blob with this content: sha1 over `blob <size>\\0<content>`."""
    return hashlib.sha1(b"blob %d\x00" % len(content) + content, usedforsecurity=False).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git LFS pointer file that stands for content with this sha256 and size."""
    return LFS_POINTER_TEMPLATE.format(sha256=sha256, size=size).encode("ascii")


@lru_cache(maxsize=8)
def _base_block(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK_SIZE)


def _stamp_key(seed: int) -> int:
    # Mixing the seed into the stamps keeps two seeds' files different at every page.
    return (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK64


class SyntheticFile:
    """A virtual file of `size` bytes determined by `seed`. Reads are pure functions of (size, seed, range)."""

    __slots__ = ("_key", "seed", "size")

    def __init__(self, size: int, seed: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"synthetic file size must be an int >= 0, got {size!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"synthetic file seed must be an int, got {seed!r}")
        self.size = size
        self.seed = seed
        self._key = _stamp_key(seed)

    def __repr__(self) -> str:
        return f"SyntheticFile(size={self.size}, seed={self.seed})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SyntheticFile) and (self.size, self.seed) == (other.size, other.seed)

    def __hash__(self) -> int:
        return hash((self.size, self.seed))

    # -- bytes -------------------------------------------------------------------------------

    def block(self, index: int) -> bytes:
        """Block `index` (BLOCK_SIZE bytes, the last one shorter) of the file."""
        start = index * BLOCK_SIZE
        if index < 0 or start >= self.size:
            raise ValueError(f"block {index} is outside a file of {self.size} bytes")
        buffer = bytearray(_base_block(self.seed))
        key = self._key
        stamps = _PAGE_STAMPS.pack(*[((start + page * PAGE_SIZE) ^ key) & _MASK64 for page in range(PAGES_PER_BLOCK)])
        for byte in range(_STAMP_SIZE):
            buffer[byte::PAGE_SIZE] = stamps[byte::_STAMP_SIZE]
        length = min(BLOCK_SIZE, self.size - start)
        return bytes(buffer) if length == BLOCK_SIZE else bytes(buffer[:length])

    def _check_range(self, start: int, end: int) -> None:
        if not (0 <= start <= end <= self.size):
            raise ValueError(f"range [{start}, {end}) is not within a file of {self.size} bytes")

    def iter_range(
        self, start: int = 0, end: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Iterator[bytes]:
        """The bytes [start, end) in chunks of at most `chunk_size` (end defaults to the file's size)."""
        end = self.size if end is None else end
        self._check_range(start, end)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
        position = start
        while position < end:
            index = position // BLOCK_SIZE
            block = memoryview(self.block(index))
            block_start = index * BLOCK_SIZE
            stop = min(end, block_start + len(block))
            while position < stop:
                piece_end = min(stop, position + chunk_size)
                yield bytes(block[position - block_start : piece_end - block_start])
                position = piece_end

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        """The bytes [start, end), as `whole[start:end]` would give them."""
        return b"".join(self.iter_range(start, end))

    # -- hashes ------------------------------------------------------------------------------

    def sha256(self) -> str:
        """Hex sha256 of the whole content (computed once per (size, seed), then read from the cache)."""
        return self._cached_hash("sha256", lambda: hashlib.sha256())

    def git_blob_oid(self) -> str:
        """Git's blob id of the content itself (what a non-LFS file's `blobId` is)."""

        def start() -> hashlib._Hash:
            digest = hashlib.sha1(usedforsecurity=False)
            digest.update(b"blob %d\x00" % self.size)
            return digest

        return self._cached_hash("git-blob-sha1", start)

    def lfs_pointer(self) -> bytes:
        return lfs_pointer(self.sha256(), self.size)

    def git_blob_oid_of_pointer(self) -> str:
        """Git's blob id of this file's LFS pointer (what an LFS file's `blobId` is)."""
        return git_blob_oid(self.lfs_pointer())

    def _cached_hash(self, algorithm: str, new_digest: Callable[[], hashlib._Hash]) -> str:
        key = (self.size, self.seed, algorithm)
        cached = _memory_hashes.get(key)
        if cached is not None:
            return cached
        with _hash_locks_guard:
            lock = _hash_locks.setdefault(key, threading.Lock())
        # One computation per key even when many server threads ask at once.
        with lock:
            cached = _memory_hashes.get(key) or self._read_disk_cache(algorithm)
            if cached is None:
                digest = new_digest()
                for chunk in self.iter_range(0, self.size, BLOCK_SIZE):
                    digest.update(chunk)
                cached = digest.hexdigest()
                self._write_disk_cache(algorithm, cached)
            _memory_hashes[key] = cached
            return cached

    def _cache_file(self) -> Path:
        return cache_dir() / f"v{ALGORITHM_VERSION}-size{self.size}-seed{self.seed}.json"

    def _read_disk_cache(self, algorithm: str) -> str | None:
        try:
            data = json.loads(self._cache_file().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("size") != self.size or data.get("seed") != self.seed:
            return None
        value = data.get(algorithm)
        return value if isinstance(value, str) else None

    def _write_disk_cache(self, algorithm: str, value: str) -> None:
        path = self._cache_file()
        data: dict[str, object] = {"algorithm_version": ALGORITHM_VERSION, "size": self.size, "seed": self.seed}
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(existing, dict):
                data.update({k: v for k, v in existing.items() if isinstance(v, str)})
        except (OSError, ValueError):
            pass
        data[algorithm] = value
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written whole then renamed: a concurrent reader sees the old file or the new one, never half.
            with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
                json.dump(data, handle, sort_keys=True)
            os.replace(handle.name, path)
        except OSError:
            # A read-only or full cache dir only costs a recomputation next time.
            pass


def clear_memory_cache() -> None:
    """Forget in-process hashes (tests use it to prove the on-disk cache is read)."""
    _memory_hashes.clear()
