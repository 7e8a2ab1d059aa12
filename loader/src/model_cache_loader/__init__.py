"""model-cache-loader: pull a cached Hugging Face model from S3 into the local HF cache."""

__version__ = "0.1.0"
