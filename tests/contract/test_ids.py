"""Repo id, revision and repo-path validation: the first line of defence for every input."""

from __future__ import annotations

import pytest

from model_cache.contract.errors import InvalidRequest
from model_cache.contract.ids import (
    is_commit_id,
    parse_repo_ref,
    validate_bucket,
    validate_repo_id,
    validate_repo_path,
    validate_revision,
)
from model_cache_loader import layout as rules
from model_cache_loader.errors import UsageError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "repo_id",
    [
        "microsoft/phi-2",
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "gpt2",
        "meta-llama/Llama-2-7b-chat-hf",
        "a/b",
        "org_1/model.v2",
    ],
)
def test_accepts_hub_model_ids(repo_id: str) -> None:
    # GIVEN a real-looking Hub id WHEN validated THEN it comes back unchanged
    assert validate_repo_id(repo_id) == repo_id


@pytest.mark.parametrize(
    ("repo_id", "reason"),
    [
        ("", "empty"),
        ("../x", "not a Hub model id"),
        ("a/b/c", "not a Hub model id"),
        ("/abs", "not a Hub model id"),
        ("org/-name", "not a Hub model id"),
        ("org/name-", "not a Hub model id"),
        ("org--x/name", "not a Hub model id"),
        ("org/na..me", "not a Hub model id"),
        ("org/name@main", "not a Hub model id"),
        ("x" * 97, "at most 96"),
        ("micr\u043esoft/phi-2", "non-ASCII"),  # a Cyrillic o: a look-alike of a real org
        ("org/na me", "not a Hub model id"),
        ("org\\name", "not a Hub model id"),
    ],
)
def test_rejects_bad_repo_ids_naming_the_problem(repo_id: str, reason: str) -> None:
    # GIVEN a malformed or hostile id WHEN validated THEN the error says what is wrong
    with pytest.raises(InvalidRequest, match=reason):
        validate_repo_id(repo_id)


def test_rejects_non_string_repo_id() -> None:
    with pytest.raises(InvalidRequest, match="must be a string, got int"):
        validate_repo_id(42)


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "release/2024-01", "a" * 40, "0" * 40])
def test_accepts_branches_tags_and_commits(revision: str) -> None:
    assert validate_revision(revision) == revision


@pytest.mark.parametrize(
    "revision", ["", "../main", "main/", "a..b", "-rf", "main;rm", "main\n", "a//b", "x.lock", "HEAD@{1}", "re v"]
)
def test_rejects_injected_or_malformed_revisions(revision: str) -> None:
    with pytest.raises(InvalidRequest, match="revision"):
        validate_revision(revision)


def test_commit_id_detection() -> None:
    assert is_commit_id("0123456789abcdef0123456789abcdef01234567")
    assert not is_commit_id("main")
    assert not is_commit_id("0123456789ABCDEF0123456789ABCDEF01234567")


@pytest.mark.parametrize("path", ["config.json", "sub/dir/file.txt", ".gitattributes", "onnx/model.onnx", "é.txt"])
def test_accepts_safe_repo_paths(path: str) -> None:
    assert validate_repo_path(path) == path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../x", r"'\.\.' segment"),
        ("a/../../x", r"'\.\.' segment"),
        ("a/./b", r"'\.' or"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("a\nb", "control character"),
        ("e\u0301.txt", "NFC"),
        ("x" * 1025, "1024-byte"),
    ],
)
def test_rejects_unsafe_repo_paths(path: str, reason: str) -> None:
    # GIVEN a path that could escape a snapshot or collide WHEN validated THEN it is refused by name
    with pytest.raises(InvalidRequest, match=reason):
        validate_repo_path(path)


def test_parse_repo_ref_splits_revision() -> None:
    assert parse_repo_ref("microsoft/phi-2@v1.0") == ("microsoft/phi-2", "v1.0")
    assert parse_repo_ref("  gpt2 ") == ("gpt2", None)
    with pytest.raises(InvalidRequest, match="revision"):
        parse_repo_ref("gpt2@")


@pytest.mark.parametrize(
    ("bucket", "is_a_bucket_name"),
    [
        ("model-cache-bucket", True),
        ("a.b-c", True),
        ("abc", True),
        ("a" * 63, True),
        ("ab", False),
        ("a" * 64, False),
        ("Bad_Bucket", False),
        ("-leading-hyphen", False),
        ("trailing.", False),
        ("s3://model-cache-bucket", False),
        ("", False),
    ],
)
def test_the_pipeline_and_the_loader_keep_one_bucket_rule(bucket: str, is_a_bucket_name: bool) -> None:
    """GIVEN a bucket name WHEN the pipeline (a task's event) and the loader (MODEL_CACHE_BUCKET) check it
    THEN both accept it or both refuse it, each naming the bucket: one rule, the loader's."""
    problem = rules.bucket_problem(bucket)
    assert (problem is None) is is_a_bucket_name
    if is_a_bucket_name:
        assert validate_bucket(bucket) == bucket == rules.validate_bucket(bucket)
        return
    with pytest.raises(InvalidRequest, match=f"bucket {bucket!r} is not an S3 bucket name"):
        validate_bucket(bucket)
    with pytest.raises(UsageError, match="MODEL_CACHE_BUCKET"):
        rules.validate_bucket(bucket)


def test_a_bucket_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="bucket 12 is not an S3 bucket name"):
        validate_bucket(12)
