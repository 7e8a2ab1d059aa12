"""Every sample event in events/ runs: through its handler, the Fargate copier, or the state machine.

The events are the ones `sam local invoke -e events/<name>.json` takes; here the Hub double serves the
repos they name (`microsoft/phi-2`, `TinyLlama/TinyLlama-1.1B-Chat-v1.0`, synthetic bytes of realistic
shape, small) and only the bucket is swapped for the test's own. The task events chain as the state
machine chains them: plan -> copy units (unit 3 by its event, unit 7 by the Fargate event through the
copier process) -> cleanup after a failure, then again plan -> units -> finalize -> publish -> cleanup
after success.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import EVENTS_DIR, LambdaContext, MotoEndpoint, incomplete_uploads, load_event, shared_test_module
from sfn_harness import Router, create_stack, executing_state_machines, install_routes, refresh_children

from model_cache.contract import layout
from model_cache.pipeline.plan import MiB
from model_cache_devtools.local_pipeline import load_function_module

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ops = shared_test_module("ops_support", "tests/operations/ops_support.py")
PHI = "microsoft/phi-2"
TINY = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
SAMPLE_EVENTS = sorted(path.name for path in EVENTS_DIR.glob("*.json"))


def phi_files() -> dict[str, bytes]:
    """With the plan event's options (5 MiB parts and units, Fargate from 24 MiB): the first shard is units
    0-3, the second 4-6, the huge file the Fargate unit 7, the small files unit 8."""
    return {
        "model-00001-of-00002.safetensors": ops.deterministic_bytes(20 * MiB, 71),
        "model-00002-of-00002.safetensors": ops.deterministic_bytes(15 * MiB, 72),
        "model-huge.safetensors": ops.deterministic_bytes(24 * MiB + 1, 73),
        "config.json": b'{"model_type": "phi"}\n',
        "tokenizer.json": b'{"version": "1.0"}\n',
    }


@pytest.fixture(scope="module")
def sample_repos(hub_root: Path) -> dict[str, bytes]:
    files = phi_files()
    ops.write_files(hub_root, PHI, files)
    ops.write_files(hub_root, TINY, {"config.json": b'{"model_type": "llama"}\n', "README.md": b"# tiny\n"})
    return files


def event(name: str, bucket: str) -> Any:
    loaded = load_event(name)
    if isinstance(loaded, dict) and "bucket" in loaded:
        loaded["bucket"] = bucket
    return loaded


def invoke(folder: str, payload: Any) -> Any:
    return load_function_module(folder).handler(payload, LambdaContext())


def run_copier(payload: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "model_cache.pipeline.copier", "--event", json.dumps(payload)]
    return subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=300, check=False)


def units_of(s3: Any, bucket: str, planned: dict[str, Any]) -> list[dict[str, Any]]:
    return list(json.loads(s3.get_object(Bucket=bucket, Key=planned["units_key"])["Body"].read()))


def test_the_task_events_run_through_their_handlers_in_pipeline_order(
    sample_repos: dict[str, bytes], hf_endpoint: str, s3: Any, bucket: str, manifest_schema: Any
) -> None:
    # GIVEN the plan event, run through the plan handler
    planned = invoke("plan", event("plan.json", bucket))
    units = units_of(s3, bucket, planned)
    unit_event, fargate_event = event("copy_unit.json", bucket), event("copy_unit_fargate.json", bucket)
    assert planned["plan_key"] == unit_event["plan_key"] == fargate_event["plan_key"]
    assert {k: units[3][k] for k in ("unit_id", "runner", "path")} == {
        k: unit_event[k] for k in ("unit_id", "runner", "path")
    }
    assert {k: units[7][k] for k in ("unit_id", "runner", "path")} == {
        k: fargate_event[k] for k in ("unit_id", "runner", "path")
    }
    # WHEN one unit is copied and the execution fails: the failure cleanup event
    invoke("copy_unit", unit_event)
    failed = invoke("cleanup", event("cleanup_after_failure.json", bucket))
    # THEN its uploads are aborted and its work files gone
    assert failed["aborted_uploads"] == 3
    assert incomplete_uploads(s3, bucket) == []

    # WHEN the same plan id runs again to the end: every unit, the Fargate one through the copier process
    planned = invoke("plan", event("plan.json", bucket))
    for item in units_of(s3, bucket, planned):
        if item["unit_id"] == 3:
            invoke("copy_unit", unit_event)
        elif item["unit_id"] == 7:
            copied = run_copier(fargate_event)
            assert copied.returncode == 0, copied.stderr[-2000:]
        else:
            invoke("copy_unit", item)
    # the split shard's completion through its sample event, the other multipart files through theirs
    complete_event = event("complete_file.json", bucket)
    completions = json.loads(s3.get_object(Bucket=bucket, Key=planned["completions_key"])["Body"].read())
    assert complete_event in completions
    for item in completions:
        completed = invoke("finalize", item)
        # the shards are split over units, so read back; the Fargate unit hashed the huge file whole
        assert completed["read_back"] == item["path"].startswith("model-0000"), item
    verified = invoke("finalize", event("finalize.json", bucket))
    published = invoke("publish", event("publish.json", bucket))
    cleaned = invoke("cleanup", event("cleanup_after_success.json", bucket))

    # THEN the model is published byte for byte, with a valid manifest, and nothing is left open
    assert verified["files"] == published["files"] == len(sample_repos)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=published["manifest_key"])["Body"].read())
    jsonschema.validate(manifest, manifest_schema)
    for entry in manifest["files"]:
        body = s3.get_object(Bucket=bucket, Key=entry["key"], VersionId=entry["version_id"])["Body"].read()
        assert body == sample_repos[entry["path"]], entry["path"]
    assert cleaned["deleted_work_files"] > 0
    assert incomplete_uploads(s3, bucket) == []


@pytest.fixture
def router(aws: MotoEndpoint, hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    with executing_state_machines(aws):
        yield install_routes(monkeypatch, aws)


def test_the_state_machine_and_schedule_events_run(
    sample_repos: dict[str, bytes], router: Router, aws: MotoEndpoint, s3: Any, bucket: str
) -> None:
    # GIVEN the stack in moto, its state machine the very ASL we deploy
    stack = create_stack(aws, router, bucket)
    # WHEN the two request events start executions
    full = stack.run(event("statemachine_request.json", bucket))
    minimal = stack.run(event("statemachine_request_minimal.json", bucket))
    # THEN both publish their model
    assert full["status"] == "SUCCEEDED", full.get("cause")
    assert minimal["status"] == "SUCCEEDED", minimal.get("cause")
    for repo_id in (PHI, TINY):
        s3.head_object(Bucket=bucket, Key=layout.root_manifest_key("models", repo_id))
    # WHEN the tracked-models event lists what the bucket holds, and the schedule event refreshes it
    tracked = invoke("tracked_models", event("tracked_models.json", bucket))
    refreshed = stack.run(event("schedule_refresh.json", bucket))
    # THEN both models are tracked and refreshed (nothing moved: no copy)
    listed = json.loads(s3.get_object(Bucket=bucket, Key=tracked["items_key"])["Body"].read())
    assert {model["repo_id"] for model in listed} >= {PHI, TINY}
    assert tracked["count"] == len(listed)
    assert refreshed["status"] == "SUCCEEDED", refreshed.get("cause")
    assert sorted(refresh_children(stack).values()) == sorted([(PHI, "SUCCEEDED"), (TINY, "SUCCEEDED")])
    # WHEN the gc dry-run event runs  THEN it decides for the model and deletes nothing
    before = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"])
    report = invoke("gc", event("gc_dry_run.json", bucket))
    assert report["status"] == "dry_run"
    assert sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]) == before


def test_every_sample_event_is_executed_by_a_test() -> None:
    """Each file in events/ is loaded by some test to be run (through a handler, the copier or the state
    machine): this module's tests, and the request handler and gc tests for sqs_requests / gc_schedule."""
    sources = "\n".join(path.read_text() for path in (EVENTS_DIR.parent / "tests").rglob("test_*.py"))
    unused = [name for name in SAMPLE_EVENTS if f'event("{name}"' not in sources]
    assert unused == []
