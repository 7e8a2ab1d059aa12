"""The request message (docs/architecture.md 3.3) and the deterministic execution name."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from model_cache.contract.errors import InvalidRequest
from model_cache.pipeline.request_message import MAX_EXECUTION_NAME_LENGTH, CacheRequest, parse_request

pytestmark = pytest.mark.unit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
NOON = datetime(2026, 11, 30, 12, 10, tzinfo=UTC)


def test_bare_id_defaults_to_main_and_default_selection() -> None:
    # GIVEN a bare repo id WHEN parsed THEN revision main, default include, no exclude, no force
    request = parse_request("  microsoft/phi-2\n")
    assert request == CacheRequest(repo_id="microsoft/phi-2")
    assert request.to_input() == {
        "repo_id": "microsoft/phi-2",
        "revision": "main",
        "include": [],
        "exclude": [],
        "force": False,
        "requested_by": None,
    }


def test_id_at_revision() -> None:
    # GIVEN id@rev WHEN parsed THEN the revision is kept
    assert parse_request(f"gpt2@{COMMIT}") == CacheRequest(repo_id="gpt2", revision=COMMIT)
    assert parse_request("org/name@v1.0").revision == "v1.0"


def test_json_message_round_trips() -> None:
    # GIVEN the JSON message of 3.3 WHEN parsed THEN every field is carried, and to_input parses back to it
    body = {
        "repo_id": "microsoft/phi-2",
        "revision": "main",
        "include": ["*.safetensors", "*.json", "tokenizer*"],
        "exclude": [],
        "force": True,
        "requested_by": "team-nlp",
    }
    request = parse_request(json.dumps(body))
    assert request.include == ("*.safetensors", "*.json", "tokenizer*")
    assert request.force is True
    assert request.requested_by == "team-nlp"
    assert parse_request(request.to_input()) == request
    assert parse_request(json.dumps("gpt2@dev")) == CacheRequest(repo_id="gpt2", revision="dev")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "empty"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ("org/bad--name", "not a Hub model id"),
        ("../etc/passwd", "not a Hub model id"),
        ("org/name@", "revision is empty"),
        ("org/name@a..b", "not a valid branch"),
        ("org/name extra", "whitespace"),
        ('{"revision": "main"}', "no repo_id"),
        ('{"repo_id": "a/b", "revison": "main"}', "unknown field(s) revison"),
        ('{"repo_id": 7}', "repo_id must be a string"),
        ('{"repo_id": "a/b", "include": "*.json"}', "not a single string"),
        ('{"repo_id": "a/b", "exclude": [""]}', "non-empty strings"),
        ('{"repo_id": "a/b", "force": "yes"}', "force must be true or false"),
        ('{"repo_id": "a/b", "requested_by": ""}', "requested_by"),
        ("x" * 70_000, "larger than"),
    ],
)
def test_malformed_messages_name_the_problem(body: str, reason: str) -> None:
    # GIVEN a malformed body WHEN parsed THEN InvalidRequest says what is wrong
    with pytest.raises(InvalidRequest, match=re.escape(reason)):
        parse_request(body)


def test_non_string_body_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="string or a JSON object"):
        parse_request(42)


def test_execution_name_is_deterministic_safe_and_bounded() -> None:
    # GIVEN the same request twice in one window WHEN named THEN the same safe name
    long_request = CacheRequest(repo_id="an-org-with-a-long-name/" + "m" * 70, revision="release/2026.11+build")
    for request in (CacheRequest(repo_id="microsoft/phi-2"), long_request):
        name = request.execution_name(now=NOON)
        assert name == request.execution_name(now=NOON + timedelta(minutes=40))
        assert len(name) <= MAX_EXECUTION_NAME_LENGTH
        assert re.fullmatch(r"[A-Za-z0-9_-]+", name), name
    assert CacheRequest(repo_id="microsoft/phi-2").execution_name(now=NOON).startswith("microsoft--phi-2-main-")


def test_execution_name_changes_with_what_is_copied() -> None:
    # GIVEN requests differing in revision, include, exclude or force THEN their names differ
    base = CacheRequest(repo_id="org/name")
    variants = [
        base,
        CacheRequest(repo_id="org/name", revision="dev"),
        CacheRequest(repo_id="org/name", include=("*.json",)),
        CacheRequest(repo_id="org/name", exclude=("*.bin",)),
        CacheRequest(repo_id="org/name", force=True),
        CacheRequest(repo_id="org/Name"),
    ]
    names = {variant.execution_name(now=NOON) for variant in variants}
    assert len(names) == len(variants)
    # requested_by is who asked, not what is copied: the same execution
    assert CacheRequest(repo_id="org/name", requested_by="x").execution_name(now=NOON) == base.execution_name(now=NOON)
    # include order does not matter
    assert CacheRequest(repo_id="o/n", include=("a", "b")).execution_name(now=NOON) == CacheRequest(
        repo_id="o/n", include=("b", "a")
    ).execution_name(now=NOON)


def test_branch_requests_can_run_again_in_a_later_window_but_commits_never() -> None:
    # GIVEN a branch request WHEN the dedupe window passes THEN a new name (the branch may have moved)
    branch = CacheRequest(repo_id="org/name")
    assert branch.execution_name(now=NOON) != branch.execution_name(now=NOON + timedelta(hours=1))
    # GIVEN a pinned commit THEN the name never changes
    pinned = CacheRequest(repo_id="org/name", revision=COMMIT)
    assert pinned.execution_name(now=NOON) == pinned.execution_name(now=NOON + timedelta(days=30))
    with pytest.raises(InvalidRequest, match="window"):
        branch.execution_name(now=NOON, window_seconds=0)


def test_the_loaders_cache_request_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the message the loader sends on a cache miss (loader/src/model_cache_loader/fallback.py)
    from model_cache_loader.fallback import send_cache_request

    sent: list[str] = []

    class CapturingQueue:
        def send_message(self, QueueUrl: str, MessageBody: str) -> None:
            sent.append(MessageBody)

    monkeypatch.setenv("MODEL_CACHE_REQUESTED_BY", "ray-pod-" + "x" * 60)
    assert send_cache_request("org/model", "main", "https://queue.example/requests", CapturingQueue())
    # WHEN the request Lambda parses it THEN it is a valid request for that repo and revision
    request = parse_request(sent[0])
    assert (request.repo_id, request.revision) == ("org/model", "main")
    assert request.requested_by == "ray-pod-" + "x" * 60
