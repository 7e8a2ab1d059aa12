"""The Hub token never leaves the places it must be: not in a log line, a state machine input or
output, an ECS override, an error message, or an environment variable the pipeline sets.

Each test runs a real flow with a gated repo (the Hub double's GATED needs the token) and captures
everything that flow writes: Python logging (caplog), the process's stdout/stderr at the file
descriptor level (capfd: Powertools loggers print JSON lines there), the copier processes' output,
moto's execution history, the ECS task overrides; then searches them for the token. A wrong token
takes the error paths, which must not echo it either.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import REGION, MotoEndpoint, unique_name
from security_support import leaks, sfn_harness

from model_cache.adapters import tokens
from model_cache.cli import main as cli
from model_cache_devtools import modelgen
from model_cache_devtools.hub import HubServer
from model_cache_loader import pull
from model_cache_loader.errors import LoaderError

WRONG_TOKEN = "hf_wrong_token_that_must_never_be_echoed_42"
BIG_GATED = "sec-org/gated-weights"  # a gated repo whose 6 MiB weight is above the test's Fargate threshold
harness = sfn_harness()


@pytest.fixture(scope="module")
def gated_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    root = tmp_path_factory.mktemp("gated-hub")
    repo = modelgen.write_synthetic_repo(
        root / BIG_GATED, {"model.safetensors": (6 * 1024 * 1024, 5)}, small_files={"config.json": b"{}\n"}
    )
    modelgen.write_gated(repo, [modelgen.GATED_TOKEN])
    with HubServer(root) as server:
        server.warm()
        yield server


def capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Every record at INFO and above (what Lambda and the pods log), and our own loggers at DEBUG.

    Not botocore's DEBUG wire log: it prints response bodies, GetSecretValue's included, which is
    why nothing here ever turns it on (docs/explanation/security.md).
    """
    caplog.set_level(logging.INFO)
    for name in ("model_cache", "model_cache_loader", "huggingface_hub"):
        caplog.set_level(logging.DEBUG, logger=name)


@pytest.fixture
def clean_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*tokens.SECRET_ENV_VARS, "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN_CACHE_SECONDS", "0")  # each test reads its own secret


@pytest.fixture
def router(
    aws: MotoEndpoint, gated_hub: HubServer, monkeypatch: pytest.MonkeyPatch, clean_token_env: None
) -> Iterator[Any]:
    monkeypatch.setenv("HF_ENDPOINT", gated_hub.url)
    with harness.executing_state_machines(aws):
        yield harness.install_routes(monkeypatch, aws)


def token_secret(aws: MotoEndpoint, value: str) -> str:
    secrets = boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws.url)
    return str(secrets.create_secret(Name=unique_name("hf-token"), SecretString=value)["ARN"])


def ecs_overrides(aws: MotoEndpoint) -> list[Any]:
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=aws.url)
    found: list[Any] = []
    for cluster in ecs.list_clusters()["clusterArns"]:
        arns = (
            ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"]
            + ecs.list_tasks(cluster=cluster)["taskArns"]
        )
        if arns:
            found.extend(task.get("overrides") for task in ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"])
    return found


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("secret_value", [modelgen.GATED_TOKEN, WRONG_TOKEN], ids=["right-token", "wrong-token"])
def test_token_from_secrets_manager_never_leaks_through_the_state_machine(
    router: Any,
    aws: MotoEndpoint,
    bucket: str,
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    secret_value: str,
) -> None:
    """GIVEN the token in a Secrets Manager secret named by HF_TOKEN_SECRET_ARN (as the template wires it),
    and a Fargate threshold that sends the gated repo's weight to the copier process
    WHEN the gated repo is requested through the state machine THEN with the right token it is published
    (the Lambda handlers and the Fargate copier both read the secret), with a wrong one it fails with
    GatedRepo/AccessDenied; and the token is in no log line, no copier output, no history event
    (inputs, outputs, causes), no ECS override."""
    monkeypatch.setenv("HF_TOKEN_SECRET_ARN", token_secret(aws, secret_value))
    capture_logs(caplog)
    stack = harness.create_stack(aws, router, bucket, fargate_threshold=5 * 1024 * 1024)
    execution_arn = stack.start({"repo_id": BIG_GATED, "revision": "main", "include": [], "exclude": []})
    execution = stack.wait(execution_arn)
    history = stack.history(execution_arn)

    if secret_value == modelgen.GATED_TOKEN:
        assert execution["status"] == "SUCCEEDED", str(execution.get("cause"))[:500]
        assert router.copier_runs, "the weight took the Fargate branch"
        assert all(run.returncode == 0 for run in router.copier_runs), [run.stderr[-500:] for run in router.copier_runs]
    else:
        assert execution["status"] == "FAILED"
        assert execution["error"] in ("GatedRepo", "AccessDenied"), execution
    captured = capfd.readouterr()
    found = leaks(
        secret_value,
        logging="\n".join(record.getMessage() + json.dumps(record.__dict__, default=str) for record in caplog.records),
        stdout=captured.out,
        stderr=captured.err,
        copier_output=[(run.stdout, run.stderr, run.event) for run in router.copier_runs],
        handler_events=[(call.folder, call.event) for call in router.invocations],
        execution=execution,
        history=history,
        ecs_overrides=ecs_overrides(aws),
    )
    assert found == {}
    overrides = json.dumps(ecs_overrides(aws))
    assert "MODEL_CACHE_EVENT" in overrides
    assert "HF_TOKEN" not in overrides, "no token variable is ever set on the copier task"


@pytest.mark.integration
@pytest.mark.parametrize("token", [modelgen.GATED_TOKEN, WRONG_TOKEN], ids=["right-token", "wrong-token"])
def test_cli_sync_never_prints_the_token(
    hub: Any,
    s3: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    clean_token_env: None,
    token: str,
) -> None:
    """GIVEN HF_TOKEN set WHEN `model-cache sync` copies the gated repo (or is refused with a wrong token)
    THEN neither its output, its errors nor any log record holds the token."""
    monkeypatch.setenv("HF_TOKEN", token)
    capture_logs(caplog)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["sync", modelgen.GATED, "--bucket", bucket, "--part-size", "5MiB"], out=out, err=err)
    assert (code == 0) == (token == modelgen.GATED_TOKEN), err.getvalue()
    captured = capfd.readouterr()
    found = leaks(
        token,
        out=out.getvalue(),
        err=err.getvalue(),
        fd_out=captured.out,
        fd_err=captured.err,
        logging=[record.getMessage() for record in caplog.records],
    )
    assert found == {}


@pytest.mark.integration
@pytest.mark.parametrize("token", [modelgen.GATED_TOKEN, WRONG_TOKEN], ids=["right-token", "wrong-token"])
def test_loader_hub_fallback_never_logs_the_token(
    hf_endpoint: str,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    clean_token_env: None,
    token: str,
) -> None:
    """GIVEN a model not in S3 and HF_TOKEN set WHEN the loader falls back to the Hub for the gated repo
    THEN it downloads it (right token) or fails with a clear error (wrong token), and the token is in
    no log record, no output and no error message."""
    monkeypatch.setenv("HF_TOKEN", token)
    capture_logs(caplog)
    message = ""
    try:
        result = pull(modelgen.GATED, bucket=bucket, cache_dir=tmp_path / "cache", fallback="hub", emit_emf=True)
    except LoaderError as exc:
        message = str(exc)
        assert token == WRONG_TOKEN, message
    else:
        assert token == modelgen.GATED_TOKEN
        assert result.source == "hub"
    captured = capfd.readouterr()
    found = leaks(
        token,
        error=message,
        fd_out=captured.out,
        fd_err=captured.err,
        logging=[record.getMessage() for record in caplog.records],
    )
    assert found == {}
