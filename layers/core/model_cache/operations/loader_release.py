"""Publish the loader's wheel into the cache bucket, so Ray pods get it with no package index.

Ray's `runtime_env.py_modules` takes a remote URI of a `.whl` or a `.zip`. A `.whl` URI is installed
with `pip install --target`, which ignores what the image has and resolves every dependency from an
index; a `.zip` URI is unpacked as it is and put on PYTHONPATH. A wheel is a zip whose top level is the
package and its `.dist-info`, so the release writes the same bytes under both names:

    model-cache-loader/{version}/model_cache_loader-{version}-py3-none-any.whl   pip, image builds
    model-cache-loader/{version}/model_cache_loader-{version}-py3-none-any.zip   py_modules, init containers

The keys sit beside the model prefix, not under it: docs/architecture.md 3.1 owns `{prefix}/`, and `gc` and
`ls` never see them. Each version is written once (If-None-Match: *). Publishing a version again is a
no-op when the published wheel holds the same files, and refused when it holds others: a pod that
pinned a version must never get other code under it.
"""

from __future__ import annotations

import email.parser
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_cache.contract import errors, layout
from model_cache.pipeline.publish import Conflict, get_bytes, put_bytes

RELEASE_PREFIX = layout.LOADER_RELEASE_PREFIX
PACKAGE = "model_cache_loader"
_WHEEL_NAME = re.compile(r"^model_cache_loader-(?P<version>[0-9][0-9A-Za-z.+!]*)-py3-none-any\.whl$")
WHEEL_CONTENT_TYPE = "application/zip"


@dataclass(frozen=True)
class LoaderRelease:
    version: str
    wheel_key: str
    zip_key: str
    bucket: str
    # False when this exact wheel was already there (publishing again is a no-op).
    written: bool
    # sha256 of the bytes at zip_key (the first publication's, when this one was a no-op): the digest a
    # RayService pins (modelCacheLoaderSha256) and its init container checks before running the release.
    zip_sha256: str = ""

    @property
    def py_modules_uri(self) -> str:
        """What a RayService's runtime_env.py_modules names."""
        return f"s3://{self.bucket}/{self.zip_key}"


def release_keys(version: str) -> tuple[str, str]:
    return layout.loader_release_keys(version)


def wheel_version(path: Path, data: bytes) -> str:
    """The version the wheel's name and its METADATA agree on; a clear error for anything else."""
    match = _WHEEL_NAME.match(path.name)
    if match is None:
        raise errors.InvalidRequest(
            f"{path.name} is not a loader wheel: expected model_cache_loader-<version>-py3-none-any.whl "
            "(build it with `make loader-wheel`)"
        )
    version = match.group("version")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise errors.InvalidRequest(f"{path.name} is not a zip archive, so not a wheel") from None
    with archive:
        names = set(archive.namelist())
        metadata_name = f"{PACKAGE}-{version}.dist-info/METADATA"
        for required in (f"{PACKAGE}/__init__.py", f"{PACKAGE}/__main__.py", f"{PACKAGE}/manifest.schema.json"):
            if required not in names:
                raise errors.InvalidRequest(f"{path.name} lacks {required}: it is not a complete loader wheel")
        if metadata_name not in names:
            raise errors.InvalidRequest(f"{path.name} lacks {metadata_name}: its name and contents disagree")
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode("utf-8"))
    if metadata.get("Name", "").replace("_", "-").lower() != "model-cache-loader" or metadata.get("Version") != version:
        raise errors.InvalidRequest(
            f"{path.name}: its METADATA says {metadata.get('Name')} {metadata.get('Version')}, "
            f"not model-cache-loader {version}"
        )
    return version


def wheel_files_digest(data: bytes) -> str:
    """sha256 over the wheel's member names and contents: two builds of one source agree, whatever
    timestamps the zip carries."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(archive.read(name)).digest())
    return digest.hexdigest()


def publish_loader(s3: Any, bucket: str, wheel: Path) -> LoaderRelease:
    """Write the wheel under both of its keys, once per version (see the module docstring)."""
    try:
        data = wheel.read_bytes()
    except OSError as exc:
        raise errors.InvalidRequest(f"cannot read the loader wheel {wheel}: {exc.strerror}") from None
    version = wheel_version(wheel, data)
    files_digest = wheel_files_digest(data)
    written = False
    keys = release_keys(version)
    stored = data
    for key in keys:
        try:
            put_bytes(s3, bucket, key, data, WHEEL_CONTENT_TYPE, create=True)
            written = True
            stored = data
        except Conflict:
            published = get_bytes(s3, bucket, key)
            if published is None or wheel_files_digest(published) != files_digest:
                raise errors.IntegrityError(
                    f"s3://{bucket}/{key} already holds model-cache-loader {version} with other files; "
                    "a published version is never replaced: bump the version in loader/pyproject.toml"
                ) from None
            stored = published
    return LoaderRelease(
        version=version,
        wheel_key=keys[0],
        zip_key=keys[1],
        bucket=bucket,
        written=written,
        zip_sha256=hashlib.sha256(stored).hexdigest(),
    )


def disk_request(total_size: int, headroom: float = 0.1) -> str:
    """The ephemeral-storage a pod needs for a snapshot of `total_size` bytes, as a Kubernetes quantity:
    the bytes plus 10% slack plus 1 GiB for logs and Ray's own files, rounded up to whole Gi."""
    if total_size < 0:
        raise errors.InvalidRequest(f"a snapshot size cannot be negative ({total_size})")
    gib = 2**30
    needed = int(total_size * (1 + headroom)) + gib
    return f"{-(-needed // gib)}Gi"
