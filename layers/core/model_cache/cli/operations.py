"""`model-cache verify`, `gc` and `cost`: running the cache day to day (docs/how-to/operations.md).

`verify` exits 0 when the snapshot matches its manifest and `errors.IntegrityError.exit_code` (4) when
it found drift; `gc` and `cost` exit 0 unless a request fails.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, TextIO

from model_cache.adapters.progress import human_bytes
from model_cache.adapters.s3 import s3_client
from model_cache.cli.common import add_bucket_options
from model_cache.contract import errors, ids, layout
from model_cache.operations.audit import audit_snapshot
from model_cache.operations.cost import (
    DEFAULT_GET_PRICE_PER_1000,
    DEFAULT_PRICE_PER_GB_MONTH,
    DEFAULT_PUT_PRICE_PER_1000,
    GB,
    Prices,
    estimate,
)
from model_cache.operations.gc import DEFAULT_KEEP, DEFAULT_OLDER_THAN_DAYS, collect

EXIT_OK = 0
EXIT_DRIFT = errors.IntegrityError.exit_code


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1e9:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number >= 0")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    add_bucket_options(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


# ---------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------


def add_verify_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="re-check a cached snapshot's objects against its manifest; exit 4 on drift",
        description="Check that every file of REPO_ID[@REV] exists with the manifest's size, object version and "
        "S3 CRC64NVME, and that nothing else sits under the snapshot prefix. --deep also streams every object "
        "and checks its sha256 (and git blob id for regular files).",
    )
    parser.add_argument("repo", metavar="REPO_ID[@REV]", help="revision defaults to main; a commit id works too")
    _common(parser)
    parser.add_argument("--deep", action="store_true", help="read and hash every byte (costs a GET of every file)")
    parser.set_defaults(run=run_verify)


def run_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    repo_id, revision = ids.parse_repo_ref(args.repo)
    report = audit_snapshot(
        s3_client(), args.bucket, repo_id, revision or layout.DEFAULT_REVISION, prefix=args.prefix, deep=args.deep
    )
    if args.json:
        out.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        how = f"deep: {human_bytes(report.bytes_hashed)} hashed" if report.deep else "sizes, versions, checksums"
        out.write(
            f"{report.repo_id}@{report.revision} at {report.commit}: {report.files_checked} files checked ({how})\n"
        )
        for item in report.drift:
            out.write(f"  DRIFT {item.kind:<14} {item.key}: {item.detail}\n")
        if report.clean:
            out.write("  no drift: every object matches the manifest\n")
        else:
            out.write(
                f"  {len(report.drift)} problem(s): re-copy with `model-cache sync {report.repo_id}@{report.revision} "
                f"--bucket {report.bucket} --force` (docs/how-to/operations.md, 'verify found drift')\n"
            )
    return EXIT_OK if report.clean else EXIT_DRIFT


# ---------------------------------------------------------------------------------------------
# gc
# ---------------------------------------------------------------------------------------------


def add_gc_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gc",
        help="delete snapshots no ref names, beyond the retention (never one a ref or manifest.json names)",
        description="For each repo (all under the prefix, or the REPO_IDs given): keep every snapshot a ref or "
        "manifest.json names, the newest --keep other ones, and any younger than --older-than days; delete the "
        "rest (manifest first, then files). Versioned buckets keep the deleted bytes as noncurrent versions until "
        "the lifecycle expires them.",
    )
    parser.add_argument("repos", nargs="*", metavar="REPO_ID", help="only these repos (default: every repo)")
    _common(parser)
    parser.add_argument(
        "--keep",
        type=_non_negative_int,
        default=DEFAULT_KEEP,
        help="unreferenced snapshots to keep per repo, newest first (default: %(default)s)",
    )
    parser.add_argument(
        "--older-than",
        type=_non_negative_float,
        default=DEFAULT_OLDER_THAN_DAYS,
        metavar="DAYS",
        help="never delete a snapshot younger than this (default: %(default)s)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    parser.set_defaults(run=run_gc)


def run_gc(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    report = collect(
        s3_client(),
        args.bucket,
        prefix=args.prefix,
        repo_ids=args.repos,
        keep=args.keep,
        older_than_days=args.older_than,
        dry_run=args.dry_run,
    )
    if args.json:
        out.write(json.dumps(report.to_json(), indent=2) + "\n")
        return EXIT_OK
    verb = "would delete" if report.dry_run else "deleted"
    for decision in report.decisions:
        action = "DELETE" if decision.action == "delete" else "keep"
        out.write(
            f"{action:<6}  {decision.repo_id}  {decision.commit[:12]}  {human_bytes(decision.bytes):>10}  "
            f"{decision.reason}\n"
        )
    doomed = [decision for decision in report.decisions if decision.action == "delete"]
    out.write(
        f"{verb} {len(doomed)} snapshot(s), {human_bytes(sum(d.bytes for d in doomed))}; kept "
        f"{len(report.decisions) - len(doomed)}\n"
    )
    if report.dry_run and doomed:
        out.write("dry run: nothing was deleted; run again without --dry-run to delete\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# cost
# ---------------------------------------------------------------------------------------------


def add_cost_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cost",
        help="estimate the monthly S3 storage and request cost of what is cached",
        description="Sums the manifests' sizes (current snapshots, old ones, noncurrent versions) and prices "
        "them; GET cost from --pulls-per-month pod starts per current snapshot. GB = 10^9 bytes.",
    )
    _common(parser)
    parser.add_argument("--price-per-gb-month", type=_non_negative_float, default=DEFAULT_PRICE_PER_GB_MONTH)
    parser.add_argument("--get-price-per-1000", type=_non_negative_float, default=DEFAULT_GET_PRICE_PER_1000)
    parser.add_argument("--put-price-per-1000", type=_non_negative_float, default=DEFAULT_PUT_PRICE_PER_1000)
    parser.add_argument(
        "--pulls-per-month",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="pod starts per month pulling each current snapshot (default: %(default)s)",
    )
    parser.set_defaults(run=run_cost)


def run_cost(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    prices = Prices(
        per_gb_month=args.price_per_gb_month,
        get_per_1000=args.get_price_per_1000,
        put_per_1000=args.put_price_per_1000,
    )
    report = estimate(s3_client(), args.bucket, prefix=args.prefix, prices=prices, pulls_per_month=args.pulls_per_month)
    if args.json:
        out.write(json.dumps(report.to_json(), indent=2) + "\n")
        return EXIT_OK
    if not report.snapshots:
        out.write(f"nothing cached in s3://{args.bucket}/{args.prefix.strip('/')}/\n")
    else:
        width = max(len(snap.repo_id) for snap in report.snapshots)
        out.write(f"{'REPO':<{width}}  {'COMMIT':<12}  {'STATE':<7}  {'SIZE (GB)':>10}  {'$/MONTH':>9}\n")
        for snap in sorted(report.snapshots, key=lambda s: (s.repo_id, not s.current, s.commit)):
            state = "current" if snap.current else "old"
            out.write(
                f"{snap.repo_id:<{width}}  {snap.commit[:12]:<12}  {state:<7}  {snap.size / GB:>10.3f}  "
                f"{prices.storage(snap.size):>9.4f}\n"
            )
    monthly = report.monthly
    rows = [
        (f"storage, current snapshots ({report.current_bytes / GB:.3f} GB)", monthly["storage_current"]),
        (f"storage, old snapshots ({report.old_bytes / GB:.3f} GB; `model-cache gc` removes)", monthly["storage_old"]),
        (
            f"storage, noncurrent versions ({report.noncurrent_bytes / GB:.3f} GB; the lifecycle expires)",
            monthly["storage_noncurrent_versions"],
        ),
        (f"GET requests ({report.gets_per_month} for {report.pulls_per_month} pulls/month)", monthly["get_requests"]),
    ]
    out.write("\nmonthly estimate (USD)\n")
    for label, value in rows:
        out.write(f"  {label:<78} {value:>10.4f}\n")
    out.write(f"  {'total per month':<78} {monthly['total']:>10.4f}\n")
    out.write(f"  {'one-time PUT cost of having written these snapshots':<78} {report.one_time_put_cost:>10.4f}\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# doctor
# ---------------------------------------------------------------------------------------------


def add_doctor_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check that a bucket has the controls the cache relies on (for ExistingBucketName)",
        description="Block Public Access, a TLS-only bucket policy, versioning, lifecycle rules aborting incomplete "
        "uploads and expiring the work files and noncurrent versions, and distinct cache and work prefixes. Exits 1 "
        "when any is missing (docs/tutorial/deploy.md lists the baseline).",
    )
    _common(parser)
    parser.add_argument("--work-prefix", default="_model-cache-work", help="the work prefix (default: %(default)s)")
    parser.set_defaults(run=run_doctor)


def run_doctor(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from model_cache.operations import doctor

    checks = doctor.run(s3_client(), args.bucket, args.prefix, args.work_prefix)
    if args.json:
        out.write(json.dumps([check.to_json() for check in checks], indent=2) + "\n")
    else:
        for check in checks:
            out.write(f"{'ok     ' if check.ok else 'MISSING'}  {check.name}: {check.detail}\n")
    missing = [check.name for check in checks if not check.ok]
    if missing:
        err.write(f"s3://{args.bucket} lacks {len(missing)} control(s): {', '.join(missing)}\n")
        return 1
    return 0


OPS_SUBCOMMANDS: dict[str, Callable[[Any], None]] = {
    "doctor": add_doctor_parser,
    "verify": add_verify_parser,
    "gc": add_gc_parser,
    "cost": add_cost_parser,
}
