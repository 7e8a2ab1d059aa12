"""Which models a scheduled refresh covers: the TrackedModels parameter plus every cached repo and ref."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import REPO_ROOT, LambdaContext

from model_cache.contract.errors import InvalidRequest
from model_cache.pipeline.request_message import parse_request
from model_cache.pipeline.tracked import parse_tracked, tracked_models
from model_cache_devtools.local_pipeline import load_function_module

SEED_MODELS = (
    "microsoft/DialoGPT-medium,microsoft/phi-2,TinyLlama/TinyLlama-1.1B-Chat-v1.0,"
    "mistralai/Mistral-7B-Instruct-v0.2,meta-llama/Llama-2-7b-chat-hf"
)


@pytest.mark.unit
def test_the_template_default_parses_to_the_seeds_five_models_at_main() -> None:
    requests = parse_tracked(SEED_MODELS + ", ,")
    assert [(r.repo_id, r.revision) for r in requests] == [
        ("microsoft/DialoGPT-medium", "main"),
        ("microsoft/phi-2", "main"),
        ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "main"),
        ("mistralai/Mistral-7B-Instruct-v0.2", "main"),
        ("meta-llama/Llama-2-7b-chat-hf", "main"),
    ]
    assert {r.requested_by for r in requests} == {"schedule"}


@pytest.mark.unit
def test_a_bad_tracked_entry_is_named() -> None:
    with pytest.raises(InvalidRequest, match="not a Hub model id"):
        parse_tracked("org/ok,org/not--ok")


@pytest.mark.integration
def test_cached_repos_and_refs_join_the_configured_list_once(s3: Any, bucket: str) -> None:
    # GIVEN a bucket with two cached repos (one with a tag ref too) and a stray top-level key
    for key in (
        "models/org--cached/refs/main",
        "models/org--cached/refs/v1.0",
        "models/gpt2/refs/main",
        "models/gpt2/manifest.json",
        "models/not--a--repo--folder/refs/main",
        "models/README.txt",
        "other-prefix/org--elsewhere/refs/main",
    ):
        s3.put_object(Bucket=bucket, Key=key, Body=b"0" * 40)
    # WHEN the tracked list is built with one configured model that is also cached
    models = tracked_models(s3, bucket, "models", "org/cached, org/new@dev")
    # THEN configured ones come first, cached refs follow, nothing twice, strays ignored
    assert [(m["repo_id"], m["revision"]) for m in models] == [
        ("org/cached", "main"),
        ("org/new", "dev"),
        ("gpt2", "main"),
        ("org/cached", "v1.0"),
    ]
    assert all(m["include"] == [] and m["force"] is False for m in models)


def test_a_refresh_of_5000_tracked_pairs_keeps_every_state_small(
    aws: Any, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN 5,000 tracked (repo, ref) pairs  WHEN the ListTrackedModels task runs with the ASL's own payload
    THEN its result (which lands in the execution's state) is a few hundred bytes, the list is in S3 for the
    refresh's Distributed Map to read (5,000 valid state machine inputs), and that Map keeps no results, so the
    parent's state after it is as small: all far inside Step Functions' 256 KiB.
    (Failed on 94042d4: the task returned every pair inline, about 700 KB, and the inline Map collected results.)"""

    pairs = [f"org-{i % 97}/model-{i}@{'main' if i % 3 else 'v1.0'}" for i in range(5000)]
    monkeypatch.setenv("TRACKED_MODELS", ",".join(pairs))
    asl = json.loads((REPO_ROOT / "statemachine" / "model_cache.asl.json").read_text())
    payload = dict(asl["States"]["ListTrackedModels"]["Parameters"]["Payload"])
    event = {"bucket": bucket, "prefix": "models", "work_prefix": "_model-cache-work", "run_id": "refresh-5000"}
    assert {name.removesuffix(".$") for name in payload} == {*event, "refresh"}

    result = load_function_module("tracked_models").handler(
        {**event, "refresh": {"source": "schedule"}}, LambdaContext()
    )

    assert len(json.dumps(result)) < 512
    assert result["count"] == 5000
    listed = json.loads(s3.get_object(Bucket=bucket, Key=result["items_key"])["Body"].read())
    assert len(listed) == 5000
    assert all(parse_request(item).repo_id == item["repo_id"] for item in listed)
    refresh = asl["States"]["RefreshEachModel"]
    assert refresh["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert refresh["ItemReader"]["Parameters"] == {"Bucket.$": "$.tracked.bucket", "Key.$": "$.tracked.items_key"}
    assert refresh["ResultPath"] is None
    parent_state = {"refresh": {"source": "schedule"}, "tracked": result}
    assert len(json.dumps(parent_state)) < 1024
    assert max(len(json.dumps(item)) for item in listed) < 1024  # one Map item, far under the 256 KiB limit
