"""Check bytes against what the Hub declares: size always; sha256 vs `lfs.sha256` for an LFS file,
git blob sha1 vs the blob id for a regular one.

`FileHasher` is fed a file's bytes in order (in-stream, or by reading the uploaded object back) and
also yields the sha256 every manifest entry carries and the object's full CRC64NVME.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from awscrt import checksums

from model_cache.adapters.hubapi import HubFile
from model_cache.contract import errors


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data, usedforsecurity=False).hexdigest()


def crc64nvme_b64(value: int) -> str:
    """S3's textual form of a CRC64NVME: base64 of the 8 big-endian bytes."""
    return base64.b64encode(value.to_bytes(8, "big")).decode("ascii")


@dataclass(frozen=True)
class FileDigests:
    size: int
    sha256: str
    git_sha1: str | None  # computed for regular (non-LFS) files only
    crc64nvme: str


class FileHasher:
    """Incremental digests of one file, fed its bytes strictly in order."""

    def __init__(self, hub_file: HubFile) -> None:
        self.hub_file = hub_file
        self._sha256 = hashlib.sha256()
        self._sha1 = None
        if not hub_file.lfs:
            self._sha1 = hashlib.sha1(b"blob %d\x00" % hub_file.size, usedforsecurity=False)
        self._crc = 0
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._sha256.update(data)
        if self._sha1 is not None:
            self._sha1.update(data)
        self._crc = checksums.crc64nvme(data, self._crc)
        self.size += len(data)

    def digests(self) -> FileDigests:
        return FileDigests(
            size=self.size,
            sha256=self._sha256.hexdigest(),
            git_sha1=self._sha1.hexdigest() if self._sha1 is not None else None,
            crc64nvme=crc64nvme_b64(self._crc),
        )

    def verify(self) -> FileDigests:
        digests = self.digests()
        check(self.hub_file, digests)
        return digests


def check(hub_file: HubFile, digests: FileDigests) -> None:
    """Raise IntegrityError naming the file unless `digests` match what the Hub declared."""
    if digests.size != hub_file.size:
        raise errors.IntegrityError(
            f"{hub_file.path}: got {digests.size} bytes, the Hub declares {hub_file.size}; nothing was published"
        )
    if hub_file.lfs_sha256 is not None:
        if digests.sha256 != hub_file.lfs_sha256:
            raise errors.IntegrityError(
                f"{hub_file.path}: sha256 {digests.sha256} does not match the Hub's LFS sha256 "
                f"{hub_file.lfs_sha256}; nothing was published"
            )
    elif digests.git_sha1 != hub_file.git_oid:
        raise errors.IntegrityError(
            f"{hub_file.path}: git blob sha1 {digests.git_sha1} does not match the Hub's blob id "
            f"{hub_file.git_oid}; nothing was published"
        )


def hash_chunks(hub_file: HubFile, chunks: Iterable[bytes]) -> FileDigests:
    hasher = FileHasher(hub_file)
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.verify()
