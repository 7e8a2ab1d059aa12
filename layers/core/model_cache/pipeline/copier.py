"""The Fargate copier: `python -m model_cache.pipeline.copier`, one copy unit (a whole huge file) per task.

A thin shell over `steps.copy_unit`. The unit comes as the Map item JSON (docs/contributing/internals.md), from
`--event '<json>'` or the environment variable MODEL_CACHE_EVENT (what the ECS RunTask override
sets); the Hub token as the Lambda handlers get it (`tokens.hub_token`): the Secrets Manager secret
named by HF_TOKEN_SECRET_ARN (what the task definition sets), else HF_TOKEN. With
MODEL_CACHE_TASK_TOKEN set (a `.waitForTaskToken` integration), the result or error is reported to
Step Functions; either way the result JSON is printed and the exit code is the error's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from model_cache.adapters.tokens import hub_token
from model_cache.contract import errors
from model_cache.pipeline import steps
from model_cache.pipeline.events import CopyUnitTask

EVENT_ENV = "MODEL_CACHE_EVENT"
TASK_TOKEN_ENV = "MODEL_CACHE_TASK_TOKEN"  # noqa: S105 -- the name of a variable, not a secret


def _report(
    task_token: str | None, *, result: dict[str, Any] | None = None, error: BaseException | None = None
) -> None:
    if not task_token:
        return
    import boto3

    client = boto3.client("stepfunctions")
    if error is None:
        client.send_task_success(taskToken=task_token, output=json.dumps(result))
    else:
        client.send_task_failure(taskToken=task_token, error=type(error).__name__, cause=str(error)[:32_000])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_cache.pipeline.copier", description=__doc__.splitlines()[0])
    parser.add_argument("--event", help=f"the copy unit as JSON (default: ${EVENT_ENV})")
    parser.add_argument("--concurrency", type=int, default=None, help="parts in flight (default: the plan's)")
    args = parser.parse_args(argv)
    task_token = os.environ.get(TASK_TOKEN_ENV) or None
    raw = args.event or os.environ.get(EVENT_ENV)
    try:
        if not raw:
            raise errors.InvalidRequest(f"no copy unit: pass --event '<json>' or set {EVENT_ENV}")
        try:
            event = json.loads(raw)
        except ValueError as exc:
            raise errors.InvalidRequest(f"the copy unit is not valid JSON: {exc}") from exc
        task = CopyUnitTask.from_event(event)
        result = steps.copy_unit(task, token=hub_token(), concurrency=args.concurrency)
    except errors.ModelCacheError as exc:
        _report(task_token, error=exc)
        print(json.dumps({"error": type(exc).__name__, "cause": str(exc)}), file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        _report(task_token, error=exc)
        raise
    _report(task_token, result=result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
