"""`pull` and `resolve_model`: get a model's snapshot into the local Hugging Face cache.

S3 first (refs/{revision} -> manifests/{commit}.json -> parallel ranged GETs, verified), the local
cache when it already holds the snapshot, the Hub on a miss (fallback="hub").
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

from model_cache_loader import fallback as fallback_mod
from model_cache_loader import layout, metrics
from model_cache_loader.errors import (
    AccessError,
    IntegrityError,
    LoaderError,
    ManifestError,
    NotCachedError,
    S3UnavailableError,
    UsageError,
)
from model_cache_loader.hfcache import DIGEST_CHECKS, RepoCache, default_cache_dir
from model_cache_loader.manifest import Manifest, ManifestFile, parse_manifest

# DEFAULT_PART_SIZE is part of this module's API (the CLI, the bench and callers read it from here).
from model_cache_loader.transfer import DEFAULT_PART_SIZE as DEFAULT_PART_SIZE
from model_cache_loader.transfer import Downloader, Progress, make_job, s3_error

log = logging.getLogger("model_cache_loader")

Source = Literal["s3", "local", "hub"]
DEFAULT_CONCURRENCY = 32
MIN_PART_SIZE = 64 * 1024
VERIFY_CHOICES = ("auto", "sha256", "crc64nvme", "size", "none", "sha256-local")
# hub: on a miss or with S3 down, the Hub; a wrong setup (no bucket, access denied, no credentials) is an
# error. always: the Hub on those too. error: never the Hub.
FALLBACK_CHOICES = ("hub", "error", "always")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class PullResult:
    path: Path
    source: Source
    commit: str
    bytes_downloaded: int
    seconds: float
    files: int
    reason: str | None = None


def select_bucket(value: str | None, region: str | None) -> str | None:
    """A plain bucket name, or 'region=bucket,region=bucket' from which AWS_REGION's is chosen.

    Returns None when no bucket applies (nothing configured, or no entry for this region).
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if "=" not in value:
        return layout.validate_bucket(value)
    pairs: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        region_name, sep, bucket_name = item.partition("=")
        if not item:
            continue
        if not sep or not region_name.strip() or not bucket_name.strip():
            raise UsageError(
                f"MODEL_CACHE_BUCKET entry {item!r} is not 'region=bucket'; "
                "use a plain bucket name or e.g. 'us-east-1=cache-use1,eu-west-1=cache-euw1'"
            )
        pairs[region_name.strip()] = layout.validate_bucket(bucket_name.strip())
    if region is None:
        raise UsageError(f"MODEL_CACHE_BUCKET lists buckets per region ({', '.join(pairs)}) but AWS_REGION is not set")
    return pairs.get(region)


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def make_s3_client(concurrency: int = DEFAULT_CONCURRENCY) -> Any:
    """A boto3 S3 client sized for `concurrency` parallel GETs. AWS_ENDPOINT_URL(_S3) is honoured by boto3."""
    import boto3
    from botocore.config import Config

    config = Config(
        max_pool_connections=concurrency + 4,
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=5,
        read_timeout=60,
        tcp_keepalive=True,
        # We verify every byte ourselves (sha256 or CRC64NVME); botocore's response CRC would be a second pass.
        response_checksum_validation="when_required",
        request_checksum_calculation="when_required",
    )
    try:
        return boto3.session.Session().client("s3", region_name=_region(), config=config)
    except ProfileNotFound as exc:
        raise UsageError(f"{exc}: set AWS_PROFILE to a profile in ~/.aws/config, or unset it") from exc


def read_object(s3: Any, bucket: str, key: str) -> bytes:
    """A small object's bytes (a ref, a manifest), with S3's errors mapped to the loader's."""
    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        if isinstance(exc, ClientError) and _listing_lacks(s3, bucket, key, exc):
            raise NotCachedError(
                f"s3://{bucket}/{key} does not exist: the model is not cached at this revision"
            ) from exc
        raise s3_error(exc, bucket=bucket, key=key) from exc
    return body


def _listing_lacks(s3: Any, bucket: str, key: str, exc: ClientError) -> bool:
    """A 403 on a read is a miss when the pod's listing, which it may make, does not hold the key.

    S3 answers a missing key 404 only to a caller with s3:ListBucket on the whole bucket and 403 to
    one whose ListBucket is conditioned on s3:prefix, as the pods' is (GetObject API reference,
    "Permissions"). One ListObjectsV2 of exactly this name tells a miss from a denial.
    """
    if exc.response.get("Error", {}).get("Code") not in ("AccessDenied", "403", "Forbidden"):
        return False
    try:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except (ClientError, BotoCoreError):
        return False
    return not any(item.get("Key") == key for item in listed.get("Contents", []))


def resolve_commit(s3: Any, bucket: str, prefix: str, repo_id: str, revision: str) -> str:
    """The commit a revision names: itself when it is a commit id, else refs/{revision} in S3."""
    if layout.is_commit_id(revision):
        return revision
    key = layout.ref_key(prefix, repo_id, revision)
    commit = read_object(s3, bucket, key).decode("utf-8", "replace").strip()
    if not layout.is_commit_id(commit):
        raise ManifestError(f"s3://{bucket}/{key} holds {commit[:60]!r}, not a 40-hex commit id; re-publish")
    return commit


def check_manifest(manifest: Manifest, repo_id: str, commit: str, prefix: str) -> Manifest:
    """Refuse a manifest that describes another repo, commit or prefix than the one asked for."""
    if manifest.repo_id != repo_id or manifest.commit != commit:
        raise ManifestError(
            f"manifest for {repo_id}@{commit} describes {manifest.repo_id}@{manifest.commit}; re-publish"
        )
    expected_prefix = layout.snapshot_prefix(prefix, repo_id, commit)
    if manifest.prefix != expected_prefix:
        raise ManifestError(
            f"manifest for {repo_id}@{commit} has prefix {manifest.prefix!r}, expected {expected_prefix!r}; "
            "check MODEL_CACHE_PREFIX"
        )
    return manifest


def manifest_from_s3(s3: Any, bucket: str, prefix: str, repo_id: str, revision: str) -> Manifest:
    """Resolve `revision` and read, validate and check its manifest, all from S3 (no local cache)."""
    commit = resolve_commit(s3, bucket, prefix, repo_id, revision)
    key = layout.manifest_key(prefix, repo_id, commit)
    body = read_object(s3, bucket, key)
    return check_manifest(parse_manifest(body, source=f"s3://{bucket}/{key}"), repo_id, commit, prefix)


class _Pull:
    """One pull: the resolved options and the steps. `pull()` is the public face."""

    def __init__(
        self,
        repo_id: str,
        revision: str,
        *,
        bucket: str | None,
        prefix: str,
        cache_dir: Path,
        fallback: str,
        verify: str,
        concurrency: int,
        part_size: int | None,
        request_on_miss: bool,
        request_queue_url: str | None,
        s3_client: Any,
        progress: Progress | None,
        use_cache: bool,
        hub_deadline: float,
    ) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.bucket = bucket
        self.prefix = prefix
        self.fallback = fallback
        self.verify = verify
        self.concurrency = concurrency
        self.part_size = part_size
        self.request_on_miss = request_on_miss
        self.request_queue_url = request_queue_url
        self._s3 = s3_client
        self.progress = progress
        self.use_cache = use_cache
        self.hub_deadline = hub_deadline
        self.cache = RepoCache(cache_dir, repo_id)
        self.started = time.monotonic()
        # What S3 told us before a miss: the fallback fetches exactly this commit, and checks every
        # byte against this manifest, so a pod that falls back gets what pods on S3 get.
        self.commit: str | None = None
        self.manifest: tuple[Manifest, bytes] | None = None

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = make_s3_client(self.concurrency)
        return self._s3

    def run(self) -> PullResult:
        if not self.use_cache:
            return self._from_hub("USE_MODEL_CACHE=false", request=False)
        if self.bucket is None:
            return self._miss(
                NotCachedError(f"no cache bucket configured for region {_region()!r} (MODEL_CACHE_BUCKET)")
            )
        try:
            commit = self.commit = self._resolve_commit()
            manifest, body = self.manifest = self._manifest(commit)
        except NotCachedError as exc:
            return self._miss(exc)
        except AccessError as exc:
            if not isinstance(exc, S3UnavailableError) and self.fallback != "always":
                # Not an outage: a setup to fix. A silent Hub download would hide it on every pod.
                raise
            local = self._local_when_s3_is_down(exc)
            return local if local is not None else self._miss(exc)
        try:
            return self._from_s3(manifest, body)
        except (AccessError, NotCachedError, IntegrityError) as exc:
            # S3 went away, an object the manifest names is gone, or S3 kept serving bytes that do
            # not match the manifest (after retries and one fresh download): nothing wrong was kept,
            # what was fetched stays resumable, and the Hub can still serve the model.
            return self._miss(exc)

    # ---- S3 metadata ---------------------------------------------------------------------------

    def _get(self, key: str) -> bytes:
        assert self.bucket is not None
        return read_object(self.s3, self.bucket, key)

    def _resolve_commit(self) -> str:
        assert self.bucket is not None
        return resolve_commit(self.s3, self.bucket, self.prefix, self.repo_id, self.revision)

    def _manifest(self, commit: str) -> tuple[Manifest, bytes]:
        # A manifest changes only by growing into a superset (docs/architecture.md 3.2), and only one written
        # for a narrow selection has files to gain, so a local copy of any other needs no S3 read.
        local = self.cache.local_manifest(commit)
        if local is not None:
            try:
                checked = self._checked(parse_manifest(local, source=f"(local copy of {commit})"), commit)
            except ManifestError:
                log.warning("local copy of manifest %s is unusable; reading it from S3 again", commit)
            else:
                if not _narrow(checked):
                    return checked, local
                log.info("local copy of manifest %s was written for a narrow selection; reading it again", commit)
        key = layout.manifest_key(self.prefix, self.repo_id, commit)
        body = self._get(key)
        return self._checked(parse_manifest(body, source=f"s3://{self.bucket}/{key}"), commit), body

    def _checked(self, manifest: Manifest, commit: str) -> Manifest:
        return check_manifest(manifest, self.repo_id, commit, self.prefix)

    # ---- outcomes ------------------------------------------------------------------------------

    def _from_s3(self, manifest: Manifest, body: bytes) -> PullResult:
        rehash = self.verify == "sha256-local"
        trust_size = self.verify in ("size", "none")
        accept = self._accepted_checks()
        if not rehash and self.cache.snapshot_complete(manifest, trust_size=trust_size, accept=accept):
            return self._local(manifest, body, reason=None)
        with self.cache.locked():
            # Another process may have pulled it while we waited for the lock.
            if not rehash and self.cache.snapshot_complete(manifest, trust_size=trust_size, accept=accept):
                return self._local(manifest, body, reason="pulled by another process")
            missing = self.cache.missing_files(manifest, rehash=rehash, trust_size=trust_size, accept=accept)
            downloaded = 0
            if missing:
                downloaded = self._download(missing, manifest_bucket=manifest.raw.get("bucket"))
            self.cache.link_snapshot(manifest)
            self.cache.save_manifest(manifest.commit, body)
            self.cache.write_ref(self.revision, manifest.commit)
        source: Source = "s3" if missing else "local"
        return self._result(
            self.cache.snapshot_dir(manifest.commit), source, manifest.commit, downloaded, len(manifest.files), None
        )

    def _accepted_checks(self) -> tuple[str, ...]:
        """The verified markers that count: asked for sha256, a blob checked only by its CRC is
        hashed again (locally, not downloaded) before it is trusted; any digest otherwise."""
        return ("sha256",) if self.verify == "sha256" else DIGEST_CHECKS

    def _download(self, missing: list[ManifestFile], *, manifest_bucket: object) -> int:
        assert self.bucket is not None
        jobs = {}
        # A manifest's version ids are its own bucket's; a replica (another region's bucket) is read
        # at its current versions, which only replication writes.
        own_bucket = manifest_bucket == self.bucket
        for entry in missing:
            name = entry.blob_name
            if name not in jobs:
                jobs[name] = make_job(entry, self.cache, pin_version=own_bucket)
        downloader = Downloader(
            self.s3,
            self.bucket,
            concurrency=self.concurrency,
            part_size=self.part_size,
            verify="sha256" if self.verify == "sha256-local" else self.verify,
            progress=self.progress,
        )
        return downloader.run(list(jobs.values()))

    def _local(self, manifest: Manifest, body: bytes, reason: str | None) -> PullResult:
        if self.cache.local_manifest(manifest.commit) is None:
            self.cache.save_manifest(manifest.commit, body)
        self.cache.write_ref(self.revision, manifest.commit)
        return self._result(
            self.cache.snapshot_dir(manifest.commit), "local", manifest.commit, 0, len(manifest.files), reason
        )

    def _local_when_s3_is_down(self, exc: LoaderError) -> PullResult | None:
        """S3 unreachable, but this revision was pulled before and is complete on disk: use it."""
        commit = self.revision if layout.is_commit_id(self.revision) else self.cache.read_ref(self.revision)
        if commit is None:
            return None
        body = self.cache.local_manifest(commit)
        if body is None:
            return None
        try:
            manifest = self._checked(parse_manifest(body, source=f"(local copy of {commit})"), commit)
        except ManifestError:
            return None
        if not self.cache.snapshot_complete(
            manifest, trust_size=self.verify in ("size", "none"), accept=self._accepted_checks()
        ):
            return None
        reason = f"S3 unavailable, using the snapshot already on disk: {exc}"
        log.warning("%s", reason)
        return self._result(self.cache.snapshot_dir(commit), "local", commit, 0, len(manifest.files), reason)

    def _miss(self, exc: LoaderError) -> PullResult:
        if self.fallback == "error":
            raise exc
        if self.manifest is not None:
            self._discard_partial(self.manifest[0])
        return self._from_hub(str(exc), request=True)

    def _discard_partial(self, manifest: Manifest) -> None:
        """Free what the failed S3 attempt allocated (each missing blob's pre-allocated temporary
        file and journal) before the Hub is asked for the same bytes: kept, the cache would hold the
        model twice and a volume sized for it once could not finish the fallback. Under the lock, so
        a download another process is running into those files is never cut from under it."""
        with self.cache.locked():
            for entry in manifest.files:
                self.cache.discard(entry.blob_name)

    def _from_hub(self, reason: str, *, request: bool) -> PullResult:
        log.warning("%s@%s from the Hugging Face Hub: %s", self.repo_id, self.revision, reason)
        if request and (self.request_on_miss or self.request_queue_url):
            fallback_mod.send_cache_request(self.repo_id, self.revision, self.request_queue_url)
        if self.manifest is not None:
            manifest, body = self.manifest
            downloaded = fallback_mod.hub_manifest_files(
                manifest, body, self.cache, revision=self.revision, deadline=self.hub_deadline
            )
            path = self.cache.snapshot_dir(manifest.commit)
            return self._result(path, "hub", manifest.commit, downloaded, len(manifest.files), reason)
        # No manifest to check against: huggingface_hub's own checks and the commit S3 resolved (if
        # any) are the floor. huggingface_hub takes its own locks; ours is not held across the Hub.
        pinned = self.commit or self.revision
        path, commit, downloaded, files = fallback_mod.hub_snapshot(
            self.repo_id, pinned, self.cache, deadline=self.hub_deadline
        )
        if pinned != self.revision and commit == pinned:
            with self.cache.locked():
                self.cache.write_ref(self.revision, commit)
        return self._result(path, "hub", commit, downloaded, files, reason)

    def _result(
        self, path: Path, source: Source, commit: str, downloaded: int, files: int, reason: str | None
    ) -> PullResult:
        return PullResult(
            path=path,
            source=source,
            commit=commit,
            bytes_downloaded=downloaded,
            seconds=time.monotonic() - self.started,
            files=files,
            reason=reason,
        )


def _narrow(manifest: Manifest) -> bool:
    """Written for an include/exclude selection: a later request may have added files to it."""
    selection = manifest.raw.get("selection")
    return isinstance(selection, dict) and bool(selection.get("include") or selection.get("exclude"))


def usable_cache_dir(path: Path) -> Path:
    """The cache directory, checked before S3 or the Hub is asked anything: it, or the nearest
    ancestor that exists, must be a directory this process can write. Nothing is created here, so a
    pull refused later (a bad manifest) leaves no trace; the directories are made when a file lands."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(
            f"cannot use the Hugging Face cache at {path}: {existing} is not a directory; point HF_HUB_CACHE "
            "(or --cache-dir) at a directory this process can create and write"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "is not writable" if existing == path else f"cannot be created in {existing} (not writable)"
        raise UsageError(f"the Hugging Face cache at {path} {where}: point HF_HUB_CACHE (or --cache-dir) elsewhere")
    return path


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def pull(
    repo_id: str | None = None,
    revision: str = layout.DEFAULT_REVISION,
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    cache_dir: str | Path | None = None,
    fallback: Literal["hub", "error", "always"] = "hub",
    verify: Literal["auto", "sha256", "crc64nvme", "size", "none", "sha256-local"] = "auto",
    concurrency: int = DEFAULT_CONCURRENCY,
    part_size: int | None = None,
    request_on_miss: bool = False,
    request_queue_url: str | None = None,
    s3_client: Any = None,
    emit_emf: bool | None = None,
    progress: Progress | None = None,
    hub_deadline: float | None = None,
) -> PullResult:
    """Put `repo_id` at `revision` into the local Hugging Face cache and return where it is.

    `repo_id` may be 'org/name@rev' and defaults to MODEL_ID. `bucket` defaults to
    MODEL_CACHE_BUCKET (a name, or 'region=bucket,...' resolved with AWS_REGION), `prefix` to
    MODEL_CACHE_PREFIX or 'models', `cache_dir` to HF_HUB_CACHE / HF_HOME/hub. USE_MODEL_CACHE=false
    goes straight to the Hub. On a miss, or with S3 unavailable, fallback='hub' downloads
    from the Hub (a wrong setup - no bucket, access denied, no credentials - raises AccessError unless
    fallback='always') (and, with request_on_miss or MODEL_CACHE_REQUEST_QUEUE_URL, asks the pipeline to
    cache the model); fallback='error' raises. The fallback fetches the commit S3 resolved and
    checks every file against its manifest when S3 had one; it gives up after `hub_deadline`
    seconds (MODEL_CACHE_HUB_DEADLINE, one hour by default). Raises LoaderError subclasses naming the fix.
    """
    started = time.monotonic()
    ref_text = repo_id if repo_id is not None else os.environ.get("MODEL_ID", "")
    if not ref_text:
        raise UsageError("no model given: pass repo_id or set MODEL_ID")
    name, sep, pinned = ref_text.strip().partition("@")
    if sep and revision not in (layout.DEFAULT_REVISION, pinned):
        raise UsageError(f"{ref_text!r} pins revision {pinned!r} but revision={revision!r} was also given")
    name, revision = layout.parse_repo_ref(ref_text, default_revision=revision)
    if fallback not in FALLBACK_CHOICES:
        raise UsageError(f"fallback must be one of {FALLBACK_CHOICES}, got {fallback!r}")
    if verify not in VERIFY_CHOICES:
        raise UsageError(f"verify must be one of {VERIFY_CHOICES}, got {verify!r}")
    _positive("concurrency", concurrency)
    if part_size is not None:
        _positive("part_size", part_size, MIN_PART_SIZE)
    queue_url = request_queue_url or os.environ.get(fallback_mod.REQUEST_QUEUE_ENV) or None
    job = _Pull(
        name,
        revision,
        bucket=select_bucket(bucket if bucket is not None else os.environ.get("MODEL_CACHE_BUCKET"), _region()),
        prefix=prefix if prefix is not None else os.environ.get("MODEL_CACHE_PREFIX", layout.DEFAULT_PREFIX),
        cache_dir=usable_cache_dir(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()),
        fallback=fallback,
        verify=verify,
        concurrency=concurrency,
        part_size=part_size,
        request_on_miss=request_on_miss,
        request_queue_url=queue_url,
        s3_client=s3_client,
        progress=progress,
        use_cache=os.environ.get("USE_MODEL_CACHE", "true").strip().lower() not in _FALSE,
        hub_deadline=fallback_mod.hub_deadline(hub_deadline),
    )
    job.started = started
    try:
        result = job.run()
    except LoaderError as exc:
        metrics.record(
            repo_id=name,
            revision=revision,
            commit=None,
            source="error",
            bytes_downloaded=0,
            seconds=time.monotonic() - started,
            files=0,
            reason=f"{type(exc).__name__}: {exc}",
            emit_emf=emit_emf,
        )
        raise
    metrics.record(
        repo_id=name,
        revision=revision,
        commit=result.commit,
        source=result.source,
        bytes_downloaded=result.bytes_downloaded,
        seconds=result.seconds,
        files=result.files,
        reason=result.reason,
        emit_emf=emit_emf,
    )
    return result


def resolve_model(
    repo_id: str | None = None,
    revision: str = layout.DEFAULT_REVISION,
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    cache_dir: str | Path | None = None,
    fallback: Literal["hub", "error", "always"] = "hub",
    **options: Any,
) -> Path:
    """The local snapshot directory of `repo_id` at `revision`, for from_pretrained / vLLM (see `pull`)."""
    return pull(repo_id, revision, bucket=bucket, prefix=prefix, cache_dir=cache_dir, fallback=fallback, **options).path
