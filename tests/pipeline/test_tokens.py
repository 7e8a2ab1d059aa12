"""Where the Hub token comes from: Secrets Manager (Powertools parameters), HF_TOKEN, or none."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from conftest import REGION, MotoEndpoint, unique_name

from model_cache.adapters import tokens
from model_cache.adapters.tokens import TokenUnavailable, hub_token


@pytest.fixture
def no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*tokens.SECRET_ENV_VARS, "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN_CACHE_SECONDS", "0")


@pytest.mark.unit
@pytest.mark.usefixtures("no_token_env")
def test_no_configuration_means_no_token() -> None:
    assert hub_token() is None


@pytest.mark.unit
@pytest.mark.usefixtures("no_token_env")
def test_hf_token_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", " hf_env_token \n")
    assert hub_token() == "hf_env_token"


@pytest.fixture
def secrets(aws: MotoEndpoint) -> Any:
    return boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws.url)


@pytest.mark.integration
@pytest.mark.usefixtures("no_token_env")
@pytest.mark.parametrize(
    "secret_string",
    ["hf_secret_plain", json.dumps({"HF_TOKEN": "hf_secret_plain"}), json.dumps({"token": "hf_secret_plain"})],
)
def test_secret_wins_over_environment(secrets: Any, monkeypatch: pytest.MonkeyPatch, secret_string: str) -> None:
    # GIVEN a secret (plain or JSON) named by HF_TOKEN_SECRET_ARN and also an HF_TOKEN variable
    arn = secrets.create_secret(Name=unique_name("hf-token"), SecretString=secret_string)["ARN"]
    monkeypatch.setenv("HF_TOKEN_SECRET_ARN", arn)
    monkeypatch.setenv("HF_TOKEN", "hf_env_token")
    # WHEN the token is read THEN it is the secret's
    assert hub_token() == "hf_secret_plain"


@pytest.mark.integration
@pytest.mark.usefixtures("no_token_env", "aws")
def test_missing_secret_is_a_clear_error_without_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a secret name that does not exist WHEN the token is read THEN TokenUnavailable names it
    name = unique_name("absent")
    monkeypatch.setenv("HF_TOKEN_SECRET_NAME", name)
    with pytest.raises(TokenUnavailable, match=f"cannot read the Hub token secret {name}"):
        hub_token()


@pytest.mark.integration
@pytest.mark.usefixtures("no_token_env")
def test_json_secret_without_token_field_is_rejected_without_echoing_it(
    secrets: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique_name("hf-token")
    secrets.create_secret(Name=name, SecretString=json.dumps({"other": "hf_do_not_echo"}))
    monkeypatch.setenv("HF_TOKEN_SECRET_NAME", name)
    with pytest.raises(TokenUnavailable) as caught:
        hub_token()
    assert "hf_do_not_echo" not in str(caught.value)
    assert "without a string field" in str(caught.value)
