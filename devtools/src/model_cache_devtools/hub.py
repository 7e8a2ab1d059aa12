"""An offline Hugging Face Hub: a real threaded HTTP/1.1 server over a folder of repo folders.

`python -m model_cache_devtools.hub --root DIR --port N` serves every repo folder
`DIR/<org>/<name>/` (or `DIR/<name>/`) at one commit whose id is derived from the content,
with the endpoints, headers, status codes and error headers the unmodified `huggingface_hub`
client reads (model info, tree, paths-info, refs, resolve with LFS redirects to a CDN on a
second port, ranges). Tests inject faults (dropped connections, 5xx/429, stalls, flipped
bytes, bandwidth caps) and read a log of every request served. docs/contributing/hub-double.md is the
user's guide; the repo-folder convention it documents is a contract with `modelgen`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fnmatch
import hashlib
import json
import os
import socket
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from model_cache_devtools.servers import ConnectionTrackingServer, serve_in_thread, stop_requested, stop_serving
from model_cache_devtools.synthetic import SyntheticFile, git_blob_oid, lfs_pointer

DEFAULT_LFS_THRESHOLD = 10 * 2**20
DEFAULT_TREE_PAGE_SIZE = 1000
EXPANDED_TREE_PAGE_SIZE = 50  # the Hub's page size when `expand=true`
CHUNK_SIZE = 1 << 20
CONTROL_PREFIX = ".hub-"
SYNTHETIC_CONTROL_FILE = ".hub-synthetic.json"
GATED_CONTROL_FILE = ".hub-gated.json"
REFS_CONTROL_FILE = ".hub-refs.json"
DEFAULT_BRANCH = "main"
# A file modified this recently may be rewritten within the same timestamp tick, so its hash is not
# cached (git's "racy timestamp" rule): tests that rewrite a file between requests always see it.
RACY_WINDOW_NS = 2_000_000_000
# The patterns of the Hub's default .gitattributes (plus *.gguf): files stored with Git LFS.
LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gguf", "*.gz", "*.h5", "*.joblib",
    "*.lfs.*", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet",
    "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar", "*.tar.*",
    "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
)  # fmt: skip
_COMMIT_IDENTITY = "Hub Double <hub-double@localhost> 0 +0000"

FaultKind = Literal["drop", "status", "stall", "corrupt", "bandwidth"]
FAULT_KINDS: tuple[str, ...] = ("drop", "status", "stall", "corrupt", "bandwidth")
FAULT_ENDPOINTS: tuple[str, ...] = ("any", "api", "resolve", "cdn")


class HubConfigError(ValueError):
    """A repo folder or control file the double cannot serve (the message says which and why)."""


# ---------------------------------------------------------------------------------------------
# Repo snapshots
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One served file: what the Hub reports about it and where its bytes come from."""

    path: str
    size: int
    sha256: str
    git_oid: str  # blob id of the content, or of the LFS pointer when `lfs`
    lfs: bool
    pointer_size: int | None
    local_path: Path | None = None
    synthetic: SyntheticFile | None = None

    @property
    def etag(self) -> str:
        """What the Hub puts in X-Linked-Etag: sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_oid

    def read(self, start: int, length: int) -> bytes:
        if self.synthetic is not None:
            return self.synthetic.read(start, start + length)
        assert self.local_path is not None
        with self.local_path.open("rb") as handle:
            return os.pread(handle.fileno(), length, start)


@dataclass(frozen=True)
class RepoSnapshot:
    """A repo as the double serves it right now: one commit, its files, refs and gating."""

    repo_id: str
    commit: str
    files: Mapping[str, FileEntry]
    directories: Mapping[str, str]  # path -> git tree id ("" is the root)
    branches: tuple[str, ...]
    tags: tuple[str, ...]
    gated_tokens: tuple[str, ...] | None
    gated_mode: str
    gate_api: bool
    last_modified: str

    @property
    def gated(self) -> bool:
        return self.gated_tokens is not None

    def resolve_revision(self, revision: str) -> str | None:
        if revision == self.commit or revision in self.branches or revision in self.tags:
            return self.commit
        return None

    def total_size(self) -> int:
        return sum(entry.size for entry in self.files.values())


def _is_lfs(path: str, size: int, threshold: int) -> bool:
    if size == 0:
        return False  # git-lfs never stores an empty file as a pointer
    name = path.rsplit("/", 1)[-1]
    return size > threshold or any(fnmatch.fnmatchcase(name, pattern) for pattern in LFS_PATTERNS)


def _git_object_id(kind: str, body: bytes) -> str:
    return hashlib.sha1(f"{kind} {len(body)}\0".encode() + body, usedforsecurity=False).hexdigest()


def _tree_ids(files: Mapping[str, FileEntry]) -> tuple[dict[str, str], str]:
    """Real git tree ids for every directory, and the root tree id."""
    children: dict[str, dict[str, tuple[str, str]]] = {"": {}}
    for path, entry in files.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent, name = "/".join(parts[: depth - 1]), parts[depth - 1]
            children.setdefault("/".join(parts[:depth]), {})
            children.setdefault(parent, {})[name] = ("40000", "/".join(parts[:depth]))
        children.setdefault("/".join(parts[:-1]), {})[parts[-1]] = ("100644", entry.git_oid)
    tree_ids: dict[str, str] = {}
    for directory in sorted(children, key=lambda d: d.count("/") + (1 if d else 0), reverse=True):
        body = b""
        # git orders tree entries by name, a directory's name compared as if it ended in "/"
        for name, (mode, ref) in sorted(
            children[directory].items(), key=lambda kv: kv[0] + ("/" if kv[1][0] == "40000" else "")
        ):
            oid = tree_ids[ref] if mode == "40000" else ref
            body += f"{mode} {name}\0".encode() + bytes.fromhex(oid)
        tree_ids[directory] = _git_object_id("tree", body)
    return tree_ids, tree_ids[""]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HubConfigError(f"{path}: not readable JSON ({exc})") from exc


def _validate_relative_path(path: str, source: Path) -> None:
    segments = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(s in ("", ".", "..") for s in segments):
        raise HubConfigError(f"{source}: {path!r} is not a relative POSIX path inside the repo")


class RepoStore:
    """Finds repo folders under `root` and turns them into snapshots, caching what is costly to hash."""

    def __init__(self, root: Path, lfs_threshold: int = DEFAULT_LFS_THRESHOLD, rescan_interval: float = 0.0) -> None:
        self.root = Path(root)
        self.lfs_threshold = lfs_threshold
        # 0: re-scan on every request. Listing costs a stat per file (about 5-10 ms per 1,000 files), so
        # benchmarks of big repos that never change may allow a snapshot to be reused this many seconds.
        self.rescan_interval = rescan_interval
        self._last_scan: dict[str, tuple[float, RepoSnapshot]] = {}
        self._lock = threading.Lock()
        # (path, size, mtime_ns, inode) -> (sha256, git blob sha1 of the content)
        self._file_hashes: dict[tuple[str, int, int, int], tuple[str, str]] = {}
        self._snapshots: dict[str, tuple[tuple[Any, ...], RepoSnapshot]] = {}

    # -- discovery ---------------------------------------------------------------------------

    @staticmethod
    def _holds_files(folder: Path) -> bool:
        try:
            with os.scandir(folder) as entries:
                return any(entry.is_file() for entry in entries)
        except OSError:
            return False

    def repo_folder(self, repo_id: str) -> Path | None:
        """The folder serving `repo_id`, or None. A top folder holding a file is a repo; else an org."""
        parts = repo_id.split("/")
        if len(parts) not in (1, 2) or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        top = self.root / parts[0]
        if not top.is_dir():
            return None
        if len(parts) == 1:
            return top if self._holds_files(top) else None
        folder = top / parts[1]
        return folder if folder.is_dir() and not self._holds_files(top) else None

    def repo_ids(self) -> list[str]:
        found: list[str] = []
        for top in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if not top.is_dir() or top.name.startswith("."):
                continue
            if self._holds_files(top):
                found.append(top.name)
            else:
                found.extend(f"{top.name}/{sub.name}" for sub in sorted(top.iterdir()) if sub.is_dir())
        return found

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot(self, repo_id: str) -> RepoSnapshot | None:
        """The repo as it is on disk now (re-scanned on every call unless `rescan_interval`; hashes reused)."""
        if self.rescan_interval > 0:
            with self._lock:
                recent = self._last_scan.get(repo_id)
            if recent is not None and time.monotonic() - recent[0] < self.rescan_interval:
                return recent[1]
        snapshot = self._current_snapshot(repo_id)
        if snapshot is not None and self.rescan_interval > 0:
            with self._lock:
                self._last_scan[repo_id] = (time.monotonic(), snapshot)
        return snapshot

    def _current_snapshot(self, repo_id: str) -> RepoSnapshot | None:
        folder = self.repo_folder(repo_id)
        if folder is None:
            return None
        listing = self._scan(folder)
        now = time.time_ns()
        fingerprint = tuple((path, st.st_size, st.st_mtime_ns, st.st_ino) for path, st in listing)
        racy = any(now - st.st_mtime_ns < RACY_WINDOW_NS for _, st in listing)
        with self._lock:
            cached = self._snapshots.get(repo_id)
        if cached is not None and cached[0] == fingerprint and not racy:
            return cached[1]
        snapshot = self._build(repo_id, folder, listing, now)
        if not racy:
            with self._lock:
                self._snapshots[repo_id] = (fingerprint, snapshot)
        return snapshot

    def _scan(self, folder: Path) -> list[tuple[str, os.stat_result]]:
        listing: list[tuple[str, os.stat_result]] = []
        pending: list[tuple[Path, str]] = [(folder, "")]
        while pending:
            directory, prefix = pending.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    relative = f"{prefix}{entry.name}"
                    if entry.is_dir():
                        if not (prefix == "" and entry.name == ".git"):
                            pending.append((Path(entry.path), f"{relative}/"))
                        continue
                    try:
                        info = entry.stat()  # follows symlinks: a linked file is served with its target's bytes
                    except OSError:
                        continue
                    if stat.S_ISREG(info.st_mode):
                        listing.append((relative, info))
        listing.sort(key=lambda item: item[0])
        return listing

    def _content_hashes(self, path: Path, info: os.stat_result, now: int) -> tuple[str, str]:
        key = (str(path), info.st_size, info.st_mtime_ns, info.st_ino)
        with self._lock:
            cached = self._file_hashes.get(key)
        if cached is not None:
            return cached
        sha256 = hashlib.sha256()
        blob = hashlib.sha1(b"blob %d\x00" % info.st_size, usedforsecurity=False)
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                sha256.update(chunk)
                blob.update(chunk)
        hashes = (sha256.hexdigest(), blob.hexdigest())
        if now - info.st_mtime_ns >= RACY_WINDOW_NS:
            with self._lock:
                self._file_hashes[key] = hashes
        return hashes

    def _entry(
        self, path: str, size: int, sha256: str, content_oid: str | Callable[[], str], **source: Any
    ) -> FileEntry:
        if _is_lfs(path, size, self.lfs_threshold):
            pointer = lfs_pointer(sha256, size)
            return FileEntry(path, size, sha256, git_blob_oid(pointer), True, len(pointer), **source)
        oid = content_oid if isinstance(content_oid, str) else content_oid()
        return FileEntry(path, size, sha256, oid, False, None, **source)

    def _build(self, repo_id: str, folder: Path, listing: list[tuple[str, os.stat_result]], now: int) -> RepoSnapshot:
        files: dict[str, FileEntry] = {}
        control: dict[str, Path] = {}
        newest = 0
        for path, info in listing:
            if "/" not in path and path.startswith(CONTROL_PREFIX) and path.endswith(".json"):
                control[path] = folder / path
                continue
            local = folder / path
            sha256, blob_oid = self._content_hashes(local, info, now)
            files[path] = self._entry(path, info.st_size, sha256, blob_oid, local_path=local)
            newest = max(newest, info.st_mtime_ns)
        for path, synthetic in self._synthetic_files(control.get(SYNTHETIC_CONTROL_FILE)).items():
            if path in files:
                raise HubConfigError(
                    f"{repo_id}: {path!r} is both a real file and declared in {SYNTHETIC_CONTROL_FILE}"
                )
            files[path] = self._entry(
                path, synthetic.size, synthetic.sha256(), synthetic.git_blob_oid, synthetic=synthetic
            )
        files = dict(sorted(files.items()))
        branches, tags = self._refs(control.get(REFS_CONTROL_FILE))
        tokens, mode, gate_api = self._gating(control.get(GATED_CONTROL_FILE))
        directories, root_tree = _tree_ids(files)
        # A real git commit object over the real root tree: the id changes whenever any file does.
        commit_body = f"tree {root_tree}\nauthor {_COMMIT_IDENTITY}\ncommitter {_COMMIT_IDENTITY}\n\n{repo_id}\n"
        commit = _git_object_id("commit", commit_body.encode())
        stamp = datetime.fromtimestamp(newest / 1e9 if newest else 0, tz=UTC)
        return RepoSnapshot(
            repo_id=repo_id,
            commit=commit,
            files=files,
            directories=directories,
            branches=branches,
            tags=tags,
            gated_tokens=tokens,
            gated_mode=mode,
            gate_api=gate_api,
            last_modified=stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        )

    @staticmethod
    def _synthetic_files(control: Path | None) -> dict[str, SyntheticFile]:
        if control is None:
            return {}
        data = _read_json(control)
        declared = data.get("files") if isinstance(data, dict) else None
        if not isinstance(declared, dict):
            raise HubConfigError(f'{control}: expected {{"files": {{"<path>": {{"size": N, "seed": N}}}}}}')
        result: dict[str, SyntheticFile] = {}
        for path, spec in declared.items():
            _validate_relative_path(path, control)
            if not isinstance(spec, dict) or set(spec) != {"size", "seed"}:
                raise HubConfigError(f'{control}: {path!r} must be {{"size": <int>, "seed": <int>}}, got {spec!r}')
            try:
                result[path] = SyntheticFile(spec["size"], spec["seed"])
            except ValueError as exc:
                raise HubConfigError(f"{control}: {path!r}: {exc}") from exc
        return result

    @staticmethod
    def _refs(control: Path | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if control is None:
            return (DEFAULT_BRANCH,), ()
        data = _read_json(control)
        branches = data.get("branches", [DEFAULT_BRANCH]) if isinstance(data, dict) else None
        tags = data.get("tags", []) if isinstance(data, dict) else None
        for name, value in (("branches", branches), ("tags", tags)):
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise HubConfigError(f"{control}: {name!r} must be a list of non-empty names, got {value!r}")
        assert isinstance(branches, list)
        assert isinstance(tags, list)
        return tuple(branches), tuple(tags)

    @staticmethod
    def _gating(control: Path | None) -> tuple[tuple[str, ...] | None, str, bool]:
        if control is None:
            return None, "", False
        data = _read_json(control)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise HubConfigError(f'{control}: expected {{"tokens": ["hf_...", ...]}} with at least one token')
        assert isinstance(data, dict)
        mode = data.get("mode", "auto")
        if mode not in ("auto", "manual"):
            raise HubConfigError(f'{control}: "mode" must be "auto" or "manual", got {mode!r}')
        gate_api = data.get("gate_api", False)
        if not isinstance(gate_api, bool):
            raise HubConfigError(f'{control}: "gate_api" must be true or false, got {gate_api!r}')
        return tuple(tokens), mode, gate_api


# ---------------------------------------------------------------------------------------------
# Faults and the request log
# ---------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One injected fault. `remaining` counts the responses it still fires on (None: forever)."""

    id: int
    kind: FaultKind
    repo_id: str | None
    path: str | None
    endpoint: str
    remaining: int | None
    after_bytes: int | None = None
    status: int | None = None
    retry_after: int | None = None
    seconds: float | None = None
    offset: int | None = None
    bytes_per_second: int | None = None
    fired: int = 0

    def matches(self, repo_id: str | None, path: str | None, endpoint: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.endpoint != "any" and self.endpoint != endpoint:
            return False
        if self.repo_id is not None and self.repo_id != repo_id:
            return False
        return self.path is None or (path is not None and fnmatch.fnmatchcase(path, self.path))


class FaultRegistry:
    """Thread-safe set of faults. Each fires on matching responses until its count runs out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(
        self,
        repo_id: str | None = None,
        path: str | None = None,
        *,
        kind: FaultKind,
        times: int | None = 1,
        endpoint: str = "any",
        after_bytes: int | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        seconds: float | None = None,
        offset: int | None = None,
        bytes_per_second: int | None = None,
    ) -> Fault:
        """Add a fault on `repo_id` (None: every repo) and files matching the glob `path` (None: any request).

        kinds: "drop" (close the connection after `after_bytes` bytes of a file body), "status" (answer
        `status` 500/503/429..., with `Retry-After: retry_after` when given), "stall" (sleep `seconds`
        before the response, or after `after_bytes` bytes of a file body), "corrupt" (flip the byte at
        file offset `offset` whenever a served range covers it), "bandwidth" (cap each matching
        response at `bytes_per_second`; default `times=None`, i.e. until cleared).
        `endpoint` restricts the fault to "api", "resolve" or "cdn" requests ("any" by default).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if endpoint not in FAULT_ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(FAULT_ENDPOINTS)}")
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None (forever), got {times}")
        required = {
            "drop": ("after_bytes", after_bytes),
            "status": ("status", status),
            "stall": ("seconds", seconds),
            "corrupt": ("offset", offset),
            "bandwidth": ("bytes_per_second", bytes_per_second),
        }
        name, value = required[kind]
        if value is None:
            raise ValueError(f"a {kind!r} fault needs {name}=")
        for label, number in (("after_bytes", after_bytes), ("offset", offset), ("seconds", seconds)):
            if number is not None and number < 0:
                raise ValueError(f"{label} must be >= 0, got {number}")
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {status}")
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError(f"bytes_per_second must be > 0, got {bytes_per_second}")
        if kind == "bandwidth" and times == 1:
            times = None  # a cap lasts until cleared unless a count is asked for explicitly
        with self._lock:
            fault = Fault(
                id=self._next_id,
                kind=kind,
                repo_id=repo_id,
                path=path,
                endpoint=endpoint,
                remaining=times,
                after_bytes=after_bytes,
                status=status,
                retry_after=retry_after,
                seconds=seconds,
                offset=offset,
                bytes_per_second=bytes_per_second,
            )
            self._next_id += 1
            self._faults.append(fault)
            return fault

    def take(
        self,
        kind: FaultKind,
        repo_id: str | None,
        path: str | None,
        endpoint: str,
        applies: Callable[[Fault], bool] = lambda fault: True,
    ) -> Fault | None:
        """Consume one firing of the first matching fault of `kind` that `applies`; a copy, or None."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and fault.matches(repo_id, path, endpoint) and applies(fault):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    fault.fired += 1
                    return replace(fault)
        return None

    def remove(self, fault: Fault | int) -> None:
        fault_id = fault if isinstance(fault, int) else fault.id
        with self._lock:
            self._faults = [f for f in self._faults if f.id != fault_id]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter([replace(f) for f in self._faults])

    def active(self) -> list[Fault]:
        """Faults that can still fire."""
        return [f for f in self if f.remaining is None or f.remaining > 0]


@dataclass(frozen=True)
class RequestRecord:
    """One served request, logged when its response ended."""

    method: str
    path: str  # the request target as sent, query included
    status: int
    bytes_sent: int  # body bytes actually written
    range: str | None  # the Range header, as sent
    endpoint: str  # "api", "resolve", "cdn" or "other"
    repo_id: str | None
    file: str | None  # the repo file path for resolve and CDN requests
    faults: tuple[str, ...] = ()  # kinds of the faults that fired on it
    aborted: bool = False  # the body was cut short (dropped by a fault, or the client went away)
    authorized: bool = False  # an Authorization header was present (its value is never logged)


class RequestLog:
    """Thread-safe, list-like log of served requests.

    A request is logged when its response ends, which can be a moment after the client has read
    the last byte; reads therefore wait (up to `settle` seconds) for requests still in flight.
    `clear()` also forgets requests in flight, so a slow one cannot land in a later test's log.
    """

    def __init__(self, settle: float = 5.0) -> None:
        self._changed = threading.Condition()
        self._records: list[RequestRecord] = []
        self._generation = 0
        self._in_flight = 0
        self.settle = settle

    def begin(self) -> int:
        """Note a request in flight; returns the generation to pass to `finish`."""
        with self._changed:
            self._in_flight += 1
            return self._generation

    def finish(self, generation: int, record: RequestRecord) -> None:
        with self._changed:
            if generation == self._generation:
                self._records.append(record)
                self._in_flight -= 1
                self._changed.notify_all()

    def append(self, record: RequestRecord) -> None:
        with self._changed:
            self._records.append(record)

    def clear(self) -> None:
        with self._changed:
            self._generation += 1
            self._in_flight = 0
            self._records.clear()
            self._changed.notify_all()

    def snapshot(self) -> list[RequestRecord]:
        with self._changed:
            self._changed.wait_for(lambda: self._in_flight == 0, timeout=self.settle)
            return list(self._records)

    def __len__(self) -> int:
        return len(self.snapshot())

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.snapshot())

    def __getitem__(self, index: int) -> RequestRecord:
        return self.snapshot()[index]

    def matching(self, **criteria: Any) -> list[RequestRecord]:
        """Records whose fields equal every given value, e.g. `matching(method="GET", file="a.bin")`."""
        return [r for r in self.snapshot() if all(getattr(r, k) == v for k, v in criteria.items())]

    def bytes_sent(self, **criteria: Any) -> int:
        return sum(r.bytes_sent for r in self.matching(**criteria))


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class HubError(Exception):
    """An error answer in the Hub's shape: status, X-Error-Code / X-Error-Message and a JSON body."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


class _ClientGone(Exception):
    pass


@dataclass
class _Route:
    endpoint: str  # api | resolve | cdn | other
    action: str  # info | tree | paths-info | refs | resolve | cdn
    repo_id: str | None = None
    revision: str | None = None
    path: str | None = None
    sha256: str | None = None


_API_ACTIONS = {"revision", "tree", "paths-info", "refs"}


def _first(query: Mapping[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """[start, end) for a single `bytes=` range; None to serve the whole file; or unsatisfiable."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multi-ranges: serve the whole file, as RFC 9110 allows
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (first and not first.isdigit()) or (last and not last.isdigit()) or not (first or last):
        return None
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - length), size
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    end = size if not last else min(int(last) + 1, size)
    if end <= start:
        return None  # an inverted range is invalid: ignored
    return start, end


def _content_type(path: str) -> str:
    if path.endswith(".json"):
        return "application/json; charset=utf-8"
    if path.endswith((".md", ".txt", ".py", ".yaml", ".yml", ".gitattributes", ".jinja")):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


class _Listener(ConnectionTrackingServer):
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], hub: HubServer, role: str) -> None:
        self.hub = hub
        self.role = role  # "hub" or "cdn"
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HubDouble/1.0"
    server: _Listener

    # -- plumbing ----------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        self.server.untrack(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.hub.verbose:
            sys.stderr.write(f"hub-double {self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def _dispatch(self) -> None:
        self._status = 0
        self._sent = 0
        self._aborted = False
        self._fired: list[str] = []
        self._route = _Route("other", "unknown")
        self._request_id = str(uuid.uuid4())
        generation = self.hub.requests.begin()
        try:
            try:
                request_body = self._read_body()
                self._route = self._parse_route()
                self._pre_response_faults()
                self._handle(request_body)
            except HubError as error:
                self._send_error(error)
            except HubConfigError as error:
                self._send_error(HubError(500, f"Hub double configuration error: {error}"))
            except (_ClientGone, OSError):
                raise
            except Exception as error:  # a bug in the double: answer 500 and say what it was
                sys.stderr.write(f"hub-double: error serving {self.command} {self.path}: {error!r}\n")
                if self._status:  # a response is under way: all that is left is to cut it short
                    self._drop_connection()
                    return
                self._send_error(HubError(500, f"Hub double internal error: {type(error).__name__}: {error}"))
        except (_ClientGone, OSError):
            # The client went away, a fault dropped it, or the server is stopping: nothing more to send.
            self._aborted = True
            self.close_connection = True
        finally:
            self.hub.requests.finish(
                generation,
                RequestRecord(
                    method=self.command,
                    path=self.path,
                    status=self._status,
                    bytes_sent=self._sent,
                    range=self.headers.get("Range"),
                    endpoint=self._route.endpoint,
                    repo_id=self._route.repo_id,
                    file=self._route.path if self._route.endpoint in ("resolve", "cdn") else None,
                    faults=tuple(self._fired),
                    aborted=self._aborted,
                    authorized=self.headers.get("Authorization") is not None,
                ),
            )

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _base_url(self) -> str:
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        return f"http://{host}"

    # -- routing -----------------------------------------------------------------------------

    def _repo_split(self, segments: list[str], actions: set[str]) -> tuple[str, list[str]]:
        """Split raw path segments into (repo_id, rest). Existing repos decide; else the shape guesses."""
        store = self.hub.store
        if len(segments) >= 2 and store.repo_folder(f"{segments[0]}/{segments[1]}") is not None:
            return f"{segments[0]}/{segments[1]}", segments[2:]
        if segments and store.repo_folder(segments[0]) is not None and (len(segments) == 1 or segments[1] in actions):
            return segments[0], segments[1:]
        if len(segments) >= 2 and segments[1] not in actions:
            return f"{segments[0]}/{segments[1]}", segments[2:]
        return (segments[0] if segments else ""), segments[1:]

    def _parse_route(self) -> _Route:
        raw = urlsplit(self.path).path
        segments = raw.split("/")
        segments = segments[1:] if segments and segments[0] == "" else segments
        if self.server.role == "cdn":
            # /cdn-lfs/<org--name>/<sha256>
            if len(segments) == 3 and segments[0] == "cdn-lfs":
                repo_id = unquote(segments[1]).replace("--", "/", 1)
                path = parse_qs(urlsplit(self.path).query).get("path", [None])[0]
                return _Route("cdn", "cdn", repo_id=repo_id, sha256=segments[2], path=path)
            raise HubError(404, "Not Found")
        if len(segments) >= 2 and segments[0] == "api" and segments[1] == "models":
            repo_id, rest = self._repo_split(
                [unquote(s) if i < 2 else s for i, s in enumerate(segments[2:])], _API_ACTIONS
            )
            if not rest:
                return _Route("api", "info", repo_id=repo_id)
            action = rest[0]
            if action == "revision" and len(rest) >= 2:
                return _Route("api", "info", repo_id=repo_id, revision=unquote("/".join(rest[1:])))
            if action == "tree" and len(rest) >= 2:
                path = unquote("/".join(rest[2:])).strip("/") or None
                return _Route("api", "tree", repo_id=repo_id, revision=unquote(rest[1]), path=path)
            if action == "paths-info" and len(rest) >= 2:
                return _Route("api", "paths-info", repo_id=repo_id, revision=unquote("/".join(rest[1:])))
            if action == "refs" and len(rest) == 1:
                return _Route("api", "refs", repo_id=repo_id)
            raise HubError(404, "Not Found")
        repo_id, rest = self._repo_split([unquote(s) for s in segments[:2]] + segments[2:], {"resolve"})
        if len(rest) >= 3 and rest[0] == "resolve":
            revision_parts = 1
            # An unencoded refs/pr/N or refs/convert/X revision spans three segments.
            if unquote(rest[1]) == "refs" and len(rest) >= 5 and rest[2] in ("pr", "convert"):
                revision_parts = 3
            revision = unquote("/".join(rest[1 : 1 + revision_parts]))
            path = unquote("/".join(rest[1 + revision_parts :]))
            if path:
                return _Route("resolve", "resolve", repo_id=repo_id, revision=revision, path=path)
        raise HubError(404, "Not Found")

    # -- faults before any byte --------------------------------------------------------------

    def _pre_response_faults(self) -> None:
        route, faults = self._route, self.hub.faults
        stall = faults.take("stall", route.repo_id, route.path, route.endpoint, lambda f: f.after_bytes is None)
        if stall is not None:
            self._fired.append("stall")
            self._sleep(stall.seconds or 0.0)
        failure = faults.take("status", route.repo_id, route.path, route.endpoint)
        if failure is not None:
            self._fired.append("status")
            status = failure.status or 500
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            reasons = {429: "Too Many Requests", 500: "Internal Error", 502: "Bad Gateway", 503: "Service Unavailable"}
            raise HubError(status, reasons.get(status, "Injected failure"), headers=headers)

    def _sleep(self, seconds: float) -> None:
        if self.hub.stopping.wait(seconds):
            raise _ClientGone  # the server is stopping: drop the connection

    # -- handlers ----------------------------------------------------------------------------

    def _snapshot(self, *, api: bool) -> RepoSnapshot:
        route = self._route
        snapshot = self.hub.store.snapshot(route.repo_id or "")
        if snapshot is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if snapshot.gated and (not api or snapshot.gate_api):
            self._check_gate(snapshot)
        return snapshot

    def _check_gate(self, snapshot: RepoSnapshot) -> None:
        assert snapshot.gated_tokens is not None
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        repo_id = snapshot.repo_id
        if scheme.lower() != "bearer" or not token.strip():
            raise HubError(
                401,
                f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
                "to access it. Please log in.",
                "GatedRepo",
            )
        if token.strip() not in snapshot.gated_tokens:
            raise HubError(
                403,
                f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                f"Visit {self._base_url()}/{repo_id} to ask for access.",
                "GatedRepo",
            )

    def _commit(self, snapshot: RepoSnapshot, revision: str | None) -> str:
        commit = snapshot.resolve_revision(revision or DEFAULT_BRANCH)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _handle(self, request_body: bytes) -> None:
        route = self._route
        if route.action == "cdn":
            self._handle_cdn()
            return
        if self.command == "POST" and route.action != "paths-info":
            raise HubError(405, "Method Not Allowed")
        if route.action == "paths-info" and self.command != "POST":
            raise HubError(405, "Method Not Allowed")
        snapshot = self._snapshot(api=route.endpoint == "api")
        if route.action == "refs":
            self._send_json(self._refs_json(snapshot))
            return
        commit = self._commit(snapshot, route.revision)
        if route.action == "info":
            self._send_json(self._model_info(snapshot, commit))
        elif route.action == "tree":
            self._handle_tree(snapshot, commit)
        elif route.action == "paths-info":
            self._handle_paths_info(snapshot, request_body)
        elif route.action == "resolve":
            self._handle_resolve(snapshot, commit)
        else:  # pragma: no cover - _parse_route only yields the actions above
            raise HubError(404, "Not Found")

    def _model_info(self, snapshot: RepoSnapshot, commit: str) -> dict[str, Any]:
        query = parse_qs(urlsplit(self.path).query)
        blobs = _truthy(_first(query, "blobs"))
        siblings: list[dict[str, Any]] = []
        for entry in snapshot.files.values():
            sibling: dict[str, Any] = {"rfilename": entry.path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.git_oid)
                if entry.lfs:
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        override = self.hub.listing_overrides.get(snapshot.repo_id)
        if override is not None:
            siblings = override(siblings)
        repo_id = snapshot.repo_id
        info: dict[str, Any] = {
            "_id": hashlib.md5(repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0] if "/" in repo_id else None,
            "sha": commit,
            "lastModified": snapshot.last_modified,
            "createdAt": snapshot.last_modified,
            "private": False,
            "gated": snapshot.gated_mode if snapshot.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": "transformers" if "config.json" in snapshot.files else None,
            "siblings": siblings,
            "spaces": [],
            "usedStorage": snapshot.total_size(),
        }
        expand = [v for key in ("expand", "expand[]") for v in query.get(key, [])]
        if expand:
            return {key: value for key, value in info.items() if key in ("_id", "id") or key in expand}
        return info

    def _refs_json(self, snapshot: RepoSnapshot) -> dict[str, Any]:
        def ref(kind: str, name: str) -> dict[str, str]:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": snapshot.commit}

        return {
            "branches": [ref("heads", b) for b in snapshot.branches],
            "tags": [ref("tags", t) for t in snapshot.tags],
            "converts": [],
        }

    def _tree_entry(self, snapshot: RepoSnapshot, path: str, expand: bool) -> dict[str, Any]:
        entry = snapshot.files.get(path)
        if entry is None:
            item: dict[str, Any] = {"type": "directory", "oid": snapshot.directories[path], "size": 0, "path": path}
        else:
            item = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
            if entry.lfs:
                item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
            if expand:
                item["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }
        if expand:
            item["lastCommit"] = {
                "id": snapshot.commit,
                "title": "Snapshot served by the Hub double",
                "date": snapshot.last_modified,
            }
        return item

    def _handle_tree(self, snapshot: RepoSnapshot, commit: str) -> None:
        query = parse_qs(urlsplit(self.path).query)
        recursive = _truthy(_first(query, "recursive"))
        expand = _truthy(_first(query, "expand"))
        base = self._route.path or ""
        if base and base not in snapshot.directories:
            raise HubError(404, f"Entry not found: {base}", "EntryNotFound", {"X-Repo-Commit": commit})
        prefix = f"{base}/" if base else ""
        names = [p for p in list(snapshot.directories) + list(snapshot.files) if p and p.startswith(prefix)]
        if not recursive:
            names = [p for p in names if "/" not in p[len(prefix) :]]
        names.sort()
        page_size = self.hub.tree_page_size
        if expand:
            page_size = min(page_size, EXPANDED_TREE_PAGE_SIZE)
        with contextlib.suppress(ValueError):
            page_size = min(page_size, int(_first(query, "limit") or ""))
        cursor = _first(query, "cursor")
        if cursor:
            try:
                after = json.loads(base64.urlsafe_b64decode(cursor.encode()))["after"]
            except (ValueError, KeyError, TypeError) as exc:
                raise HubError(400, f"Invalid cursor: {cursor}") from exc
            names = [p for p in names if p > after]
        page, more = names[:page_size], len(names) > page_size
        headers: dict[str, str] = {}
        if more:
            token = base64.urlsafe_b64encode(json.dumps({"after": page[-1]}).encode()).decode()
            params = f"recursive={str(recursive).lower()}&expand={str(expand).lower()}&cursor={token}"
            tree_path = f"/{quote(base)}" if base else ""
            revision = quote(self._route.revision or DEFAULT_BRANCH, safe="")
            next_url = f"{self._base_url()}/api/models/{snapshot.repo_id}/tree/{revision}{tree_path}?{params}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._send_json([self._tree_entry(snapshot, p, expand) for p in page], headers=headers)

    def _handle_paths_info(self, snapshot: RepoSnapshot, body: bytes) -> None:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        paths: list[str]
        if content_type == "application/json":
            try:
                data = json.loads(body or b"{}")
            except ValueError as exc:
                raise HubError(400, f"Invalid JSON body: {exc}") from exc
            raw_paths = data.get("paths", []) if isinstance(data, dict) else None
            expand_value = data.get("expand", False) if isinstance(data, dict) else False
            paths = [raw_paths] if isinstance(raw_paths, str) else raw_paths if isinstance(raw_paths, list) else []
            expand = expand_value is True or (isinstance(expand_value, str) and _truthy(expand_value))
        else:
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            paths = form.get("paths", []) + form.get("paths[]", [])
            expand = _truthy(_first(form, "expand"))
        if not all(isinstance(p, str) for p in paths):
            raise HubError(400, '"paths" must be a list of strings')
        found = []
        for path in paths:
            path = path.strip("/")
            if path in snapshot.files or (path and path in snapshot.directories):
                found.append(self._tree_entry(snapshot, path, expand))
        self._send_json(found)

    def _handle_resolve(self, snapshot: RepoSnapshot, commit: str) -> None:
        path = self._route.path or ""
        entry = snapshot.files.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit})
        headers = {
            "X-Repo-Commit": commit,
            "X-Linked-Etag": f'"{entry.etag}"',
            "X-Linked-Size": str(entry.size),
            "Accept-Ranges": "bytes",
            "Access-Control-Expose-Headers": "X-Repo-Commit,X-Request-Id,X-Error-Code,X-Error-Message,"
            "X-Total-Count,ETag,Link,Accept-Ranges,Content-Range,X-Linked-Size,X-Linked-ETag",
        }
        if entry.lfs:
            query = f"path={quote(path, safe='')}&commit={commit}"
            location = f"{self.hub.cdn_url}/cdn-lfs/{quote(snapshot.repo_id.replace('/', '--'))}/{entry.sha256}?{query}"
            body = f"Found. Redirecting to {location}".encode()
            headers.update(Location=location, ETag=f'"{entry.git_oid}"')
            self._send_bytes(302, body, "text/plain; charset=utf-8", headers)
            return
        headers["ETag"] = f'"{entry.git_oid}"'
        self._send_file(entry, headers)

    def _handle_cdn(self) -> None:
        route = self._route
        snapshot = self.hub.store.snapshot(route.repo_id or "")
        entry: FileEntry | None = None
        if snapshot is not None:
            hinted = snapshot.files.get(route.path or "")
            if hinted is not None and hinted.lfs and hinted.sha256 == route.sha256:
                entry = hinted
            else:
                entry = next((e for e in snapshot.files.values() if e.lfs and e.sha256 == route.sha256), None)
        if entry is None:
            # What S3 behind CloudFront answers for a missing object.
            raise HubError(404, "NoSuchKey: The specified key does not exist.")
        route.path = entry.path
        name = entry.path.rsplit("/", 1)[-1]
        headers = {
            "ETag": f'"{entry.sha256}"',
            "Accept-Ranges": "bytes",
            "Cache-Control": "public, max-age=604800, immutable",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";",
            "Last-Modified": "Thu, 01 Jan 1970 00:00:00 GMT",
        }
        self._send_file(entry, headers, content_type="binary/octet-stream")

    # -- responses ---------------------------------------------------------------------------

    def _common_headers(self) -> None:
        self.send_header("X-Request-Id", self._request_id)
        self.send_header("Vary", "Origin, Accept-Encoding")

    def _write(self, data: bytes | memoryview) -> None:
        try:
            self.wfile.write(data)
        except OSError as exc:
            raise _ClientGone from exc
        self._sent += len(data)

    def _send_bytes(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self._status = status
        self.send_response(status)
        self._common_headers()
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self._write(body)

    def _send_json(self, data: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(data, separators=(",", ":")).encode()
        self._send_bytes(200, body, "application/json; charset=utf-8", headers)

    def _send_error(self, error: HubError) -> None:
        headers = dict(error.headers)
        if error.code:
            headers["X-Error-Code"] = error.code
        headers["X-Error-Message"] = error.message
        body = json.dumps({"error": error.message}).encode()
        self._send_bytes(error.status, body, "application/json; charset=utf-8", headers)

    def _send_file(self, entry: FileEntry, headers: dict[str, str], content_type: str | None = None) -> None:
        requested = _parse_range(self.headers.get("Range"), entry.size)
        if requested == "unsatisfiable":
            raise HubError(416, "Requested Range Not Satisfiable", headers={"Content-Range": f"bytes */{entry.size}"})
        start, end = requested if requested is not None else (0, entry.size)
        status = 206 if requested is not None else 200
        if requested is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        self._status = status
        self.send_response(status)
        self._common_headers()
        self.send_header("Content-Type", content_type or _content_type(entry.path))
        self.send_header("Content-Length", str(end - start))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD" or end == start:
            return
        self._stream(entry, start, end)

    def _stream(self, entry: FileEntry, start: int, end: int) -> None:
        route, faults = self._route, self.hub.faults
        length = end - start
        repo_id, path, endpoint = route.repo_id, entry.path, route.endpoint

        drop = faults.take("drop", repo_id, path, endpoint, lambda f: (f.after_bytes or 0) < length)
        stall = faults.take(
            "stall", repo_id, path, endpoint, lambda f: f.after_bytes is not None and f.after_bytes < length
        )
        corrupt = faults.take(
            "corrupt", repo_id, path, endpoint, lambda f: f.offset is not None and start <= f.offset < end
        )
        capped = faults.take("bandwidth", repo_id, path, endpoint)
        self._fired.extend(f.kind for f in (drop, stall, corrupt, capped) if f is not None)
        limits = [x for x in (self.hub.bandwidth_limit, capped.bytes_per_second if capped else None) if x]
        limit = min(limits) if limits else None

        if entry.local_path is not None and not (drop or stall or corrupt or limit):
            self._sendfile(entry.local_path, start, length)
            return

        # Points (relative to the body) where something happens; chunks never straddle one.
        drop_at = drop.after_bytes if drop else None
        stall_at = stall.after_bytes if stall else None
        corrupt_at = corrupt.offset - start if corrupt and corrupt.offset is not None else None
        chunk_size = CHUNK_SIZE if limit is None else max(4096, min(CHUNK_SIZE, limit // 20))
        began = time.monotonic()
        handle = entry.local_path.open("rb") if entry.local_path is not None else None
        try:
            position = 0
            while position < length:
                if position == stall_at:
                    stall_at = None
                    assert stall is not None
                    self._sleep(stall.seconds or 0.0)
                if position == drop_at:
                    self._drop_connection()
                    return
                boundary = min(length, position + chunk_size - (start + position) % chunk_size)
                for point in (drop_at, stall_at):
                    if point is not None and position < point < boundary:
                        boundary = point
                absolute = start + position
                if handle is not None:
                    data = os.pread(handle.fileno(), boundary - position, absolute)
                else:
                    assert entry.synthetic is not None
                    data = entry.synthetic.read(absolute, start + boundary)
                if corrupt_at is not None and position <= corrupt_at < boundary:
                    flipped = bytearray(data)
                    flipped[corrupt_at - position] ^= 0xFF
                    data = bytes(flipped)
                if limit is not None:
                    # Paced before the write: the last byte cannot leave before length / limit seconds.
                    ahead = boundary / limit - (time.monotonic() - began)
                    if ahead > 0:
                        self._sleep(ahead)
                self._write(data)
                position = boundary
        finally:
            if handle is not None:
                handle.close()

    def _sendfile(self, local_path: Path, start: int, length: int) -> None:
        with local_path.open("rb") as handle:
            try:
                self.wfile.flush()
                sent = self.connection.sendfile(handle, start, length)
            except OSError as exc:
                raise _ClientGone from exc
        self._sent += sent
        if sent < length:  # the file shrank under us: the promised length can no longer be kept
            self._drop_connection()

    def _drop_connection(self) -> None:
        self._aborted = True
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class HubServer:
    """The Hub double: `start()` it, point HF_ENDPOINT at `.url`, `stop()` it (or use `with`).

    LFS downloads are redirected to a second listener (`.cdn_url`), a different origin like the
    Hub's CDN, so huggingface_hub takes the file metadata from the redirect and drops the token.
    """

    def __init__(
        self,
        root: Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
        *,
        tree_page_size: int = DEFAULT_TREE_PAGE_SIZE,
        bandwidth_limit: int | None = None,
        cdn_port: int = 0,
        rescan_interval: float = 0.0,
        verbose: bool = False,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"Hub double root {root} is not a directory")
        if tree_page_size < 1:
            raise ValueError(f"tree_page_size must be >= 1, got {tree_page_size}")
        if bandwidth_limit is not None and bandwidth_limit <= 0:
            raise ValueError(f"bandwidth_limit must be > 0 bytes/s or None, got {bandwidth_limit}")
        self.root = root
        self.host = host
        if rescan_interval < 0:
            raise ValueError(f"rescan_interval must be >= 0 seconds, got {rescan_interval}")
        self.store = RepoStore(root, lfs_threshold, rescan_interval)
        self.faults = FaultRegistry()
        self.requests = RequestLog()
        # repo id -> function rewriting the model-info `siblings` list: hostile listings (names with
        # '..', duplicates, sizes that lie) that no repo folder on disk can hold, for bad-input tests.
        self.listing_overrides: dict[str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]]] = {}
        self.tree_page_size = tree_page_size
        # Bytes per second for each response body (per connection), like a CDN's per-stream limit.
        self.bandwidth_limit = bandwidth_limit
        self.verbose = verbose
        self.stopping = threading.Event()
        self._requested_ports = (port, cdn_port)
        self._listeners: list[_Listener] = []
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> HubServer:
        if self._listeners:
            raise RuntimeError("the Hub double is already running")
        self.stopping.clear()
        try:
            for role, port in zip(("hub", "cdn"), self._requested_ports, strict=True):
                listener = _Listener((self.host, port), self, role)
                self._listeners.append(listener)
        except OSError:
            for listener in self._listeners:
                listener.server_close()
            self._listeners.clear()
            raise
        for listener in self._listeners:
            self._threads.append(serve_in_thread(listener, f"hub-double-{listener.role}", poll_interval=0.1))
        return self

    def stop(self) -> None:
        self.stopping.set()
        for index, listener in enumerate(self._listeners):
            stop_serving(listener, self._threads[index] if index < len(self._threads) else None, timeout=5)
        self._listeners.clear()
        self._threads.clear()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _address(self, index: int) -> str:
        if not self._listeners:
            raise RuntimeError("the Hub double is not running: call start() first")
        return "http://{}:{}".format(*self._listeners[index].server_address[:2])

    @property
    def url(self) -> str:
        """Base URL for HF_ENDPOINT, e.g. http://127.0.0.1:PORT."""
        return self._address(0)

    @property
    def cdn_url(self) -> str:
        """Base URL of the CDN listener that LFS redirects point to."""
        return self._address(1)

    # -- what tests compare against ----------------------------------------------------------

    def repo_info(self, repo_id: str) -> RepoSnapshot:
        """The repo as served right now: commit, refs, and per file size/sha256/git_oid/lfs."""
        snapshot = self.store.snapshot(repo_id)
        if snapshot is None:
            raise KeyError(f"no repo folder for {repo_id!r} under {self.root}")
        return snapshot

    def read_file(self, repo_id: str, path: str, start: int = 0, end: int | None = None) -> bytes:
        """The exact bytes the double serves for `path` (or its [start, end) range)."""
        entry = self.repo_info(repo_id).files.get(path)
        if entry is None:
            raise KeyError(f"{repo_id} has no file {path!r}")
        end = entry.size if end is None else end
        if not 0 <= start <= end <= entry.size:
            raise ValueError(f"range [{start}, {end}) is not within {path!r} ({entry.size} bytes)")
        return entry.read(start, end - start)

    def repo_ids(self) -> list[str]:
        return self.store.repo_ids()

    def warm(self) -> dict[str, str]:
        """Scan and hash every repo now, so no first request waits for a multi-GiB hash.

        Returns {repo_id: problem} for repos that cannot be served (bad control files); those
        answer 500 with the same message when asked for.
        """
        problems: dict[str, str] = {}
        for repo_id in self.repo_ids():
            try:
                self.store.snapshot(repo_id)
            except (HubConfigError, OSError) as exc:
                problems[repo_id] = str(exc)
        return problems


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m model_cache_devtools.hub",
        description="Serve every repo folder DIR/<org>/<name>/ (or DIR/<name>/) as an offline Hugging Face Hub. "
        "Prints the base URL (for HF_ENDPOINT) on the first line of stdout and serves until killed.",
    )
    parser.add_argument("--root", required=True, type=Path, help="folder of repo folders")
    parser.add_argument("--port", type=int, default=0, help="port for the Hub API (0: a free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--cdn-port", type=int, default=0, help="port for the LFS CDN listener (0: a free port)")
    parser.add_argument(
        "--bandwidth",
        type=int,
        default=None,
        metavar="BYTES_PER_S",
        help="cap each response body at this many bytes/s (a CDN's per-stream limit)",
    )
    parser.add_argument(
        "--lfs-threshold",
        type=int,
        default=DEFAULT_LFS_THRESHOLD,
        metavar="BYTES",
        help="files larger than this are LFS files whatever their name",
    )
    parser.add_argument("--tree-page-size", type=int, default=DEFAULT_TREE_PAGE_SIZE)
    parser.add_argument(
        "--rescan-interval",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="reuse a repo's listing this long (default 0: re-scan the folder on every request)",
    )
    parser.add_argument("--no-warm", action="store_true", help="do not hash every repo before printing the URL")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if not args.root.is_dir():
        print(f"error: --root {args.root} is not a directory", file=sys.stderr)
        return 2
    try:
        server = HubServer(
            args.root,
            host=args.host,
            port=args.port,
            lfs_threshold=args.lfs_threshold,
            tree_page_size=args.tree_page_size,
            rescan_interval=args.rescan_interval,
            bandwidth_limit=args.bandwidth,
            cdn_port=args.cdn_port,
            verbose=args.verbose,
        )
        server.start()
    except (OSError, ValueError) as exc:
        print(f"error: cannot start the Hub double: {exc}", file=sys.stderr)
        return 1
    if not args.no_warm:
        # Hash everything before announcing the URL: a client's first request must not wait (and time
        # out) on a multi-GiB synthetic hash. Cached on disk, so only the first run is slow.
        for repo_id, problem in server.warm().items():
            print(f"warning: {repo_id} cannot be served: {problem}", file=sys.stderr, flush=True)
    done = stop_requested()
    print(server.url, flush=True)
    print(
        f"serving {args.root} (CDN at {server.cdn_url}); repos: {', '.join(server.repo_ids()) or 'none'}",
        file=sys.stderr,
        flush=True,
    )
    while not done.wait(1.0):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
