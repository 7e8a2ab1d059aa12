"""Pipeline metrics for operations: bytes from the Hub vs copied inside S3 (copy-unit handler) and
failures by cause (cleanup handler), as the EMF documents Powertools prints for CloudWatch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ops_support import PART_SIZE, load_handler, make_repo, write_files

from model_cache.adapters.task_metrics import UNKNOWN_CAUSE, failure_cause
from model_cache.pipeline import steps
from model_cache.pipeline.engine import sync


def emf_documents(text: str) -> list[dict[str, Any]]:
    documents = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


def metric_values(documents: list[dict[str, Any]], name: str) -> list[tuple[float, dict[str, str]]]:
    """(value, dimensions) of every emission of metric `name`."""
    found = []
    for document in documents:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            if any(metric["Name"] == name for metric in directive["Metrics"]):
                dimensions = {dim: document[dim] for dims in directive["Dimensions"] for dim in dims}
                value = document[name]
                found.append((float(value[0] if isinstance(value, list) else value), dimensions))
    return found


@pytest.mark.unit
@pytest.mark.parametrize(
    ("error", "cause"),
    [
        ({"Error": "GatedRepo", "Cause": "the Hub refused ... (free text)"}, "GatedRepo"),
        ({"Error": "States.TaskFailed"}, "States.TaskFailed"),
        ({"Error": "weird name/with spaces"}, "weird_name_with_spaces"),
        ({"Error": "x" * 200}, "x" * 64),
        ({}, UNKNOWN_CAUSE),
        (None, UNKNOWN_CAUSE),
    ],
)
def test_the_cause_dimension_is_the_short_error_name_never_the_free_text(error: Any, cause: str) -> None:
    """GIVEN a state machine error  WHEN it becomes a dimension  THEN it is the sanitized Error name (bounded)."""
    assert failure_cause(error) == cause


@pytest.mark.integration
def test_cleanup_after_a_failure_counts_the_failure_under_its_cause(
    aws: Any, lambda_context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN the cleanup handler called on the Catch path of a GatedRepo failure (no plan was stored)
    WHEN it runs  THEN it emits ExecutionFailuresByCause = 1 with dimensions service and Cause=GatedRepo,
    and the free-text Cause appears in no metric."""
    handler = load_handler("cleanup")
    event = {"failed": True, "error": {"Error": "GatedRepo", "Cause": "secret-looking free text"}}

    handler.handler(event, lambda_context)

    documents = emf_documents(capsys.readouterr().out)
    emitted = metric_values(documents, "ExecutionFailuresByCause")
    assert emitted == [(1.0, {"service": "model-cache-test", "Cause": "GatedRepo"})]
    assert "secret-looking" not in json.dumps(documents)


@pytest.mark.integration
def test_copy_unit_reports_bytes_copied_inside_s3_apart_from_bytes_from_the_hub(
    hub: Any, hub_root: Path, s3: Any, bucket: str, lambda_context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a synced repo whose README changed, planned as a refresh
    WHEN the copy-unit handler runs each Map item  THEN the copy-from unit emits BytesCopiedInS3 = the reused
    bytes and BytesFromHub = 0, and the Hub unit emits BytesFromHub = the README's size."""
    repo_id = make_repo(hub_root)
    sync(repo_id, bucket=bucket, part_size=PART_SIZE, concurrency=2, s3=s3)
    readme = b"# changed for the metrics test\n"
    write_files(hub_root, repo_id, {"README.md": readme})
    planned = steps.plan({"repo_id": repo_id, "bucket": bucket, "options": {"part_size": PART_SIZE}}, s3=s3)
    handler = load_handler("copy_unit")
    capsys.readouterr()

    for item in planned["units"]:
        handler.handler(item, lambda_context)

    documents = emf_documents(capsys.readouterr().out)
    assert sorted(value for value, _ in metric_values(documents, "BytesCopiedInS3")) == [0.0, planned["reused_bytes"]]
    assert sorted(value for value, _ in metric_values(documents, "BytesFromHub")) == [0.0, float(len(readme))]
    steps.cleanup({**planned, "failed": True}, s3=s3)
