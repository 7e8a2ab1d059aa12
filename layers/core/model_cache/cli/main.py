"""`model-cache`: sync a Hub repo into S3, list what is cached, show a snapshot.

Subcommands register themselves in `SUBCOMMANDS` (name -> function adding its parser); a later one
(request, status, verify, gc, cost) adds one function and one entry. Domain errors print one line
naming the problem and the fix and exit with `errors.<Class>.exit_code` (docs/reference/cli.md); no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError, ProfileNotFound

from model_cache import __version__
from model_cache.adapters.progress import ConsoleProgress, human_bytes
from model_cache.adapters.s3 import list_keys, s3_client
from model_cache.cli.common import (
    EXIT_BROKEN_PIPE,
    add_bucket_options,
    add_global_options,
    add_loudness_to_commands,
    report_error,
    setup_environment,
    setup_logging,
)
from model_cache.cli.operations import OPS_SUBCOMMANDS
from model_cache.cli.requests import PIPELINE_SUBCOMMANDS
from model_cache.contract import errors, ids, layout
from model_cache.operations.gc import list_repo_ids
from model_cache.operations.loader_release import disk_request, publish_loader
from model_cache.pipeline.engine import DEFAULT_CONCURRENCY, sync
from model_cache.pipeline.plan import DEFAULT_PART_SIZE
from model_cache.pipeline.publish import get_bytes, get_json

EXIT_OK = 0
EXIT_INTERRUPTED = 130

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'64MiB', '64M', '67108864', '1.5GiB' -> bytes (K/M/G/T are binary; 'MB' is decimal)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 64MiB, 16M or 8388608")
    number, unit, binary = float(match.group(1)), match.group(2).upper(), match.group(3)
    decimal_unit = text.strip().upper().endswith(("KB", "MB", "GB", "TB")) and not binary
    base = 1000 if decimal_unit else 1024
    power = " KMGT".index(unit) if unit else 0
    return int(number * base**power)


# ---------------------------------------------------------------------------------------------
# sync
# ---------------------------------------------------------------------------------------------


def add_sync_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sync",
        help="copy a Hub repo at a revision into S3, verified, and publish its manifest",
        description="Mirror REPO_ID[@REV] into s3://BUCKET/PREFIX/{org}--{name}/snapshots/{commit}/ "
        "(HF_ENDPOINT and HF_TOKEN honoured). A no-op when that commit is already published.",
    )
    parser.add_argument("repo", metavar="REPO_ID[@REV]", help="e.g. TinyLlama/TinyLlama-1.1B-Chat-v1.0@main")
    add_bucket_options(parser)
    parser.add_argument("--revision", help="branch, tag or commit (default: main; or the @REV of REPO_ID)")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB", help="copy only matching files")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip matching files")
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="parts in flight (default: %(default)s)"
    )
    parser.add_argument(
        "--part-size", type=parse_size, default=DEFAULT_PART_SIZE, help="S3 part size (default: 16MiB; 5MiB..5GiB)"
    )
    parser.add_argument("--force", action="store_true", help="copy again even if the commit is already published")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run_sync)


def run_sync(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    repo_id, ref_revision = ids.parse_repo_ref(args.repo)
    if args.revision and ref_revision and args.revision != ref_revision:
        raise errors.InvalidRequest(f"{args.repo} and --revision {args.revision} disagree: give the revision once")
    revision = args.revision or ref_revision or layout.DEFAULT_REVISION
    progress = None if args.quiet else ConsoleProgress(err)
    result = sync(
        repo_id,
        revision,
        bucket=args.bucket,
        prefix=args.prefix,
        include=args.include,
        exclude=args.exclude,
        force=args.force,
        concurrency=args.concurrency,
        part_size=args.part_size,
        progress=progress,
    )
    if args.json:
        out.write(json.dumps(result.to_json(), indent=2) + "\n")
        return EXIT_OK
    if result.status == "already_published":
        out.write(f"{repo_id}@{revision} is already cached at commit {result.commit}: nothing copied\n")
    else:
        out.write(
            f"synced {repo_id}@{revision}: {result.files} files, {human_bytes(result.total_bytes)} in "
            f"{result.seconds:.1f} s ({result.mb_per_s:.1f} MB/s), {result.retries} retries\n"
        )
    if result.reused_files:
        out.write(
            f"  reused    {result.reused_files} unchanged files ({human_bytes(result.reused_bytes)}) copied inside S3 "
            "from the previous snapshot\n"
        )
    out.write(f"  commit    {result.commit}\n")
    out.write(f"  manifest  s3://{result.bucket}/{result.manifest_key}\n")
    out.write(f"  snapshot  s3://{result.bucket}/{layout.snapshot_prefix(args.prefix, repo_id, result.commit)}\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# ls and show
# ---------------------------------------------------------------------------------------------


def add_ls_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("ls", help="list the cached repos: snapshots, refs, size, date")
    add_bucket_options(parser)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(run=run_ls)


def cached_snapshots(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """One row per published snapshot: repo, commit, refs pointing at it, size, files, date."""
    rows: list[dict[str, Any]] = []
    for repo_id in list_repo_ids(s3, bucket, prefix):
        refs: dict[str, list[str]] = {}
        refs_folder = layout.refs_folder(prefix, repo_id)
        for ref_key in list_keys(s3, bucket, refs_folder):
            commit = (get_bytes(s3, bucket, ref_key) or b"").decode("ascii", "replace").strip()
            refs.setdefault(commit, []).append(ref_key[len(refs_folder) :])
        for manifest_key in list_keys(s3, bucket, layout.manifests_folder(prefix, repo_id)):
            manifest = get_json(s3, bucket, manifest_key)
            if manifest is None:
                continue
            rows.append(
                {
                    "repo_id": manifest.get("repo_id"),
                    "commit": manifest.get("commit"),
                    "refs": sorted(refs.get(str(manifest.get("commit")), [])),
                    "files": len(manifest.get("files", [])),
                    "total_size": manifest.get("total_size", 0),
                    "created_at": manifest.get("created_at"),
                }
            )
    return sorted(rows, key=lambda row: (str(row["repo_id"]), str(row["created_at"])))


def run_ls(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    rows = cached_snapshots(s3_client(), args.bucket, args.prefix)
    if args.json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return EXIT_OK
    if not rows:
        out.write(f"no cached repos in s3://{args.bucket}/{args.prefix.strip('/')}/\n")
        return EXIT_OK
    width = max(len(str(row["repo_id"])) for row in rows)
    out.write(f"{'REPO':<{width}}  {'COMMIT':<12}  {'REFS':<12}  {'FILES':>5}  {'SIZE':>10}  CREATED\n")
    for row in rows:
        refs = ",".join(row["refs"]) or "-"
        out.write(
            f"{row['repo_id']:<{width}}  {str(row['commit'])[:12]:<12}  {refs:<12}  {row['files']:>5}  "
            f"{human_bytes(row['total_size']):>10}  {row['created_at']}\n"
        )
    return EXIT_OK


def add_show_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("show", help="summarize the cached manifest of REPO_ID[@REV]")
    parser.add_argument("repo", metavar="REPO_ID[@REV]")
    add_bucket_options(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the whole manifest")
    output.add_argument(
        "--uri",
        action="store_true",
        help="print only the snapshot's URI, what Ray Serve LLM's bucket_uri, vLLM's --model (runai_streamer) "
        "and KServe's storageUri take (docs/how-to/adopt.md)",
    )
    output.add_argument(
        "--disk-request",
        action="store_true",
        help="print only the ephemeral-storage a pod needs for it (the RGD's modelDiskSize), e.g. 16Gi",
    )
    parser.set_defaults(run=run_show)


def find_manifest(s3: Any, bucket: str, prefix: str, repo_id: str, revision: str) -> dict[str, Any]:
    if ids.is_commit_id(revision):
        commit = revision
    else:
        ref = get_bytes(s3, bucket, layout.ref_key(prefix, repo_id, revision))
        if ref is None:
            raise errors.RevisionNotFound(
                f"{repo_id}@{revision} is not cached in s3://{bucket}/: run `model-cache sync {repo_id}@{revision} "
                f"--bucket {bucket}` first"
            )
        commit = ref.decode("ascii", "replace").strip()
    manifest = get_json(s3, bucket, layout.manifest_key(prefix, repo_id, commit))
    if manifest is None:
        raise errors.RevisionNotFound(f"no manifest for {repo_id} at commit {commit} in s3://{bucket}/")
    return manifest


def snapshot_uri(bucket: str, prefix: str, repo_id: str, commit: str) -> str:
    """s3://bucket/prefix/org--name/snapshots/{commit}/: the folder every zero-install consumer reads."""
    return f"s3://{bucket}/{layout.snapshot_prefix(prefix, repo_id, commit)}"


def run_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    repo_id, revision = ids.parse_repo_ref(args.repo)
    revision = revision or layout.DEFAULT_REVISION
    manifest = find_manifest(s3_client(), args.bucket, args.prefix, repo_id, revision)
    if args.json:
        out.write(json.dumps(manifest, indent=2) + "\n")
        return EXIT_OK
    if args.disk_request:
        out.write(disk_request(int(manifest["total_size"])) + "\n")
        return EXIT_OK
    if args.uri:
        # The configured bucket, not the manifest's field: a replica in another region has another name.
        out.write(snapshot_uri(args.bucket, args.prefix, manifest["repo_id"], manifest["commit"]) + "\n")
        return EXIT_OK
    files = manifest["files"]
    out.write(f"{manifest['repo_id']}@{revision}\n")
    out.write(f"  commit      {manifest['commit']}\n")
    out.write(f"  created     {manifest['created_at']}  (from {manifest['source']})\n")
    out.write(f"  snapshot    s3://{manifest['bucket']}/{manifest['prefix']}\n")
    out.write(f"  files       {len(files)}, {human_bytes(manifest['total_size'])} ({manifest['total_size']} bytes)\n")
    width = max((len(entry["path"]) for entry in files), default=4)
    for entry in files:
        kind = "lfs" if entry["lfs"] else "git"
        out.write(f"    {entry['path']:<{width}}  {human_bytes(entry['size']):>10}  {kind}  {entry['sha256'][:16]}\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# publish-loader
# ---------------------------------------------------------------------------------------------


def add_publish_loader_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "publish-loader",
        help="put the loader's wheel into the bucket for Ray pods (runtime_env py_modules), once per version",
        description="Write WHEEL to s3://BUCKET/model-cache-loader/{version}/ as .whl and .zip "
        "(docs/tutorial/deploy.md). "
        "Publishing a version again is a no-op when the files are the same, an error when they differ.",
    )
    parser.add_argument("wheel", type=Path, metavar="WHEEL", help="dist/model_cache_loader-<version>-py3-none-any.whl")
    add_bucket_options(parser, prefix=False)
    parser.set_defaults(run=run_publish_loader)


def run_publish_loader(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    release = publish_loader(s3_client(), args.bucket, args.wheel)
    state = "published" if release.written else "already published, same files"
    err.write(f"model-cache: model-cache-loader {release.version} {state}: s3://{args.bucket}/{release.wheel_key}\n")
    err.write(f"model-cache: its sha256 is {release.zip_sha256}: set the RayService's modelCacheLoaderSha256 to it\n")
    out.write(release.py_modules_uri + "\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

SUBCOMMANDS: dict[str, Callable[[Any], None]] = {
    "sync": add_sync_parser,
    "ls": add_ls_parser,
    "show": add_show_parser,
    "publish-loader": add_publish_loader_parser,
    **PIPELINE_SUBCOMMANDS,
    **OPS_SUBCOMMANDS,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-cache",
        description="Mirror Hugging Face Hub repos into S3 at pinned commits, verified. "
        "Exit codes: docs/reference/cli.md.",
    )
    add_global_options(parser, __version__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS.values():
        add(subparsers)
    add_loudness_to_commands(subparsers)
    return parser


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    setup_environment()
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet, verbose=args.verbose, own="model_cache")
    as_json = bool(getattr(args, "json", False))

    def fail(exc: BaseException, code: int, message: str) -> int:
        return report_error("model-cache", exc, code, message, as_json=as_json, out=out, err=err)

    try:
        code: int = args.run(args, out, err)
        out.flush()
        return code
    except errors.ModelCacheError as exc:
        return fail(exc, exc.exit_code, str(exc))
    except NoCredentialsError as exc:
        message = "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        return fail(exc, errors.AccessDenied.exit_code, message)
    except ProfileNotFound as exc:
        return fail(exc, errors.InvalidRequest.exit_code, f"{exc}: set AWS_PROFILE to a profile in ~/.aws/config")
    except NoRegionError as exc:
        return fail(exc, errors.InvalidRequest.exit_code, "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION)")
    except (BotoCoreError, ClientError) as exc:
        message = f"AWS request failed: {exc}; check AWS_ENDPOINT_URL, the region and network"
        return fail(exc, errors.TransferError.exit_code, message)
    except BrokenPipeError:
        # The reader went away (`model-cache ls | head -2`): stop quietly, and keep the interpreter's own
        # flush at exit from failing on the closed pipe again.
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        err.write("model-cache: interrupted; uploads of this run were aborted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
