"""One CLI contract across `model-cache` and `model-cache-loader` (issue 24, item 4; docs/reference/cli.md).

Each failure class is provoked in both CLIs, each run as the process a user or an init container
runs: the same exit code, one line naming the problem, no traceback. Then the shared conventions:
--version, the environment both read, JSON errors, quiet third-party logs, no progress off a TTY,
a closed pipe.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import seed_snapshot

from model_cache import __version__ as core_version
from model_cache.contract import errors
from model_cache_loader import AccessError, IntegrityError, NotCachedError, S3UnavailableError, UsageError
from model_cache_loader import __version__ as loader_version

pytestmark = pytest.mark.integration

REPO = "contract-org/model"
FILES = {"config.json": b'{"model_type": "llama"}\n', "model.safetensors": bytes(range(256)) * 512}
UNREACHABLE = "http://127.0.0.1:9"


def core(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "model_cache.cli.main", *args], env)


def loader(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "model_cache_loader", *args], env)


def _run(command: list[str], env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
    merged = {**os.environ, **(env or {})}
    for name, value in (env or {}).items():
        if value == "":
            merged.pop(name, None)
    return subprocess.run(command, env=merged, capture_output=True, text=True, timeout=180, check=False)


def one_line_error(done: subprocess.CompletedProcess[str], prog: str, case: str = "") -> str:
    """The single error line the contract allows: `<prog>: error: ...`, and no traceback."""
    assert "Traceback" not in done.stderr, (case, done.stderr[-2000:])
    lines = [line for line in done.stderr.splitlines() if f"{prog}: error:" in line]
    assert len(lines) == 1, (case, done.returncode, done.stdout[-500:], done.stderr[-2000:])
    return lines[0]


@pytest.fixture
def published(s3: Any, bucket: str) -> str:
    seed_snapshot(s3, bucket, REPO, FILES)
    return bucket


def no_credentials(tmp_path: Path) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SESSION_TOKEN": "",
        "AWS_PROFILE": "",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
    }


def test_every_failure_class_has_one_exit_code_in_both_clis(
    hub: Any, bucket: str, s3: Any, hf_cache: Path, tmp_path: Path
) -> None:
    """GIVEN each kind of failure  WHEN model-cache and model-cache-loader meet it
    THEN both exit with the same code, with one error line and no traceback."""
    seed_snapshot(s3, bucket, REPO, FILES)
    drifted_bucket = f"{bucket}-drift"[:63]
    s3.create_bucket(Bucket=drifted_bucket)
    bad = bytearray(FILES["model.safetensors"])
    bad[100] ^= 0xFF
    seed_snapshot(s3, drifted_bucket, REPO, FILES, object_override={"model.safetensors": bytes(bad)})
    cache = ["--cache-dir", str(hf_cache)]
    cases: list[tuple[str, int, subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]] = [
        (
            "usage: a bucket given as a URI",
            2,
            core("ls", "--bucket", f"s3://{bucket}"),
            loader("pull", REPO, "--bucket", f"s3://{bucket}", *cache),
        ),
        (
            "usage: an AWS_PROFILE that does not exist",
            2,
            core("ls", "--bucket", bucket, env={"AWS_PROFILE": "no-such-profile"}),
            loader("pull", REPO, "--bucket", bucket, *cache, env={"AWS_PROFILE": "no-such-profile"}),
        ),
        (
            "not cached",
            3,
            core("show", "contract-org/absent", "--bucket", bucket),
            loader("pull", "contract-org/absent", "--bucket", bucket, "--fallback", "error", *cache),
        ),
        (
            "integrity: bytes that do not match the manifest",
            4,
            core("verify", REPO, "--bucket", drifted_bucket, "--deep"),
            loader("pull", REPO, "--bucket", drifted_bucket, "--fallback", "error", *cache),
        ),
        (
            "access: no such bucket (the loader's default fallback does not hide it)",
            5,
            core("ls", "--bucket", "contract-absent-bucket"),
            loader("pull", REPO, "--bucket", "contract-absent-bucket", *cache),
        ),
        (
            "access: no credentials",
            5,
            core("ls", "--bucket", bucket, env=no_credentials(tmp_path)),
            loader("pull", REPO, "--bucket", bucket, *cache, env=no_credentials(tmp_path)),
        ),
        (
            "S3 unavailable after retries",
            7,
            core("ls", "--bucket", bucket, env={"AWS_ENDPOINT_URL": UNREACHABLE}),
            loader(
                "pull", REPO, "--bucket", bucket, "--fallback", "error", *cache, env={"AWS_ENDPOINT_URL": UNREACHABLE}
            ),
        ),
    ]
    seen = []
    for name, _code, by_core, by_loader in cases:
        seen.append((name, by_core.returncode, by_loader.returncode))
        if name.startswith("integrity"):
            # verify's drift is its report (stdout, one line per problem), not an error line
            assert "model.safetensors" in by_core.stdout
            assert "Traceback" not in by_core.stderr
        elif "URI" not in name:  # argparse's own usage line is the one line there
            one_line_error(by_core, "model-cache", name)
        one_line_error(by_loader, "model-cache-loader", name)
    assert seen == [(name, code, code) for name, code, _, _ in cases]


def test_the_exit_codes_are_the_error_classes_codes() -> None:
    """GIVEN the two packages' error classes  THEN each failure class has the same code in both."""
    assert errors.InvalidRequest.exit_code == UsageError.exit_code == 2
    assert errors.RevisionNotFound.exit_code == NotCachedError.exit_code == 3
    assert errors.IntegrityError.exit_code == IntegrityError.exit_code == 4
    assert errors.BucketNotFound.exit_code == errors.AccessDenied.exit_code == AccessError.exit_code == 5
    assert errors.GatedRepo.exit_code == 5
    assert errors.TransferError.exit_code == S3UnavailableError.exit_code == 7


def test_both_clis_print_their_version() -> None:
    """GIVEN --version  WHEN either CLI runs  THEN it prints its name and version and exits 0."""
    by_core, by_loader = core("--version"), loader("--version")
    assert (by_core.returncode, by_core.stdout.strip()) == (0, f"model-cache {core_version}")
    assert (by_loader.returncode, by_loader.stdout.strip()) == (0, f"model-cache-loader {loader_version}")


def test_model_cache_reads_the_bucket_and_prefix_from_the_environment(published: str) -> None:
    """GIVEN MODEL_CACHE_BUCKET (as the loader reads it) and no --bucket  WHEN model-cache ls / show run
    THEN they use it; with neither, argparse names both ways to give it."""
    env = {"MODEL_CACHE_BUCKET": published, "MODEL_CACHE_PREFIX": "models"}
    listed = core("ls", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert REPO in listed.stdout
    assert core("show", REPO, env=env).returncode == 0
    missing = core("ls", env={"MODEL_CACHE_BUCKET": ""})
    assert missing.returncode == 2
    assert "--bucket" in missing.stderr


def test_errors_under_json_are_json(hub: Any, aws: Any) -> None:
    """GIVEN --json  WHEN the command fails  THEN stdout is one JSON object naming the error and its code."""
    done = core("ls", "--bucket", "contract-absent-bucket", "--json")
    assert done.returncode == errors.BucketNotFound.exit_code
    body = json.loads(done.stdout)
    assert body["error"]["type"] == "BucketNotFound"
    assert body["error"]["exit_code"] == errors.BucketNotFound.exit_code
    assert "contract-absent-bucket" in body["error"]["message"]


def test_a_pull_off_a_terminal_shows_no_third_party_logs_and_no_progress(published: str, hf_cache: Path) -> None:
    """GIVEN a pull whose stderr is a pipe (an init container's log)  WHEN it succeeds
    THEN stderr holds no botocore INFO line and no redrawn progress bar, only our own lines; --verbose shows
    the libraries' lines."""
    done = loader("pull", REPO, "--bucket", published, "--cache-dir", str(hf_cache))
    assert done.returncode == 0, done.stderr
    assert "botocore" not in done.stderr
    assert "\r" not in done.stderr
    assert "model-cache-loader: s3:" in done.stderr
    verbose = loader("pull", REPO, "--bucket", published, "--cache-dir", str(hf_cache), "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "botocore" in verbose.stderr


def test_the_loader_falls_back_on_a_wrong_setup_only_when_asked(hub: Any, aws: Any, hf_cache: Path) -> None:
    """GIVEN a bucket that does not exist  WHEN pulled with --fallback always  THEN the Hub serves the model
    (the explicit choice); the default (hub) exits 5 without asking the Hub."""
    from model_cache_devtools.modelgen import TINY_MODEL

    hub.requests.clear()
    refused = loader("pull", TINY_MODEL, "--bucket", "contract-absent-bucket", "--cache-dir", str(hf_cache))
    assert refused.returncode == AccessError.exit_code
    assert hub.requests.matching(repo_id=TINY_MODEL) == []
    asked = loader(
        "pull", TINY_MODEL, "--bucket", "contract-absent-bucket", "--cache-dir", str(hf_cache), "--fallback", "always"
    )
    assert asked.returncode == 0, asked.stderr
    assert "model-cache-loader: hub:" in asked.stderr


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_ends_model_cache_quietly(published: str) -> None:
    """GIVEN stdout whose reader went away (`model-cache ls | head -1`)  WHEN ls writes
    THEN the command ends with 141 (as SIGPIPE would) and writes nothing to stderr."""
    from model_cache.cli.main import main

    err = io.StringIO()
    assert main(["ls", "--bucket", published], out=ClosedPipe(), err=err) == 141
    assert err.getvalue() == ""


def test_show_uri_prints_the_folder_the_zero_install_consumers_read(s3: Any, bucket: str) -> None:
    """GIVEN a published snapshot  WHEN `model-cache show REPO --uri` runs  THEN stdout is exactly the snapshot
    folder's URI (the value for Ray Serve LLM's bucket_uri, vLLM's --model, KServe's storageUri), and it holds
    every file of the manifest."""
    seeded = seed_snapshot(s3, bucket, REPO, FILES)
    done = core("show", REPO, "--bucket", bucket, "--uri")
    assert done.returncode == 0, done.stderr
    uri = done.stdout.strip()
    assert uri == f"s3://{bucket}/models/contract-org--model/snapshots/{seeded.commit}/"
    prefix = uri.removeprefix(f"s3://{bucket}/")
    listed = {item["Key"].removeprefix(prefix) for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]}
    assert set(FILES) <= listed


def test_aws_region_alone_is_enough(aws: Any, bucket: str) -> None:
    """GIVEN AWS_REGION set and AWS_DEFAULT_REGION not (what EKS Pod Identity and the AWS docs set)
    WHEN model-cache sends a request to an SQS queue (a client with no default region)
    THEN it is sent, instead of botocore's "You must specify a region"."""
    import boto3

    queue_url = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName=f"{bucket}-contract")["QueueUrl"]
    done = core(
        "request",
        "contract-org/model",
        "--queue-url",
        queue_url,
        env={"AWS_DEFAULT_REGION": "", "AWS_REGION": "us-east-1"},
    )
    assert done.returncode == 0, done.stderr
    assert "requested contract-org/model@main" in done.stdout
