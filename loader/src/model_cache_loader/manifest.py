"""Read and check a snapshot manifest (docs/architecture.md 3.2) before anything touches the disk."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from model_cache_loader.errors import ManifestError
from model_cache_loader.layout import repo_path_problem
from model_cache_loader.schema import manifest_validator


@dataclass(frozen=True)
class ManifestFile:
    """One file of a snapshot as its manifest lists it (docs/architecture.md 3.2): what the pipeline copied
    and verified, and what the loader fetches and checks. The core's `FileRecord` is this class."""

    path: str
    size: int
    sha256: str
    git_oid: str
    lfs: bool
    key: str
    # S3's full-object CRC64NVME as the pipeline recorded it (base64), or None
    crc64nvme: str | None = None
    # the S3 version the pipeline verified; GETs ask for exactly it (None: an unversioned bucket).
    # A pin is a promise the bytes cannot change, so S3's "null" version (overwritten in place in a
    # bucket without versioning) is no pin: parse_manifest reads it as None.
    version_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The manifest's entry for this file, in the order the pipeline has always written it."""
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "git_oid": self.git_oid,
            "lfs": self.lfs,
            "key": self.key,
            "version_id": self.version_id,
            "crc64nvme": self.crc64nvme,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ManifestFile:
        """A record as `to_json` wrote it (the pipeline's work files); manifests are read by parse_manifest."""
        return cls(**data)

    @property
    def blob_name(self) -> str:
        """The Hugging Face cache blob name: sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass(frozen=True)
class Manifest:
    repo_id: str
    revision: str
    commit: str
    prefix: str
    total_size: int
    files: tuple[ManifestFile, ...]
    raw: dict[str, Any]


def check_repo_path(path: str) -> str:
    """Refuse a manifest path that could escape the snapshot directory or collide on disk."""
    problem = repo_path_problem(path)
    if problem:
        raise ManifestError(
            f"manifest file path {path!a} {problem}; refusing the whole manifest (nothing written). "
            "Re-publish the snapshot with the pipeline, or check who can write to the cache bucket."
        )
    return path


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def parse_manifest(body: bytes, *, source: str) -> Manifest:
    """Parse, schema-validate and path-check a manifest. `source` names where it came from, for errors."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {source} is not valid JSON ({exc}); re-publish the snapshot") from exc
    problems = manifest_validator().errors(data)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ManifestError(
            f"manifest {source} fails manifest.schema.json: {shown}. "
            "The pipeline and this loader disagree on the contract: upgrade one of them or re-publish."
        )
    files = []
    seen_paths: set[str] = set()
    for entry in data["files"]:
        path = check_repo_path(entry["path"])
        if path in seen_paths:
            raise ManifestError(f"manifest {source} names {path!r} twice; re-publish the snapshot")
        seen_paths.add(path)
        # The key must be the file's place in this very snapshot: a manifest must not point the
        # loader at other objects in the bucket.
        if entry["key"] != data["prefix"] + path:
            raise ManifestError(
                f"manifest {source}: key {entry['key']!r} of {path!r} is not {data['prefix'] + path!r}; "
                "re-publish the snapshot"
            )
        files.append(
            ManifestFile(
                path=path,
                size=int(entry["size"]),
                sha256=entry["sha256"],
                git_oid=entry["git_oid"],
                lfs=entry["lfs"],
                key=entry["key"],
                crc64nvme=entry["crc64nvme"],
                version_id=_version_pin(entry["version_id"]),
            )
        )
    _check_no_file_dir_clash(seen_paths, source)
    if sum(f.size for f in files) != data["total_size"]:
        raise ManifestError(
            f"manifest {source}: total_size {data['total_size']} is not the sum of its file sizes; re-publish"
        )
    return Manifest(
        repo_id=data["repo_id"],
        revision=data["revision"],
        commit=data["commit"],
        prefix=data["prefix"],
        total_size=int(data["total_size"]),
        files=tuple(files),
        raw=data,
    )


def _check_no_file_dir_clash(paths: set[str], source: str) -> None:
    """'a' and 'a/b' cannot both exist in one snapshot directory."""
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in paths:
                raise ManifestError(f"manifest {source}: {parent!r} is both a file and a directory; re-publish")


def _version_pin(version_id: str | None) -> str | None:
    """The manifest's version id as a pin: S3's "null" version (an object written while the bucket
    had no versioning, overwritten in place by the next PUT) and "" pin nothing."""
    return version_id if version_id and version_id != "null" else None
