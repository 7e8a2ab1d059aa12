"""Shared pieces of the fault-injection suite: the after-trial invariants and the fault table.

Every trial ends in one of two acceptable states, checked by `check_bucket` / `check_loader_cache`:
- recovered: the model is published and every file its manifest names is in S3 with the manifest's
  size and sha256;
- failed clean: the run raised a domain error and nothing points at unverified bytes.
In both, no multipart upload is left open and no loader blob differs from its name's digest.
`corrupted` counts any violation (a manifest or ref pointing at missing or wrong bytes, a bad blob);
`orphaned` counts open multipart uploads. Both must be 0.

`FaultTable` merges each fault kind's figures into docs/explanation/reliability.md between the markers
`<!-- faults:begin -->` / `<!-- faults:end -->`, keeping the rows of kinds this session did not run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import REPO_ROOT, failed_clean_problems, incomplete_uploads

SEED = 20261130
FIGURES_ENV = "MODEL_CACHE_WRITE_FIGURES"
DOC_PATH = REPO_ROOT / "docs" / "explanation" / "reliability.md"
BEGIN = "<!-- faults:begin -->"
END = "<!-- faults:end -->"
HEADER = "| fault kind | trials | recovered | failed clean | corrupted | orphaned uploads |"
RULE = "| --- | ---: | ---: | ---: | ---: | ---: |"
MANIFEST_KEY = re.compile(r"(?:^|/)(?:manifests/[0-9a-f]{40}\.json|manifest\.json)$")
REF_KEY = re.compile(r"^(?P<repo>.+/)refs/(?P<revision>.+)$")


@dataclass
class BucketState:
    """What a trial left in the bucket."""

    manifests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # a manifest or ref pointing at missing or wrong bytes
    open_uploads: int = 0

    def published(self, manifest_key: str) -> bool:
        return manifest_key in self.manifests


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def check_bucket(s3: Any, bucket: str, prefix: str = "models") -> BucketState:
    """Read back every manifest under `prefix` and every file it names; every ref must name a manifest."""
    state = BucketState(open_uploads=len(incomplete_uploads(s3, bucket)))
    keys = _keys(s3, bucket, prefix.rstrip("/") + "/")
    present = set(keys)
    for key in keys:
        if MANIFEST_KEY.search(key):
            state.manifests.append(key)
            manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            for entry in manifest["files"]:
                state.problems.extend(_check_file(s3, bucket, key, entry))
        ref = REF_KEY.match(key)
        if ref:
            commit = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            if f"{ref['repo']}manifests/{commit}.json" not in present:
                state.problems.append(f"{key} points at {commit}, which has no manifest")
    return state


def _check_file(s3: Any, bucket: str, manifest_key: str, entry: dict[str, Any]) -> list[str]:
    version = {"VersionId": entry["version_id"]} if entry.get("version_id") else {}
    try:
        body = s3.get_object(Bucket=bucket, Key=entry["key"], **version)["Body"].read()
    except s3.exceptions.ClientError as exc:
        return [f"{manifest_key} names {entry['key']} ({version}), which is gone: {exc}"]
    if len(body) != entry["size"] or hashlib.sha256(body).hexdigest() != entry["sha256"]:
        return [f"{manifest_key} names {entry['key']} but S3 holds other bytes ({len(body)} B)"]
    return []


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def check_loader_cache(cache_dir: Path) -> list[str]:
    """Every finished blob's bytes match its name (sha256 for LFS blobs, git blob id otherwise), and
    every snapshot link resolves to a blob. Temporary `.loader-*` files are allowed (resumable)."""
    problems: list[str] = []
    for blobs in cache_dir.glob("models--*/blobs"):
        for blob in blobs.iterdir():
            if ".loader-" in blob.name or blob.name.endswith(".lock"):
                continue
            data = blob.read_bytes()
            if blob.name not in (hashlib.sha256(data).hexdigest(), git_blob_oid(data)):
                problems.append(f"blob {blob} does not match its name")
    for link in cache_dir.glob("models--*/snapshots/*/**/*"):
        if link.is_symlink() and not link.resolve().is_file():
            problems.append(f"snapshot link {link} is dangling")
    return problems


@dataclass
class FaultRow:
    kind: str
    trials: int = 0
    recovered: int = 0
    failed_clean: int = 0
    corrupted: int = 0
    orphaned: int = 0

    def line(self) -> str:
        return (
            f"| {self.kind} | {self.trials} | {self.recovered} | {self.failed_clean} | "
            f"{self.corrupted} | {self.orphaned} |"
        )


class FaultTable:
    """The figures of one fault kind, accumulated over its trials, then merged into the doc."""

    def __init__(self, kind: str) -> None:
        self.row = FaultRow(kind)
        self.notes: list[str] = []

    def trial(self, *, recovered: bool, corrupted: int, orphaned: int, note: str = "") -> None:
        self.row.trials += 1
        self.row.recovered += int(recovered)
        self.row.failed_clean += int(not recovered)
        self.row.corrupted += corrupted
        self.row.orphaned += orphaned
        if note:
            self.notes.append(note)

    def bucket_trial(self, state: BucketState, *, recovered: bool, note: str = "") -> None:
        self.trial(recovered=recovered, corrupted=len(state.problems), orphaned=state.open_uploads, note=note)

    def write(self) -> None:
        """Merge this kind's row into docs/explanation/reliability.md (rows of other kinds stay as they are), then
        hold the must-be-0 columns to 0."""
        write_rows([self.row])
        assert self.row.corrupted == 0, f"{self.row.kind}: {self.row.corrupted} corrupted"
        assert self.row.orphaned == 0, f"{self.row.kind}: {self.row.orphaned} orphaned uploads"
        assert self.row.trials == self.row.recovered + self.row.failed_clean


def _parse_rows(block: str) -> dict[str, FaultRow]:
    rows: dict[str, FaultRow] = {}
    for line in block.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[1].isdigit():
            continue
        kind, *numbers = cells
        rows[kind] = FaultRow(kind, *(int(number) for number in numbers))
    return rows


def figures_wanted() -> bool:
    """Tests never rewrite tracked files: the figures go to docs/explanation/reliability.md only when asked
    (`make reliability-figures` sets MODEL_CACHE_WRITE_FIGURES=1)."""
    return os.environ.get(FIGURES_ENV) == "1"


def write_rows(rows: list[FaultRow], path: Path = DOC_PATH) -> None:
    if not figures_wanted():
        return
    text = path.read_text() if path.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    block, tail = rest.split(END, 1)
    merged = _parse_rows(block)
    for row in rows:
        merged[row.kind] = row
    ordered = sorted(merged.values(), key=lambda row: FAULT_ORDER.get(row.kind, len(FAULT_ORDER)))
    table = "\n".join([HEADER, RULE, *(row.line() for row in ordered)])
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


FAULT_KINDS = (
    "Hub connection dropped mid-file",
    "Hub 500/502/503 bursts",
    "Hub 429 with Retry-After",
    "Hub stalls past the read timeout",
    "Hub serves a corrupted byte",
    "S3 503 SlowDown (UploadPart, CompleteMultipartUpload)",
    "S3 connection reset (UploadPart, CompleteMultipartUpload)",
    "copy unit SIGKILLed mid-part, then retried",
    "two executions of one model at once",
    "loader SIGKILLed mid-download, then restarted",
    "loader disk full (tmpfs)",
    "second execution fails in finalize after the first published",
    "older commit publishes last",
    "write fails between manifest and refs",
    "Hub API stalls during resolve",
    "StartExecution throttled",
    "a Plan task retried",
    "S3 body cut mid-GET for the loader",
    "retry serves different bytes (loader)",
    "two threads and two processes pulling one model",
    "a short write (loader)",
    "Hub fallback serves a corrupted byte (loader)",
    "Hub fallback while the branch moves (loader)",
    "memory stream gets a flipped byte (loader)",
    "memory stream beside other weight files (loader)",
    "gc interleaved with a run (re-point refs)",
    "gc interleaved with a run (force re-copy)",
    "gc at every moment of a force re-copy",
    "request repeated after its execution failed",
    "request repeated after its branch moved",
    "request repeated after gc removed its snapshot",
    "Fargate task stops before the copier (pull, ENI, maintenance)",
    "Fargate task never starts",
)
FAULT_ORDER = {kind: index for index, kind in enumerate(FAULT_KINDS)}


# ---------------------------------------------------------------------------------------------
# The repo every engine trial copies, and fast retries
# ---------------------------------------------------------------------------------------------

MiB = 1024 * 1024
PART_SIZE = 5 * MiB  # S3's minimum: the weight file is a 3-part multipart upload
FAULT_REPO = "rel-org/faulty"
WEIGHT = "model.safetensors"
WEIGHT_SIZE = 12 * MiB + 12_345
SMALL_FILES = {
    "config.json": b'{"model_type": "llama", "hidden_size": 64}\n',
    "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}\n' * 40,
}
FILE_SIZES = {WEIGHT: WEIGHT_SIZE, **{path: len(body) for path, body in SMALL_FILES.items()}}


def build_fault_hub(root: Path) -> Path:
    """A Hub root with FAULT_REPO: one 12 MiB synthetic weight (3 parts of 5 MiB) and two small files."""
    from model_cache_devtools import modelgen

    modelgen.write_synthetic_repo(root / FAULT_REPO, {WEIGHT: (WEIGHT_SIZE, 11)}, small_files=SMALL_FILES)
    return root


@dataclass
class RetryLog:
    """The delays the engine's Hub reader asked to sleep (recorded, then slept for at most `cap`)."""

    delays: list[float] = field(default_factory=list)
    cap: float = 0.02

    def sleep(self, seconds: float) -> None:
        import time

        self.delays.append(seconds)
        time.sleep(min(seconds, self.cap))


def fast_hub_retries(monkeypatch: Any, *, read_timeout: float = 1.0) -> RetryLog:
    """Make every HubReader the engine and steps build use short backoffs and a short read timeout.

    engine.sync and steps.copy_unit build `HubReader(...)` with the default `hub_reader.RetryPolicy()`;
    the policy's fields are the knobs the Hub reader exposes, so this swaps in a policy class with small
    defaults (same attempts, same Retry-After handling) whose sleep is recorded.
    """
    from model_cache.adapters import hub_reader

    log = RetryLog()
    timeout = read_timeout

    @dataclass
    class FastPolicy(hub_reader.RetryPolicy):
        base_delay: float = 0.01
        max_delay: float = 0.05
        connect_timeout: float = 2.0
        read_timeout: float = timeout
        sleep: Any = field(default=log.sleep, repr=False)

    monkeypatch.setattr(hub_reader, "RetryPolicy", FastPolicy)
    return log


def new_bucket(s3: Any, *, versioned: bool = True) -> str:
    import uuid

    name = f"rel-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@dataclass
class Outcome:
    result: Any = None
    error: BaseException | None = None


def attempt(run: Any, *args: Any, **kwargs: Any) -> Outcome:
    """Run one trial; a domain error is an outcome to check, anything else a bug that fails the test."""
    from model_cache.contract import errors

    try:
        return Outcome(result=run(*args, **kwargs))
    except errors.ModelCacheError as exc:
        return Outcome(error=exc)


def assert_trial(
    table: FaultTable, s3: Any, bucket: str, outcome: Outcome, *, should_recover: bool, label: str
) -> None:
    """Record an engine trial and assert its end state: recovered = the manifest it returned is
    published and verified, work files gone; failed clean = a named error, no manifest, no object."""
    state = check_bucket(s3, bucket)
    recovered = outcome.error is None
    table.bucket_trial(state, recovered=recovered, note=label)
    assert state.problems == [], f"{label}: {state.problems}"
    assert state.open_uploads == 0, f"{label} left {state.open_uploads} uploads open"
    if recovered:
        assert should_recover, f"{label} should have failed; it published {outcome.result}"
        assert state.published(outcome.result.manifest_key)
        assert not _keys(s3, bucket, "_model-cache-work/")
    else:
        assert not should_recover, f"{label} should have recovered: {outcome.error!r}"
        assert str(outcome.error), "a failure names its problem"
        assert state.manifests == [], f"{label} failed but published {state.manifests}"
        leftovers = failed_clean_problems(s3, bucket)
        assert leftovers == [], f"{label} failed and left {leftovers}"
