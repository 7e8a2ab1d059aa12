"""Which models a scheduled refresh covers: the TrackedModels parameter plus every cached repo and ref."""

from __future__ import annotations

from typing import Any

import pytest

from model_cache.errors import InvalidRequest
from model_cache.tracked import parse_tracked, tracked_models

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
