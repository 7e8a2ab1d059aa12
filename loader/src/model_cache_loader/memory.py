"""Stream a cached snapshot's safetensors from S3 straight into CPU tensors: no disk copy.

`load_state_dict` returns every tensor of the snapshot's `*.safetensors` files once all of them have
been verified; `stream_safetensors` yields each tensor as soon as its bytes have been received and
hashed, for a caller that moves tensors on (to a GPU, into a model) one at a time.

How it works:

- two small ranged GETs read each file's safetensors header (its 8-byte length, then the JSON),
  which is checked before any tensor is allocated: known dtypes, shapes that match their byte
  ranges, ranges inside the file that tile the data region without gaps or overlaps;
- the data regions of all files are fetched, in file order, as ranged GETs of `part_size` on
  `concurrency` threads, each body received straight into the storage of the tensors it covers
  (one copy, from the socket);
- the main thread hashes each file's received prefix in order (sha256, or CRC64NVME where asked
  and recorded) and hands out the tensors that prefix completes, file by file.

Memory: bytes received but not yet handed out are bounded by `memory_limit` (a single tensor larger
than the limit is fetched alone). What the caller keeps is the caller's.

Verification: every byte handed out has been hashed, and each file's digest is compared with the
manifest when its last byte is in; a mismatch raises IntegrityError. With `stream_safetensors`, the
tensors of that file already handed out came from a file that failed its check and must be dropped
(the exception says so); `load_state_dict` returns nothing in that case.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

from model_cache_loader import layout
from model_cache_loader.api import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    _positive,
    _region,
    make_s3_client,
    manifest_from_s3,
    select_bucket,
)
from model_cache_loader.errors import IntegrityError, LoaderError, NotCachedError, UsageError
from model_cache_loader.manifest import Manifest, ManifestFile
from model_cache_loader.transfer import (
    PART_ATTEMPTS,
    RETRIED_ERRORS,
    BodyReader,
    ShortBody,
    check_for,
    crc64nvme_update,
    decode_crc64nvme,
    is_final,
    s3_error,
)

DEFAULT_MEMORY_LIMIT = 1 << 30
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit
# What one tensor in flight costs beyond its bytes: the torch tensor, its numpy view and memoryview,
# and our record of it. Measured here (100k 4-byte uint8 tensors with their views): ~1.4 KB each;
# counted against memory_limit so that many tiny tensors cannot hold far more than the limit.
TENSOR_OVERHEAD = 1536
# safetensors reads shapes as usize and multiplies them with overflow checks; torch takes int64 sizes.
MAX_DIMENSION = (1 << 63) - 1
MAX_ELEMENTS = (1 << 64) - 1
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
SAFETENSORS_SUFFIX = ".safetensors"
HASH_CHUNK = 4 << 20

# safetensors dtype -> (torch dtype attribute, bytes per element)
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U64": ("uint64", 8),
    "U32": ("uint32", 4),
    "U16": ("uint16", 2),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
}


@dataclass
class StreamStats:
    """What a stream did: bytes fetched from S3, files and tensors, and the most bytes it held at once."""

    bytes_downloaded: int = 0
    files: int = 0
    tensors: int = 0
    peak_buffered_bytes: int = 0
    seconds: float = 0.0
    commit: str = ""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute offsets in the file
    end: int


@dataclass
class _Pending:
    """A tensor whose storage is allocated and being filled."""

    spec: TensorSpec
    storage: Any  # a uint8 torch tensor of spec.end - spec.begin bytes
    view: memoryview


@dataclass
class _FileState:
    entry: ManifestFile
    specs: list[TensorSpec]
    data_start: int
    ranges: list[_Range]
    digest: Any = None
    crc: int | None = None
    hashed: int = 0
    received: set[int] = field(default_factory=set)
    frontier: int = 0  # ranges[:frontier] are all received
    handed: int = 0  # specs[:handed] are handed out
    allocated: dict[int, _Pending] = field(default_factory=dict)


def parse_header(raw: bytes, size: int, label: str) -> tuple[int, list[TensorSpec]]:
    """The data region's start and the tensors, sorted by offset; IntegrityError naming any problem."""
    if len(raw) < 8:
        raise IntegrityError(f"{label}: {len(raw)} bytes is too short for a safetensors file")
    (length,) = struct.unpack("<Q", raw[:8])
    if length > MAX_HEADER or 8 + length > size:
        raise IntegrityError(f"{label}: safetensors header length {length} does not fit the file's {size} bytes")
    if len(raw) < 8 + length:
        raise IntegrityError(f"{label}: header truncated ({len(raw) - 8} of {length} bytes)")
    try:
        # UTF-8 only, as safetensors reads it: json.loads would also take UTF-16 and UTF-32 bytes.
        text = bytes(raw[8 : 8 + length]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{label}: safetensors header is not UTF-8 ({exc})") from exc
    try:
        header = json.loads(text)
    except ValueError as exc:
        raise IntegrityError(f"{label}: safetensors header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise IntegrityError(f"{label}: safetensors header is not an object")
    data_start = 8 + length
    specs = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        specs.append(_spec(name, info, data_start, label))
    specs.sort(key=lambda s: (s.begin, s.end))
    cursor = data_start
    for spec in specs:
        if spec.begin != cursor:
            raise IntegrityError(
                f"{label}: tensor {spec.name!r} starts at {spec.begin}, expected {cursor} (gap or overlap)"
            )
        cursor = spec.end
    if cursor != size:
        raise IntegrityError(f"{label}: tensors end at byte {cursor}, the file has {size}")
    return data_start, specs


def _spec(name: str, info: Any, data_start: int, label: str) -> TensorSpec:
    if not isinstance(info, dict):
        raise IntegrityError(f"{label}: tensor {name!r} has no description")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPES:
        raise IntegrityError(f"{label}: tensor {name!r} has dtype {dtype!r}, not one this loader knows")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise IntegrityError(f"{label}: tensor {name!r} has shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise IntegrityError(f"{label}: tensor {name!r} has data_offsets {offsets!r}")
    count = 1
    for dim in shape:
        # In order, as safetensors' checked multiplication does: a dimension torch cannot hold, or a
        # product that overflows before a zero dimension, is refused even when the tensor is empty.
        count *= dim
        if dim > MAX_DIMENSION or count > MAX_ELEMENTS:
            raise IntegrityError(f"{label}: tensor {name!r} has shape {shape!r}, too large for safetensors or torch")
    if count * DTYPES[dtype][1] != offsets[1] - offsets[0]:
        raise IntegrityError(
            f"{label}: tensor {name!r} is {shape} {dtype} ({count * DTYPES[dtype][1]} bytes) but spans "
            f"{offsets[1] - offsets[0]} bytes"
        )
    return TensorSpec(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])


@dataclass(frozen=True)
class _Range:
    """One ranged GET of a file's data region: the tensors it fills, and those it is the first of."""

    start: int
    end: int
    tensors: tuple[int, ...]
    new_tensors: tuple[int, ...]


def tensor_cost(spec: TensorSpec) -> int:
    """What holding `spec` in memory costs: its bytes and the per-tensor overhead."""
    return spec.end - spec.begin + TENSOR_OVERHEAD


def plan_ranges(specs: list[TensorSpec], part_size: int, memory_limit: int | None = None) -> list[_Range]:
    """The data region in GETs of about `part_size`, cut at tensor boundaries: a tensor of
    `part_size` or more has ranges of its own, smaller ones are packed together, never more of them
    than `memory_limit` can hold (bytes and per-tensor overhead), so a packed read is never larger
    than the limit; only a single tensor larger than the limit is read (alone) beyond it."""
    ranges: list[_Range] = []
    pack: list[int] = []
    pack_cost = 0

    def flush() -> None:
        nonlocal pack_cost
        if pack:
            ranges.append(_Range(specs[pack[0]].begin, specs[pack[-1]].end, tuple(pack), tuple(pack)))
            pack.clear()
            pack_cost = 0

    for index, spec in enumerate(specs):
        if spec.end - spec.begin >= part_size:
            flush()
            for start in range(spec.begin, spec.end, part_size):
                first = (index,) if start == spec.begin else ()
                ranges.append(_Range(start, min(start + part_size, spec.end), (index,), first))
            continue
        over_budget = memory_limit is not None and pack_cost + tensor_cost(spec) > memory_limit
        if pack and (spec.end - specs[pack[0]].begin > part_size or over_budget):
            flush()
        pack.append(index)
        pack_cost += tensor_cost(spec)
    flush()
    return ranges


class TensorStream:
    """An iterator of (name, tensor) over a snapshot's safetensors; `stats` says what it did."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        files: list[ManifestFile],
        *,
        own_bucket: bool,
        verify: str,
        memory_limit: int,
        concurrency: int,
        part_size: int,
        commit: str,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.files = files
        self.own_bucket = own_bucket
        self.verify = verify
        self.memory_limit = memory_limit
        self.concurrency = concurrency
        self.part_size = part_size
        self.stats = StreamStats(commit=commit)
        self._buffered = 0
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._torch: Any = None

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        import torch

        self._torch = torch
        started = time.monotonic()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="model-cache-memory")
        try:
            yield from self._stream(pool)
        finally:
            self._cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self.stats.seconds = time.monotonic() - started

    def _open_file(self, entry: ManifestFile) -> _FileState:
        """Read and check a file's header; its bytes are the first the file's digest covers.
        Two small GETs (the length, then the header) rather than one guessed probe, which would
        fetch the first tensors' bytes twice."""
        head = self._get_range(entry, 0, min(entry.size, 8))
        (length,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
        if length and 8 + length <= min(entry.size, MAX_HEADER + 8):
            head += self._get_range(entry, 8, 8 + length)
        data_start, specs = parse_header(bytes(head), entry.size, entry.path)
        state = _FileState(entry, specs, data_start, ranges=plan_ranges(specs, self.part_size, self.memory_limit))
        check = check_for(self.verify, entry.crc64nvme, pinned=self.own_bucket and entry.version_id is not None)
        if check == "sha256":
            state.digest = hashlib.sha256()
        elif check == "crc64nvme":
            state.crc = 0
        self._hash(state, memoryview(head)[:data_start])
        return state

    def _stream(self, pool: ThreadPoolExecutor) -> Iterator[tuple[str, Any]]:
        """Every file's ranges in one queue, in file order, so the streams stay busy across file
        boundaries; tensors are handed out (and hashed) file by file, in order."""
        states = list(pool.map(self._open_file, self.files))
        queue = [(f, r) for f, state in enumerate(states) for r in range(len(state.ranges))]
        futures: dict[Future[None], tuple[int, int]] = {}
        queued = 0
        current = 0
        while current < len(states):
            # Allocate and schedule, in order, as far as the memory budget allows. A range that only
            # continues a tensor already allocated needs nothing and is never held back, so every
            # allocated tensor is eventually complete and the budget always frees up.
            while queued < len(queue):
                file_index, range_index = queue[queued]
                state = states[file_index]
                piece = state.ranges[range_index]
                needed = sum(tensor_cost(state.specs[i]) for i in piece.new_tensors)
                if needed and self._buffered and self._buffered + needed > self.memory_limit:
                    break
                for i in piece.new_tensors:
                    nbytes = state.specs[i].end - state.specs[i].begin
                    storage = self._torch.empty(nbytes, dtype=self._torch.uint8)
                    state.allocated[i] = _Pending(state.specs[i], storage, memoryview(storage.numpy()).cast("B"))
                    self._hold(tensor_cost(state.specs[i]))
                if piece.start == piece.end:
                    state.received.add(range_index)
                else:
                    targets = [state.allocated[i] for i in piece.tensors]
                    future = pool.submit(self._fetch_into, state.entry, piece.start, piece.end, targets)
                    futures[future] = (file_index, range_index)
                queued += 1
            if futures:
                finished, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                for future in finished:
                    file_index, range_index = futures.pop(future)
                    future.result()  # a failed range fails the stream
                    states[file_index].received.add(range_index)
            # Hash what the current file has received, in order, and hand out the tensors it completes.
            progressed = False
            while current < len(states):
                state = states[current]
                while state.frontier in state.received:
                    state.frontier += 1
                received_to = state.ranges[state.frontier - 1].end if state.frontier else state.data_start
                while (
                    state.handed < len(state.specs)
                    and state.handed in state.allocated
                    and state.specs[state.handed].end <= received_to
                ):
                    pending = state.allocated.pop(state.handed)
                    self._hash(state, pending.view)
                    self._release(tensor_cost(pending.spec))
                    state.handed += 1
                    progressed = True
                    if state.handed == len(state.specs):
                        # Every byte of the file is hashed now: compare before the last tensor leaves,
                        # so a consumer that stops at the last tensor it expects never gets it unchecked.
                        self._finish(state)
                    self.stats.tensors += 1
                    dtype = getattr(self._torch, DTYPES[pending.spec.dtype][0])
                    yield pending.spec.name, pending.storage.view(dtype).reshape(pending.spec.shape)
                if state.handed < len(state.specs):
                    break
                if not state.specs:
                    self._finish(state)  # a file without tensors: its header is all there is to check
                self.stats.files += 1
                current += 1
                progressed = True
            if not futures and not progressed and current < len(states) and queued >= len(queue):
                raise LoaderError(f"{states[current].entry.path}: streaming stopped with tensors not received")

    def _hash(self, state: _FileState, view: memoryview) -> None:
        for offset in range(0, len(view), HASH_CHUNK):
            chunk = view[offset : offset + HASH_CHUNK]
            if state.digest is not None:
                state.digest.update(chunk)
            elif state.crc is not None:
                state.crc = crc64nvme_update(chunk, state.crc)
        state.hashed += len(view)

    def _finish(self, state: _FileState) -> None:
        entry = state.entry
        if state.hashed != entry.size:
            raise IntegrityError(f"{entry.path}: {state.hashed} bytes verified, the manifest says {entry.size}")
        if state.digest is not None and state.digest.hexdigest() != entry.sha256:
            raise IntegrityError(
                f"{entry.path}: sha256 {state.digest.hexdigest()} is not the manifest's {entry.sha256}; the tensors "
                "streamed from this file must not be used (load_state_dict returns none of them)"
            )
        if (
            state.crc is not None
            and entry.crc64nvme is not None
            and state.crc != decode_crc64nvme(entry.crc64nvme, entry.path)
        ):
            raise IntegrityError(
                f"{entry.path}: CRC64NVME does not match the manifest's; the tensors streamed from this file must "
                "not be used (load_state_dict returns none of them)"
            )

    # ---- memory accounting -------------------------------------------------------------------

    def _hold(self, nbytes: int) -> None:
        with self._lock:
            self._buffered += nbytes
            self.stats.peak_buffered_bytes = max(self.stats.peak_buffered_bytes, self._buffered)

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._buffered -= nbytes

    # ---- S3 ---------------------------------------------------------------------------------

    def _request(self, entry: ManifestFile, start: int, end: int) -> dict[str, Any]:
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": entry.key, "Range": f"bytes={start}-{end - 1}"}
        if self.own_bucket and entry.version_id:
            request["VersionId"] = entry.version_id
        return request

    def _open_range(self, entry: ManifestFile, start: int, end: int) -> BodyReader:
        response = self.s3.get_object(**self._request(entry, start, end))
        content_range = str(response.get("ContentRange", ""))
        expected = f"bytes {start}-{end - 1}/{entry.size}"
        if content_range != expected or int(response.get("ContentLength", -1)) != end - start:
            response["Body"].close()
            raise IntegrityError(
                f"{entry.path}: s3://{self.bucket}/{entry.key} answered the range {start}-{end - 1} with "
                f"{content_range!r}; the object is not the one the manifest describes"
            )
        return BodyReader(response["Body"])

    def _get_range(self, entry: ManifestFile, start: int, end: int) -> bytearray:
        buffer = bytearray(end - start)
        self._fetch_views(entry, start, end, [(start, memoryview(buffer))])
        return buffer

    def _fetch_into(self, entry: ManifestFile, start: int, end: int, targets: list[_Pending]) -> None:
        views = []
        for pending in targets:
            lo, hi = max(start, pending.spec.begin), min(end, pending.spec.end)
            views.append((lo, pending.view[lo - pending.spec.begin : hi - pending.spec.begin]))
        self._fetch_views(entry, start, end, [v for v in views if len(v[1])])

    def _fetch_views(self, entry: ManifestFile, start: int, end: int, views: list[tuple[int, memoryview]]) -> None:
        """Receive bytes [start, end) into `views` (absolute offset, memory), resuming a cut body from
        the first byte not yet received."""
        offset = start
        last_error: Exception | None = None
        for _attempt in range(PART_ATTEMPTS):
            if self._cancel.is_set():
                return
            try:
                body = self._open_range(entry, offset, end)
                for view_start, view in views:
                    view_end = view_start + len(view)
                    while offset < view_end:
                        if offset < view_start:
                            raise IntegrityError(f"{entry.path}: internal range plan left a gap at {offset}")
                        received = body.readinto(view[offset - view_start :])
                        if not received:
                            raise ShortBody(f"the body ended {end - offset} bytes early")
                        offset += received
                        self._count(received)
                if not body.at_end():
                    body.close()
                    raise IntegrityError(f"{entry.path}: s3://{self.bucket}/{entry.key} returned more bytes than asked")
                return
            except IntegrityError:
                raise
            except RETRIED_ERRORS as exc:
                if is_final(exc):
                    raise s3_error(exc, bucket=self.bucket, key=entry.key) from exc
                last_error = exc
        assert last_error is not None
        raise s3_error(last_error, bucket=self.bucket, key=entry.key) from last_error

    def _count(self, received: int) -> None:
        with self._lock:
            self.stats.bytes_downloaded += received


def stream_safetensors(
    repo_id: str | None = None,
    revision: str = layout.DEFAULT_REVISION,
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    verify: Literal["auto", "sha256", "crc64nvme", "size"] = "auto",
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    concurrency: int = DEFAULT_CONCURRENCY,
    part_size: int = DEFAULT_PART_SIZE,
    s3_client: Any = None,
    variant: str | None = None,
) -> TensorStream:
    """The tensors of `repo_id`@`revision`'s weights, streamed from the S3 cache.

    The files are the model's weights as transformers chooses them (`weight_files`): the shards of
    model.safetensors.index.json, else model.safetensors, else the one safetensors file at the top;
    `variant` ("fp16", ...) picks model.safetensors.index.<variant>.json / model.<variant>.safetensors.

    Same defaults as `pull` (MODEL_ID, MODEL_CACHE_BUCKET, MODEL_CACHE_PREFIX). There is no Hub
    fallback here: a model that is not cached raises NotCachedError, for the caller to `pull` instead.
    """
    ref_text = repo_id if repo_id is not None else os.environ.get("MODEL_ID", "")
    if not ref_text:
        raise UsageError("no model given: pass repo_id or set MODEL_ID")
    name, revision = layout.parse_repo_ref(ref_text, default_revision=revision)
    if verify not in ("auto", "sha256", "crc64nvme", "size"):
        raise UsageError(f"verify must be auto, sha256, crc64nvme or size, got {verify!r}")
    _positive("memory_limit", memory_limit)
    _positive("concurrency", concurrency)
    _positive("part_size", part_size, MIN_PART_SIZE)
    chosen = select_bucket(bucket if bucket is not None else os.environ.get("MODEL_CACHE_BUCKET"), _region())
    if chosen is None:
        raise NotCachedError(f"no cache bucket configured for region {_region()!r} (MODEL_CACHE_BUCKET)")
    s3 = s3_client if s3_client is not None else make_s3_client(concurrency)
    prefix = prefix if prefix is not None else os.environ.get("MODEL_CACHE_PREFIX", layout.DEFAULT_PREFIX)
    manifest = manifest_from_s3(s3, chosen, prefix, name, revision)
    own_bucket = manifest.raw.get("bucket") == chosen
    files = weight_files(manifest, lambda entry: _read_checked(s3, chosen, entry, own_bucket), variant)
    return TensorStream(
        s3,
        chosen,
        files,
        own_bucket=own_bucket,
        verify=verify,
        memory_limit=memory_limit,
        concurrency=concurrency,
        part_size=part_size,
        commit=manifest.commit,
    )


def _variant_name(name: str, variant: str | None) -> str:
    """transformers' naming of a variant: model.safetensors -> model.fp16.safetensors, and
    model.safetensors.index.json -> model.safetensors.index.fp16.json."""
    if not variant:
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{variant}{dot}{suffix}"


def weight_files(
    manifest: Manifest, read: Callable[[ManifestFile], bytes], variant: str | None = None
) -> list[ManifestFile]:
    """The files that make up the model's weights, chosen, never summed: the index's shards when the
    index is cached, else the single file, else the only top-level safetensors file. Anything else
    (a consolidated copy beside the shards, another variant, a subfolder's weights) is left alone;
    several candidates and no index is a UsageError naming them."""
    if variant is not None and (not variant or "/" in variant or variant.startswith(".")):
        raise UsageError(f"variant {variant!r} is not a variant name like 'fp16'")
    by_path = {entry.path: entry for entry in manifest.files}
    label = f"{manifest.repo_id}@{manifest.commit}"
    index = by_path.get(_variant_name(INDEX_FILE, variant))
    if index is not None:
        return _shards_of(index, read(index), by_path, label)
    single = by_path.get(_variant_name(SINGLE_FILE, variant))
    if single is not None:
        return [single]
    top = sorted(path for path in by_path if "/" not in path and path.endswith(SAFETENSORS_SUFFIX))
    if variant is None and len(top) == 1:
        return [by_path[top[0]]]
    wanted = f"{_variant_name(INDEX_FILE, variant)} or {_variant_name(SINGLE_FILE, variant)}"
    if not top:
        raise NotCachedError(f"{label} has no {wanted} in the cache (nor any top-level .safetensors file)")
    raise UsageError(
        f"{label} has no {wanted} in the cache, and {len(top)} top-level safetensors files ({', '.join(top[:6])}); "
        "pass variant= for one of them, or pull the snapshot to disk"
    )


def _shards_of(index: ManifestFile, body: bytes, by_path: dict[str, ManifestFile], label: str) -> list[ManifestFile]:
    try:
        weight_map = json.loads(body.decode("utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"{label}: {index.path} has no usable weight_map ({exc})") from exc
    folder = index.path.rpartition("/")[0]
    shards = []
    for shard in names:
        path = f"{folder}/{shard}" if folder else shard
        if not isinstance(shard, str) or path not in by_path:
            raise NotCachedError(f"{label}: {index.path} names {shard!r}, which is not in the cached snapshot")
        shards.append(by_path[path])
    if not shards:
        raise IntegrityError(f"{label}: {index.path} lists no shard")
    return shards


def _read_checked(s3: Any, bucket: str, entry: ManifestFile, own_bucket: bool) -> bytes:
    """A small file of the snapshot (the index), its bytes checked against the manifest's sha256."""
    request: dict[str, Any] = {"Bucket": bucket, "Key": entry.key}
    if own_bucket and entry.version_id:
        request["VersionId"] = entry.version_id
    try:
        body: bytes = s3.get_object(**request)["Body"].read()
    except RETRIED_ERRORS as exc:
        raise s3_error(exc, bucket=bucket, key=entry.key) from exc
    if len(body) != entry.size or hashlib.sha256(body).hexdigest() != entry.sha256:
        raise IntegrityError(f"{entry.path}: s3://{bucket}/{entry.key} does not match the manifest's sha256")
    return body


def load_state_dict(
    repo_id: str | None = None, revision: str = layout.DEFAULT_REVISION, **options: Any
) -> dict[str, Any]:
    """Every tensor of the snapshot's safetensors, returned only once every file has verified."""
    state: dict[str, Any] = {}
    stream = stream_safetensors(repo_id, revision, **options)
    for name, tensor in stream:
        if name in state:
            raise LoaderError(f"tensor {name!r} appears in more than one safetensors file")
        state[name] = tensor
    return state
