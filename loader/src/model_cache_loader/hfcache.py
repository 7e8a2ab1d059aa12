"""The Hugging Face cache layout on local disk, written exactly as huggingface_hub writes it.

    {cache}/models--{org}--{name}/blobs/<sha256 if lfs else git_oid>
    {cache}/models--{org}--{name}/snapshots/<commit>/<path>  -> ../../blobs/<blob>  (relative)
    {cache}/models--{org}--{name}/refs/<revision>            the commit, no newline

Next to it the loader keeps a copy of each manifest it pulled (so a warm restart needs no S3
read for a pinned commit), a per-repo lock file under {cache}/.locks, like huggingface_hub's, and
one marker per blob it verified (`.model-cache-loader/verified/<blob>`: the check, and the blob's
size, inode and mtime when it was checked). A blob of the right size is not proof of the right
bytes: huggingface_hub itself, or anything else writing the cache, may have put it there. A blob
without a current marker is hashed once, locally, before a pull trusts it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from model_cache_loader.errors import UsageError
from model_cache_loader.layout import hf_repo_folder
from model_cache_loader.manifest import Manifest, ManifestFile

log = logging.getLogger("model_cache_loader")

TMP_SUFFIX = ".loader-incomplete"
JOURNAL_SUFFIX = ".loader-parts"
HASH_CHUNK = 8 * 1024 * 1024
# The checks after which a blob's bytes are known to be the manifest's (size and none prove nothing).
DIGEST_CHECKS = ("sha256", "crc64nvme")


def default_cache_dir() -> Path:
    """Where huggingface_hub looks: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HUB_CACHE"])))
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HUGGINGFACE_HUB_CACHE"])))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def staging_tag() -> str:
    """A name part no other writer uses at the same time: pid alone is shared by a process's threads."""
    return f"{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:12]}"


def write_atomically(final: Path, body: bytes, *, durable: bool = True) -> None:
    """Write `body` to a staging file of this writer's own, fsync it (`durable`), then rename it over
    `final`. A marker need not be durable: lost in a crash, it only costs one local hash."""
    staging = final.with_name(f".{final.name}.{staging_tag()}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        raise
    os.close(fd)
    os.replace(staging, final)


def _marker_text(check: str, stat: os.stat_result) -> str:
    return f"{check} {stat.st_size} {stat.st_ino} {stat.st_mtime_ns}\n"


def mark_verified(blob: Path, marker: Path, check: str) -> None:
    """Record that `blob`, as it is now, passed `check` (a digest check; others are not recorded)."""
    if check not in DIGEST_CHECKS:
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(marker, _marker_text(check, blob.stat()).encode("ascii"), durable=False)


def marker_matches(blob: Path, marker: Path, size: int, accept: tuple[str, ...] = DIGEST_CHECKS) -> bool:
    """The marker names a digest check in `accept` and the blob is still the file that passed it."""
    try:
        text = marker.read_text()
        stat = blob.stat()
    except (OSError, UnicodeDecodeError):
        return False
    check = _check_named(text)
    return check in DIGEST_CHECKS and check in accept and stat.st_size == size and text == _marker_text(check, stat)


def _check_named(marker_text: str) -> str:
    """The check a verified marker's text names (its first word; see _marker_text)."""
    return marker_text.split(" ", 1)[0]


class RepoCache:
    """One model repo's folder in a Hugging Face cache."""

    def __init__(self, cache_dir: Path, repo_id: str) -> None:
        self.cache_dir = cache_dir
        self.repo_id = repo_id
        self.repo_dir = cache_dir / hf_repo_folder(repo_id)
        self.blobs_dir = self.repo_dir / "blobs"
        self.snapshots_dir = self.repo_dir / "snapshots"
        self.refs_dir = self.repo_dir / "refs"
        self.manifests_dir = self.repo_dir / ".model-cache-loader" / "manifests"
        self.verified_dir = self.repo_dir / ".model-cache-loader" / "verified"
        self.lock_path = cache_dir / ".locks" / hf_repo_folder(repo_id) / "model-cache-loader.lock"

    def blob_path(self, name: str) -> Path:
        return self.blobs_dir / name

    def tmp_path(self, name: str) -> Path:
        return self.blobs_dir / f"{name}{TMP_SUFFIX}"

    def journal_path(self, name: str) -> Path:
        return self.blobs_dir / f"{name}{JOURNAL_SUFFIX}"

    def snapshot_dir(self, commit: str) -> Path:
        return self.snapshots_dir / commit

    def marker_path(self, name: str) -> Path:
        return self.verified_dir / name

    # ---- state checks --------------------------------------------------------------------------

    def blob_ok(
        self, entry: ManifestFile, *, rehash: bool, trust_size: bool = False, accept: tuple[str, ...] = DIGEST_CHECKS
    ) -> bool:
        """The blob holds the manifest's bytes: the right size, and verified (a current marker naming
        a check in `accept`, or hashed now and marked). `rehash` hashes it whatever the marker says;
        `trust_size` (verify size or none) takes the size alone, as the caller asked."""
        path = self.blob_path(entry.blob_name)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        if stat.st_size != entry.size:
            return False
        if trust_size and not rehash:
            return True
        if not rehash and self.verified(entry, accept):
            return True
        if sha256_of(path) != entry.sha256:
            log.warning(
                "%s: blob %s has the right size but not the manifest's sha256; fetching it again",
                entry.path,
                entry.blob_name,
            )
            return False
        mark_verified(path, self.marker_path(entry.blob_name), "sha256")
        return True

    def recorded_check(self, blob_name: str) -> str | None:
        """The check the blob's verified marker names (whether or not the blob still matches it),
        None without a readable marker: what a pull's summary reports."""
        try:
            return _check_named(self.marker_path(blob_name).read_text())
        except (OSError, UnicodeDecodeError):
            return None

    def verified(self, entry: ManifestFile, accept: tuple[str, ...] = DIGEST_CHECKS) -> bool:
        """A marker says this very blob (same size, inode, mtime) passed a digest check in `accept`."""
        return marker_matches(self.blob_path(entry.blob_name), self.marker_path(entry.blob_name), entry.size, accept)

    def missing_files(
        self,
        manifest: Manifest,
        *,
        rehash: bool = False,
        trust_size: bool = False,
        accept: tuple[str, ...] = DIGEST_CHECKS,
    ) -> list[ManifestFile]:
        """Files of the manifest whose blob is absent, the wrong size, or not the manifest's bytes."""
        checked: dict[str, bool] = {}
        missing = []
        for entry in manifest.files:
            name = entry.blob_name
            if name not in checked:
                checked[name] = self.blob_ok(entry, rehash=rehash, trust_size=trust_size, accept=accept)
            if not checked[name]:
                missing.append(entry)
        return missing

    def snapshot_complete(
        self, manifest: Manifest, *, trust_size: bool = False, accept: tuple[str, ...] = DIGEST_CHECKS
    ) -> bool:
        """Stat-based: every snapshot link exists and resolves to a blob of the manifest's size that a
        marker says passed a check in `accept` (`trust_size`: the size alone, for verify size or none)."""
        snapshot = self.snapshot_dir(manifest.commit)
        for entry in manifest.files:
            link = snapshot / entry.path
            try:
                if os.readlink(link) != self._link_target(entry):
                    return False
                if link.stat().st_size != entry.size:
                    return False
            except OSError:
                return False
            if not trust_size and not self.verified(entry, accept):
                return False
        return True

    def read_ref(self, revision: str) -> str | None:
        try:
            return (self.refs_dir / revision).read_text().strip() or None
        except OSError:
            return None

    # ---- writes --------------------------------------------------------------------------------

    def _link_target(self, entry: ManifestFile) -> str:
        depth = entry.path.count("/")
        return "../" * (depth + 2) + "blobs/" + entry.blob_name

    def link_snapshot(self, manifest: Manifest) -> Path:
        """Point snapshots/<commit>/<path> at the blobs, each link replaced atomically."""
        snapshot = self.snapshot_dir(manifest.commit)
        for entry in manifest.files:
            link = snapshot / entry.path
            link.parent.mkdir(parents=True, exist_ok=True)
            target = self._link_target(entry)
            with contextlib.suppress(OSError):
                if os.readlink(link) == target:
                    continue
            staging = link.with_name(f".{link.name}.{staging_tag()}.link")
            os.symlink(target, staging)
            os.replace(staging, link)
        return snapshot

    def write_ref(self, revision: str, commit: str) -> None:
        """refs/<revision> holds the commit with no newline, as huggingface_hub writes it."""
        if revision == commit:
            return  # huggingface_hub writes no ref for a revision that is itself a commit id
        ref = self.refs_dir / revision
        if self.read_ref(revision) == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(ref, commit.encode("ascii"))

    def save_manifest(self, commit: str, body: bytes) -> None:
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        final = self.manifests_dir / f"{commit}.json"
        write_atomically(final, body)

    def local_manifest(self, commit: str) -> bytes | None:
        try:
            return (self.manifests_dir / f"{commit}.json").read_bytes()
        except OSError:
            return None

    def discard(self, name: str) -> None:
        for path in (self.tmp_path(name), self.journal_path(name)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _open_lock(self) -> int:
        """The lock file's descriptor; a cache directory that cannot be made is a setup problem."""
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise UsageError(
                f"cannot use the Hugging Face cache at {self.cache_dir} ({exc.strerror or exc}): point "
                "HF_HUB_CACHE (or --cache-dir) at a directory this process can create and write"
            ) from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[float]:
        """Hold this repo's lock (one downloader per node); yields the seconds spent waiting.

        flock is released by the kernel when its holder dies, so a killed download never leaves
        the repo locked; what it leaves on disk is handled by the next holder (see transfer).
        """
        fd = self._open_lock()
        started = time.monotonic()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process that is pulling %s into %s", self.repo_id, self.cache_dir)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield time.monotonic() - started
        finally:
            os.close(fd)
