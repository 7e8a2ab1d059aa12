"""`model-cache` sync / ls / show over the Hub double and moto: output, exit codes, one-line errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from model_cache.cli import main as cli
from model_cache.contract import errors
from model_cache_devtools import modelgen

pytestmark = pytest.mark.integration


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_sync_then_show_and_ls(hub: Any, bucket: str) -> None:
    """GIVEN the tiny model WHEN `sync` runs THEN exit 0 and a summary naming files, bytes, MB/s, commit and
    manifest; `show` lists its files and `ls` lists the repo with its ref; a second sync says nothing copied."""
    code, out, err = run("sync", modelgen.TINY_MODEL, "--bucket", bucket, "--concurrency", "4", "--part-size", "8MiB")
    commit = hub.store.snapshot(modelgen.TINY_MODEL).commit
    assert code == 0, err
    assert f"synced {modelgen.TINY_MODEL}@main" in out
    assert "MB/s" in out
    assert commit in out
    assert f"s3://{bucket}/models/tiny-org--tiny-llm/manifests/{commit}.json" in out
    assert "files" in err  # progress goes to stderr, plain lines when not a TTY

    code, out, _ = run("show", modelgen.TINY_MODEL, "--bucket", bucket)
    assert code == 0
    assert commit in out
    assert "config.json" in out

    code, out, _ = run("ls", "--bucket", bucket, "--json")
    rows = json.loads(out)
    assert code == 0
    assert [(r["repo_id"], r["commit"], r["refs"]) for r in rows] == [(modelgen.TINY_MODEL, commit, ["main"])]

    code, out, _ = run("sync", f"{modelgen.TINY_MODEL}@main", "--bucket", bucket)
    assert code == 0
    assert "nothing copied" in out


@pytest.mark.parametrize(
    ("argv", "exit_code", "needle"),
    [
        (["sync", "nobody/absent", "--bucket", "{bucket}"], errors.RepoNotFound.exit_code, "not found"),
        (["sync", f"{modelgen.NESTED}@nope", "--bucket", "{bucket}"], errors.RevisionNotFound.exit_code, "nope"),
        (["sync", modelgen.GATED, "--bucket", "{bucket}"], errors.GatedRepo.exit_code, "HF_TOKEN"),
        (["sync", modelgen.NESTED, "--bucket", "absent-bucket-1234"], errors.BucketNotFound.exit_code, "absent"),
        (["sync", "bad//id", "--bucket", "{bucket}"], errors.InvalidRequest.exit_code, "not a Hub model id"),
        (["sync", modelgen.NESTED, "--bucket", "{bucket}", "--include", "*.nothing"], 2, "select none"),
        (["show", modelgen.NESTED, "--bucket", "{bucket}"], errors.RevisionNotFound.exit_code, "model-cache sync"),
    ],
)
def test_errors_are_one_line_with_their_exit_code(
    hub: Any, bucket: str, argv: list[str], exit_code: int, needle: str
) -> None:
    """GIVEN a problem the user can fix WHEN the CLI meets it THEN one line on stderr naming it, the documented code."""
    code, _, err = run(*[arg.replace("{bucket}", bucket) for arg in argv])
    assert code == exit_code
    assert needle in err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def test_console_script_has_no_traceback_for_domain_errors(hub: Any, aws: Any, tmp_path: Path) -> None:
    """GIVEN the installed `model-cache` script WHEN the bucket does not exist THEN exit 5, one line, no traceback."""
    script = Path(sys.executable).with_name("model-cache")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "AWS_ENDPOINT_URL": aws.url}
    done = subprocess.run(
        [str(script), "sync", modelgen.NO_ORG, "--bucket", "absent-bucket-5678"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == errors.BucketNotFound.exit_code
    assert "absent-bucket-5678" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64MiB", 64 * 2**20), ("16M", 16 * 2**20), ("8388608", 8388608), ("1GiB", 2**30), ("10MB", 10_000_000)],
)
def test_part_size_parsing(text: str, expected: int) -> None:
    """GIVEN a human size WHEN parsed THEN the bytes it means."""
    assert cli.parse_size(text) == expected


def test_part_size_out_of_range_is_refused(hub: Any, bucket: str) -> None:
    """GIVEN --part-size 1MiB WHEN syncing THEN exit 2 naming S3's limits."""
    code, _, err = run("sync", modelgen.NO_ORG, "--bucket", bucket, "--part-size", "1MiB")
    assert code == 2
    assert "5 MiB" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["sync", modelgen.NESTED],
        ["ls"],
        ["show", modelgen.NESTED],
        ["doctor"],
        ["verify", modelgen.NESTED],
        ["gc"],
        ["cost"],
    ],
    ids=lambda argv: argv[0],
)
def test_every_command_reports_a_missing_bucket_with_the_same_exit_code(hub: Any, aws: Any, argv: list[str]) -> None:
    """GIVEN a bucket that does not exist WHEN any bucket command runs (doctor included)
    THEN it exits BucketNotFound's code with one line naming the bucket (issue 23, row 13)."""
    code, _, err = run(*argv, "--bucket", "absent-bucket-for-every-command")
    assert code == errors.BucketNotFound.exit_code, err
    assert "absent-bucket-for-every-command" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["s3://my-model-cache", "s3://my-model-cache/models", "My_Bucket"])
def test_a_bucket_given_as_a_uri_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN --bucket as a URI or not a bucket name WHEN a command parses it
    THEN exit 2 naming the bucket rule, before any request (issue 23, row 11)."""
    with pytest.raises(SystemExit) as exited:
        run("ls", "--bucket", value)
    assert exited.value.code == errors.InvalidRequest.exit_code
    assert "is not an S3 bucket name" in capsys.readouterr().err
