"""The loader's errors. Each message names the problem and the fix; `exit_code` is the CLI's.

Exit codes (documented in docs/loader.md): 0 ok, 1 unexpected, 2 usage, 3 not cached,
4 integrity, 5 access (S3 unreachable or denied), 6 Hub fallback failed.
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
    """S3 is unreachable, the bucket does not exist, or access is denied."""

    exit_code = 5


class HubFallbackError(LoaderError):
    """The S3 cache missed and the Hugging Face Hub fallback failed too (or is not installed)."""

    exit_code = 6
