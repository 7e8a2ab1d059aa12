"""The loader's errors. Each message names the problem and the fix; `exit_code` is the CLI's.

Exit codes: the table both CLIs share (docs/reference/cli.md#exit-codes-both-clis): 0 ok, 1 unexpected,
2 usage or setup, 3 not cached, 4 integrity, 5 access (no bucket, denied, no credentials),
6 Hub fallback failed, 7 S3 unavailable after retries (try again), 130 interrupted.
"""

from __future__ import annotations


class LoaderError(Exception):
    """Base class: a problem the caller can act on."""

    exit_code = 1


class UsageError(LoaderError):
    """A repo id, revision, option or environment value that is not acceptable."""

    exit_code = 2


class NotCachedError(LoaderError):
    """The model (or this revision of it) is not in the S3 cache."""

    exit_code = 3


class ManifestError(LoaderError):
    """A manifest that fails the schema, names an unsafe path, or does not match what was asked."""

    exit_code = 4


class IntegrityError(LoaderError):
    """Downloaded bytes that do not match the manifest's size or sha256. Nothing of them is kept."""

    exit_code = 4


class CacheWriteError(LoaderError):
    """The local cache cannot be written (disk full, I/O error, read-only). Never a reason to fall back."""

    exit_code = 1


class AccessError(LoaderError):
    """The bucket does not exist, access is denied, or there are no credentials: a setup to fix."""

    exit_code = 5


class S3UnavailableError(AccessError):
    """S3 is unreachable or kept failing (5xx, throttling) after the retries: try again later. An
    AccessError too, so code that treats S3 as down either way keeps doing so."""

    exit_code = 7


class HubFallbackError(LoaderError):
    """The S3 cache missed and the Hugging Face Hub fallback failed too (or is not installed)."""

    exit_code = 6
