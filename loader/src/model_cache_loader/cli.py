"""`model-cache-loader pull REPO_ID[@REV]`: for init containers.

The CLI contract it shares with `model-cache` (docs/reference/cli.md): the same environment (MODEL_CACHE_BUCKET,
MODEL_CACHE_PREFIX, MODEL_CACHE_REQUEST_QUEUE_URL, AWS_REGION/AWS_PROFILE, HF_*), `--version`,
`--quiet`/`--verbose`, third-party INFO logs off by default, progress only on a TTY, one line per error,
and one exit code per kind of failure: 0 ok, 1 unexpected, 2 usage or setup, 3 not cached
(fallback=error), 4 integrity, 5 access (no bucket, denied, no credentials), 6 Hub fallback failed,
7 S3 unavailable after retries, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from typing import TextIO

from model_cache_loader import __version__
from model_cache_loader.api import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PART_SIZE,
    FALLBACK_CHOICES,
    VERIFY_CHOICES,
    PullResult,
    pull,
)
from model_cache_loader.errors import LoaderError
from model_cache_loader.transfer import AUTO_PART_MAX, Progress

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as model-cache
# Third-party loggers kept at WARNING unless --verbose (botocore's credential lines, the Hub client's).
THIRD_PARTY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore", "huggingface_hub", "filelock")


def _mib(count: float) -> str:
    return f"{count / 2**20:,.1f} MiB"


class ProgressDisplay:
    """Bytes, rate and ETA: one rewritten line on a TTY, a plain line every few seconds otherwise."""

    def __init__(self, progress: Progress, stream: TextIO, interval: float | None = None) -> None:
        self.progress = progress
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval if interval is not None else (0.5 if self.tty else 5.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mcl-progress", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> ProgressDisplay:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.tty and self.progress.done:
            self.stream.write("\n")

    def line(self) -> str:
        done, total = self.progress.done, self.progress.total
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = done / elapsed
        eta = f"{(total - done) / rate:,.0f}s" if rate > 0 and total >= done else "?"
        share = f" ({100 * done / total:.0f}%)" if total else ""
        return f"{_mib(done)} / {_mib(total)}{share}  {rate / 1e6:,.1f} MB/s  ETA {eta}"

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.progress.total:
                continue
            if self.tty:
                self.stream.write("\r" + self.line() + "\x1b[K")
            else:
                self.stream.write(self.line() + "\n")
            self.stream.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-cache-loader",
        description="Pull a Hugging Face model from the s3-model-cache bucket into the local HF cache.",
        epilog="Exit codes: 0 ok, 1 unexpected, 2 usage or setup, 3 not cached, 4 integrity, 5 access "
        "(no bucket, denied, no credentials), 6 Hub fallback failed, 7 S3 unavailable, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pull", help="pull REPO_ID[@REV] into the Hugging Face cache; prints the snapshot path")
    p.add_argument("repo", nargs="?", default=None, help="org/name[@revision] (default: $MODEL_ID)")
    p.add_argument("--bucket", help="cache bucket, or 'region=bucket,...' (default: $MODEL_CACHE_BUCKET)")
    p.add_argument("--prefix", help="key prefix (default: $MODEL_CACHE_PREFIX or 'models')")
    p.add_argument("--cache-dir", help="Hugging Face cache dir (default: $HF_HUB_CACHE, $HF_HOME/hub)")
    p.add_argument(
        "--fallback",
        choices=FALLBACK_CHOICES,
        default="hub",
        help="hub (default): the Hub on a miss or with S3 unavailable, a wrong setup is an error; "
        "always: the Hub on a wrong setup too; error: never the Hub",
    )
    p.add_argument(
        "--verify",
        choices=VERIFY_CHOICES,
        default="auto",
        help="auto (default): S3's full-object CRC64NVME for files read at the version the manifest "
        "pins (the pipeline checked their sha256 before publishing), sha256 for the rest and without "
        "awscrt; sha256 or crc64nvme for every file; sha256-local also re-hashes what is on disk",
    )
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="parallel GETs")
    p.add_argument(
        "--part-size-mib",
        type=int,
        default=None,
        help=f"bytes per ranged GET, MiB (default: {DEFAULT_PART_SIZE // 2**20}, growing to "
        f"{AUTO_PART_MAX // 2**20} on big models so each stream gets its share in few requests)",
    )
    p.add_argument("--request-on-miss", action="store_true", help="ask the pipeline to cache the model on a miss")
    p.add_argument("--emf", action="store_true", default=None, help="print CloudWatch EMF metrics to stdout")
    loudness = p.add_mutually_exclusive_group()
    loudness.add_argument(
        "--quiet", "-q", action="store_true", help="no progress, no summary line (the JSON event per pull stays)"
    )
    loudness.add_argument("--verbose", "-v", action="store_true", help="third-party libraries' logs too")
    return parser


def setup_logging(*, verbose: bool) -> None:
    # --quiet drops the progress and the summary line, not the loader's own log: its one structured event
    # per pull is what the miss alarm's runbook groups by `reason` (docs/how-to/operations.md).
    default = "DEBUG" if verbose else os.environ.get("MODEL_CACHE_LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=default.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def progress_disabled() -> bool:
    return os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose)
    # A redrawn line on a terminal, a plain line every few seconds in a log; none when asked.
    show_progress = not args.quiet and not progress_disabled()
    if args.quiet or not sys.stderr.isatty():
        # The Hub fallback's tqdm bars only on a terminal (huggingface_hub reads this when first imported).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    progress = Progress()
    try:
        if show_progress:
            with ProgressDisplay(progress, sys.stderr):
                result = _pull(args, progress)
        else:
            result = _pull(args, progress)
    except LoaderError as exc:
        print(f"model-cache-loader: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("model-cache-loader: interrupted; run again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        rate = result.bytes_downloaded / result.seconds / 1e6 if result.seconds > 0 else 0.0
        print(
            f"model-cache-loader: {result.source}: {result.files} files, {_mib(result.bytes_downloaded)} "
            f"downloaded in {result.seconds:.2f}s ({rate:,.1f} MB/s), commit {result.commit}",
            file=sys.stderr,
        )
    try:
        print(result.path, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return EXIT_OK


def _pull(args: argparse.Namespace, progress: Progress) -> PullResult:
    return pull(
        args.repo,
        bucket=args.bucket,
        prefix=args.prefix,
        cache_dir=args.cache_dir,
        fallback=args.fallback,
        verify=args.verify,
        concurrency=args.concurrency,
        part_size=args.part_size_mib * 2**20 if args.part_size_mib is not None else None,
        request_on_miss=args.request_on_miss,
        emit_emf=args.emf,
        progress=progress,
    )


if __name__ == "__main__":
    raise SystemExit(main())
