"""Concurrency and load: a burst of 200 requests for 5 models, and a 2,000-file repo through the very
state machine in moto's Step Functions engine, against Step Functions' payload and history limits.

The figures (plan and work-file sizes, the largest state payload, history length, executions
started) go to docs/explanation/reliability.md between `<!-- load:begin -->` and `<!-- load:end -->`.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import REGION, REPO_ROOT, LambdaContext, MotoEndpoint, shared_test_module
from reliability_support import SEED, check_bucket, figures_wanted

from model_cache.pipeline import steps
from model_cache.pipeline.request_message import parse_request
from model_cache_devtools import modelgen
from model_cache_devtools.hub import HubServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WIDE = "load-org/wide"
WIDE_FILES = 2000
STATE_PAYLOAD_LIMIT = 256 * 1024  # bytes of one state input or output
HISTORY_LIMIT = 25_000  # events of one execution
DOC = REPO_ROOT / "docs" / "explanation" / "reliability.md"
harness = shared_test_module("sfn_harness", "tests/pipeline/sfn_harness.py")


def write_figures(rows: dict[str, str]) -> None:
    """Merge `rows` (figure -> value) into the load section of docs/explanation/reliability.md, when asked."""
    if not figures_wanted():
        return
    begin, end = "<!-- load:begin -->", "<!-- load:end -->"
    text = DOC.read_text()
    if begin not in text:
        text = text.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    block, tail = rest.split(end, 1)
    figures: dict[str, str] = {}
    for line in block.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("figure", "---"):
            figures[cells[0]] = cells[1]
    figures.update(rows)
    table = "\n".join(["| figure | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in figures.items())])
    DOC.write_text(f"{head}{begin}\n{table}\n{end}{tail}")


# ---------------------------------------------------------------------------------------------
# 200 requests, 5 models
# ---------------------------------------------------------------------------------------------

MODELS = (modelgen.TINY_MODEL, modelgen.NESTED, modelgen.MULTI_FORMAT, modelgen.NO_ORG, modelgen.BIN_ONLY)


def burst_bodies(hub: Any, rng: random.Random, count: int) -> list[str]:
    """`count` SQS bodies over the 5 fixture models: bare ids, id@main, id@<commit>, JSON with and
    without an include list, in a seeded random mix (so most are duplicates of a few requests)."""
    bodies: list[str] = []
    for _ in range(count):
        repo = rng.choice(MODELS)
        commit = hub.store.snapshot(repo).commit
        shape = rng.randrange(5)
        if shape == 0:
            bodies.append(repo)
        elif shape == 1:
            bodies.append(f"{repo}@main")
        elif shape == 2:
            bodies.append(f"{repo}@{commit}")
        elif shape == 3:
            bodies.append(json.dumps({"repo_id": repo, "revision": "main", "requested_by": f"team-{rng.randrange(9)}"}))
        else:
            bodies.append(json.dumps({"repo_id": repo, "include": ["*.json", "*.safetensors"]}))
    return bodies


@pytest.fixture
def request_pipeline(request_handler: tuple[Any, str], sqs: Any) -> tuple[Any, str, str]:
    """The request Lambda wired to a (non-executing) state machine in moto, and a real SQS queue."""
    module, arn = request_handler
    queue_url = sqs.create_queue(QueueName=f"burst-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    return module, arn, queue_url


def sqs_records(messages: list[dict[str, Any]], queue_url: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                # As the Lambda event source passes them: SQS's own attributes, SenderId included.
                "attributes": {
                    "ApproximateReceiveCount": message["Attributes"]["ApproximateReceiveCount"],
                    "SenderId": message["Attributes"]["SenderId"],
                },
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:{queue_url.rsplit('/', 1)[1]}",
                "awsRegion": REGION,
            }
            for message in messages
        ]
    }


def test_burst_of_200_requests_for_5_models_starts_each_distinct_request_once(
    hub: Any, s3: Any, bucket: str, sfn: Any, sqs: Any, request_pipeline: tuple[Any, str, str]
) -> None:
    """GIVEN 200 SQS messages naming 5 models (duplicates, bare ids, @main, @commit, JSON with and without
    an include list) WHEN the request Lambda drains the queue in batches of 10 THEN exactly one execution
    per distinct request exists, named deterministically; AND WHEN those executions run, each model's
    commit is copied once: every other execution of it finds it published and copies nothing."""
    module, arn, queue_url = request_pipeline
    bodies = burst_bodies(hub, random.Random(SEED + 61), 200)
    expected_at_start = {parse_request(body).execution_name() for body in bodies}
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])],
        )
    handled = 0
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
            "Messages", []
        )
        if not messages:
            break
        response = module.handler(sqs_records(messages, queue_url), LambdaContext())
        assert response["batchItemFailures"] == []
        sqs.delete_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in messages]
        )
        handled += len(messages)
    expected_at_end = {parse_request(body).execution_name() for body in bodies}
    executions = sfn.list_executions(stateMachineArn=arn, maxResults=1000)["executions"]
    names = [execution["name"] for execution in executions]

    assert handled == 200
    assert len(names) == len(set(names))
    assert set(names) in (expected_at_start, expected_at_end)  # the dedupe window may turn during the test

    # Run each distinct execution's input through the tasks, in the order they were started.
    hub.requests.clear()
    copied: dict[str, int] = {}
    for execution in sorted(executions, key=lambda e: e["startDate"]):
        request = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
        planned = steps.plan({**request, "bucket": bucket}, s3=s3)
        if planned["status"] == "planned":
            for item in planned["units"]:
                steps.copy_unit(item, s3=s3)
            steps.publish(steps.finalize(steps.complete_files(planned, s3=s3), s3=s3), s3=s3)
            steps.cleanup({**planned, "failed": False}, s3=s3)
            copied[request["repo_id"]] = copied.get(request["repo_id"], 0) + 1
    # A file's bytes come from one 200/206 answer (an LFS file's resolve answers 302 first).
    downloads = [r for r in hub.requests if r.endpoint in ("resolve", "cdn") and r.status in (200, 206)]
    downloaded = {(r.repo_id, r.file) for r in downloads}
    assert set(copied) == {parse_request(body).repo_id for body in bodies}
    # A narrow (include) request copied first does not seal the commit: a later whole-model request
    # copies the rest (docs/architecture.md 3.2), so a model may take two copy runs, never a file twice.
    assert all(count <= 2 for count in copied.values()), copied
    assert len(downloads) == len(downloaded), "no file was fetched from the Hub twice"
    state = check_bucket(s3, bucket)
    assert state.problems == []
    assert state.open_uploads == 0
    write_figures(
        {
            "burst: SQS messages": "200 (5 models; bare, @main, @commit, JSON, JSON+include)",
            "burst: executions started": f"{len(names)} (one per distinct request name)",
            "burst: copy runs": f"{sum(copied.values())} (per model commit: 1, or 2 after a narrow request)",
        }
    )


# ---------------------------------------------------------------------------------------------
# 2,000 files through the state machine
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    root = tmp_path_factory.mktemp("load-hub")
    modelgen.write_synthetic_repo(
        modelgen.repo_dir(root, WIDE),
        {f"shards/part-{index:05d}.json": (100 + index % 13, index) for index in range(WIDE_FILES)},
        small_files={"config.json": b'{"model_type": "llama"}\n'},
    )
    with HubServer(Path(root), rescan_interval=60.0) as server:
        server.warm()
        yield server


@pytest.fixture
def router(aws: MotoEndpoint, wide_hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("HF_ENDPOINT", wide_hub.url)
    with harness.executing_state_machines(aws):
        yield harness.install_routes(monkeypatch, aws)


def payloads(history: list[dict[str, Any]]) -> Iterator[tuple[str, int]]:
    """(event type, bytes) of every state input, output and task parameter string in a history."""
    for event in history:
        for key, details in event.items():
            if key.endswith("EventDetails") and isinstance(details, dict):
                for field in ("input", "output", "parameters"):
                    if isinstance(details.get(field), str):
                        yield f"{event['type']}.{field}", len(details[field].encode())


def test_2000_file_repo_runs_through_the_state_machine_within_step_functions_limits(
    router: Any, aws: MotoEndpoint, bucket: str, s3: Any, wide_hub: HubServer
) -> None:
    """GIVEN a repo of 2,001 small files WHEN it is requested through the state machine in moto's engine
    THEN it is published with all files verified; no state input/output exceeds 256 KB and the history
    stays far below 25,000 events, because the plan lives in S3 and the Map reads units.json."""
    stack = harness.create_stack(aws, router, bucket)
    started = time.monotonic()
    execution_arn = stack.start({"repo_id": WIDE})
    execution = stack.wait(execution_arn, deadline_seconds=600)
    seconds = time.monotonic() - started
    history = stack.history(execution_arn)
    assert execution["status"] == "SUCCEEDED", str(execution.get("cause"))[:500]

    sizes = list(payloads(history))
    largest_kind, largest = max(sizes, key=lambda item: item[1])
    plan_events = [e for e in history if e["type"] == "TaskSucceeded" and "plan.json" in json.dumps(e, default=str)]
    plan_result = json.loads(plan_events[0]["taskSucceededEventDetails"]["output"])["Payload"]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=plan_result["manifest_key"])["Body"].read())
    state = check_bucket(s3, bucket)

    assert len(manifest["files"]) == WIDE_FILES + 1
    assert state.problems == []
    assert state.open_uploads == 0
    assert largest <= STATE_PAYLOAD_LIMIT
    assert len(history) < HISTORY_LIMIT
    map_runs = [e for e in history if e["type"] == "MapRunStarted"]
    assert map_runs, "the units ran in a Distributed Map (child executions, each with its own history)"
    copies = router.calls("copy_unit")
    assert len(copies) == plan_result["unit_count"]

    # The plan itself is measured by planning the same repo again into a second bucket (the run's
    # work files are deleted by cleanup once it is published).
    other = f"load-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=other)
    replanned = steps.plan({"repo_id": WIDE, "bucket": other}, s3=s3)
    plan_bytes = len(s3.get_object(Bucket=other, Key=replanned["plan_key"])["Body"].read())
    units_bytes = len(s3.get_object(Bucket=other, Key=replanned["units_key"])["Body"].read())
    steps.cleanup({**replanned, "failed": True}, s3=s3)
    manifest_bytes = len(json.dumps(manifest))
    write_figures(
        {
            "2,000-file repo: files": f"{WIDE_FILES + 1}",
            "2,000-file repo: copy units (Lambda)": f"{len(copies)}",
            "2,000-file repo: plan.json in S3": f"{plan_bytes:,} B",
            "2,000-file repo: units.json in S3": f"{units_bytes:,} B",
            "2,000-file repo: plan task result (state)": f"{len(json.dumps(replanned)):,} B",
            "2,000-file repo: manifest": f"{manifest_bytes:,} B",
            "2,000-file repo: largest state payload": f"{largest:,} B ({largest_kind}; limit 262,144 B)",
            "2,000-file repo: parent history events": f"{len(history)} (limit 25,000)",
            "2,000-file repo: run in moto's engine": f"{seconds:.1f} s, {datetime.now(UTC):%Y-%m-%d}",
        }
    )
