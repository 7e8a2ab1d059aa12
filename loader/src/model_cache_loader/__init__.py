"""model-cache-loader: pull a cached Hugging Face model from S3 into the local HF cache."""

from model_cache_loader.api import PullResult, pull, resolve_model
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
