"""pull() against moto's real S3 server: layout, verification, warm restart, misses, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from loader_seed import RequestCounter, Seeded, seed_snapshot, small_repo

from model_cache_loader import IntegrityError, ManifestError, NotCachedError, UsageError, metrics, pull
from model_cache_loader.api import make_s3_client

pytestmark = pytest.mark.integration

REPO = "test-org/small"


@pytest.fixture
def seeded(s3: Any, bucket: str) -> Seeded:
    return seed_snapshot(s3, bucket, REPO, small_repo())


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def test_pull_writes_the_huggingface_cache_layout(seeded: Seeded, hf_cache: Path) -> None:
    """GIVEN a snapshot in S3 WHEN pulled
    THEN blobs, relative snapshot links and refs/main are exactly as huggingface_hub writes them."""
    result = pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache)

    repo_dir = hf_cache / "models--test-org--small"
    assert result.source == "s3"
    assert result.commit == seeded.commit
    assert result.path == repo_dir / "snapshots" / seeded.commit
    assert result.files == len(seeded.files)
    # The duplicate weight is one blob, downloaded once.
    assert result.bytes_downloaded == sum(len(c) for p, c in seeded.files.items() if p != "copy/model.safetensors")
    assert (repo_dir / "refs" / "main").read_bytes() == seeded.commit.encode()
    for path, content in seeded.files.items():
        link = result.path / path
        assert link.is_symlink()
        target = os.readlink(link)
        assert not os.path.isabs(target)
        assert target == "../" * (path.count("/") + 2) + "blobs/" + seeded.blob_name(path)
        assert link.read_bytes() == content
    blobs = sorted(p.name for p in (repo_dir / "blobs").iterdir())
    assert blobs == sorted({seeded.blob_name(p) for p in seeded.files})


def test_huggingface_hub_reads_the_pull_offline(seeded: Seeded, hf_cache: Path, hub: Any) -> None:
    """GIVEN a pulled snapshot WHEN huggingface_hub asks for files with local_files_only THEN it finds them, no HTTP."""
    from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

    pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache)

    hub.requests.clear()
    found = hf_hub_download(REPO, "sub/dir/notes.txt", cache_dir=hf_cache, local_files_only=True)
    assert Path(found).read_bytes() == seeded.files["sub/dir/notes.txt"]
    snapshot = snapshot_download(REPO, cache_dir=hf_cache, local_files_only=True)
    assert Path(snapshot).name == seeded.commit
    assert list(hub.requests) == []
    scanned = scan_cache_dir(hf_cache)
    (repo,) = [r for r in scanned.repos if r.repo_id == REPO]
    assert repo.size_on_disk == sum(len(c) for p, c in seeded.files.items() if p != "copy/model.safetensors")
    assert {rev.commit_hash for rev in repo.revisions} == {seeded.commit}
    assert not scanned.warnings


def test_warm_restart_reuses_the_snapshot_without_object_gets(seeded: Seeded, hf_cache: Path) -> None:
    """GIVEN a completed pull WHEN pulled again
    THEN nothing is downloaded: only refs/main is read (nothing at all when pinned to a commit)."""
    pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache)
    client = make_s3_client()
    counter = RequestCounter(client)

    by_branch = pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache, s3_client=client)
    assert by_branch.source == "local"
    assert by_branch.bytes_downloaded == 0
    assert counter.gets("/snapshots/") == []
    assert [url.rsplit("/", 2)[-2:] for url in counter.gets()] == [["refs", "main"]]

    counter.requests.clear()
    pinned = pull(f"{REPO}@{seeded.commit}", bucket=seeded.bucket, cache_dir=hf_cache, s3_client=client)
    assert pinned.source == "local"
    assert counter.requests == []


def test_missing_blob_is_fetched_again(seeded: Seeded, hf_cache: Path) -> None:
    """GIVEN a pulled snapshot with one blob deleted WHEN pulled again THEN only that blob is downloaded."""
    first = pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache)
    (first.path / "config.json").resolve().unlink()

    again = pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache)
    assert again.source == "s3"
    assert again.bytes_downloaded == len(seeded.files["config.json"])
    assert (again.path / "config.json").read_bytes() == seeded.files["config.json"]


def test_sha256_local_rehashes_and_repairs_a_corrupted_blob(seeded: Seeded, hf_cache: Path) -> None:
    """GIVEN a blob overwritten on disk at the same size, its modification time put back
    WHEN pulled THEN the stat-based check does not see it, and verify='sha256-local' re-downloads it."""
    first = pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache)
    blob = (first.path / "model.safetensors").resolve()
    before = blob.stat()
    with blob.open("r+b") as handle:  # in place: same inode, same size
        handle.write(b"\0" * before.st_size)
    os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache).source == "local"  # stat-based: not noticed

    repaired = pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache, verify="sha256-local")
    assert repaired.source == "s3"
    assert (repaired.path / "model.safetensors").read_bytes() == seeded.files["model.safetensors"]


def test_a_blob_rewritten_since_it_was_verified_is_checked_again(seeded: Seeded, hf_cache: Path) -> None:
    """GIVEN a blob rewritten on disk at the same size (its modification time moves)
    WHEN pulled with the default check THEN the verified marker no longer matches, and it is repaired from S3."""
    first = pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache)
    blob = (first.path / "model.safetensors").resolve()
    blob.write_bytes(b"\0" * blob.stat().st_size)

    repaired = pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache)
    assert repaired.source == "s3"
    assert (repaired.path / "model.safetensors").read_bytes() == seeded.files["model.safetensors"]


def test_corrupted_object_is_refused_and_nothing_kept(s3: Any, bucket: str, hf_cache: Path) -> None:
    """GIVEN an S3 object whose bytes differ from the manifest's sha256
    WHEN pulled THEN IntegrityError, and no blob (nor temporary file) is kept."""
    files = small_repo()
    bad = bytearray(files["model.safetensors"])
    bad[1000] ^= 0xFF
    seeded = seed_snapshot(
        s3, bucket, REPO, files, object_override={"model.safetensors": bytes(bad), "copy/model.safetensors": bytes(bad)}
    )

    with pytest.raises(IntegrityError, match=r"model\.safetensors.*do not match the manifest's sha256"):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", part_size=64 * 1024)

    blobs = hf_cache / "models--test-org--small" / "blobs"
    assert seeded.blob_name("model.safetensors") not in tree(blobs)
    assert not [name for name in tree(blobs) if "incomplete" in name or "parts" in name]
    assert not (hf_cache / "models--test-org--small" / "snapshots" / seeded.commit / "model.safetensors").exists()


def test_object_of_the_wrong_size_is_refused(s3: Any, bucket: str, hf_cache: Path) -> None:
    """GIVEN an object shorter than the manifest says WHEN pulled with verify='size' THEN IntegrityError."""
    files = small_repo()
    seed_snapshot(s3, bucket, REPO, files, object_override={"config.json": files["config.json"][:-1]})
    with pytest.raises(IntegrityError, match=r"config\.json.*bytes, the manifest says"):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error", verify="size")


def test_tampered_manifest_with_traversal_path_writes_nothing(
    s3: Any, bucket: str, hf_cache: Path, tmp_path: Path
) -> None:
    """GIVEN a manifest naming '../../escape' WHEN pulled THEN ManifestError, and nothing is written anywhere."""
    files = small_repo()
    seeded = seed_snapshot(s3, bucket, REPO, files)
    tampered = json.loads(json.dumps(seeded.manifest))
    tampered["files"][0]["path"] = "../../../escape.txt"
    tampered["files"][0]["key"] = tampered["prefix"] + "../../../escape.txt"
    seed_snapshot(s3, bucket, REPO, files, manifest_override=tampered)
    before = tree(tmp_path)

    with pytest.raises(ManifestError, match=r"'\.\./\.\./\.\./escape\.txt' has a '\.' or '\.\.' segment"):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="hub")
    assert tree(tmp_path) == before


def test_miss_with_fallback_error_names_the_fix(bucket: str, hf_cache: Path) -> None:
    """GIVEN an empty bucket WHEN pulled with fallback='error' THEN NotCachedError, nothing written."""
    with pytest.raises(NotCachedError, match="not cached"):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error")
    assert tree(hf_cache) == []


def test_region_bucket_list_picks_this_regions_bucket(
    s3: Any, seeded: Seeded, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN MODEL_CACHE_BUCKET with one bucket per region WHEN pulled in us-east-1 THEN its bucket is used."""
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("MODEL_CACHE_BUCKET", f"eu-west-1=no-such-bucket-anywhere,us-east-1={seeded.bucket}")
    result = pull(REPO, cache_dir=hf_cache, fallback="error")
    assert result.source == "s3"
    assert result.commit == seeded.commit


def test_defaults_come_from_the_pod_environment(
    seeded: Seeded, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN MODEL_ID, MODEL_CACHE_BUCKET and HF_HUB_CACHE WHEN pull() has no arguments THEN it uses them."""
    monkeypatch.setenv("MODEL_ID", REPO)
    monkeypatch.setenv("MODEL_CACHE_BUCKET", seeded.bucket)
    result = pull()
    assert result.path.parent.parent.parent == hf_cache
    assert result.source == "s3"


def test_pull_logs_one_structured_line_and_emf(
    seeded: Seeded, hf_cache: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a pull with EMF on WHEN it completes THEN one JSON log line and one EMF document describe it."""
    before = metrics.counts()
    with caplog.at_level("INFO", logger="model_cache_loader"):
        pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache, emit_emf=True)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith("{")]
    assert len(lines) == 1
    assert lines[0]["source"] == "s3"
    assert lines[0]["commit"] == seeded.commit
    assert lines[0]["bytes"] > 0
    emf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert emf["CacheHit"] == 1
    assert emf["BytesDownloaded"] == lines[0]["bytes"]
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"]
    assert metrics.counts().get("hit", 0) == before.get("hit", 0) + 1


def test_resume_from_a_cut_download_fetches_only_the_rest(s3: Any, bucket: str, hf_cache: Path) -> None:
    """GIVEN a temporary blob and journal left by a dead process WHEN pulled THEN only missing parts are fetched."""
    part = 64 * 1024
    files = {"model.safetensors": os.urandom(10 * part + 123)}
    seeded = seed_snapshot(s3, bucket, REPO, files)
    name = seeded.blob_name("model.safetensors")
    blobs = hf_cache / "models--test-org--small" / "blobs"
    blobs.mkdir(parents=True)
    content = files["model.safetensors"]
    # What a killed pull leaves: parts 0-3 written and journalled, part 4 written but not journalled.
    (blobs / f"{name}.loader-incomplete").write_bytes(content[: 5 * part] + b"\0" * (len(content) - 5 * part))
    header = json.dumps({"part_size": part, "sha256": name, "size": len(content)}, sort_keys=True)
    (blobs / f"{name}.loader-parts").write_text(header + "\n0\n1\n2\n3\n")

    result = pull(REPO, bucket=bucket, cache_dir=hf_cache, part_size=part)
    assert result.bytes_downloaded == len(content) - 4 * part
    assert (result.path / "model.safetensors").read_bytes() == content
    assert sorted(p.name for p in blobs.iterdir()) == [name]


def test_resumed_bytes_are_never_trusted(s3: Any, bucket: str, hf_cache: Path) -> None:
    """GIVEN a journal claiming parts whose bytes are garbage WHEN pulled THEN the blob is re-downloaded whole."""
    part = 64 * 1024
    files = {"model.safetensors": os.urandom(6 * part)}
    seeded = seed_snapshot(s3, bucket, REPO, files)
    name = seeded.blob_name("model.safetensors")
    blobs = hf_cache / "models--test-org--small" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{name}.loader-incomplete").write_bytes(b"\x01" * len(files["model.safetensors"]))
    header = json.dumps({"part_size": part, "sha256": name, "size": 6 * part}, sort_keys=True)
    (blobs / f"{name}.loader-parts").write_text(header + "\n0\n1\n2\n")

    result = pull(REPO, bucket=bucket, cache_dir=hf_cache, part_size=part)
    assert result.bytes_downloaded == 3 * part + 6 * part  # the resumed attempt, then the whole blob again
    assert (result.path / "model.safetensors").read_bytes() == files["model.safetensors"]


def test_s3_unreachable_uses_a_complete_local_snapshot(
    seeded: Seeded, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a pulled snapshot WHEN S3 becomes unreachable THEN the snapshot on disk is used (source local)."""
    pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    result = pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache, fallback="error")
    assert result.source == "local"
    assert result.reason is not None
    assert "unreachable" in result.reason


def test_many_parts_and_files_in_parallel(s3: Any, bucket: str, hf_cache: Path) -> None:
    """GIVEN several multi-part objects WHEN pulled with small parts and high concurrency THEN every byte is right."""
    files = {f"shard-{i}.safetensors": os.urandom(700_000 + i * 13_001) for i in range(4)}
    files["tokenizer.json"] = b"{}"
    seed_snapshot(s3, bucket, REPO, files)
    result = pull(REPO, bucket=bucket, cache_dir=hf_cache, part_size=64 * 1024, concurrency=12)
    for path, content in files.items():
        assert (result.path / path).read_bytes() == content


def test_a_caller_supplied_client_is_used(seeded: Seeded, hf_cache: Path) -> None:
    """GIVEN an s3_client WHEN pulling THEN the loader sends its requests through it."""
    client = boto3.client("s3")
    counter = RequestCounter(client)
    pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache, s3_client=client)
    assert len(counter.gets("/snapshots/")) == len({seeded.blob_name(p) for p in seeded.files}) - 1  # empty: no GET


def test_tags_and_commits_get_huggingface_hubs_refs(s3: Any, bucket: str, hf_cache: Path) -> None:
    """GIVEN a snapshot published under tag v1.0 WHEN pulled by tag and then by commit
    THEN refs/v1.0 holds the commit, and a pull by commit writes no ref (as huggingface_hub does)."""
    seeded = seed_snapshot(s3, bucket, REPO, small_repo(), revision="v1.0")
    refs = hf_cache / "models--test-org--small" / "refs"

    by_commit = pull(REPO, seeded.commit, bucket=bucket, cache_dir=hf_cache, fallback="error")
    assert by_commit.source == "s3"
    assert tree(refs) == []

    by_tag = pull(f"{REPO}@v1.0", bucket=bucket, cache_dir=hf_cache, fallback="error")
    assert by_tag.source == "local"
    assert (refs / "v1.0").read_text() == seeded.commit
    with pytest.raises(NotCachedError):
        pull(REPO, bucket=bucket, cache_dir=hf_cache, fallback="error")  # no refs/main in S3


def test_conflicting_revisions_are_a_usage_error(hf_cache: Path) -> None:
    """GIVEN 'repo@rev' and a different revision= WHEN pulled THEN a UsageError names both."""
    with pytest.raises(UsageError, match="pins revision 'v1' but revision='v2'"):
        pull(f"{REPO}@v1", "v2", bucket="any", cache_dir=hf_cache)


@pytest.mark.parametrize("verify", ["size", "none"])
def test_lighter_verification_modes_still_write_the_layout(seeded: Seeded, hf_cache: Path, verify: str) -> None:
    """GIVEN verify='size' or 'none' WHEN pulled THEN the same bytes and layout result."""
    result = pull(REPO, bucket=seeded.bucket, cache_dir=hf_cache, verify=verify)  # type: ignore[arg-type]
    for path, content in seeded.files.items():
        assert (result.path / path).read_bytes() == content


def test_partial_files_are_discarded_when_not_verifying_sha256(s3: Any, bucket: str, hf_cache: Path) -> None:
    """GIVEN a journalled partial blob WHEN pulled with verify='size' THEN it is not resumed (nothing could
    check its bytes) but downloaded whole, and nothing of the dead pull is left."""
    part = 64 * 1024
    files = {"model.safetensors": os.urandom(4 * part)}
    seeded = seed_snapshot(s3, bucket, REPO, files)
    name = seeded.blob_name("model.safetensors")
    blobs = hf_cache / "models--test-org--small" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{name}.loader-incomplete").write_bytes(b"\x02" * len(files["model.safetensors"]))
    header = json.dumps({"part_size": part, "sha256": name, "size": 4 * part}, sort_keys=True)
    (blobs / f"{name}.loader-parts").write_text(header + "\n0\n1\n")

    result = pull(REPO, bucket=bucket, cache_dir=hf_cache, part_size=part, verify="size")
    assert result.bytes_downloaded == 4 * part
    assert (result.path / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert sorted(p.name for p in blobs.iterdir()) == [name]


@pytest.mark.unit
def test_auto_parts_grow_to_each_streams_share_up_to_the_cap() -> None:
    """GIVEN big shards WHEN the part size is left to the loader THEN parts grow from 16 MiB toward
    each stream's share, capped at 64 MiB; an explicit part size is kept as given."""
    from model_cache_loader.api import DEFAULT_PART_SIZE
    from model_cache_loader.transfer import AUTO_PART_MAX, plan_part_size

    mib, gib = 1 << 20, 1 << 30
    auto = {"concurrency": 32, "part_size": DEFAULT_PART_SIZE, "auto": True}
    assert plan_part_size(gib, 2 * gib, **auto) == 64 * mib == AUTO_PART_MAX
    assert plan_part_size(gib, 20 * gib, **auto) == AUTO_PART_MAX
    assert plan_part_size(512 * mib, gib, **auto) == 32 * mib
    assert plan_part_size(64 * mib, 256 * mib, **auto) == DEFAULT_PART_SIZE  # a small model keeps every stream busy
    assert plan_part_size(10 * mib, 256 * mib, **auto) == 10 * mib  # one stream's share or less: whole
    assert plan_part_size(gib, 2 * gib, concurrency=32, part_size=DEFAULT_PART_SIZE) == DEFAULT_PART_SIZE


@pytest.mark.unit
def test_sha256_blobs_get_parts_in_waves_queued_in_turn() -> None:
    """GIVEN blobs checked by sha256, which must be hashed in file order (issue 25) THEN their parts are
    sized so the streams cover the model in HASH_WAVES waves, not one, and the blobs' parts are queued
    in turn, each blob's in order, so every blob's hash frontier moves from the first wave on."""
    from model_cache_loader.api import DEFAULT_PART_SIZE
    from model_cache_loader.transfer import HASH_WAVES, _interleaved, plan_part_size

    mib, gib = 1 << 20, 1 << 30
    auto = {"concurrency": 32, "part_size": DEFAULT_PART_SIZE, "auto": True}
    assert HASH_WAVES > 1
    assert plan_part_size(gib, 2 * gib, **auto, in_order=True) == 2 * gib // (32 * HASH_WAVES) == 16 * mib
    assert plan_part_size(gib, 16 * gib, **auto, in_order=True) == 64 * mib  # the cap holds
    first, second, third = object(), object(), object()
    queues: list[list[Any]] = [[(first, 0), (first, 1), (first, 2)], [(second, 0)], [(third, 0), (third, 1)]]
    assert _interleaved(queues) == [(first, 0), (second, 0), (third, 0), (first, 1), (third, 1), (first, 2)]


def test_a_pull_queues_the_blobs_parts_in_turn(
    s3: Any, bucket: str, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN two multi-part blobs WHEN pulled THEN their parts are queued in turn (a0, b0, a1, b1, ...),
    each blob's in order: both hash frontiers move from the first wave (issue 25)."""
    from concurrent.futures import ThreadPoolExecutor

    from model_cache_loader import transfer

    part = 64 * 1024
    files = {"a.safetensors": os.urandom(3 * part), "b.safetensors": os.urandom(3 * part)}
    seed_snapshot(s3, bucket, REPO, files)
    queued: list[tuple[str, int]] = []

    class RecordingPool(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            queued.append((args[0].label, args[1]))
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(transfer, "ThreadPoolExecutor", RecordingPool)
    result = pull(REPO, bucket=bucket, cache_dir=hf_cache, part_size=part, concurrency=8)
    assert [entry for entry in queued if entry[0] in files] == [
        ("a.safetensors", 0), ("b.safetensors", 0), ("a.safetensors", 1), ("b.safetensors", 1),
        ("a.safetensors", 2), ("b.safetensors", 2),
    ]  # fmt: skip
    assert (result.path / "b.safetensors").read_bytes() == files["b.safetensors"]


def test_every_finished_part_starts_its_writeback_before_the_fsync(
    s3: Any, bucket: str, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a multi-part blob WHEN pulled THEN each part's byte range is handed to sync_file_range
    (start writeback, do not wait) as soon as it is on disk, so the final fsync waits for little."""
    from model_cache_loader import transfer

    calls: list[tuple[int, int, int]] = []

    def record(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append((offset, length, flags))
        return 0

    monkeypatch.setattr(transfer, "_SYNC_FILE_RANGE", record)
    content = os.urandom(5 * 65_536 + 123)
    seed_snapshot(s3, bucket, REPO, {"model.safetensors": content})
    pull(REPO, bucket=bucket, cache_dir=hf_cache, part_size=65_536, concurrency=3)
    assert sorted(calls) == [(start, min(65_536, len(content) - start), 2) for start in range(0, len(content), 65_536)]


def test_the_receiving_threads_never_wait_on_the_disk_and_every_writeback_starts_before_the_fsync(
    s3: Any, bucket: str, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a multi-part blob, and a record of each sync_file_range call (its thread) and each fsync
    WHEN pulled THEN no receiving thread starts a writeback itself (sync_file_range blocks while the
    disk is behind, which held the last parts, and so the check, ~0.5 s/GiB after the last byte): one
    writeback thread does, and every part's writeback is started before the blob's fsync."""
    import threading

    from model_cache_loader import transfer

    events: list[tuple[str, str]] = []
    fsynced = threading.Event()

    def record(fd: int, offset: int, length: int, flags: int) -> int:
        # A disk that is behind: the first writeback waits (up to a second) for any fsync, so an
        # fsync that does not wait for the queued writebacks shows up ahead of them.
        if not events:
            fsynced.wait(timeout=1.0)
        events.append(("writeback", threading.current_thread().name))
        return 0

    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        events.append(("fsync", threading.current_thread().name))
        fsynced.set()
        real_fsync(fd)

    monkeypatch.setattr(transfer, "_SYNC_FILE_RANGE", record)
    monkeypatch.setattr(transfer.os, "fsync", fsync)
    content = os.urandom(7 * 65_536 + 5)
    seed_snapshot(s3, bucket, REPO, {"model.safetensors": content})
    pull(REPO, bucket=bucket, cache_dir=hf_cache, part_size=65_536, concurrency=4, fallback="error")
    writebacks = [name for kind, name in events if kind == "writeback"]
    assert len(writebacks) == 8
    assert set(writebacks) == {"mcl-writeback"}
    kinds = [kind for kind, _ in events]
    assert kinds.index("fsync") > max(i for i, kind in enumerate(kinds) if kind == "writeback")
