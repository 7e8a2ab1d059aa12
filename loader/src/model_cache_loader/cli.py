"""`model-cache-loader pull REPO_ID[@REV]`: for init containers.

Exit codes: 0 ok, 1 unexpected error, 2 usage, 3 not cached (fallback=error), 4 integrity
(bad manifest or bytes), 5 S3 access (unreachable, denied, no bucket), 6 Hub fallback failed.
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
        epilog="Exit codes: 0 ok, 1 unexpected, 2 usage, 3 not cached, 4 integrity, 5 S3 access, "
        "6 Hub fallback failed.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pull", help="pull REPO_ID[@REV] into the Hugging Face cache; prints the snapshot path")
    p.add_argument("repo", nargs="?", default=None, help="org/name[@revision] (default: $MODEL_ID)")
    p.add_argument("--bucket", help="cache bucket, or 'region=bucket,...' (default: $MODEL_CACHE_BUCKET)")
    p.add_argument("--prefix", help="key prefix (default: $MODEL_CACHE_PREFIX or 'models')")
    p.add_argument("--cache-dir", help="Hugging Face cache dir (default: $HF_HUB_CACHE, $HF_HOME/hub)")
    p.add_argument("--fallback", choices=FALLBACK_CHOICES, default="hub", help="on a miss (default: hub)")
    p.add_argument(
        "--verify",
        choices=VERIFY_CHOICES,
        default="sha256",
        help="default: sha256; crc64nvme checks S3's full-object CRC (needs awscrt, else sha256)",
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
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("MODEL_CACHE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    progress = Progress()
    try:
        if args.quiet:
            result = _pull(args, progress)
        else:
            with ProgressDisplay(progress, sys.stderr):
                result = _pull(args, progress)
    except LoaderError as exc:
        print(f"model-cache-loader: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("model-cache-loader: interrupted; run again to resume", file=sys.stderr)
        return 130
    rate = result.bytes_downloaded / result.seconds / 1e6 if result.seconds > 0 else 0.0
    print(
        f"model-cache-loader: {result.source}: {result.files} files, {_mib(result.bytes_downloaded)} downloaded "
        f"in {result.seconds:.2f}s ({rate:,.1f} MB/s), commit {result.commit}",
        file=sys.stderr,
    )
    print(result.path)
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
