"""Incremental refresh through the very ASL in statemachine/, run by moto's Step Functions engine with the
real handlers (model_cache_devtools.local_pipeline routes Lambda to them in-process): the unchanged files
run as a `copy-from` unit on the Lambda branch, the ASL needs no change, and only the changed file comes
from the Hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import MotoEndpoint, incomplete_uploads
from ops_support import PART_SIZE, make_repo, manifest_at, read, ref_commit, write_files

from model_cache.contract import layout
from model_cache_devtools.local_pipeline import Router, create_stack, executing_state_machines, install_routes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def router(aws: MotoEndpoint, hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    with executing_state_machines(aws):
        yield install_routes(monkeypatch, aws)


def test_a_moved_branch_is_refreshed_by_the_state_machine_with_copy_from_units(
    router: Router, aws: MotoEndpoint, hub: Any, hub_root: Path, s3: Any, bucket: str, manifest_schema: Any
) -> None:
    """GIVEN a repo cached by one execution, whose README then changes at the Hub
    WHEN a second execution refreshes it
    THEN it succeeds; its copy-unit invocations include a `copy-from` item on the Lambda runner; the Hub sends
    only the README's bytes; the new manifest is valid, names the Hub's bytes, and refs/main moved."""
    repo_id = make_repo(hub_root)
    stack = create_stack(aws, router, bucket, part_size=PART_SIZE, unit_size=PART_SIZE)
    first = stack.run({"repo_id": repo_id})
    assert first["status"] == "SUCCEEDED", first.get("cause")
    old_commit = ref_commit(s3, bucket, repo_id)
    readme = b"# ops test repo, refreshed by the state machine\n"
    write_files(hub_root, repo_id, {"README.md": readme})
    hub.requests.clear()
    calls_before = len(router.calls("copy_unit"))

    second = stack.run({"repo_id": repo_id})

    assert second["status"] == "SUCCEEDED", second.get("cause")
    items = [call.event for call in router.calls("copy_unit")[calls_before:]]
    assert sorted((item["kind"], item["runner"]) for item in items) == [("copy-from", "lambda"), ("hub", "lambda")]
    sent = {
        record.file
        for record in hub.requests.matching(repo_id=repo_id, method="GET")
        if record.endpoint in ("resolve", "cdn") and record.status in (200, 206)
    }
    assert sent == {"README.md"}
    snapshot = hub.repo_info(repo_id)
    assert ref_commit(s3, bucket, repo_id) == snapshot.commit != old_commit
    manifest = manifest_at(s3, bucket, layout.manifest_key("models", repo_id, snapshot.commit))
    jsonschema.validate(manifest, manifest_schema)
    for entry in manifest["files"]:
        assert read(s3, bucket, entry["key"]) == hub.read_file(repo_id, entry["path"]), entry["path"]
    assert manifest_at(s3, bucket, layout.manifest_key("models", repo_id, old_commit))["commit"] == old_commit
    assert incomplete_uploads(s3, bucket) == []


def test_the_scheduled_refresh_keeps_a_narrow_request_narrow(
    router: Router, aws: MotoEndpoint, hub: Any, hub_root: Path, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a team's request for only `config.json` of a repo with a big weight, published, and then the repo's
    branch moves at the Hub  WHEN the schedule refreshes every cached model
    THEN the refresh plans the new commit with the request's selection: its manifest names `config.json` only and
    records the selection, and the Hub never sends the weight. (Failed before: the refresh re-planned every
    cached repo with the default selection and copied the whole repo.)"""
    monkeypatch.setenv("TRACKED_MODELS", "")
    repo_id = make_repo(hub_root)
    stack = create_stack(aws, router, bucket, part_size=PART_SIZE, unit_size=PART_SIZE)
    first = stack.run({"repo_id": repo_id, "include": ["config.json"]})
    assert first["status"] == "SUCCEEDED", first.get("cause")
    write_files(hub_root, repo_id, {"config.json": b'{"moved": true}\n'})
    hub.requests.clear()

    refresh = stack.run({"refresh": {"source": "schedule"}})

    assert refresh["status"] == "SUCCEEDED", refresh.get("cause")
    [child] = [call.event["request"] for call in router.calls("plan")[1:]]
    assert (child["repo_id"], child["include"], child["exclude"]) == (repo_id, ["config.json"], [])
    snapshot = hub.repo_info(repo_id)
    manifest = manifest_at(s3, bucket, layout.manifest_key("models", repo_id, snapshot.commit))
    assert [entry["path"] for entry in manifest["files"]] == ["config.json"]
    assert manifest["selection"] == {"include": ["config.json"], "exclude": []}
    fetched = {
        record.file
        for record in hub.requests.matching(repo_id=repo_id, method="GET")
        if record.endpoint in ("resolve", "cdn") and record.status in (200, 206)
    }
    assert fetched == {"config.json"}
