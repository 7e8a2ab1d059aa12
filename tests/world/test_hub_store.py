"""The Hub double's pieces without sockets: repo discovery, snapshots, git ids, ranges, faults, the request log."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from model_cache_devtools.hub import (
    FaultRegistry,
    HubConfigError,
    HubServer,
    RepoStore,
    RequestLog,
    RequestRecord,
    _is_lfs,
    _parse_range,
)

pytestmark = pytest.mark.unit

OLD = time.time() - 3600  # an mtime well outside the racy window


def write(folder: Path, files: dict[str, bytes], *, old: bool = True) -> None:
    for path, content in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        if old:
            os.utime(target, (OLD, OLD))


# -- discovery -------------------------------------------------------------------------------


def test_a_top_folder_with_files_is_a_repo_and_one_with_folders_only_is_an_org(tmp_path: Path) -> None:
    # GIVEN solo/ holding a file, org/ holding only folders, and a hidden folder
    write(tmp_path, {"solo/README.md": b"x", "org/one/a.txt": b"a", "org/two/b.txt": b"b", ".cache/x/y": b"z"})
    store = RepoStore(tmp_path)
    # THEN solo is a no-org repo, org/one and org/two are repos, org itself and hidden folders are not
    assert store.repo_ids() == ["org/one", "org/two", "solo"]
    assert store.repo_folder("solo") == tmp_path / "solo"
    assert store.repo_folder("org/one") == tmp_path / "org" / "one"
    assert store.repo_folder("org") is None
    assert store.repo_folder("solo/README.md") is None
    assert store.repo_folder(".cache/x") is None
    assert store.repo_folder("../etc") is None


def test_a_repo_folder_with_only_a_control_file_is_a_repo(tmp_path: Path) -> None:
    # GIVEN a repo made only of synthetic files
    folder = tmp_path / "virtual"
    folder.mkdir()
    (folder / ".hub-synthetic.json").write_text(json.dumps({"files": {"w.bin": {"size": 10, "seed": 1}}}))
    # THEN it is a no-org repo serving the virtual file and not the control file
    snapshot = RepoStore(tmp_path).snapshot("virtual")
    assert snapshot is not None
    assert list(snapshot.files) == ["w.bin"]


# -- snapshots -------------------------------------------------------------------------------


def test_control_files_are_not_served_but_dotfiles_and_nested_control_names_are(tmp_path: Path) -> None:
    write(
        tmp_path / "o" / "r",
        {".gitattributes": b"*.bin filter=lfs\n", "sub/.hub-notes.json": b"{}", "a.txt": b"a", ".git/HEAD": b"ref"},
    )
    (tmp_path / "o" / "r" / ".hub-refs.json").write_text(json.dumps({"branches": ["main"], "tags": ["v1"]}))
    snapshot = RepoStore(tmp_path).snapshot("o/r")
    assert snapshot is not None
    assert list(snapshot.files) == [".gitattributes", "a.txt", "sub/.hub-notes.json"]
    assert snapshot.tags == ("v1",)


def test_blob_ids_and_tree_ids_are_git_s_own(tmp_path: Path) -> None:
    # GIVEN a repo of small regular files in nested folders (names chosen to exercise git's tree order)
    files = {"a.txt": b"alpha\n", "a/b.txt": b"beta\n", "a-b/c.txt": b"gamma\n", "z/y/x.md": b"deep\n"}
    folder = tmp_path / "o" / "r"
    write(folder, files)
    snapshot = RepoStore(tmp_path).snapshot("o/r")
    assert snapshot is not None
    # WHEN git itself indexes the same folder
    git = ["git", "-C", str(folder), "-c", "core.autocrlf=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    root_tree = subprocess.run([*git, "write-tree"], check=True, capture_output=True, text=True).stdout.strip()
    listing = subprocess.run([*git, "ls-tree", "-r", "-t", root_tree], check=True, capture_output=True, text=True)
    # THEN every blob id and tree id the double reports is the one git computes
    git_ids = {line.split("\t")[1]: line.split()[2] for line in listing.stdout.splitlines()}
    assert snapshot.directories[""] == root_tree
    for path, entry in snapshot.files.items():
        assert entry.git_oid == git_ids[path], path
    for path, tree_id in snapshot.directories.items():
        if path:
            assert tree_id == git_ids[path], path


def test_lfs_files_report_the_pointer_blob_id(tmp_path: Path) -> None:
    content = os.urandom(1000)
    write(tmp_path / "o" / "r", {"model.safetensors": content})
    snapshot = RepoStore(tmp_path).snapshot("o/r")
    assert snapshot is not None
    entry = snapshot.files["model.safetensors"]
    sha256 = hashlib.sha256(content).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize 1000\n".encode()
    assert (entry.lfs, entry.sha256, entry.pointer_size) == (True, sha256, len(pointer))
    assert entry.git_oid == hashlib.sha1(b"blob %d\0" % len(pointer) + pointer, usedforsecurity=False).hexdigest()


@pytest.mark.parametrize(
    ("path", "size", "lfs"),
    [
        ("model.safetensors", 10, True),
        ("sub/pytorch_model.bin", 10, True),
        ("weights.gguf", 10, True),
        ("data.tar.gz", 10, True),
        ("config.json", 10, False),
        ("config.json", 11, True),  # over the threshold of 10
        ("empty.bin", 0, False),
        ("runs/events.out.tfevents.1", 10, True),
    ],
)
def test_lfs_by_pattern_or_size(path: str, size: int, lfs: bool) -> None:
    assert _is_lfs(path, size, threshold=10) is lfs


def test_the_commit_follows_the_content(tmp_path: Path) -> None:
    folder = tmp_path / "o" / "r"
    write(folder, {"a.txt": b"one"})
    store = RepoStore(tmp_path)
    first = store.snapshot("o/r")
    assert first is not None
    # WHEN nothing changes  THEN the commit is the same
    again = store.snapshot("o/r")
    assert again is not None
    assert again.commit == first.commit
    # WHEN a file changes (same size, fresh mtime)  THEN the commit changes
    write(folder, {"a.txt": b"two"}, old=False)
    changed = store.snapshot("o/r")
    assert changed is not None
    assert changed.commit != first.commit
    # WHEN a file is added  THEN it changes again
    write(folder, {"b.txt": b"b"})
    added = store.snapshot("o/r")
    assert added is not None
    assert added.commit not in (first.commit, changed.commit)
    assert first.resolve_revision("main") == first.commit
    assert first.resolve_revision(first.commit) == first.commit
    assert first.resolve_revision("dev") is None


def test_hashes_are_reused_while_path_size_and_mtime_are_unchanged(tmp_path: Path) -> None:
    # GIVEN a hashed file whose mtime is old
    folder = tmp_path / "o" / "r"
    write(folder, {"a.txt": b"one"})
    store = RepoStore(tmp_path)
    before = store.snapshot("o/r")
    assert before is not None
    # WHEN its content is swapped for same-size bytes and its mtime put back (as git, the cache trusts stat)
    write(folder, {"a.txt": b"two"})
    after = store.snapshot("o/r")
    # THEN the cached hashes are served: proof the file was not re-read
    assert after is not None
    assert after.files["a.txt"].sha256 == before.files["a.txt"].sha256 == hashlib.sha256(b"one").hexdigest()


def test_two_repos_with_the_same_files_have_different_commits(tmp_path: Path) -> None:
    write(tmp_path, {"o/a/x.txt": b"same", "o/b/x.txt": b"same"})
    store = RepoStore(tmp_path)
    a, b = store.snapshot("o/a"), store.snapshot("o/b")
    assert a is not None
    assert b is not None
    assert a.files["x.txt"].git_oid == b.files["x.txt"].git_oid
    assert a.commit != b.commit


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (".hub-synthetic.json", "{not json", "not readable JSON"),
        (".hub-synthetic.json", json.dumps({"w.bin": {"size": 1, "seed": 1}}), '"files"'),
        (".hub-synthetic.json", json.dumps({"files": {"w.bin": {"size": -1, "seed": 1}}}), "size must be"),
        (".hub-synthetic.json", json.dumps({"files": {"../w.bin": {"size": 1, "seed": 1}}}), "relative POSIX"),
        (".hub-synthetic.json", json.dumps({"files": {"a.txt": {"size": 1, "seed": 1}}}), "both a real file"),
        (".hub-gated.json", json.dumps({"tokens": []}), "at least one token"),
        (".hub-gated.json", json.dumps({"tokens": ["t"], "mode": "sometimes"}), '"mode"'),
        (".hub-refs.json", json.dumps({"branches": "main"}), "'branches' must be a list"),
    ],
)
def test_bad_control_files_are_named_in_the_error(tmp_path: Path, name: str, content: str, message: str) -> None:
    write(tmp_path / "o" / "r", {"a.txt": b"a"})
    (tmp_path / "o" / "r" / name).write_text(content)
    with pytest.raises(HubConfigError, match=message) as error:
        RepoStore(tmp_path).snapshot("o/r")
    assert name in str(error.value) or "a.txt" in str(error.value)


# -- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=5-", (5, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=-1000", (0, 100)),
        ("bytes=90-1000", (90, 100)),
        ("bytes=99-99", (99, 100)),
        ("bytes=100-", "unsatisfiable"),
        ("bytes=-0", "unsatisfiable"),
        ("bytes=0-1,5-6", None),  # multi-range: the whole file
        ("items=0-1", None),
        ("bytes=9-3", None),
        ("bytes=x-3", None),
    ],
)
def test_parse_range(header: str | None, expected: object) -> None:
    assert _parse_range(header, 100) == expected


# -- faults and the log ----------------------------------------------------------------------


def test_a_fault_fires_its_count_then_recovers_and_matches_only_its_target() -> None:
    faults = FaultRegistry()
    faults.add("o/r", "*.safetensors", kind="status", status=503, times=2, endpoint="resolve")
    # other repo, other file, other endpoint: no match, nothing consumed
    assert faults.take("status", "o/other", "m.safetensors", "resolve") is None
    assert faults.take("status", "o/r", "config.json", "resolve") is None
    assert faults.take("status", "o/r", "m.safetensors", "cdn") is None
    assert faults.take("status", "o/r", None, "api") is None
    # the target: twice, then never again
    fired = [faults.take("status", "o/r", "sub/m.safetensors", "resolve") for _ in range(3)]
    assert [f.status if f else None for f in fired] == [503, 503, None]
    assert faults.active() == []


def test_a_fault_that_does_not_apply_is_not_consumed() -> None:
    faults = FaultRegistry()
    faults.add(kind="drop", after_bytes=1000)
    assert faults.take("drop", "o/r", "a", "cdn", lambda f: (f.after_bytes or 0) < 500) is None
    assert faults.take("drop", "o/r", "a", "cdn", lambda f: (f.after_bytes or 0) < 5000) is not None


def test_bandwidth_caps_last_until_cleared() -> None:
    faults = FaultRegistry()
    faults.add(kind="bandwidth", bytes_per_second=10)
    assert all(faults.take("bandwidth", "o/r", "a", "cdn") is not None for _ in range(5))
    faults.clear()
    assert faults.take("bandwidth", "o/r", "a", "cdn") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "explode"}, "unknown fault kind"),
        ({"kind": "drop"}, "after_bytes="),
        ({"kind": "status", "status": 200}, "HTTP error status"),
        ({"kind": "stall", "seconds": -1}, "seconds must be >= 0"),
        ({"kind": "corrupt", "offset": 1, "times": 0}, "times must be >= 1"),
        ({"kind": "drop", "after_bytes": 1, "endpoint": "s3"}, "unknown endpoint"),
        ({"kind": "bandwidth", "bytes_per_second": 0}, "must be > 0"),
    ],
)
def test_bad_faults_are_refused_with_a_reason(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultRegistry().add(**kwargs)  # type: ignore[arg-type]


def record(path: str) -> RequestRecord:
    return RequestRecord("GET", path, 200, 1, None, "api", "o/r", None)


def test_the_request_log_forgets_requests_in_flight_at_clear() -> None:
    log = RequestLog(settle=0.1)
    early = log.begin()
    log.clear()
    # a request that began before clear() ends after it: it must not appear in the new log
    log.finish(early, record("/early"))
    current = log.begin()
    log.finish(current, record("/current"))
    assert [r.path for r in log] == ["/current"]
    assert log.matching(path="/current")[0].bytes_sent == 1


def test_a_rescan_interval_reuses_the_listing_until_it_expires(tmp_path: Path) -> None:
    # GIVEN a store allowed to reuse a repo's listing for an hour
    folder = tmp_path / "o" / "r"
    write(folder, {"a.txt": b"one"})
    store = RepoStore(tmp_path, rescan_interval=3600)
    first = store.snapshot("o/r")
    assert first is not None
    # WHEN a file is added  THEN the reused snapshot does not show it (the knob trades freshness for speed)
    write(folder, {"b.txt": b"two"})
    assert store.snapshot("o/r") is first
    # AND a store with the default interval sees it at once
    fresh = RepoStore(tmp_path).snapshot("o/r")
    assert fresh is not None
    assert sorted(fresh.files) == ["a.txt", "b.txt"]


def test_warm_hashes_every_repo_and_names_the_ones_that_cannot_be_served(tmp_path: Path) -> None:
    # GIVEN one good repo and one with a broken control file
    write(tmp_path, {"o/good/a.txt": b"a", "o/bad/b.txt": b"b"})
    (tmp_path / "o" / "bad" / ".hub-gated.json").write_text("[]")
    server = HubServer(tmp_path)  # not started: warming needs no socket
    # WHEN it is warmed  THEN only the broken repo is reported, with the reason
    problems = server.warm()
    assert list(problems) == ["o/bad"]
    assert ".hub-gated.json" in problems["o/bad"]
    assert server.repo_info("o/good").files["a.txt"].sha256 == hashlib.sha256(b"a").hexdigest()
