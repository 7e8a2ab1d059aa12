"""`model-cache request` and `model-cache status`: talk to a deployed pipeline stack.

`request` puts the JSON request message (docs/architecture.md 3.3) on the stack's queue, validated
first with the same parser the request Lambda uses, so a typo fails here and not in the DLQ.
`status` lists the state machine's recent executions with their repo, revision and outcome.
Both find their target by an explicit URL/ARN or by the stack's outputs (`--stack-name`).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any, TextIO

import boto3
from botocore.exceptions import ClientError

from model_cache.cli.common import QUEUE_URL_ENV
from model_cache.contract import errors
from model_cache.pipeline.request_message import parse_request

QUEUE_OUTPUT = "RequestQueueUrl"
STATE_MACHINE_OUTPUT = "StateMachineArn"
DEFAULT_STATUS_LIMIT = 20


def stack_output(stack_name: str, output_key: str) -> str:
    """One output of a deployed stack, or InvalidRequest naming what is missing."""
    client = boto3.client("cloudformation")
    try:
        stacks = client.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise errors.InvalidRequest(
            f"cannot read stack {stack_name!r}: {exc.response.get('Error', {}).get('Message', exc)}"
        ) from exc
    for output in stacks[0].get("Outputs", []) if stacks else []:
        if output.get("OutputKey") == output_key:
            return str(output["OutputValue"])
    raise errors.InvalidRequest(f"stack {stack_name!r} has no output {output_key}; is it the model-cache stack?")


def _target(explicit: str | None, stack_name: str | None, output_key: str, flag: str) -> str:
    if explicit:
        return explicit
    if stack_name:
        return stack_output(stack_name, output_key)
    raise errors.InvalidRequest(f"say where to send it: {flag} or --stack-name")


# ---------------------------------------------------------------------------------------------
# request
# ---------------------------------------------------------------------------------------------


def add_request_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("request", help="ask the deployed pipeline to cache REPO_ID[@REV]")
    parser.add_argument("repo", metavar="REPO_ID[@REV]")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--queue-url", help=f"the stack's request queue (default: ${QUEUE_URL_ENV})")
    target.add_argument("--stack-name", help=f"read the queue URL from this stack's {QUEUE_OUTPUT} output")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB", help="only these files (repeat)")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="not these files (repeat)")
    parser.add_argument("--force", action="store_true", help="copy again even if the commit is already cached")
    parser.add_argument("--requested-by", help="who asks (shown in logs and the execution input)")
    parser.set_defaults(run=run_request)


def run_request(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    reference = parse_request(args.repo)  # validates REPO_ID[@REV] exactly as the Lambda would
    message: dict[str, Any] = {
        "repo_id": reference.repo_id,
        "revision": reference.revision,
        "include": args.include,
        "exclude": args.exclude,
        "force": args.force,
    }
    if args.requested_by:
        message["requested_by"] = args.requested_by
    request = parse_request(message)
    explicit = args.queue_url or os.environ.get(QUEUE_URL_ENV)
    queue_url = _target(explicit, args.stack_name, QUEUE_OUTPUT, "--queue-url")
    sent = boto3.client("sqs").send_message(QueueUrl=queue_url, MessageBody=json.dumps(request.to_input()))
    out.write(
        f"requested {request.repo_id}@{request.revision} (message {sent['MessageId']}); "
        f"execution name {request.execution_name()}; follow it with `model-cache status {request.repo_id}`\n"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------


def add_status_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("status", help="recent pipeline executions and their state")
    parser.add_argument("repo_id", nargs="?", metavar="REPO_ID", help="only executions for this repo")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--state-machine-arn")
    target.add_argument("--stack-name", help=f"read the ARN from this stack's {STATE_MACHINE_OUTPUT} output")
    parser.add_argument(
        "--limit", type=int, default=DEFAULT_STATUS_LIMIT, help="executions to look at (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(run=run_status)


def recent_executions(state_machine_arn: str, limit: int, repo_id: str | None = None) -> list[dict[str, Any]]:
    """The newest `limit` executions (newest first), with repo and revision from their input."""
    if limit <= 0:
        raise errors.InvalidRequest(f"--limit must be positive, got {limit}")
    client = boto3.client("stepfunctions")
    listed = client.list_executions(stateMachineArn=state_machine_arn, maxResults=min(limit, 1000))["executions"]
    rows: list[dict[str, Any]] = []
    for execution in listed[:limit]:
        described = client.describe_execution(executionArn=execution["executionArn"])
        try:
            execution_input = json.loads(described.get("input") or "{}")
        except ValueError:
            execution_input = {}
        request_repo = execution_input.get("repo_id") if isinstance(execution_input, dict) else None
        if repo_id and request_repo != repo_id:
            continue
        is_refresh = isinstance(execution_input, dict) and "refresh" in execution_input
        rows.append(
            {
                "name": execution["name"],
                "status": execution["status"],
                "repo_id": "(refresh of tracked models)" if is_refresh else request_repo,
                "revision": execution_input.get("revision") if isinstance(execution_input, dict) else None,
                "started": execution["startDate"].isoformat(timespec="seconds"),
                "stopped": execution["stopDate"].isoformat(timespec="seconds") if execution.get("stopDate") else None,
                "error": described.get("error"),
            }
        )
    rows.sort(key=lambda row: str(row["started"]), reverse=True)
    return rows


def run_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    state_machine_arn = _target(args.state_machine_arn, args.stack_name, STATE_MACHINE_OUTPUT, "--state-machine-arn")
    rows = recent_executions(state_machine_arn, args.limit, args.repo_id)
    if args.json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return 0
    if not rows:
        out.write("no executions" + (f" for {args.repo_id}" if args.repo_id else "") + "\n")
        return 0
    for row in rows:
        what = row["repo_id"] or "?"
        if row["revision"]:
            what += f"@{row['revision']}"
        line = f"{row['status']:<10} {row['started']}  {what}  {row['name']}"
        if row["error"]:
            line += f"  error={row['error']}"
        out.write(line + "\n")
    return 0


PIPELINE_SUBCOMMANDS: dict[str, Callable[[Any], None]] = {
    "request": add_request_parser,
    "status": add_status_parser,
}
