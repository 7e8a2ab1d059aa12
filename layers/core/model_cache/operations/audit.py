"""`model-cache verify`: re-check a published snapshot's objects against its manifest and report drift.

The quick check costs one HEAD per file and one listing of the snapshot prefix: every file exists, has
the manifest's size, is still the object version the manifest recorded, and carries the manifest's
CRC64NVME where S3 stored one. `deep` also streams every object and hashes it with the engine's own
`verify.FileHasher` (sha256, git blob sha1 for regular files, CRC64NVME), so nothing is hashed twice
over in a second implementation. Extra objects under the snapshot prefix are drift too: a reader that
syncs the prefix (`aws s3 sync`, vLLM's runai_streamer) would pick them up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import ClientError

from model_cache.adapters.hubapi import HubFile
from model_cache.adapters.s3 import is_missing, iter_object, list_objects, s3_error, version_or_none
from model_cache.contract import errors, ids, layout
from model_cache.pipeline.publish import get_bytes, get_json
from model_cache.pipeline.verify import FileHasher

DriftKind = Literal[
    "missing",
    "wrong_size",
    "replaced",
    "wrong_checksum",
    "wrong_hash",
    "extra",
    "bad_hash_file",
]


@dataclass(frozen=True)
class Drift:
    kind: DriftKind
    key: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "key": self.key, "detail": self.detail}


@dataclass
class AuditReport:
    repo_id: str
    revision: str
    commit: str
    bucket: str
    manifest_key: str
    deep: bool
    files_checked: int = 0
    bytes_hashed: int = 0
    drift: list[Drift] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.drift

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "bucket": self.bucket,
            "manifest_key": self.manifest_key,
            "deep": self.deep,
            "files_checked": self.files_checked,
            "bytes_hashed": self.bytes_hashed,
            "clean": self.clean,
            "drift": [item.to_json() for item in self.drift],
        }


def resolve_commit(s3: Any, bucket: str, prefix: str, repo_id: str, revision: str) -> str:
    """The commit `revision` names in the cache: itself for a commit id, else what refs/{revision} holds."""
    if ids.is_commit_id(revision):
        return revision
    ref = get_bytes(s3, bucket, layout.ref_key(prefix, repo_id, revision))
    if ref is None:
        raise errors.RevisionNotFound(
            f"{repo_id}@{revision} is not cached in s3://{bucket}/ (no {layout.ref_key(prefix, repo_id, revision)})"
        )
    commit = ref.decode("ascii", "replace").strip()
    if not ids.is_commit_id(commit):
        raise errors.IntegrityError(
            f"{layout.ref_key(prefix, repo_id, revision)} holds {commit[:60]!r}, not a commit id"
        )
    return commit


def audit_snapshot(
    s3: Any,
    bucket: str,
    repo_id: str,
    revision: str = layout.DEFAULT_REVISION,
    *,
    prefix: str = layout.DEFAULT_PREFIX,
    deep: bool = False,
) -> AuditReport:
    """Compare the objects of `repo_id`@`revision` with its manifest; every difference is one `Drift`."""
    ids.validate_repo_id(repo_id)
    ids.validate_revision(revision)
    commit = resolve_commit(s3, bucket, prefix, repo_id, revision)
    manifest_key = layout.manifest_key(prefix, repo_id, commit)
    manifest = get_json(s3, bucket, manifest_key)
    if manifest is None:
        raise errors.RevisionNotFound(f"no manifest for {repo_id} at commit {commit}: s3://{bucket}/{manifest_key}")
    report = AuditReport(repo_id, revision, commit, bucket, manifest_key, deep)
    listed = _list_sizes(s3, bucket, layout.snapshot_prefix(prefix, repo_id, commit))
    expected_keys: set[str] = set()
    for entry in manifest.get("files", []):
        expected_keys.add(entry["key"])
        report.files_checked += 1
        _check_file(s3, bucket, entry, listed, report)
    hash_key = layout.hash_key(prefix, repo_id, commit)
    if hash_key not in expected_keys and hash_key in listed:
        expected_keys.add(hash_key)
        content = get_bytes(s3, bucket, hash_key)
        if content != commit.encode("ascii"):
            report.drift.append(Drift("bad_hash_file", hash_key, f"holds {content!r:.60}, expected the commit id"))
    for key in sorted(set(listed) - expected_keys):
        report.drift.append(Drift("extra", key, f"{listed[key]} bytes under the snapshot prefix, not in the manifest"))
    return report


def _check_file(s3: Any, bucket: str, entry: dict[str, Any], listed: dict[str, int], report: AuditReport) -> None:
    key = entry["key"]
    if key not in listed:
        report.drift.append(Drift("missing", key, f"{entry['path']} is in the manifest but not in the bucket"))
        return
    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if is_missing(s3, bucket, key, exc):
            report.drift.append(Drift("missing", key, f"{entry['path']} disappeared while being checked"))
            return
        raise s3_error(exc, bucket, f"checking {key}") from exc
    if head["ContentLength"] != entry["size"]:
        report.drift.append(
            Drift("wrong_size", key, f"{head['ContentLength']} bytes, the manifest says {entry['size']}")
        )
    recorded_version = entry.get("version_id")
    current_version = version_or_none(head.get("VersionId"))
    if recorded_version and current_version != recorded_version:
        report.drift.append(
            Drift("replaced", key, f"current version {current_version} is not the manifest's {recorded_version}")
        )
    stored_crc = head.get("ChecksumCRC64NVME")
    if entry.get("crc64nvme") and stored_crc and stored_crc != entry["crc64nvme"]:
        report.drift.append(
            Drift("wrong_checksum", key, f"S3 stores CRC64NVME {stored_crc}, the manifest says {entry['crc64nvme']}")
        )
    if report.deep:
        _hash_file(s3, bucket, entry, report)


def _hash_file(s3: Any, bucket: str, entry: dict[str, Any], report: AuditReport) -> None:
    """Stream the current object through the engine's FileHasher and compare every digest it yields."""
    key = entry["key"]
    # The manifest names the sha256 of every file; an LFS file is checked by it, a regular file also by
    # its git blob id, exactly as the engine verified it on the way in.
    lfs_sha256 = entry["sha256"] if entry["lfs"] else None
    hub_file = HubFile(path=entry["path"], size=entry["size"], git_oid=entry["git_oid"], lfs_sha256=lfs_sha256)
    hasher = FileHasher(hub_file)
    for chunk in _chunks(s3, bucket, key):
        hasher.update(chunk)
    digests = hasher.digests()
    report.bytes_hashed += digests.size
    problems = []
    if digests.sha256 != entry["sha256"]:
        problems.append(f"sha256 {digests.sha256} != manifest {entry['sha256']}")
    if digests.git_sha1 is not None and digests.git_sha1 != entry["git_oid"]:
        problems.append(f"git blob sha1 {digests.git_sha1} != manifest {entry['git_oid']}")
    if entry.get("crc64nvme") and digests.crc64nvme != entry["crc64nvme"]:
        problems.append(f"CRC64NVME {digests.crc64nvme} != manifest {entry['crc64nvme']}")
    if problems:
        report.drift.append(Drift("wrong_hash", key, "; ".join(problems)))


def _chunks(s3: Any, bucket: str, key: str) -> Iterator[bytes]:
    # The current version, not the manifest's: a reader gets the current one, so that is what must match.
    yield from iter_object(s3, bucket, key, None)


def _list_sizes(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    return {item["Key"]: int(item["Size"]) for item in list_objects(s3, bucket, prefix)}
