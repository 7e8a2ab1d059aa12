"""Fidelity of the Hub double: the unmodified huggingface_hub client, pointed at it, behaves as on the Hub.

Every test talks HTTP to a real HubServer on 127.0.0.1. Expected values are computed here from the
bytes on disk (sha256, git blob ids, LFS pointers built by hand), not taken from the double, so a
wrong header or field in the double fails a test. huggingface_hub reads HF_ENDPOINT at import, so
calls pass `endpoint=` explicitly; the CLI test proves the HF_ENDPOINT route in a fresh process.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from model_cache_devtools.hub import HubServer
from model_cache_devtools.synthetic import SyntheticFile

pytestmark = pytest.mark.integration

LFS_THRESHOLD = 1_000_000  # small, so a 1.5 MB text file is LFS by size without costing much disk
TREE_PAGE_SIZE = 7
GATED_TOKEN = "hf_gated_fixture_token_1234567890"
SYNTHETIC_SPECS = {
    "big/shard-00001.bin": (3_500_000, 11),
    "big/plain.dat": (1_200_000, 12),
    # Over huggingface_hub's 10 MiB write chunk, so a drop after 12 MB leaves bytes on disk to resume from.
    "big/resumable.safetensors": (24_000_000, 13),
}
RESUME_DROP_AT = 12_000_000


def _rand(size: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def _write_repo(folder: Path, files: dict[str, bytes], **control: object) -> None:
    for path, content in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    for name, data in control.items():
        (folder / f".hub-{name}.json").write_text(json.dumps(data))


TINY_FILES = {
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "config.json": b'{"model_type": "llama", "hidden_size": 8}\n',
    "README.md": b"# tiny\n",
    "tokenizer/vocab.txt": b"a\nb\nc\n",
    "nested/deeper/still/notes.md": b"deep\n",
    "nested/données.txt": b"unicode name\n",
    "model.safetensors": _rand(2_500_000, 1),  # LFS by pattern
    "data/large.txt": _rand(1_500_000, 2),  # LFS by size (over LFS_THRESHOLD)
    "empty.bin": b"",  # empty files are never LFS pointers
}


@pytest.fixture(scope="module")
def repos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fidelity-hub")
    synthetic = {"files": {p: {"size": s, "seed": seed} for p, (s, seed) in SYNTHETIC_SPECS.items()}}
    _write_repo(root / "acme" / "tiny", dict(TINY_FILES), synthetic=synthetic)
    _write_repo(root / "solo", {"README.md": b"no org\n", "weights.bin": _rand(4096, 3)})
    _write_repo(
        root / "acme" / "gated",
        {"config.json": b"{}\n", "model.safetensors": _rand(300_000, 4)},
        gated={"tokens": [GATED_TOKEN], "mode": "manual"},
    )
    wide = {
        f"dir{d}/sub{s}/file{f}.txt": f"{d}-{s}-{f}\n".encode() for d in range(3) for s in range(2) for f in range(3)
    }
    _write_repo(root / "acme" / "wide", wide)
    _write_repo(
        root / "acme" / "refs",
        {"config.json": b'{"refs": true}\n'},
        refs={"branches": ["main", "dev", "refs/pr/1"], "tags": ["v1.0"]},
    )
    return root


@pytest.fixture(scope="module")
def double_server(repos_root: Path) -> Iterator[HubServer]:
    with HubServer(repos_root, lfs_threshold=LFS_THRESHOLD, tree_page_size=TREE_PAGE_SIZE) as server:
        yield server


@pytest.fixture
def double(double_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    monkeypatch.setenv("HF_ENDPOINT", double_server.url)
    double_server.faults.clear()
    double_server.requests.clear()
    double_server.bandwidth_limit = None
    yield double_server
    double_server.faults.clear()
    double_server.bandwidth_limit = None


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "hf-cache")


def api(double: HubServer, token: str | bool = False) -> HfApi:
    return HfApi(endpoint=double.url, token=token)


# -- independent oracles ---------------------------------------------------------------------


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob " + str(len(content)).encode() + b"\0" + content, usedforsecurity=False).hexdigest()


def expected_files(repos_root: Path, repo_id: str) -> dict[str, bytes]:
    """The repo's files as the Hub should serve them: real files minus control files, plus synthetic ones."""
    folder = repos_root / repo_id
    files = {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not (p.parent == folder and p.name.startswith(".hub-"))
    }
    control = folder / ".hub-synthetic.json"
    if control.exists():
        for path, spec in json.loads(control.read_text())["files"].items():
            files[path] = SyntheticFile(spec["size"], spec["seed"]).read()
    return files


def is_lfs(path: str, content: bytes) -> bool:
    return len(content) > 0 and (path.endswith((".safetensors", ".bin")) or len(content) > LFS_THRESHOLD)


def lfs_pointer_text(content: bytes) -> str:
    sha256 = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(content)}\n"


def expected_oid(path: str, content: bytes) -> str:
    if is_lfs(path, content):
        return git_blob_id(lfs_pointer_text(content).encode())
    return git_blob_id(content)


# -- downloads -------------------------------------------------------------------------------


def test_snapshot_download_is_byte_identical_and_lfs_goes_through_the_cdn(
    double: HubServer, repos_root: Path, cache: str
) -> None:
    # GIVEN a repo with nested paths, a unicode name, dotfiles, LFS files by name and by size, and synthetic files
    expected = expected_files(repos_root, "acme/tiny")
    # WHEN the unmodified client downloads the whole snapshot
    folder = Path(snapshot_download("acme/tiny", endpoint=double.url, cache_dir=cache, token=False))
    # THEN every file is there, byte for byte, and nothing else (no control files)
    downloaded = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert downloaded.keys() == expected.keys()
    for path, content in expected.items():
        assert downloaded[path] == content, path
    assert folder.name == double.repo_info("acme/tiny").commit
    # AND LFS bodies came from the CDN origin after a redirect, regular bodies from /resolve
    cdn_files = {r.file for r in double.requests.matching(method="GET", endpoint="cdn", status=200)}
    resolve_files = {r.file for r in double.requests.matching(method="GET", endpoint="resolve", status=200)}
    lfs_paths = {p for p, c in expected.items() if is_lfs(p, c)}
    assert cdn_files == lfs_paths
    assert resolve_files == {p for p, c in expected.items() if c} - lfs_paths
    assert {r.status for r in double.requests.matching(method="HEAD", endpoint="resolve") if r.file in lfs_paths} == {
        302
    }


def test_no_org_repo_downloads(double: HubServer, repos_root: Path, cache: str) -> None:
    # GIVEN a repo folder directly under the root  WHEN it is downloaded by its bare name
    folder = Path(snapshot_download("solo", endpoint=double.url, cache_dir=cache, token=False))
    # THEN its files arrive intact
    assert (folder / "weights.bin").read_bytes() == (repos_root / "solo" / "weights.bin").read_bytes()
    assert (folder / "README.md").read_bytes() == b"no org\n"


@pytest.mark.parametrize("path", ["nested/deeper/still/notes.md", "big/shard-00001.bin", "data/large.txt"])
def test_hf_hub_download_by_branch_and_by_commit(double: HubServer, repos_root: Path, cache: str, path: str) -> None:
    # GIVEN the repo's commit id
    commit = api(double).model_info("acme/tiny").sha
    assert commit is not None
    expected = expected_files(repos_root, "acme/tiny")[path]
    for revision in ("main", commit):
        # WHEN one file is downloaded by branch name and by commit id
        local = hf_hub_download("acme/tiny", path, revision=revision, endpoint=double.url, cache_dir=cache, token=False)
        # THEN the bytes are identical and they sit in the snapshot of that commit
        assert Path(local).read_bytes() == expected
        assert f"/snapshots/{commit}/" in local


def test_synthetic_file_matches_the_generator(double: HubServer, cache: str) -> None:
    # GIVEN a file declared in .hub-synthetic.json  WHEN it is downloaded
    size, seed = SYNTHETIC_SPECS["big/shard-00001.bin"]
    local = hf_hub_download("acme/tiny", "big/shard-00001.bin", endpoint=double.url, cache_dir=cache, token=False)
    # THEN its bytes are the generator's
    assert Path(local).read_bytes() == SyntheticFile(size, seed).read()


def test_refs_tags_and_url_encoded_pr_revisions(double: HubServer, cache: str) -> None:
    # GIVEN a repo with branches main, dev, refs/pr/1 and tag v1.0, all at its one commit
    commit = double.repo_info("acme/refs").commit
    for revision in ("dev", "v1.0", "refs/pr/1"):
        # WHEN asked by that name (refs/pr/1 travels as refs%2Fpr%2F1)
        info = api(double).model_info("acme/refs", revision=revision)
        local = hf_hub_download("acme/refs", "config.json", revision=revision, endpoint=double.url, cache_dir=cache)
        # THEN it resolves to the commit
        assert info.sha == commit
        assert Path(local).read_bytes() == b'{"refs": true}\n'
    refs = api(double).list_repo_refs("acme/refs")
    assert {b.name for b in refs.branches} == {"main", "dev", "refs/pr/1"}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0", commit)]


# -- metadata --------------------------------------------------------------------------------


def test_model_info_files_metadata_matches_the_bytes(double: HubServer, repos_root: Path) -> None:
    # GIVEN the bytes the repo holds
    expected = expected_files(repos_root, "acme/tiny")
    # WHEN model_info is asked for files metadata
    info = api(double).model_info("acme/tiny", files_metadata=True)
    # THEN each sibling's size, blob id and LFS sha256 match hashes computed here, independently
    assert info.id == "acme/tiny"
    assert info.sha == double.repo_info("acme/tiny").commit
    assert info.gated is False
    assert info.private is False
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert siblings.keys() == expected.keys()
    for path, content in expected.items():
        sibling = siblings[path]
        assert sibling.size == len(content), path
        assert sibling.blob_id == expected_oid(path, content), path
        if is_lfs(path, content):
            assert sibling.lfs is not None, path
            assert sibling.lfs.sha256 == hashlib.sha256(content).hexdigest()
            assert sibling.lfs.size == len(content)
        else:
            assert sibling.lfs is None, path


def test_model_info_without_blobs_lists_names_only(double: HubServer, repos_root: Path) -> None:
    # WHEN model_info is called without files_metadata (what snapshot_download does)
    info = api(double).model_info("acme/tiny")
    # THEN siblings carry names but no sizes, as on the Hub
    assert {s.rfilename for s in info.siblings or []} == expected_files(repos_root, "acme/tiny").keys()
    assert all(s.size is None and s.blob_id is None for s in info.siblings or [])


def test_list_repo_tree_recursive_paginates(double: HubServer, repos_root: Path) -> None:
    # GIVEN a repo of 18 files in 9 folders, and a tree page size of 7
    expected = expected_files(repos_root, "acme/wide")
    # WHEN the whole tree is listed recursively
    entries = list(api(double).list_repo_tree("acme/wide", recursive=True))
    # THEN every file and folder appears exactly once, with its blob id, across several pages
    files = {e.path: e for e in entries if isinstance(e, RepoFile)}
    folders = [e.path for e in entries if isinstance(e, RepoFolder)]
    assert files.keys() == expected.keys()
    assert len(entries) == len(files) + len(folders) == len({e.path for e in entries})
    assert sorted(folders) == sorted(
        {f"dir{d}" for d in range(3)} | {f"dir{d}/sub{s}" for d in range(3) for s in range(2)}
    )
    for path, entry in files.items():
        assert entry.blob_id == git_blob_id(expected[path])
        assert entry.size == len(expected[path])
    tree_pages = double.requests.matching(method="GET", endpoint="api", status=200)
    assert len(tree_pages) == -(-len(entries) // TREE_PAGE_SIZE)


def test_list_repo_tree_of_a_folder_is_one_level(double: HubServer) -> None:
    # WHEN a sub-folder is listed without recursion
    entries = list(api(double).list_repo_tree("acme/tiny", path_in_repo="nested"))
    # THEN only its direct children are listed
    assert sorted((type(e).__name__, e.path) for e in entries) == [
        ("RepoFile", "nested/données.txt"),
        ("RepoFolder", "nested/deeper"),
    ]


def test_list_repo_tree_lfs_entries(double: HubServer, repos_root: Path) -> None:
    content = (repos_root / "acme" / "tiny" / "model.safetensors").read_bytes()
    # WHEN the root is listed
    entry = next(e for e in api(double).list_repo_tree("acme/tiny") if e.path == "model.safetensors")
    # THEN an LFS file carries its sha256, size and pointer size
    assert isinstance(entry, RepoFile)
    assert entry.lfs is not None
    assert entry.lfs.sha256 == hashlib.sha256(content).hexdigest()
    assert entry.lfs.size == len(content)
    assert entry.lfs.pointer_size == len(
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{entry.lfs.sha256}\nsize {len(content)}\n"
    )


def test_expanded_tree_pages_by_50_with_last_commit_and_security(tmp_path: Path) -> None:
    # GIVEN a repo of 120 files served with the Hub's default page sizes
    root = tmp_path / "hub"
    _write_repo(root / "org" / "many", {f"f{i:03d}.txt": b"x" for i in range(120)})
    with HubServer(root) as server:
        # WHEN the tree is listed with expand=True (the Hub pages those by 50)
        entries = list(HfApi(endpoint=server.url, token=False).list_repo_tree("org/many", expand=True))
        pages = server.requests.matching(endpoint="api")
        commit = server.repo_info("org/many").commit
    # THEN all 120 come back over 3 pages, each with the commit and a security status
    assert len(entries) == 120
    assert len(pages) == 3
    assert all(isinstance(e, RepoFile) and e.last_commit and e.last_commit.oid == commit for e in entries)
    assert all(isinstance(e, RepoFile) and e.security and e.security.safe for e in entries)


def test_list_repo_files_and_file_exists(double: HubServer, repos_root: Path) -> None:
    client = api(double)
    assert sorted(client.list_repo_files("acme/tiny")) == sorted(expected_files(repos_root, "acme/tiny"))
    assert client.file_exists("acme/tiny", "nested/deeper/still/notes.md")
    assert not client.file_exists("acme/tiny", "nested/nope.md")
    assert client.revision_exists("acme/refs", "v1.0")
    assert not client.revision_exists("acme/refs", "v2.0")
    assert client.repo_exists("solo")
    assert not client.repo_exists("acme/nope")


def test_get_paths_info(double: HubServer, repos_root: Path) -> None:
    content = (repos_root / "acme" / "tiny" / "config.json").read_bytes()
    # WHEN paths-info is asked about a file, a folder and a missing path
    infos = api(double).get_paths_info("acme/tiny", ["config.json", "nested/deeper", "missing.txt"])
    # THEN the two that exist are described and the missing one is left out
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFile", "config.json"), ("RepoFolder", "nested/deeper")]
    assert isinstance(infos[0], RepoFile)
    assert infos[0].blob_id == git_blob_id(content)
    assert infos[0].size == len(content)


def test_get_hf_file_metadata_for_lfs_and_regular_files(double: HubServer, repos_root: Path) -> None:
    commit = double.repo_info("acme/tiny").commit
    weights = (repos_root / "acme" / "tiny" / "model.safetensors").read_bytes()
    config = (repos_root / "acme" / "tiny" / "config.json").read_bytes()
    # WHEN metadata is fetched for an LFS file and a regular file
    lfs = get_hf_file_metadata(hf_hub_url("acme/tiny", "model.safetensors", endpoint=double.url), token=False)
    regular = get_hf_file_metadata(hf_hub_url("acme/tiny", "config.json", endpoint=double.url), token=False)
    # THEN the LFS file's etag is its sha256 and its location is on the CDN origin, not the Hub's
    assert (lfs.commit_hash, lfs.etag, lfs.size) == (commit, hashlib.sha256(weights).hexdigest(), len(weights))
    assert lfs.location.startswith(double.cdn_url + "/")
    assert double.cdn_url != double.url
    # AND the regular file's etag is its git blob id, served from /resolve itself
    assert (regular.commit_hash, regular.etag, regular.size) == (commit, git_blob_id(config), len(config))
    assert regular.location == hf_hub_url("acme/tiny", "config.json", endpoint=double.url)


# -- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [("bytes=10-19", 10, 20), ("bytes=2499990-", 2_499_990, 2_500_000), ("bytes=-7", 2_499_993, 2_500_000)],
)
def test_ranges_on_lfs_redirect(double: HubServer, repos_root: Path, range_header: str, start: int, end: int) -> None:
    content = (repos_root / "acme" / "tiny" / "model.safetensors").read_bytes()
    url = hf_hub_url("acme/tiny", "model.safetensors", endpoint=double.url)
    # WHEN a range is asked of an LFS file, following the redirect
    response = httpx2.get(url, headers={"Range": range_header}, follow_redirects=True)
    # THEN the CDN answers 206 with exactly those bytes
    assert response.status_code == 206
    assert response.content == content[start:end]
    assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(content)}"
    assert response.headers["Accept-Ranges"] == "bytes"


def test_range_on_regular_file_and_unsatisfiable_range(double: HubServer, repos_root: Path) -> None:
    content = (repos_root / "acme" / "tiny" / "config.json").read_bytes()
    url = hf_hub_url("acme/tiny", "config.json", endpoint=double.url)
    # WHEN a range is asked of a regular file
    partial = httpx2.get(url, headers={"Range": "bytes=3-9"})
    # THEN /resolve answers 206 itself
    assert (partial.status_code, partial.content) == (206, content[3:10])
    # WHEN the range starts past the end  THEN 416 names the size
    beyond = httpx2.get(url, headers={"Range": f"bytes={len(content)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(content)}"


def stream_into(received: bytearray, url: str, timeout: float = 30) -> None:
    """GET `url` following redirects, appending body bytes to `received` as they arrive."""
    with httpx2.stream("GET", url, follow_redirects=True, timeout=timeout) as response:
        for chunk in response.iter_raw():
            received += chunk


# -- faults ----------------------------------------------------------------------------------


def test_download_resumes_after_a_dropped_connection(double: HubServer, cache: str) -> None:
    # GIVEN the CDN drops the connection once, 12 MB into a 24 MB LFS file
    size, seed = SYNTHETIC_SPECS["big/resumable.safetensors"]
    double.faults.add("acme/tiny", "*.safetensors", kind="drop", after_bytes=RESUME_DROP_AT, times=1)
    # WHEN the client downloads it
    local = hf_hub_download("acme/tiny", "big/resumable.safetensors", endpoint=double.url, cache_dir=cache, token=False)
    # THEN the file is byte-identical
    assert Path(local).read_bytes() == SyntheticFile(size, seed).read()
    # AND the client resumed with a Range from the last whole chunk it had written (10 MiB), not from zero
    gets = double.requests.matching(method="GET", endpoint="cdn")
    assert [(g.status, g.bytes_sent, g.aborted) for g in gets] == [
        (200, RESUME_DROP_AT, True),
        (206, size - 10 * 2**20, False),
    ]
    assert gets[1].range == f"bytes={10 * 2**20}-"


def test_drop_before_a_whole_chunk_restarts_and_still_ends_identical(
    double: HubServer, repos_root: Path, cache: str
) -> None:
    # GIVEN a drop 1 MB into a 2.5 MB file: less than the client's 10 MiB write chunk
    content = (repos_root / "acme" / "tiny" / "model.safetensors").read_bytes()
    double.faults.add("acme/tiny", "model.safetensors", kind="drop", after_bytes=1_000_000, times=1)
    # WHEN the client downloads it
    local = hf_hub_download("acme/tiny", "model.safetensors", endpoint=double.url, cache_dir=cache, token=False)
    # THEN it starts over and the file is still byte-identical
    assert Path(local).read_bytes() == content
    gets = double.requests.matching(method="GET", endpoint="cdn")
    assert [(g.status, g.bytes_sent, g.aborted) for g in gets] == [(200, 1_000_000, True), (200, len(content), False)]


def test_drop_fault_cuts_the_body_at_the_given_byte(double: HubServer) -> None:
    double.faults.add("acme/tiny", "big/*", kind="drop", after_bytes=123_457, endpoint="cdn")
    url = hf_hub_url("acme/tiny", "big/plain.dat", endpoint=double.url)
    received = bytearray()
    # WHEN the file is streamed
    with pytest.raises(httpx2.RemoteProtocolError):
        stream_into(received, url)
    # THEN exactly the first 123,457 bytes arrived, and they were the right ones
    size, seed = SYNTHETIC_SPECS["big/plain.dat"]
    assert bytes(received) == SyntheticFile(size, seed).read(0, 123_457)


def test_status_fault_then_recovery_on_the_api(double: HubServer) -> None:
    # GIVEN the tree API answers 500 twice
    double.faults.add("acme/wide", kind="status", status=500, times=2, endpoint="api")
    url = f"{double.url}/api/models/acme/wide/tree/main"
    # WHEN it is called three times  THEN two 500s with the Hub's error body, then a listing
    statuses = [httpx2.get(url) for _ in range(3)]
    assert [r.status_code for r in statuses] == [500, 500, 200]
    assert statuses[0].json() == {"error": "Internal Error"}
    assert isinstance(statuses[2].json(), list)


def test_503_on_resolve_is_retried_by_hf_hub_download(double: HubServer, repos_root: Path, cache: str) -> None:
    # GIVEN /resolve answers 503 once
    double.faults.add("acme/tiny", "config.json", kind="status", status=503, times=1, endpoint="resolve")
    # WHEN the client downloads the file
    local = hf_hub_download("acme/tiny", "config.json", endpoint=double.url, cache_dir=cache, token=False)
    # THEN it retried and got the file
    assert Path(local).read_bytes() == (repos_root / "acme" / "tiny" / "config.json").read_bytes()
    assert [r.status for r in double.requests.matching(method="HEAD", file="config.json")] == [503, 200]


def test_429_with_retry_after_is_honoured_by_list_repo_tree(double: HubServer) -> None:
    # GIVEN the API rate-limits once, with Retry-After: 0
    double.faults.add("acme/wide", kind="status", status=429, retry_after=0, times=1, endpoint="api")
    raw = httpx2.get(f"{double.url}/api/models/acme/wide/tree/main")
    assert (raw.status_code, raw.headers["Retry-After"]) == (429, "0")
    double.faults.add("acme/wide", kind="status", status=429, retry_after=0, times=1, endpoint="api")
    # WHEN the client lists the tree  THEN it waits, retries and gets the listing
    entries = list(api(double).list_repo_tree("acme/wide"))
    assert sorted(e.path for e in entries) == ["dir0", "dir1", "dir2"]
    assert [r.status for r in double.requests.matching(endpoint="api")] == [429, 429, 200]


def test_stall_before_the_response_times_the_client_out_once(double: HubServer) -> None:
    # GIVEN the first model_info request stalls 30 s before answering
    double.faults.add("acme/tiny", kind="stall", seconds=30, times=1, endpoint="api")
    # WHEN a client with a 0.5 s timeout calls it twice
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.get(f"{double.url}/api/models/acme/tiny", timeout=0.5)
    # THEN the first call times out and the second (fault spent) is answered
    assert httpx2.get(f"{double.url}/api/models/acme/tiny", timeout=10).json()["id"] == "acme/tiny"


def test_stall_in_the_middle_of_the_body(double: HubServer, repos_root: Path) -> None:
    content = (repos_root / "acme" / "tiny" / "data" / "large.txt").read_bytes()
    # GIVEN the CDN stalls 30 s after 65,536 bytes of the body
    double.faults.add("acme/tiny", "data/large.txt", kind="stall", seconds=30, after_bytes=65_536)
    url = hf_hub_url("acme/tiny", "data/large.txt", endpoint=double.url)
    received = bytearray()
    # WHEN a client with a 0.5 s read timeout streams it
    with pytest.raises(httpx2.ReadTimeout):
        stream_into(received, url, timeout=0.5)
    # THEN the first 65,536 bytes arrived before the stall
    assert bytes(received) == content[:65_536]


def test_corrupt_fault_flips_exactly_one_byte(double: HubServer, repos_root: Path) -> None:
    content = (repos_root / "acme" / "tiny" / "model.safetensors").read_bytes()
    url = hf_hub_url("acme/tiny", "model.safetensors", endpoint=double.url)
    # GIVEN byte 1,234,567 of the weights is corrupted once
    double.faults.add("acme/tiny", "model.safetensors", kind="corrupt", offset=1_234_567)
    # WHEN a range not covering it is read, then the whole file twice
    untouched = httpx2.get(url, headers={"Range": "bytes=0-99"}, follow_redirects=True).content
    corrupted = httpx2.get(url, follow_redirects=True).content
    clean = httpx2.get(url, follow_redirects=True).content
    # THEN only the response covering the offset differs, at that byte only
    assert untouched == content[:100]
    assert len(corrupted) == len(content)
    assert [i for i in range(len(content)) if corrupted[i] != content[i]] == [1_234_567]
    assert clean == content


def test_bandwidth_cap_per_fault_and_global(double: HubServer, repos_root: Path) -> None:
    url = hf_hub_url("acme/tiny", "data/large.txt", endpoint=double.url)
    # GIVEN a 1 MB/s cap on one file  WHEN 300,000 bytes of it are read
    double.faults.add("acme/tiny", "data/large.txt", kind="bandwidth", bytes_per_second=1_000_000)
    began = time.monotonic()
    capped = httpx2.get(url, headers={"Range": "bytes=0-299999"}, follow_redirects=True)
    # THEN the transfer cannot have been faster than the cap (a lower bound: the server paces itself)
    assert capped.status_code == 206
    assert time.monotonic() - began >= 0.3
    assert "bandwidth" in double.requests.matching(endpoint="cdn")[0].faults
    # GIVEN instead a global per-connection cap of 2 MB/s
    double.faults.clear()
    double.bandwidth_limit = 2_000_000
    began = time.monotonic()
    response = httpx2.get(url, headers={"Range": "bytes=0-599999"}, follow_redirects=True)
    assert response.content == (repos_root / "acme" / "tiny" / "data" / "large.txt").read_bytes()[:600_000]
    assert time.monotonic() - began >= 0.3


# -- gating and errors -----------------------------------------------------------------------


def test_gated_repo_needs_the_token(double: HubServer, repos_root: Path, cache: str) -> None:
    # GIVEN a gated repo: metadata is public (as on the Hub), file content is not
    info = api(double).model_info("acme/gated")
    assert info.gated == "manual"
    # WHEN a file is downloaded without a token  THEN GatedRepoError, 401
    with pytest.raises(GatedRepoError) as anonymous:
        hf_hub_download("acme/gated", "config.json", endpoint=double.url, cache_dir=cache, token=False)
    assert anonymous.value.response.status_code == 401
    # WHEN with a wrong token  THEN GatedRepoError, 403
    with pytest.raises(GatedRepoError) as wrong:
        hf_hub_download("acme/gated", "config.json", endpoint=double.url, cache_dir=cache, token="hf_not_on_the_list")
    assert wrong.value.response.status_code == 403
    # WHEN with the token  THEN the whole snapshot downloads, LFS file included
    folder = Path(snapshot_download("acme/gated", endpoint=double.url, cache_dir=cache, token=GATED_TOKEN))
    assert (folder / "model.safetensors").read_bytes() == (repos_root / "acme/gated/model.safetensors").read_bytes()
    # AND the token never left for the CDN origin
    assert not any(r.authorized for r in double.requests.matching(endpoint="cdn"))
    assert all(r.authorized for r in double.requests.matching(endpoint="resolve", status=302))


def test_snapshot_download_of_a_gated_repo_without_token_raises_gated(double: HubServer, cache: str) -> None:
    with pytest.raises(GatedRepoError):
        snapshot_download("acme/gated", endpoint=double.url, cache_dir=cache, token=False)


def test_missing_repo_raises_repository_not_found(double: HubServer, cache: str) -> None:
    with pytest.raises(RepositoryNotFoundError):
        api(double).model_info("acme/nope")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/nope", "config.json", endpoint=double.url, cache_dir=cache, token=False)
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("nope", endpoint=double.url, cache_dir=cache, token=False)
    with pytest.raises(RepositoryNotFoundError):
        list(api(double).list_repo_tree("acme/nope"))


def test_unknown_revision_raises_revision_not_found(double: HubServer, cache: str) -> None:
    with pytest.raises(RevisionNotFoundError):
        api(double).model_info("acme/tiny", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            "acme/tiny", "config.json", revision="0" * 40, endpoint=double.url, cache_dir=cache, token=False
        )
    with pytest.raises(RevisionNotFoundError):
        list(api(double).list_repo_tree("acme/tiny", revision="no-such-branch"))


def test_missing_file_raises_entry_not_found(double: HubServer, cache: str) -> None:
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/tiny", "missing.json", endpoint=double.url, cache_dir=cache, token=False)
    with pytest.raises(EntryNotFoundError):
        list(api(double).list_repo_tree("acme/tiny", path_in_repo="no/such/folder"))
    # the .hub-*.json control files are not repo files
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/tiny", ".hub-synthetic.json", endpoint=double.url, cache_dir=cache, token=False)


def test_changing_a_file_changes_the_commit_and_retires_the_old_one(tmp_path: Path) -> None:
    # GIVEN a served repo and its commit
    root = tmp_path / "double"
    _write_repo(root / "org" / "mutable", {"config.json": b'{"v": 1}\n'})
    with HubServer(root) as server:
        client = HfApi(endpoint=server.url, token=False)
        old = client.model_info("org/mutable").sha
        # WHEN a file changes on disk between requests
        (root / "org" / "mutable" / "config.json").write_bytes(b'{"v": 2}\n')
        new = client.model_info("org/mutable").sha
        # THEN the commit changes, the new bytes are served and the old commit is gone
        assert new != old
        local = hf_hub_download("org/mutable", "config.json", endpoint=server.url, cache_dir=str(tmp_path / "c"))
        assert Path(local).read_bytes() == b'{"v": 2}\n'
        with pytest.raises(RevisionNotFoundError):
            client.model_info("org/mutable", revision=old)


# -- the command line ------------------------------------------------------------------------


def test_cli_serves_a_folder_to_a_fresh_python_with_hf_endpoint(repos_root: Path, tmp_path: Path) -> None:
    # GIVEN the double started from the command line on a free port
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_TOKEN", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "model_cache_devtools.hub", "--root", str(repos_root), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        # THEN its first line of stdout is its base URL
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        # WHEN a fresh Python with only HF_ENDPOINT set downloads a repo
        snippet = "from huggingface_hub import snapshot_download as s; print(s('acme/wide'))"
        result = subprocess.run(
            [sys.executable, "-c", snippet],
            env={**env, "HF_ENDPOINT": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        # THEN it prints a folder holding the repo's files
        assert result.returncode == 0, result.stderr
        folder = Path(result.stdout.strip().splitlines()[-1])
        assert str(folder).startswith(str(tmp_path / "cache"))
        expected = expected_files(repos_root, "acme/wide")
        assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == expected
        # AND SIGTERM stops the server cleanly
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_http_errors_carry_the_hub_error_headers(double: HubServer) -> None:
    # The fields huggingface_hub maps to exceptions, checked on the wire
    missing = httpx2.head(f"{double.url}/acme/tiny/resolve/main/missing.json")
    assert (missing.status_code, missing.headers["X-Error-Code"]) == (404, "EntryNotFound")
    assert missing.headers["X-Repo-Commit"] == double.repo_info("acme/tiny").commit
    revision = httpx2.get(f"{double.url}/api/models/acme/tiny/revision/nope")
    assert (revision.status_code, revision.headers["X-Error-Code"]) == (404, "RevisionNotFound")
    assert revision.json() == {"error": "Invalid rev id: nope"}
    gated = httpx2.get(f"{double.url}/acme/gated/resolve/main/config.json")
    assert (gated.status_code, gated.headers["X-Error-Code"]) == (401, "GatedRepo")
    with pytest.raises(HfHubHTTPError):
        api(double).model_info("acme/tiny", revision="nope")
