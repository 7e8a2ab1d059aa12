"""Seed moto S3 with a cached snapshot exactly as the pipeline publishes it (docs/architecture.md 3.1/3.2).

The pipeline is built in parallel, so the loader's tests publish for themselves: every file under
its contract key, then manifests/{commit}.json (schema-valid), then refs/{revision}, then
manifest.json for the default branch: the contract's publish order.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_cache.contract import layout
from model_cache_devtools.synthetic import git_blob_oid, lfs_pointer

LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.onnx", "*.h5", "*.msgpack", "*.model")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024


@dataclass
class Seeded:
    bucket: str
    prefix: str
    repo_id: str
    revision: str
    commit: str
    manifest: dict[str, Any]
    files: dict[str, bytes]

    def entry(self, path: str) -> dict[str, Any]:
        return next(f for f in self.manifest["files"] if f["path"] == path)

    def blob_name(self, path: str) -> str:
        entry = self.entry(path)
        return str(entry["sha256"] if entry["lfs"] else entry["git_oid"])


def is_lfs(path: str, size: int) -> bool:
    return size >= LFS_SIZE_THRESHOLD or any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS)


def commit_for(files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.hexdigest()


def crc64nvme_of(content: bytes) -> str:
    """S3's full-object CRC64NVME of `content` in its textual form, as the pipeline records it."""
    from awscrt import checksums

    from model_cache.pipeline.verify import crc64nvme_b64

    return crc64nvme_b64(checksums.crc64nvme(content))


def build_manifest(
    bucket: str,
    prefix: str,
    repo_id: str,
    revision: str,
    commit: str,
    files: Mapping[str, bytes],
    *,
    with_crc: bool = False,
) -> dict[str, Any]:
    entries = []
    for path in sorted(files):
        content = files[path]
        sha256 = hashlib.sha256(content).hexdigest()
        lfs = is_lfs(path, len(content))
        entries.append(
            {
                "path": path,
                "size": len(content),
                "sha256": sha256,
                "git_oid": git_blob_oid(lfs_pointer(sha256, len(content)) if lfs else content),
                "lfs": lfs,
                "key": layout.file_key(prefix, repo_id, commit, path),
                "version_id": None,
                "crc64nvme": crc64nvme_of(content) if with_crc else None,
            }
        )
    return {
        "schema_version": 1,
        "repo_id": repo_id,
        "repo_type": "model",
        "revision": revision,
        "commit": commit,
        "source": "https://huggingface.co",
        "created_at": "2026-11-30T12:00:00Z",
        "bucket": bucket,
        "prefix": layout.snapshot_prefix(prefix, repo_id, commit),
        "total_size": sum(len(c) for c in files.values()),
        "files": entries,
    }


def seed_snapshot(
    s3: Any,
    bucket: str,
    repo_id: str,
    files: Mapping[str, bytes],
    *,
    revision: str = "main",
    prefix: str = "models",
    commit: str | None = None,
    manifest_override: dict[str, Any] | None = None,
    object_override: Mapping[str, bytes] | None = None,
    with_crc: bool = False,
    pin_versions: bool = False,
) -> Seeded:
    """Publish `files` as `repo_id`@`revision`. `object_override` uploads different bytes than the
    manifest describes (a corrupted object); `manifest_override` replaces the manifest (tampering);
    `with_crc` records each file's CRC64NVME (of `files`, not of the overriding bytes);
    `pin_versions` records the version id each PUT answered, as the pipeline does."""
    commit = commit or commit_for(files)
    versions: dict[str, str | None] = {}
    for path, content in files.items():
        body = (object_override or {}).get(path, content)
        answer = s3.put_object(Bucket=bucket, Key=layout.file_key(prefix, repo_id, commit, path), Body=body)
        versions[path] = answer["VersionId"] if pin_versions else None
    if "hash" not in files:
        s3.put_object(Bucket=bucket, Key=layout.hash_key(prefix, repo_id, commit), Body=commit.encode())
    manifest = manifest_override or build_manifest(bucket, prefix, repo_id, revision, commit, files, with_crc=with_crc)
    if manifest_override is None:
        for entry in manifest["files"]:
            entry["version_id"] = versions[entry["path"]]
    body = json.dumps(manifest, indent=1).encode()
    s3.put_object(Bucket=bucket, Key=layout.manifest_key(prefix, repo_id, commit), Body=body)
    s3.put_object(Bucket=bucket, Key=layout.ref_key(prefix, repo_id, revision), Body=commit.encode())
    if revision == "main":
        s3.put_object(Bucket=bucket, Key=layout.root_manifest_key(prefix, repo_id), Body=body)
    return Seeded(bucket, prefix, repo_id, revision, commit, manifest, dict(files))


def repo_files(folder: Path) -> dict[str, bytes]:
    """Every file of a Hub-double repo folder, without its `.hub-*` control files."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".hub-")
    }


def small_repo() -> dict[str, bytes]:
    """A few files of each kind: plain text, nested path, empty file, an LFS weight, a duplicate blob."""
    weights = hashlib.sha256(b"seed").digest() * 8192  # 256 KiB, LFS by extension
    return {
        "config.json": b'{"model_type": "llama"}\n',
        "README.md": b"# a small repo\n",
        "sub/dir/notes.txt": b"two folders deep\n",
        "empty.txt": b"",
        "model.safetensors": weights,
        "copy/model.safetensors": weights,
    }


class RequestCounter:
    """Counts the HTTP requests a boto3 client really sends (before-send sees every attempt)."""

    def __init__(self, client: Any) -> None:
        self.requests: list[tuple[str, str]] = []
        client.meta.events.register("before-send.s3", self._on_send)

    def _on_send(self, request: Any, **_: Any) -> None:
        self.requests.append((request.method, request.url))

    def gets(self, fragment: str = "") -> list[str]:
        return [url for method, url in self.requests if method == "GET" and fragment in url]
