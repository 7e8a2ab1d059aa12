"""What every `model-cache` subcommand shares with `model-cache-loader`: the CLI contract (docs/reference/cli.md).

- Settings come from flags, else the environment both CLIs read: `MODEL_CACHE_BUCKET`,
  `MODEL_CACHE_PREFIX`, `MODEL_CACHE_REQUEST_QUEUE_URL`, `AWS_REGION` (as well as boto3's own
  `AWS_DEFAULT_REGION`), `AWS_PROFILE`, `HF_*`.
- One exit code per kind of failure (`errors.*.exit_code`; the table in docs/reference/cli.md), one line on
  stderr naming the fix, or `{"error": {...}}` on stdout under `--json`; never a traceback.
- Logs: our own at INFO (WARNING with `--quiet`), third-party libraries' (botocore's credential lines,
  httpx, huggingface_hub) at WARNING unless `--verbose`.
- A closed pipe (`model-cache ls | head -2`) ends the command quietly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any, TextIO

from model_cache.contract import errors, ids, layout

BUCKET_ENV = "MODEL_CACHE_BUCKET"
PREFIX_ENV = "MODEL_CACHE_PREFIX"
QUEUE_URL_ENV = "MODEL_CACHE_REQUEST_QUEUE_URL"
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a C tool killed by the closed pipe would report
THIRD_PARTY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore", "huggingface_hub", "filelock")


def bucket_name(text: str) -> str:
    """--bucket: a bucket's name (S3's naming rules, ids.validate_bucket), never a URI or a path."""
    try:
        return ids.validate_bucket(text)
    except errors.InvalidRequest as exc:
        hint = " (give the name, e.g. " + repr(text.split("://", 1)[-1].split("/", 1)[0]) + ")" if "/" in text else ""
        raise argparse.ArgumentTypeError(f"{exc}{hint}") from exc


def add_bucket_options(parser: argparse.ArgumentParser, *, prefix: bool = True) -> None:
    """--bucket (default $MODEL_CACHE_BUCKET; one of the two is needed) and --prefix (default
    $MODEL_CACHE_PREFIX, else `models`)."""
    from_env = os.environ.get(BUCKET_ENV) or None
    parser.add_argument(
        "--bucket",
        type=bucket_name,
        default=from_env,
        required=from_env is None,
        help=f"the cache bucket (default: ${BUCKET_ENV})",
    )
    if prefix:
        parser.add_argument(
            "--prefix",
            default=(os.environ.get(PREFIX_ENV) or layout.DEFAULT_PREFIX).strip("/"),
            help=f"key prefix (default: ${PREFIX_ENV}, else {layout.DEFAULT_PREFIX})",
        )


def add_global_options(parser: argparse.ArgumentParser, version: str) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="errors only")
    loudness.add_argument("-v", "--verbose", action="store_true", help="third-party libraries' logs too")


def add_loudness_to_commands(subparsers: Any) -> None:
    """-q/-v after the command too (`model-cache sync X --quiet`), as `model-cache-loader pull X -q` takes
    them; SUPPRESS keeps a flag given before the command from being reset by the command's default."""
    for command in subparsers.choices.values():
        loudness = command.add_mutually_exclusive_group()
        loudness.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="errors only")
        loudness.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="third-party libraries' logs too"
        )


def setup_environment() -> None:
    """AWS_REGION is what the AWS docs and EKS Pod Identity set; botocore reads only AWS_DEFAULT_REGION."""
    if os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
        os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"]


def setup_logging(*, quiet: bool, verbose: bool, own: str) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger(own).setLevel(level)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def report_error(
    prog: str, error: BaseException, code: int, message: str, *, as_json: bool, out: TextIO, err: TextIO
) -> int:
    """The failure in one line on stderr, or as JSON on stdout under --json; returns `code`."""
    if as_json:
        body: dict[str, Any] = {"error": {"type": type(error).__name__, "message": message, "exit_code": code}}
        out.write(json.dumps(body) + "\n")
    else:
        err.write(f"{prog}: error: {message}\n")
    return code
