"""model-cache-loader: pull a cached Hugging Face model from S3 into the local HF cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from model_cache_loader.errors import (
    AccessError,
    HubFallbackError,
    IntegrityError,
    LoaderError,
    ManifestError,
    NotCachedError,
    S3UnavailableError,
    UsageError,
)

if TYPE_CHECKING:
    from model_cache_loader.api import PullResult, pull, resolve_model

__version__ = "0.1.0"

__all__ = [
    "AccessError",
    "HubFallbackError",
    "IntegrityError",
    "LoaderError",
    "ManifestError",
    "NotCachedError",
    "PullResult",
    "S3UnavailableError",
    "UsageError",
    "__version__",
    "pull",
    "resolve_model",
]

# The pull API (and with it the transfer engine, the Hub fallback and awscrt) loads on first use: the
# pipeline imports only the contract modules (layout, manifest), and a Lambda's cold start should not pay
# for the rest.
_LAZY = frozenset({"PullResult", "pull", "resolve_model"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from model_cache_loader import api

        return getattr(api, name)
    raise AttributeError(f"module 'model_cache_loader' has no attribute {name!r}")
