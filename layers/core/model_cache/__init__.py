"""s3-model-cache core: mirror Hugging Face Hub repos into S3, verified, and publish manifests."""

__version__ = "0.1.0"
