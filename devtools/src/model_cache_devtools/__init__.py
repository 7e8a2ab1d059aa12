"""The offline world s3-model-cache runs in: the Hub double, S3's authorization and faults in front of
moto, the local pipeline, the model generator, `make demo` (docs/contributing/devtools.md). A package of
its own, installed only with the development environment; the core and the loader never import it."""
