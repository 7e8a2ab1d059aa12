"""`model-cache cost`: what the cached snapshots cost per month, from the manifests' sizes.

Storage is priced per GB-month for every snapshot under the prefix, split into *current* ones (named
by a ref or `manifest.json`, what pods pull) and *old* ones (what `model-cache gc` would remove), plus
the noncurrent object versions a versioned bucket keeps until its lifecycle expires them. Requests:
each pod start GETs the ref, the manifest and every file in `get_part_size` ranges (the loader's
default; small files take one GET), priced per 1,000; and the one-time PUT cost of having written the
snapshots (a PUT per small file, create + parts + complete per multipart one, 3 small objects for the
publish). GB here is 10^9 bytes, as in docs/explanation/cost.md; AWS bills GB as 2^30 bytes, so the estimate is
~7% high. Data transfer is left out: S3 to EKS in one region through a gateway endpoint is free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from model_cache.adapters.s3 import list_keys, s3_error
from model_cache.contract import errors, layout
from model_cache.operations.gc import list_repo_ids, protected_commits
from model_cache.pipeline.plan import DEFAULT_PART_SIZE, MiB, part_size_for
from model_cache.pipeline.publish import get_json

GB = 10**9
DEFAULT_PRICE_PER_GB_MONTH = 0.023  # S3 Standard, first 50 TB, us-east-1 (the seed's ballpark)
DEFAULT_GET_PRICE_PER_1000 = 0.0004  # S3 Standard GET, us-east-1
DEFAULT_PUT_PRICE_PER_1000 = 0.005  # S3 Standard PUT/COPY/POST/LIST, us-east-1
DEFAULT_GET_PART_SIZE = 16 * MiB  # the loader's ranged GET size
PUBLISH_PUTS = 4  # hash file, manifest, ref, manifest.json


@dataclass(frozen=True)
class Prices:
    per_gb_month: float = DEFAULT_PRICE_PER_GB_MONTH
    get_per_1000: float = DEFAULT_GET_PRICE_PER_1000
    put_per_1000: float = DEFAULT_PUT_PRICE_PER_1000

    def __post_init__(self) -> None:
        for name in ("per_gb_month", "get_per_1000", "put_per_1000"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1000:
                raise errors.InvalidRequest(f"price {name} must be a number of dollars >= 0, got {value!r}")

    def storage(self, size: int) -> float:
        return size / GB * self.per_gb_month

    def gets(self, count: float) -> float:
        return count / 1000 * self.get_per_1000

    def puts(self, count: float) -> float:
        return count / 1000 * self.put_per_1000


@dataclass(frozen=True)
class SnapshotCost:
    repo_id: str
    commit: str
    current: bool
    names: tuple[str, ...]
    files: int
    size: int
    gets_per_pull: int
    puts_to_write: int


@dataclass
class CostReport:
    bucket: str
    prefix: str
    prices: Prices
    pulls_per_month: int
    snapshots: list[SnapshotCost] = field(default_factory=list)
    noncurrent_bytes: int = 0

    @property
    def current_bytes(self) -> int:
        return sum(snap.size for snap in self.snapshots if snap.current)

    @property
    def old_bytes(self) -> int:
        return sum(snap.size for snap in self.snapshots if not snap.current)

    @property
    def gets_per_month(self) -> int:
        # Every current snapshot is pulled `pulls_per_month` times (old snapshots are not pulled).
        return self.pulls_per_month * sum(snap.gets_per_pull for snap in self.snapshots if snap.current)

    @property
    def monthly(self) -> dict[str, float]:
        storage_current = self.prices.storage(self.current_bytes)
        storage_old = self.prices.storage(self.old_bytes)
        storage_noncurrent = self.prices.storage(self.noncurrent_bytes)
        gets = self.prices.gets(self.gets_per_month)
        return {
            "storage_current": storage_current,
            "storage_old": storage_old,
            "storage_noncurrent_versions": storage_noncurrent,
            "get_requests": gets,
            "total": storage_current + storage_old + storage_noncurrent + gets,
        }

    @property
    def one_time_put_cost(self) -> float:
        return self.prices.puts(sum(snap.puts_to_write for snap in self.snapshots))

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "prefix": self.prefix,
            "prices": {
                "per_gb_month": self.prices.per_gb_month,
                "get_per_1000": self.prices.get_per_1000,
                "put_per_1000": self.prices.put_per_1000,
                "gb_bytes": GB,
            },
            "pulls_per_month": self.pulls_per_month,
            "bytes": {
                "current": self.current_bytes,
                "old": self.old_bytes,
                "noncurrent_versions": self.noncurrent_bytes,
            },
            "gets_per_month": self.gets_per_month,
            "monthly_usd": {name: round(value, 6) for name, value in self.monthly.items()},
            "one_time_put_usd": round(self.one_time_put_cost, 6),
            "snapshots": [
                {
                    "repo_id": snap.repo_id,
                    "commit": snap.commit,
                    "current": snap.current,
                    "names": list(snap.names),
                    "files": snap.files,
                    "size": snap.size,
                    "gets_per_pull": snap.gets_per_pull,
                    "puts_to_write": snap.puts_to_write,
                    "storage_usd_per_month": round(self.prices.storage(snap.size), 6),
                }
                for snap in self.snapshots
            ],
        }


def gets_per_pull(file_sizes: list[int], get_part_size: int = DEFAULT_GET_PART_SIZE) -> int:
    """GETs one pod start makes: the ref and the manifest, then each file in `get_part_size` ranges."""
    return 2 + sum(max(1, math.ceil(size / get_part_size)) for size in file_sizes)


def puts_to_write(file_sizes: list[int], part_size: int = DEFAULT_PART_SIZE) -> int:
    """PUT-class requests the engine made to write a snapshot (as `plan.make_plan` splits it)."""
    total = PUBLISH_PUTS
    for size in file_sizes:
        file_part_size = part_size_for(size, part_size)
        total += 1 if size <= file_part_size else 2 + math.ceil(size / file_part_size)
    return total


def estimate(
    s3: Any,
    bucket: str,
    *,
    prefix: str = layout.DEFAULT_PREFIX,
    prices: Prices | None = None,
    pulls_per_month: int = 0,
    get_part_size: int = DEFAULT_GET_PART_SIZE,
) -> CostReport:
    """Read every manifest under the prefix and price what is stored and pulled."""
    if not isinstance(pulls_per_month, int) or isinstance(pulls_per_month, bool) or pulls_per_month < 0:
        raise errors.InvalidRequest(f"pulls_per_month must be a whole number >= 0, got {pulls_per_month!r}")
    if not isinstance(get_part_size, int) or get_part_size < 1:
        raise errors.InvalidRequest(f"get_part_size must be a positive number of bytes, got {get_part_size!r}")
    report = CostReport(bucket, prefix, prices or Prices(), pulls_per_month)
    for repo_id in list_repo_ids(s3, bucket, prefix):
        names = protected_commits(s3, bucket, prefix, repo_id)
        manifests_prefix = layout.manifests_folder(prefix, repo_id)
        for key in list_keys(s3, bucket, manifests_prefix):
            manifest = get_json(s3, bucket, key)
            if manifest is None or not isinstance(manifest.get("files"), list):
                continue
            sizes = [int(entry.get("size", 0)) for entry in manifest["files"]]
            commit = str(manifest.get("commit", key[len(manifests_prefix) :].removesuffix(".json")))
            pinned = tuple(sorted(names.get(commit, [])))
            report.snapshots.append(
                SnapshotCost(
                    repo_id=repo_id,
                    commit=commit,
                    current=bool(pinned),
                    names=pinned,
                    files=len(sizes),
                    size=sum(sizes),
                    gets_per_pull=gets_per_pull(sizes, get_part_size),
                    puts_to_write=puts_to_write(sizes),
                )
            )
    report.noncurrent_bytes = _noncurrent_bytes(s3, bucket, prefix)
    return report


def _noncurrent_bytes(s3: Any, bucket: str, prefix: str) -> int:
    """Bytes of object versions that are no longer current (still billed until the lifecycle expires them)."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    total = 0
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=base):
            total += sum(int(version.get("Size", 0)) for version in page.get("Versions", []) if not version["IsLatest"])
    except ClientError as exc:
        raise s3_error(exc, bucket, f"listing the object versions under {base or '/'}") from exc
    return total
