"""The S3 layout contract (docs/architecture.md 3.1)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from model_cache.contract import layout

pytestmark = pytest.mark.unit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_keys_for_an_org_repo() -> None:
    repo = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert layout.repo_slug(repo) == "TinyLlama--TinyLlama-1.1B-Chat-v1.0"
    assert (
        layout.snapshot_prefix("models", repo, COMMIT)
        == f"models/TinyLlama--TinyLlama-1.1B-Chat-v1.0/snapshots/{COMMIT}/"
    )
    assert layout.file_key("models", repo, COMMIT, "a/b.json").endswith(f"/snapshots/{COMMIT}/a/b.json")
    assert (
        layout.hash_key("models", repo, COMMIT) == f"models/TinyLlama--TinyLlama-1.1B-Chat-v1.0/snapshots/{COMMIT}/hash"
    )
    assert (
        layout.manifest_key("models", repo, COMMIT)
        == f"models/TinyLlama--TinyLlama-1.1B-Chat-v1.0/manifests/{COMMIT}.json"
    )
    assert layout.ref_key("models", repo, "main") == "models/TinyLlama--TinyLlama-1.1B-Chat-v1.0/refs/main"
    assert layout.root_manifest_key("models", repo) == "models/TinyLlama--TinyLlama-1.1B-Chat-v1.0/manifest.json"


def test_repo_without_org_and_custom_prefixes() -> None:
    assert layout.repo_slug("gpt2") == "gpt2"
    assert layout.root_manifest_key("", "gpt2") == "gpt2/manifest.json"
    assert layout.root_manifest_key("/cache/models/", "gpt2") == "cache/models/gpt2/manifest.json"


def test_slug_round_trip() -> None:
    for repo in ["microsoft/phi-2", "gpt2", "a/b.c_d"]:
        assert layout.repo_id_from_slug(layout.repo_slug(repo)) == repo


def test_the_work_area_keys_are_the_documented_ones() -> None:
    # GIVEN a work prefix given with slashes, a plan and a repo in a cache at the bucket's root
    work = layout.work_dir("/_model-cache-work/", "exec-1")
    claims = layout.claims_folder("_model-cache-work", "", "org/name", COMMIT)
    # WHEN every work-area key is built
    keys = [
        work,
        layout.plan_key(work),
        layout.units_key(work),
        layout.unit_result_key(work, 3),
        layout.completions_key(work),
        layout.completion_result_key(work, 12),
        layout.files_key(work),
        claims,
        layout.claim_key(claims, "exec-1"),
        layout.gc_marker_key(claims),
        layout.inflight_ledger_key("_model-cache-work/"),
        layout.tracked_key("_model-cache-work", "run-7"),
    ]
    # THEN they are the keys docs/contributing/internals.md lists, all under the work prefix
    assert keys == [
        "_model-cache-work/exec-1/",
        "_model-cache-work/exec-1/plan.json",
        "_model-cache-work/exec-1/units.json",
        "_model-cache-work/exec-1/units/000003.json",
        "_model-cache-work/exec-1/completions.json",
        "_model-cache-work/exec-1/completed/000012.json",
        "_model-cache-work/exec-1/files.json",
        f"_model-cache-work/claims/_root/org--name/{COMMIT}/",
        f"_model-cache-work/claims/_root/org--name/{COMMIT}/exec-1.json",
        f"_model-cache-work/claims/_root/org--name/{COMMIT}/gc.json",
        "_model-cache-work/requests/in-flight.json",
        "_model-cache-work/refresh/run-7/tracked.json",
    ]
    assert all(key.startswith(layout.claims_root("_model-cache-work")) for key in keys[7:10])


# An f-string that joins a computed folder and a layout word: a key built outside the layout module.
KEY_BUILT_HERE = re.compile(r"""f["'][^"'\n]*\}(?:snapshots|manifests|refs|claims|units|completed|refresh)/""")


def keys_built_outside_layout(core: Path) -> list[str]:
    found = []
    for path in sorted(core.rglob("*.py")):
        if path.name == "layout.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if KEY_BUILT_HERE.search(line):
                found.append(f"{path.relative_to(core)}:{number}")
    return found


def test_every_key_of_the_core_is_built_in_the_layout_module() -> None:
    # GIVEN the core package
    core = Path(layout.__file__).resolve().parents[1]
    # WHEN its sources are searched for keys joined by hand
    # THEN there are none: snapshot, manifest, ref, work-area, claim and gc-mark keys all come from layout
    assert keys_built_outside_layout(core) == []


def test_a_key_built_by_hand_is_found(tmp_path: Path) -> None:
    # GIVEN a module that joins a repo's folder and "refs/" itself
    (tmp_path / "gc.py").write_text('refs = f"{repo_base}refs/"\nlabel = "refs/"\n')
    # WHEN the search runs THEN it names the line
    assert keys_built_outside_layout(tmp_path) == ["gc.py:1"]
