"""Other areas' test helpers the corpus reuses: the request handler loader and the S3 publisher."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

from conftest import REPO_ROOT


def shared_test_module(name: str, relative_path: str) -> ModuleType:
    """A helper module of another test area, imported once under its own name (shared with that area)."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / relative_path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def handler_module(folder: str) -> ModuleType:
    """functions/<folder>/app.py, loaded as the pipeline's harness loads it."""
    harness = shared_test_module("sfn_harness", "tests/pipeline/sfn_harness.py")
    module: ModuleType = harness.load_handler_module(folder)
    return module


def _loader_seed() -> ModuleType:
    return shared_test_module("loader_seed", "tests/loader/loader_seed.py")


def seed_snapshot(s3: Any, bucket: str, repo_id: str, files: dict[str, bytes], **options: Any) -> Any:
    return _loader_seed().seed_snapshot(s3, bucket, repo_id, files, **options)


def build_manifest(
    bucket: str, prefix: str, repo_id: str, revision: str, commit: str, files: dict[str, bytes]
) -> dict[str, Any]:
    manifest: dict[str, Any] = _loader_seed().build_manifest(bucket, prefix, repo_id, revision, commit, files)
    return manifest
