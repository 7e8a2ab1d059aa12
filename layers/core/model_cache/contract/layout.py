"""Every key the core reads or writes: the S3 layout contract (docs/architecture.md 3.1) and the work area.

The keys of a snapshot, its manifests and refs are built by the loader's `model_cache_loader.layout`, the
contract's one owner: the pipeline that writes them and the pods that read them share one function for
each key, so they cannot drift. This module hands them to the core under their usual names, and builds
the keys only the pipeline uses, all under the work prefix (docs/contributing/internals.md, "Where the
work lives"): a plan's work files, the claims and gc's mark, the in-flight ledger, the tracked list.
"""

from __future__ import annotations

from model_cache_loader.layout import (
    DEFAULT_PREFIX,
    DEFAULT_REVISION,
    HASH_FILE,
    cache_base,
    file_key,
    hash_key,
    manifest_key,
    manifests_folder,
    ref_key,
    refs_folder,
    repo_id_from_slug,
    repo_prefix,
    repo_slug,
    root_manifest_key,
    snapshot_prefix,
    snapshots_folder,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_REVISION",
    "HASH_FILE",
    "cache_base",
    "file_key",
    "hash_key",
    "manifest_key",
    "manifests_folder",
    "ref_key",
    "refs_folder",
    "repo_id_from_slug",
    "repo_prefix",
    "repo_slug",
    "root_manifest_key",
    "snapshot_prefix",
    "snapshots_folder",
]

GC_MARKER = "gc.json"
INFLIGHT_LEDGER = "requests/in-flight.json"


def _work(work_prefix: str) -> str:
    return work_prefix.strip("/")


def work_dir(work_prefix: str, plan_id: str) -> str:
    """The folder of one plan's work files: `{work_prefix}/{plan_id}/`."""
    return f"{_work(work_prefix)}/{plan_id}/"


def plan_key(plan_work_dir: str) -> str:
    return f"{plan_work_dir}plan.json"


def units_key(plan_work_dir: str) -> str:
    """The Distributed Map's items: one per copy unit."""
    return f"{plan_work_dir}units.json"


def unit_results_folder(plan_work_dir: str) -> str:
    return f"{plan_work_dir}units/"


def unit_result_key(plan_work_dir: str, unit_id: int) -> str:
    """Zero-padded, so a listing returns the units in order."""
    return f"{unit_results_folder(plan_work_dir)}{unit_id:06d}.json"


def completions_key(plan_work_dir: str) -> str:
    """The CompleteFiles Map's items: one per multipart file."""
    return f"{plan_work_dir}completions.json"


def completion_results_folder(plan_work_dir: str) -> str:
    return f"{plan_work_dir}completed/"


def completion_result_key(plan_work_dir: str, file_index: int) -> str:
    return f"{completion_results_folder(plan_work_dir)}{file_index:06d}.json"


def files_key(plan_work_dir: str) -> str:
    return f"{plan_work_dir}files.json"


def claims_root(work_prefix: str) -> str:
    """Where every claim and gc mark lives: a plan's claim key must start with it."""
    return f"{_work(work_prefix)}/claims/"


def claims_folder(work_prefix: str, prefix: str, repo_id: str, commit: str) -> str:
    """The runs' claims on one snapshot and gc's mark on it: `{work_prefix}/claims/{cache}/{repo}/{commit}/`."""
    cache = prefix.strip("/") or "_root"
    return f"{claims_root(work_prefix)}{cache}/{repo_slug(repo_id)}/{commit}/"


def claim_key(folder: str, holder: str) -> str:
    return f"{folder}{holder}.json"


def gc_marker_key(folder: str) -> str:
    return f"{folder}{GC_MARKER}"


def inflight_ledger_key(work_prefix: str) -> str:
    """The request Lambdas' execution slots: one object, rewritten with conditional PUTs."""
    return f"{_work(work_prefix)}/{INFLIGHT_LEDGER}"


# The loader's releases, outside any cache prefix: what a RayService's py_modules names.
LOADER_RELEASE_PREFIX = "model-cache-loader"


def loader_release_keys(version: str) -> tuple[str, str]:
    """The wheel's key and the zip's (the same bytes, for Ray's py_modules) of one loader release."""
    stem = f"{LOADER_RELEASE_PREFIX}/{version}/model_cache_loader-{version}-py3-none-any"
    return f"{stem}.whl", f"{stem}.zip"


def tracked_key(work_prefix: str, run_id: str) -> str:
    """A scheduled refresh's list of models, the items of its Distributed Map."""
    return f"{_work(work_prefix)}/refresh/{run_id}/tracked.json"
