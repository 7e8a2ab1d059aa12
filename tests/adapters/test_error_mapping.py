"""Error mapping: S3 ClientErrors and huggingface_hub errors become domain errors whose message names the fix."""

from __future__ import annotations

import httpx2
import pytest
from botocore.exceptions import ClientError
from huggingface_hub import errors as hf_errors

from model_cache.adapters.hub_reader import parse_retry_after
from model_cache.adapters.hubapi import translate_hub_error
from model_cache.adapters.s3 import s3_error
from model_cache.contract import errors

pytestmark = pytest.mark.unit


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    ("code", "status", "error", "needle"),
    [
        ("NoSuchBucket", 404, errors.BucketNotFound, "create it"),
        ("AccessDenied", 403, errors.AccessDenied, "credentials"),
        ("InvalidAccessKeyId", 403, errors.AccessDenied, "bucket policy"),
        ("SlowDown", 503, errors.TransferError, "SlowDown"),
    ],
)
def test_s3_errors_name_bucket_and_fix(code: str, status: int, error: type[Exception], needle: str) -> None:
    """GIVEN an S3 error code WHEN mapped THEN the domain class, naming the bucket and what to do."""
    mapped = s3_error(client_error(code, status), "my-bucket", "writing x")
    assert isinstance(mapped, error)
    assert "my-bucket" in str(mapped)
    assert needle in str(mapped)


def hub_error(cls: type[Exception], status: int) -> Exception:
    response = httpx2.Response(status, request=httpx2.Request("GET", "https://hub/api/models/a/b"))
    return cls("message", response=response)


@pytest.mark.parametrize(
    ("exc", "token_given", "error", "needle"),
    [
        (hub_error(hf_errors.GatedRepoError, 401), False, errors.GatedRepo, "set HF_TOKEN"),
        (hub_error(hf_errors.GatedRepoError, 403), True, errors.GatedRepo, "accept the model's terms"),
        (hub_error(hf_errors.RepositoryNotFoundError, 404), False, errors.RepoNotFound, "private"),
        (hub_error(hf_errors.RevisionNotFoundError, 404), False, errors.RevisionNotFound, "branch, tag"),
        (hub_error(hf_errors.HfHubHTTPError, 503), False, errors.TransferError, "retry later"),
        (httpx2.ConnectError("refused"), False, errors.TransferError, "could not reach"),
    ],
)
def test_hub_errors_name_the_fix(exc: Exception, token_given: bool, error: type[Exception], needle: str) -> None:
    """GIVEN a huggingface_hub or network error WHEN translated THEN the domain class with the fix in its message."""
    mapped = translate_hub_error(exc, "a/b", "main", token_given=token_given)
    assert isinstance(mapped, error)
    assert needle in str(mapped)


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), ("0.5", 0.5), (None, None), ("soon", None)])
def test_retry_after_parsing(value: str | None, seconds: float | None) -> None:
    """GIVEN a Retry-After header WHEN parsed THEN seconds (or None when absent/garbage)."""
    assert parse_retry_after(value) == seconds


def test_retry_after_as_http_date_is_in_the_future_or_zero() -> None:
    """GIVEN an HTTP-date in the past WHEN parsed THEN 0 (retry now), never negative."""
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
