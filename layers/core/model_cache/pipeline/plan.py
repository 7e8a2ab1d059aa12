"""Split a `Snapshot` into copy units that run on a thread pool, one per Lambda invocation, or on Fargate.

A file no bigger than its part size is copied with one PutObject; a bigger one is a multipart upload
whose parts are consecutive byte ranges (each fetched from the Hub with one Range request, so no
request ever exceeds the part size, far below the Hub's 50 GB plain-HTTP limit). A unit holds either
a run of consecutive parts of one big file, or a pack of whole small files. Every number stays
within S3's limits for any file size: parts 5 MiB..5 GiB, at most 10,000 parts, objects up to 5 TiB.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from model_cache.adapters.hubapi import HubFile, Snapshot
from model_cache.contract import errors, ids, layout

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

S3_MIN_PART_SIZE = 5 * MiB
S3_MAX_PART_SIZE = 5 * GiB
S3_MAX_PARTS = 10_000
S3_MAX_OBJECT_SIZE = 5 * TiB

DEFAULT_PART_SIZE = 16 * MiB  # x concurrency 8 (+2 in the hashing window) keeps the engine under 300 MiB RSS
# When a model has too few files to fill the copy Map, its files are split into units of 512 MiB (5-9 s at
# 60-120 MB/s), so a 15 GB model is ~30 units wide; each split file is then read back by its own completion
# task. When it has enough, each file is one unit, hashed in-stream (`limits.fastest_plan`, `make scale`).
DEFAULT_UNIT_SIZE = 512 * MiB
DEFAULT_FARGATE_THRESHOLD = 40 * GiB  # above this a file is one whole-file unit on Fargate
DEFAULT_UNIT_CONCURRENCY = 4  # parts in flight inside one Lambda unit
MAX_FILES_PER_UNIT = 256  # packs of small files: bounded so one unit's result stays small
DEFAULT_WORK_PREFIX = "_model-cache-work"
# Incremental refresh: an unchanged file is copied inside S3 from the previous snapshot. CopyObject
# takes objects up to 5 GiB; bigger ones are UploadPartCopy runs of COPY_PART_SIZE parts.
COPY_OBJECT_LIMIT = 5 * GiB
COPY_PART_SIZE = 1 * GiB
COPY_PACK_BYTES = 64 * GiB  # server-side copies of a pack of small files: bounded by count, not time
COPY_PARTS_PER_UNIT = 32  # UploadPartCopy parts per unit: 32 GiB, a couple of minutes inside S3

Runner = Literal["lambda", "fargate"]
UnitKind = Literal["hub", "copy-from"]  # bytes from the Hub, or copied inside S3 from the previous snapshot


Layout = Literal["auto", "split", "whole"]
LAYOUTS: tuple[Layout, ...] = ("auto", "split", "whole")


@dataclass(frozen=True)
class PlanOptions:
    part_size: int = DEFAULT_PART_SIZE
    unit_size: int = DEFAULT_UNIT_SIZE
    fargate_threshold: int = DEFAULT_FARGATE_THRESHOLD
    unit_concurrency: int = DEFAULT_UNIT_CONCURRENCY
    # How big files become units: "split" into runs of unit_size (wide fan-out; a split file is read back
    # by its completion task), "whole" (one unit per file, hashed in-stream), or "auto": whichever run is
    # faster at the stated rates (model_cache.pipeline.limits.fastest_plan).
    layout: Layout = "auto"
    # Whether the stack has the Fargate copier (the template's CopierImageUri); without it a file at or
    # above fargate_threshold is refused with CopierNotConfigured.
    copier: bool = True

    def __post_init__(self) -> None:
        for name in ("part_size", "unit_size", "fargate_threshold", "unit_concurrency"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise errors.InvalidRequest(f"option {name} must be a positive integer, got {value!r}")
        if not S3_MIN_PART_SIZE <= self.part_size <= S3_MAX_PART_SIZE:
            raise errors.InvalidRequest(
                f"part_size {self.part_size} is outside S3's limits: choose 5 MiB..5 GiB (e.g. 16MiB or 64MiB)"
            )
        if self.unit_size < self.part_size:
            raise errors.InvalidRequest(f"unit_size {self.unit_size} is smaller than part_size {self.part_size}")
        if not isinstance(self.copier, bool):
            raise errors.InvalidRequest(f"option copier must be true or false, got {self.copier!r}")
        if self.layout not in LAYOUTS:
            raise errors.InvalidRequest(f"option layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "part_size": self.part_size,
            "unit_size": self.unit_size,
            "fargate_threshold": self.fargate_threshold,
            "unit_concurrency": self.unit_concurrency,
            "layout": self.layout,
            "copier": self.copier,
        }

    @classmethod
    def from_json(cls, data: object) -> PlanOptions:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise errors.InvalidRequest(f"options must be an object, got {type(data).__name__}")
        unknown = set(data) - {option.name for option in fields(cls)}
        if unknown:
            raise errors.InvalidRequest(f"unknown option(s): {', '.join(sorted(unknown))}")
        return cls(**data)


def part_size_for(file_size: int, requested: int) -> int:
    """The part size for one file: `requested`, grown (in whole MiB) until the file fits in 10,000 parts."""
    if file_size > S3_MAX_OBJECT_SIZE:
        raise errors.InvalidRequest(f"a file of {file_size} bytes exceeds S3's 5 TiB object limit")
    needed = math.ceil(file_size / S3_MAX_PARTS)
    size = max(requested, S3_MIN_PART_SIZE, math.ceil(needed / MiB) * MiB)
    return min(size, S3_MAX_PART_SIZE)


@dataclass(frozen=True)
class CopySource:
    """A verified object of the previous snapshot with the same bytes as a file of the new one.

    `etag` pins the exact object that was checked at plan time (CopySourceIfMatch); `sha256` and
    `crc64nvme` are what the previous manifest recorded after verifying those bytes.
    """

    key: str
    etag: str
    sha256: str
    crc64nvme: str | None
    version_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "etag": self.etag,
            "sha256": self.sha256,
            "crc64nvme": self.crc64nvme,
            "version_id": self.version_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CopySource:
        return cls(**data)


@dataclass(frozen=True)
class PlannedFile:
    path: str
    size: int
    git_oid: str
    lfs_sha256: str | None
    key: str
    part_size: int
    multipart: bool
    upload_id: str | None = None
    copy_from: CopySource | None = None  # set: copied inside S3 from the previous snapshot, not from the Hub

    @property
    def lfs(self) -> bool:
        return self.lfs_sha256 is not None

    @property
    def part_count(self) -> int:
        return max(1, math.ceil(self.size / self.part_size)) if self.multipart else 1

    def part_range(self, part_number: int) -> tuple[int, int]:
        """[start, end) byte offsets of a 1-based part; the last part may be shorter."""
        if not 1 <= part_number <= self.part_count:
            raise errors.InvalidRequest(f"{self.path} has no part {part_number}")
        if not self.multipart:
            return 0, self.size
        start = (part_number - 1) * self.part_size
        return start, min(start + self.part_size, self.size)

    def hub_file(self) -> HubFile:
        return HubFile(path=self.path, size=self.size, git_oid=self.git_oid, lfs_sha256=self.lfs_sha256)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "git_oid": self.git_oid,
            "lfs_sha256": self.lfs_sha256,
            "key": self.key,
            "part_size": self.part_size,
            "multipart": self.multipart,
            "upload_id": self.upload_id,
            **({"copy_from": self.copy_from.to_json()} if self.copy_from is not None else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlannedFile:
        fields = dict(data)
        source = fields.pop("copy_from", None)
        return cls(**fields, copy_from=None if source is None else CopySource.from_json(source))


@dataclass(frozen=True)
class UnitItem:
    """Parts first_part..last_part (1-based, inclusive) of one file; (1, 1) for a single-PUT file."""

    path: str
    first_part: int
    last_part: int

    def to_json(self) -> list[Any]:
        return [self.path, self.first_part, self.last_part]

    @classmethod
    def from_json(cls, data: list[Any]) -> UnitItem:
        return cls(path=str(data[0]), first_part=int(data[1]), last_part=int(data[2]))


@dataclass(frozen=True)
class CopyUnit:
    unit_id: int
    runner: Runner
    items: tuple[UnitItem, ...]
    bytes: int
    kind: UnitKind = "hub"

    def to_json(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "runner": self.runner,
            "kind": self.kind,
            "bytes": self.bytes,
            "items": [item.to_json() for item in self.items],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CopyUnit:
        runner = data["runner"]
        if runner not in ("lambda", "fargate"):
            raise errors.InvalidRequest(f"unit runner {runner!r} is not 'lambda' or 'fargate'")
        kind = data.get("kind", "hub")
        if kind not in ("hub", "copy-from"):
            raise errors.InvalidRequest(f"unit kind {kind!r} is not 'hub' or 'copy-from'")
        return cls(
            unit_id=int(data["unit_id"]),
            runner=runner,
            kind=kind,
            bytes=int(data["bytes"]),
            items=tuple(UnitItem.from_json(item) for item in data["items"]),
        )


@dataclass
class Plan:
    plan_id: str
    repo_id: str
    revision: str
    commit: str
    endpoint: str
    bucket: str
    prefix: str
    options: PlanOptions
    files: list[PlannedFile]
    units: list[CopyUnit]
    write_hash_file: bool
    work_prefix: str = DEFAULT_WORK_PREFIX
    # The request's selection, recorded in the manifest (docs/architecture.md 3.2 `selection`).
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # This run's claim on its snapshot (model_cache.pipeline.claims), released by cleanup.
    claim_key: str | None = None
    # Who asked: the SQS SenderId the request Lambda recorded ("schedule" for a refresh), for the manifest.
    requested_by: str | None = None
    _by_path: dict[str, PlannedFile] = field(default_factory=dict, repr=False, compare=False)

    def file(self, path: str) -> PlannedFile:
        if len(self._by_path) != len(self.files):
            self._by_path = {planned.path: planned for planned in self.files}
        try:
            return self._by_path[path]
        except KeyError:
            raise errors.InvalidRequest(f"the plan has no file {path!r}") from None

    def set_upload_id(self, path: str, upload_id: str) -> None:
        self.files = [replace(f, upload_id=upload_id) if f.path == path else f for f in self.files]
        self._by_path = {}

    def unit(self, unit_id: int) -> CopyUnit:
        if not 0 <= unit_id < len(self.units) or self.units[unit_id].unit_id != unit_id:
            raise errors.InvalidRequest(f"the plan has no unit {unit_id}")
        return self.units[unit_id]

    @property
    def total_bytes(self) -> int:
        return sum(planned.size for planned in self.files)

    @property
    def work_dir(self) -> str:
        return layout.work_dir(self.work_prefix, self.plan_id)

    @property
    def plan_key(self) -> str:
        return layout.plan_key(self.work_dir)

    @property
    def manifest_key(self) -> str:
        return layout.manifest_key(self.prefix, self.repo_id, self.commit)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "work_prefix": self.work_prefix,
            "options": self.options.to_json(),
            "write_hash_file": self.write_hash_file,
            "include": list(self.include),
            "exclude": list(self.exclude),
            "claim_key": self.claim_key,
            "requested_by": self.requested_by,
            "files": [planned.to_json() for planned in self.files],
            "units": [unit.to_json() for unit in self.units],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        """A stored plan, every field that names a place checked: a plan.json that was tampered with can
        name no bucket, prefix, key or work folder other than the ones a real plan would (its work folder
        is always `{work_prefix}/{plan_id}/`, under the work prefix, and every key its file's own)."""
        if not isinstance(data, dict):
            raise errors.InvalidRequest(f"the stored plan is not a JSON object: {type(data).__name__}")
        try:
            plan = cls._fields_from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.InvalidRequest(f"the stored plan is malformed: {exc}") from exc
        plan.validate()
        return plan

    def validate(self) -> None:
        ids.validate_plan_id(self.plan_id)
        ids.validate_repo_id(self.repo_id)
        ids.validate_revision(self.revision)
        if not ids.is_commit_id(self.commit):
            raise errors.InvalidRequest(f"the stored plan's commit {self.commit!r} is not a 40-hex commit id")
        ids.validate_bucket(self.bucket)
        if (
            ids.validate_prefix(self.prefix) != self.prefix
            or ids.validate_work_prefix(self.work_prefix) != self.work_prefix
        ):
            raise errors.InvalidRequest(
                f"the stored plan's prefixes {self.prefix!r} / {self.work_prefix!r} are not canonical"
            )
        if self.prefix == self.work_prefix or self.prefix.startswith(self.work_prefix + "/"):
            raise errors.InvalidRequest(f"the stored plan writes its cache under its work prefix {self.work_prefix!r}")
        if not self.endpoint.startswith(("https://", "http://")):
            raise errors.InvalidRequest(f"the stored plan's Hub endpoint {self.endpoint[:80]!r} is not an http(s) URL")
        snapshot = layout.snapshot_prefix(self.prefix, self.repo_id, self.commit)
        for planned in self.files:
            ids.validate_repo_path(planned.path)
            if planned.key != layout.file_key(self.prefix, self.repo_id, self.commit, planned.path):
                raise errors.InvalidRequest(f"the stored plan's key for {planned.path!r} is not under {snapshot}")
            source = planned.copy_from
            if source is not None and not source.key.startswith(layout.repo_prefix(self.prefix, self.repo_id)):
                raise errors.InvalidRequest(f"the stored plan copies {planned.path!r} from outside its repo")
        if self.claim_key is not None and not self.claim_key.startswith(layout.claims_root(self.work_prefix)):
            raise errors.InvalidRequest(
                f"the stored plan's claim {self.claim_key!r} is not under {self.work_prefix}/claims/"
            )

    @classmethod
    def _fields_from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            plan_id=data["plan_id"],
            repo_id=data["repo_id"],
            revision=data["revision"],
            commit=data["commit"],
            endpoint=data["endpoint"],
            bucket=data["bucket"],
            prefix=data["prefix"],
            work_prefix=data["work_prefix"],
            options=PlanOptions.from_json(data["options"]),
            write_hash_file=bool(data["write_hash_file"]),
            include=tuple(str(pattern) for pattern in data.get("include", ())),
            exclude=tuple(str(pattern) for pattern in data.get("exclude", ())),
            claim_key=data.get("claim_key"),
            requested_by=data.get("requested_by"),
            files=[PlannedFile.from_json(item) for item in data["files"]],
            units=[CopyUnit.from_json(item) for item in data["units"]],
        )


def new_plan_id() -> str:
    return uuid.uuid4().hex


def make_plan(
    snapshot: Snapshot,
    selected: list[HubFile],
    *,
    bucket: str,
    prefix: str = layout.DEFAULT_PREFIX,
    options: PlanOptions | None = None,
    plan_id: str | None = None,
    work_prefix: str = DEFAULT_WORK_PREFIX,
    reuse: Mapping[str, CopySource] | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    whole_file_max: int | None = None,
) -> Plan:
    """Pure: the files of `selected` as `PlannedFile`s and their copy units (no I/O).

    A path in `reuse` is copied inside S3 from that source instead of being fetched from the Hub. With
    `whole_file_max`, a Hub file up to that size is one unit (streamed and hashed whole, nothing to read
    back) instead of runs of `unit_size`.
    """
    options = options or PlanOptions()
    reuse = reuse or {}
    files: list[PlannedFile] = []
    for hub_file in selected:
        source = reuse.get(hub_file.path)
        if source is None:
            part_size = part_size_for(hub_file.size, options.part_size)
            multipart = hub_file.size > part_size
        else:
            part_size = part_size_for(hub_file.size, COPY_PART_SIZE)
            multipart = hub_file.size > COPY_OBJECT_LIMIT
        files.append(
            PlannedFile(
                path=hub_file.path,
                size=hub_file.size,
                git_oid=hub_file.git_oid,
                lfs_sha256=hub_file.lfs_sha256,
                key=layout.file_key(prefix, snapshot.repo_id, snapshot.commit, hub_file.path),
                part_size=part_size,
                multipart=multipart,
                copy_from=source,
            )
        )
    has_hash_file = any(hub_file.path == layout.HASH_FILE for hub_file in snapshot.files)
    return Plan(
        plan_id=plan_id or new_plan_id(),
        repo_id=snapshot.repo_id,
        revision=snapshot.revision,
        commit=snapshot.commit,
        endpoint=snapshot.endpoint,
        bucket=bucket,
        prefix=prefix,
        work_prefix=work_prefix,
        options=options,
        files=files,
        units=split_units(files, options, whole_file_max),
        write_hash_file=not has_hash_file,
        include=tuple(include),
        exclude=tuple(exclude),
    )


def split_units(files: list[PlannedFile], options: PlanOptions, whole_file_max: int | None = None) -> list[CopyUnit]:
    """Big files -> runs of whole parts (or one Fargate unit; or one Lambda unit up to `whole_file_max`);
    small files -> packs up to unit_size.

    Files copied inside S3 get their own `copy-from` units on the Lambda path: runs of COPY_PARTS_PER_UNIT
    parts of a multipart copy, packs of up to MAX_FILES_PER_UNIT for the rest (a server-side copy moves
    no bytes through Lambda).
    """
    units: list[CopyUnit] = []

    def add(runner: Runner, items: list[UnitItem], size: int, kind: UnitKind = "hub") -> None:
        units.append(CopyUnit(unit_id=len(units), runner=runner, items=tuple(items), bytes=size, kind=kind))

    copy_pack: list[UnitItem] = []
    copy_pack_bytes = 0
    for planned in files:
        if planned.copy_from is None:
            continue
        if planned.multipart:
            for first in range(1, planned.part_count + 1, COPY_PARTS_PER_UNIT):
                last = min(first + COPY_PARTS_PER_UNIT - 1, planned.part_count)
                start, _ = planned.part_range(first)
                _, end = planned.part_range(last)
                add("lambda", [UnitItem(planned.path, first, last)], end - start, "copy-from")
            continue
        if copy_pack and (len(copy_pack) >= MAX_FILES_PER_UNIT or copy_pack_bytes + planned.size > COPY_PACK_BYTES):
            add("lambda", copy_pack, copy_pack_bytes, "copy-from")
            copy_pack, copy_pack_bytes = [], 0
        copy_pack.append(UnitItem(planned.path, 1, 1))
        copy_pack_bytes += planned.size
    if copy_pack:
        add("lambda", copy_pack, copy_pack_bytes, "copy-from")

    pack: list[UnitItem] = []
    pack_bytes = 0
    for planned in files:
        if planned.copy_from is not None:
            continue
        if not planned.multipart:
            if pack and (pack_bytes + planned.size > options.unit_size or len(pack) >= MAX_FILES_PER_UNIT):
                add("lambda", pack, pack_bytes)
                pack, pack_bytes = [], 0
            pack.append(UnitItem(planned.path, 1, 1))
            pack_bytes += planned.size
            continue
        if planned.size >= options.fargate_threshold:
            if not options.copier:
                raise errors.CopierNotConfigured(
                    f"{planned.path} is {planned.size} bytes, at or above the Fargate threshold "
                    f"({options.fargate_threshold} bytes, the Settings mapping's FargateThresholdBytes), and this "
                    "stack has no Fargate copier: deploy it with CopierImageUri, CopierVpcId and CopierSubnetIds "
                    "(docs/tutorial/deploy.md) or raise FargateThresholdBytes"
                )
            add("fargate", [UnitItem(planned.path, 1, planned.part_count)], planned.size)
            continue
        if whole_file_max is not None and planned.size <= whole_file_max:
            add("lambda", [UnitItem(planned.path, 1, planned.part_count)], planned.size)
            continue
        parts_per_unit = max(1, options.unit_size // planned.part_size)
        for first in range(1, planned.part_count + 1, parts_per_unit):
            last = min(first + parts_per_unit - 1, planned.part_count)
            start, _ = planned.part_range(first)
            _, end = planned.part_range(last)
            add("lambda", [UnitItem(planned.path, first, last)], end - start)
    if pack:
        add("lambda", pack, pack_bytes)
    return units
