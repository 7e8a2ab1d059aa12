"""Gated models under their own prefix: the platform token's licence acceptance is not extended to every pod.

With `GatedPrefix` set, the plan puts a gated repo under it; the pods' read policy does not reach it, and only
the GatedReadOnlyPolicy output does. Run through the deployed ASL in moto's engine with the Hub double's gated repo.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from conftest import REGION, MotoEndpoint, shared_test_module, unique_name
from test_security_template import as_list, statements_of, sub_text, template

from model_cache.contract import layout
from model_cache_devtools import modelgen
from model_cache_devtools.local_pipeline import Router, create_stack, executing_state_machines

sfn_harness = shared_test_module("sfn_harness", "tests/pipeline/sfn_harness.py")
GATED_PREFIX = "gated-models"


@pytest.fixture
def router(aws: MotoEndpoint, hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    with executing_state_machines(aws):
        yield sfn_harness.install_routes(monkeypatch, aws)


@pytest.mark.e2e
def test_a_gated_repo_is_cached_under_the_gated_prefix_and_an_open_one_is_not(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN GatedPrefix set and the Hub token in its secret  WHEN the gated repo and an open repo are requested
    THEN the gated one is published under the gated prefix only, the open one under the cache prefix only."""
    secrets = boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws.url)
    arn = secrets.create_secret(Name=unique_name("hf-token"), SecretString=modelgen.GATED_TOKEN)["ARN"]
    monkeypatch.setenv("HF_TOKEN_SECRET_ARN", arn)
    monkeypatch.setenv("HF_TOKEN_CACHE_SECONDS", "0")
    stack = create_stack(aws, router, bucket, gated_prefix=GATED_PREFIX)
    gated = stack.run({"repo_id": modelgen.GATED})
    open_repo = stack.run({"repo_id": modelgen.TINY_MODEL})
    assert gated["status"] == open_repo["status"] == "SUCCEEDED", (gated.get("cause"), open_repo.get("cause"))
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    gated_slug, open_slug = layout.repo_slug(modelgen.GATED), layout.repo_slug(modelgen.TINY_MODEL)
    assert any(key.startswith(f"{GATED_PREFIX}/{gated_slug}/manifests/") for key in keys)
    assert not any(key.startswith(f"models/{gated_slug}/") for key in keys)
    assert any(key.startswith(f"models/{open_slug}/manifests/") for key in keys)
    assert not any(key.startswith(f"{GATED_PREFIX}/{open_slug}/") for key in keys)
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=layout.root_manifest_key(GATED_PREFIX, modelgen.GATED))["Body"].read()
    )
    assert manifest["prefix"].startswith(f"{GATED_PREFIX}/")


def granted_prefixes(policy_name: str) -> set[str]:
    document = template()["Resources"][policy_name]["Properties"]["PolicyDocument"]
    found = set()
    for statement in statements_of(document, policy_name):
        for resource in statement.resources:
            found.add(sub_text(resource))
        for prefix in as_list(statement.body.get("Condition", {}).get("StringLike", {}).get("s3:prefix", [])):
            found.add(sub_text(prefix))
    return found


@pytest.mark.unit
def test_the_pods_policy_never_reaches_the_gated_prefix_and_the_gated_policy_reaches_only_it() -> None:
    """GIVEN the two read policies  THEN the pods' names no gated prefix, and the gated one names nothing else
    of the bucket."""
    assert not any("GatedPrefix" in text for text in granted_prefixes("PodReadOnlyPolicy"))
    gated = {text for text in granted_prefixes("GatedReadOnlyPolicy") if "s3" in text or "Prefix" in text}
    assert gated
    assert all("${GatedPrefix}" in text or text.endswith("${Bucket}") for text in gated), gated


@pytest.mark.e2e
def test_a_scheduled_refresh_skips_a_gated_model_on_a_stack_without_a_token(
    router: Router, aws: MotoEndpoint, bucket: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a stack without a Hub token  WHEN the schedule's refresh runs the gated repo (requested_by
    "schedule", as the tracked list gives it) and a team requests the same repo
    THEN the refresh's execution succeeds at SkippedGated with nothing written (no page every night), and the
    team's fails with GatedRepo, as before."""
    monkeypatch.delenv("HF_TOKEN_SECRET_ARN", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    stack = create_stack(aws, router, bucket)
    refresh = stack.run({"repo_id": modelgen.GATED, "requested_by": "schedule"})
    assert refresh["status"] == "SUCCEEDED", refresh.get("cause")
    assert s3.list_object_versions(Bucket=bucket).get("Versions", []) == []
    history = stack.sfn.get_execution_history(executionArn=refresh["executionArn"], maxResults=1000)["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    assert entered[-1] == "SkippedGated"
    team = stack.run({"repo_id": modelgen.GATED, "requested_by": "AROATEAM0000000000:alice"})
    assert (team["status"], team.get("error")) == ("FAILED", "GatedRepo")
