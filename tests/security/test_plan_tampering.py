"""A plan.json that someone with write access to the work prefix altered can name no place a real plan would not.

Every task loads its plan from S3 (`work_files.load_plan`); `Plan.from_json` checks each field that names a bucket,
prefix, key or folder, so a tampered plan fails with InvalidRequest before any task acts on it, and cleanup
(which deletes the plan's work folder) deletes nothing else.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from model_cache.contract import errors, layout
from model_cache.pipeline import steps
from model_cache.pipeline.plan import Plan

pytestmark = pytest.mark.integration

COMMIT = "c" * 40


def real_plan() -> dict[str, Any]:
    key = layout.file_key("models", "org/model", COMMIT, "model.safetensors")
    return {
        "plan_id": "exec-1",
        "repo_id": "org/model",
        "revision": "main",
        "commit": COMMIT,
        "endpoint": "https://huggingface.co",
        "bucket": "model-cache-bucket",
        "prefix": "models",
        "work_prefix": "_model-cache-work",
        "options": None,
        "write_hash_file": True,
        "include": [],
        "exclude": [],
        "claim_key": f"_model-cache-work/claims/models/org--model/{COMMIT}/exec-1.json",
        "files": [
            {
                "path": "model.safetensors",
                "size": 10,
                "git_oid": "a" * 40,
                "lfs_sha256": "b" * 64,
                "key": key,
                "part_size": 16 * 1024 * 1024,
                "multipart": False,
                "upload_id": None,
            }
        ],
        "units": [
            {"unit_id": 0, "runner": "lambda", "kind": "hub", "bytes": 10, "items": [["model.safetensors", 1, 1]]}
        ],
    }


def with_file(**changes: Any) -> dict[str, Any]:
    plan = real_plan()
    plan["files"][0].update(changes)
    return plan


@pytest.mark.unit
@pytest.mark.parametrize(
    ("tampered", "names"),
    [
        pytest.param({**real_plan(), "work_prefix": "models"}, "under its work prefix", id="work prefix is the cache"),
        pytest.param({**real_plan(), "work_prefix": "../other"}, "not a safe S3 prefix", id="work prefix escapes"),
        pytest.param({**real_plan(), "plan_id": "../../models"}, "plan_id", id="plan id is a path"),
        pytest.param({**real_plan(), "prefix": "/models/"}, "not canonical", id="prefix not canonical"),
        pytest.param({**real_plan(), "commit": "main"}, "40-hex", id="commit is a branch"),
        pytest.param({**real_plan(), "bucket": "Other_Bucket"}, "bucket", id="bucket"),
        pytest.param({**real_plan(), "endpoint": "file:///etc"}, "http(s)", id="endpoint scheme"),
        pytest.param(
            {**real_plan(), "claim_key": "models/org--model/manifest.json"}, "claim", id="claim outside claims"
        ),
        pytest.param(
            with_file(key="models/other--repo/snapshots/" + COMMIT + "/model.safetensors"),
            "is not under",
            id="key of another repo",
        ),
        pytest.param(with_file(path="../escape"), "path", id="path escapes"),
        pytest.param(
            with_file(
                copy_from={
                    "key": "elsewhere/x",
                    "etag": '"e"',
                    "sha256": "b" * 64,
                    "crc64nvme": None,
                    "version_id": None,
                }
            ),
            "outside its repo",
            id="copy source outside the repo",
        ),
    ],
)
def test_a_tampered_plan_is_refused_with_the_field_it_names(tampered: dict[str, Any], names: str) -> None:
    """GIVEN a real plan with one field altered  THEN loading it fails with InvalidRequest naming the problem."""
    Plan.from_json(real_plan())  # the untouched plan loads
    with pytest.raises(errors.InvalidRequest, match=names.replace("(", r"\(").replace(")", r"\)")):
        Plan.from_json(tampered)


def test_cleanup_of_a_tampered_plan_deletes_nothing(s3: Any, bucket: str) -> None:
    """GIVEN a published-looking object in the cache and a plan.json rewritten so its work folder would be the
    cache prefix  WHEN the cleanup task runs on it  THEN it deletes nothing and reports a clean no-op."""
    cached = "models/org--model/manifest.json"
    s3.put_object(Bucket=bucket, Key=cached, Body=b"{}")
    tampered = {**real_plan(), "bucket": bucket, "work_prefix": "models", "plan_id": "org--model"}
    plan_key = "_model-cache-work/exec-1/plan.json"
    s3.put_object(Bucket=bucket, Key=plan_key, Body=json.dumps(tampered).encode())
    cleaned = steps.cleanup({"bucket": bucket, "plan_key": plan_key, "failed": True}, s3=s3)
    assert cleaned == {"status": "cleaned", "aborted_uploads": 0, "deleted_work_files": 0}
    assert s3.get_object(Bucket=bucket, Key=cached)["Body"].read() == b"{}"
