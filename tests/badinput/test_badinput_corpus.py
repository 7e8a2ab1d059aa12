"""The bad-input corpus: hostile or broken input at every door, each case named by its id.

Doors and what "refused cleanly" means at each:
- SQS bodies -> the real request Lambda (functions/request/app.py): the message is a batch item
  failure (so SQS redrives it to the DLQ), the log line names the reason, no execution is started.
- Hub listings -> engine.sync, the Hub double serving a tampered model-info listing
  (`HubServer.listing_overrides`): a domain error naming the file and the problem, no object and no
  multipart upload in the bucket.
- Manifests -> the loader: a clear LoaderError, nothing kept in the cache, nothing written outside it.
- CLI arguments -> `model-cache` and `model-cache-loader`: a non-zero exit and a message naming the
  argument, and nothing written to the bucket.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from badinput_support import build_manifest
from conftest import LambdaContext, failed_clean_problems, incomplete_uploads, load_event, seed_snapshot

from model_cache.adapters import hub_reader
from model_cache.cli import main as cli
from model_cache.contract import errors
from model_cache.pipeline.engine import sync
from model_cache_devtools import modelgen
from model_cache_loader import cli as loader_cli
from model_cache_loader import pull
from model_cache_loader.errors import LoaderError

# ---------------------------------------------------------------------------------------------
# SQS bodies through the request Lambda
# ---------------------------------------------------------------------------------------------

HOSTILE_BODIES = {
    "empty": ("", "empty"),
    "blank": (" \n\t ", "empty"),
    "huge": ("o/" + "x" * 70_000, "larger than"),
    "binary": ("\x00\x89PNG\r\n\x1a\n\x00\x00\xff", "not a repo id"),
    "json-array": ("[1, 2]", "must be an object"),
    "json-null-id": ('{"repo_id": null}', "repo_id must be a string"),
    "json-number-id": ('{"repo_id": 7}', "repo_id must be a string"),
    "json-force-string": ('{"repo_id": "a/b", "force": "yes"}', "force must be true or false"),
    "json-include-string": ('{"repo_id": "a/b", "include": "*.json"}', "not a single string"),
    "json-unknown-field": ('{"repo_id": "a/b", "token": "hf_smuggled"}', "unknown field(s) token"),
    "json-broken": ('{"repo_id": "a/b"', "not valid JSON"),
    "traversal": ("../x", "not a Hub model id"),
    "traversal-json": ('{"repo_id": "../../etc/passwd"}', "not a Hub model id"),
    "three-segments": ("a/b/c", "not a Hub model id"),
    "overlong": ("org/" + "m" * 120, "at most 96"),
    "cyrillic-lookalike": ("microsoft/ph\u0456-2", "non-ASCII"),
    "fullwidth-lookalike": ("\uff4dicrosoft/phi-2", "non-ASCII"),
    "double-dash": ("org--evil/name", "not a Hub model id"),
    "revision-shell": ("a/b@main;id>x", "not a valid branch"),
    "revision-traversal": ("a/b@../../refs", "not a valid branch"),
    "revision-newline-json": ('{"repo_id": "a/b", "revision": "main\\nX-Injected: 1"}', "not a valid branch"),
    "revision-subst": ("a/b@$(id)", "not a valid branch"),
    "revision-reflog": ('{"repo_id": "a/b", "revision": "main@{1}"}', "not a valid branch"),
    "include-overlong": (json.dumps({"repo_id": "a/b", "include": ["x" * 300]}), "at most 256"),
    "whitespace-inside": ("org/name extra", "whitespace"),
}


class JsonLines(logging.Handler):
    """The handler's structured log lines (Powertools' JSON formatter), as dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def sqs_event(body: str) -> tuple[dict[str, Any], str]:
    record = dict(load_event("sqs_requests.json")["Records"][0])
    message_id = str(uuid.uuid4())
    record.update(messageId=message_id, body=body, receiptHandle=f"rh-{message_id}")
    return {"Records": [record]}, message_id


@pytest.mark.integration
@pytest.mark.parametrize(("body", "reason"), HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_sqs_body_is_refused_with_a_reason_and_starts_nothing(
    request_handler: tuple[Any, str], sfn: Any, body: str, reason: str
) -> None:
    """GIVEN a hostile SQS body WHEN the request Lambda handles it THEN the message is a batch item
    failure (SQS sends it to the DLQ), the log names the reason, and no execution was started."""
    module, arn = request_handler
    event, message_id = sqs_event(body)
    logged = JsonLines()
    logged.setFormatter(module.logger.registered_formatter)
    module.logger.addHandler(logged)
    try:
        response = module.handler(event, LambdaContext())
    finally:
        module.logger.removeHandler(logged)
    assert response["batchItemFailures"] == [{"itemIdentifier": message_id}]
    rejected = [line for line in logged.lines if line.get("message") == "request rejected"]
    assert rejected, logged
    assert rejected[0]["message_id"] == message_id
    assert reason in rejected[0]["reason"]
    assert sfn.list_executions(stateMachineArn=arn)["executions"] == []


# ---------------------------------------------------------------------------------------------
# Hub listings through engine.sync
# ---------------------------------------------------------------------------------------------

Siblings = list[dict[str, Any]]


def first(siblings: Siblings, name: str) -> dict[str, Any]:
    return next(s for s in siblings if s["rfilename"] == name)


def renamed(name: str) -> Callable[[Siblings], Siblings]:
    return lambda siblings: [*siblings, {**first(siblings, "config.json"), "rfilename": name}]


def changed(path: str, **fields: Any) -> Callable[[Siblings], Siblings]:
    def tamper(siblings: Siblings) -> Siblings:
        out = []
        for sibling in siblings:
            if sibling["rfilename"] == path:
                sibling = {**sibling, **fields}
                if "lfs" in fields and fields["lfs"] is not None and "lfs" in sibling:
                    sibling["lfs"] = {**first(siblings, path)["lfs"], **fields["lfs"]}
            out.append({k: v for k, v in sibling.items() if v is not DROP})
        return out

    return tamper


DROP = object()
WEIGHT = "model.safetensors"  # LFS in the MULTI_FORMAT fixture repo
HOSTILE_LISTINGS: dict[str, tuple[Callable[[Siblings], Siblings], type[Exception], str]] = {
    "dotdot-name": (renamed("../escape.json"), errors.InvalidRequest, "'..' segment"),
    "dotdot-inside": (renamed("sub/../../escape.json"), errors.InvalidRequest, "'..' segment"),
    "absolute-path": (renamed("/etc/passwd"), errors.InvalidRequest, "absolute"),
    "backslash": (renamed("sub\\..\\evil.json"), errors.InvalidRequest, "backslash"),
    "nul-byte": (renamed("config.json\x00.txt"), errors.InvalidRequest, "NUL"),
    "empty-segment": (renamed("sub//x.json"), errors.InvalidRequest, "empty segment"),
    "non-nfc-name": (renamed("cafe\u0301.json"), errors.InvalidRequest, "NFC"),
    "duplicate-entry": (lambda s: [*s, dict(first(s, "config.json"))], errors.InvalidRequest, "twice"),
    "size-smaller-than-bytes": (changed("config.json", size=3), errors.IntegrityError, "more than the 3 bytes"),
    "size-larger-than-bytes": (changed("config.json", size=10_000), errors.IntegrityError, "shorter than"),
    "size-negative": (changed("config.json", size=-1), errors.IntegrityError, "no valid size"),
    "missing-blob-id": (changed("config.json", blobId=DROP), errors.IntegrityError, "no valid blob id"),
    "lfs-missing-sha256": (changed(WEIGHT, lfs={"sha256": None}), errors.IntegrityError, "no valid LFS sha256"),
    "lfs-sha256-lies": (changed(WEIGHT, lfs={"sha256": "ab" * 32}), errors.IntegrityError, "sha256"),
    "lfs-two-sizes": (changed(WEIGHT, lfs={"size": 1}), errors.IntegrityError, "two sizes"),
}


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A size that lies looks like a connection cut short: keep its 8 retries quick."""

    @dataclass
    class Quick(hub_reader.RetryPolicy):
        base_delay: float = 0.001
        max_delay: float = 0.01

    monkeypatch.setattr(hub_reader, "RetryPolicy", Quick)


@pytest.mark.integration
@pytest.mark.parametrize(("tamper", "error", "message"), HOSTILE_LISTINGS.values(), ids=HOSTILE_LISTINGS.keys())
@pytest.mark.usefixtures("fast_retries")
def test_hostile_hub_listing_is_refused_and_nothing_is_written(
    hub: Any, s3: Any, bucket: str, tamper: Callable[[Siblings], Siblings], error: type[Exception], message: str
) -> None:
    """GIVEN the Hub lists a hostile or lying file entry WHEN the repo is synced THEN the domain error
    names the problem, and the bucket holds no object and no open upload."""
    hub.listing_overrides[modelgen.MULTI_FORMAT] = tamper
    try:
        with pytest.raises(error, match=message):
            sync(modelgen.MULTI_FORMAT, bucket=bucket, s3=s3, include=["*.json", "*.safetensors"])
    finally:
        hub.listing_overrides.clear()
    assert failed_clean_problems(s3, bucket) == []
    assert incomplete_uploads(s3, bucket) == []


# ---------------------------------------------------------------------------------------------
# Manifests through the loader
# ---------------------------------------------------------------------------------------------

FILES = {"config.json": b'{"model_type": "llama"}\n', "model.safetensors": bytes(range(256)) * 64}


@dataclass
class Tamper:
    """A change to the published manifest (or to the bytes in S3), and the error it must cause."""

    manifest: Callable[[dict[str, Any]], None] = field(default=lambda m: None)
    objects: dict[str, bytes] = field(default_factory=dict)
    message: str = ""


def entry(manifest: dict[str, Any], path: str) -> dict[str, Any]:
    return next(f for f in manifest["files"] if f["path"] == path)


def set_path(path: str) -> Callable[[dict[str, Any]], None]:
    def tamper(manifest: dict[str, Any]) -> None:
        item = entry(manifest, "config.json")
        item["path"] = path
        item["key"] = manifest["prefix"] + path

    return tamper


def set_field(path: str, **fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda manifest: entry(manifest, path).update(fields)


def set_top(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda manifest: manifest.update(fields)


HOSTILE_MANIFESTS = {
    "sha256-tampered": Tamper(set_field("model.safetensors", sha256="0" * 64), message="sha256"),
    "object-replaced": Tamper(objects={"model.safetensors": b"\x00" * (256 * 64)}, message="sha256"),
    "object-shorter": Tamper(objects={"config.json": b"{}"}, message="bytes"),
    "path-traversal": Tamper(set_path("../../outside.json"), message="outside.json"),
    "path-absolute": Tamper(set_path("/etc/cron.d/evil"), message="evil"),
    "path-backslash": Tamper(set_path("sub\\evil.json"), message="evil.json"),
    "path-nul": Tamper(set_path("config.json\x00x"), message="config.json"),
    "path-empty-segment": Tamper(set_path("sub//x.json"), message="x.json"),
    "key-outside-snapshot": Tamper(set_field("config.json", key="models/other--repo/secret.json"), message="key"),
    "schema-version-2": Tamper(set_top(schema_version=2), message="schema_version"),
    "schema-size-negative": Tamper(set_field("config.json", size=-5), message="size"),
    "schema-sha256-not-hex": Tamper(set_field("config.json", sha256="z" * 64), message="sha256"),
    "schema-files-missing": Tamper(lambda m: m.pop("files"), message="files"),
    "schema-commit-short": Tamper(set_top(commit="abc"), message="commit"),
}


@pytest.mark.integration
@pytest.mark.parametrize("tamper", HOSTILE_MANIFESTS.values(), ids=HOSTILE_MANIFESTS.keys())
def test_hostile_manifest_is_refused_and_nothing_is_kept(s3: Any, bucket: str, tmp_path: Path, tamper: Tamper) -> None:
    """GIVEN a published manifest that was tampered with (or objects that differ from it)
    WHEN the loader pulls the model THEN a LoaderError names the problem, no blob or snapshot is kept,
    and nothing at all is written outside the cache directory."""
    repo = f"bad-org/m{uuid.uuid4().hex[:8]}"
    manifest = json.loads(json.dumps(_manifest_for(bucket, repo)))
    tamper.manifest(manifest)
    seed_snapshot(s3, bucket, repo, FILES, commit=_COMMIT, manifest_override=manifest, object_override=tamper.objects)
    sandbox = tmp_path / "sandbox"
    cache = sandbox / "cache"
    sandbox.mkdir()
    with pytest.raises(LoaderError, match=tamper.message):
        pull(repo, bucket=bucket, cache_dir=cache, fallback="error")
    outside = [p for p in sandbox.rglob("*") if not p.is_relative_to(cache)]
    assert outside == []
    assert not list(cache.rglob("snapshots")), "no snapshot of a refused manifest"
    # Blobs of other files may stay (each verified, so the next pull reuses it); none may be wrong.
    for blob in cache.rglob("blobs/*"):
        if ".loader-" in blob.name:
            continue  # a download's resumable temporary file, never used as a blob
        data = blob.read_bytes()
        git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
        assert blob.name in (hashlib.sha256(data).hexdigest(), git_oid), f"{blob.name} is not verified"


_COMMIT = "c" * 40


def _manifest_for(bucket: str, repo: str) -> dict[str, Any]:
    return build_manifest(bucket, "models", repo, "main", _COMMIT, FILES)


# ---------------------------------------------------------------------------------------------
# CLI arguments
# ---------------------------------------------------------------------------------------------

CLI_CASES = {
    "sync-bad-repo-id": (["sync", "../x", "--bucket", "{bucket}"], "not a Hub model id"),
    "sync-three-segments": (["sync", "a/b/c", "--bucket", "{bucket}"], "not a Hub model id"),
    "sync-bad-revision": (["sync", "a/b@..", "--bucket", "{bucket}"], "not a valid branch"),
    "sync-part-size-too-small": (["sync", "a/b", "--bucket", "{bucket}", "--part-size", "1KiB"], "part_size"),
    "sync-part-size-too-large": (["sync", "a/b", "--bucket", "{bucket}", "--part-size", "6GiB"], "part_size"),
    "sync-part-size-garbage": (["sync", "a/b", "--bucket", "{bucket}", "--part-size", "lots"], "part-size"),
    "sync-concurrency-zero": (["sync", "a/b", "--bucket", "{bucket}", "--concurrency", "0"], "concurrency"),
    "sync-unknown-flag": (["sync", "a/b", "--bucket", "{bucket}", "--token", "x"], "unrecognized arguments"),
    "sync-missing-bucket": (["sync", "a/b"], "--bucket"),
    "sync-bad-bucket-name": (["sync", "a/b", "--bucket", "Bad_Bucket"], "bucket"),
    "sync-revision-disagrees": (["sync", "a/b@dev", "--bucket", "{bucket}", "--revision", "main"], "disagree"),
}
LOADER_CASES = {
    "pull-bad-repo-id": (["pull", "../x", "--bucket", "{bucket}"], ".."),
    "pull-unknown-flag": (["pull", "a/b", "--bucket", "{bucket}", "--tokne", "x"], "unrecognized arguments"),
    "pull-part-size-zero": (["pull", "a/b", "--bucket", "{bucket}", "--part-size-mib", "0"], "part"),
    "pull-concurrency-garbage": (["pull", "a/b", "--bucket", "{bucket}", "--concurrency", "many"], "concurrency"),
    "pull-bad-verify": (["pull", "a/b", "--bucket", "{bucket}", "--verify", "md5"], "verify"),
}


@contextlib.contextmanager
def exit_code() -> Iterator[list[int]]:
    """Collect a CLI's exit code, whether it returns it or raises SystemExit (argparse)."""
    code: list[int] = []
    try:
        yield code
    except SystemExit as exc:
        code.append(int(exc.code) if isinstance(exc.code, int) else 1)


@pytest.mark.integration
@pytest.mark.parametrize(("argv", "message"), CLI_CASES.values(), ids=CLI_CASES.keys())
def test_model_cache_cli_refuses_bad_arguments(
    hub: Any, s3: Any, bucket: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """GIVEN bad arguments WHEN `model-cache` runs THEN a non-zero exit, a message naming the problem,
    and nothing written to the bucket."""
    out, err = io.StringIO(), io.StringIO()
    with exit_code() as code:
        code.append(cli.main([arg.format(bucket=bucket) for arg in argv], out=out, err=err))
    captured = capsys.readouterr()
    assert code
    assert code[0] != 0
    assert message in err.getvalue() + captured.err, err.getvalue() + captured.err
    assert failed_clean_problems(s3, bucket) == []
    assert incomplete_uploads(s3, bucket) == []


@pytest.mark.integration
@pytest.mark.parametrize(("argv", "message"), LOADER_CASES.values(), ids=LOADER_CASES.keys())
def test_loader_cli_refuses_bad_arguments(
    s3: Any,
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    """GIVEN bad arguments WHEN `model-cache-loader` runs THEN exit code 2, a message naming the
    argument, and no cache directory was even created."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with exit_code() as code:
        code.append(loader_cli.main([arg.format(bucket=bucket) for arg in argv]))
    captured = capsys.readouterr()
    assert code == [2], captured.err
    assert message in captured.err, captured.err
    assert not cache.exists()


def test_corpus_has_at_least_thirty_cases() -> None:
    """The issue asks for a corpus of at least 30 named cases."""
    total = len(HOSTILE_BODIES) + len(HOSTILE_LISTINGS) + len(HOSTILE_MANIFESTS) + len(CLI_CASES) + len(LOADER_CASES)
    assert total >= 30
