"""Pipeline metrics shared by the handlers: a task's domain failures, and failures by cause.

Powertools' `Metrics` puts every metric of an invocation under one dimension set, so a per-cause
count goes out as its own EMF document (`single_metric`) with the `Cause` dimension, next to the
handler's usual `service` dimension. Powertools is imported lazily: the CLI installs the core package
without the Lambda extra.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from model_cache.contract.errors import ModelCacheError

FAILURES_BY_CAUSE = "ExecutionFailuresByCause"
UNKNOWN_CAUSE = "Unknown"
_CAUSE_RE = re.compile(r"[^A-Za-z0-9._-]")
MAX_CAUSE_LENGTH = 64
TASK_FAILURES = "TaskFailures"


@contextmanager
def counted_failure(task: str, logger: Any, metrics: Any, metric_name: str = TASK_FAILURES) -> Iterator[None]:
    """Count and log a domain error raised inside the block, then let it go on unchanged.

    The error still fails the invocation (its class name is the state machine's `Error`); the
    count feeds the dashboard and alarms, the log line the reason. Other exceptions pass untouched:
    they are the runtime's to report.
    """
    try:
        yield
    except ModelCacheError as exc:
        from aws_lambda_powertools.metrics import MetricUnit

        metrics.add_metric(name=metric_name, unit=MetricUnit.Count, value=1)
        logger.error(f"{task} failed", extra={"error": type(exc).__name__, "reason": str(exc)})
        raise


def failure_cause(error: object) -> str:
    """The `Error` of a state machine failure (`{"Error": "GatedRepo", "Cause": "..."}`) as a dimension
    value: a short class-like name (GatedRepo, IntegrityError, States.Timeout), never the free-text
    Cause, so the dimension stays low-cardinality and holds nothing a requester wrote."""
    name = error.get("Error") if isinstance(error, dict) else error
    if not isinstance(name, str) or not name.strip():
        return UNKNOWN_CAUSE
    return _CAUSE_RE.sub("_", name.strip())[:MAX_CAUSE_LENGTH]


def add_failure_by_cause(metrics: Any, error: object) -> str:
    """Emit one `ExecutionFailuresByCause` count with dimensions service and Cause; returns the cause."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    cause = failure_cause(error)
    with single_metric(
        name=FAILURES_BY_CAUSE,
        unit=MetricUnit.Count,
        value=1,
        namespace=metrics.namespace,
        default_dimensions=metrics.default_dimensions,
    ) as metric:
        if metrics.service:
            metric.add_dimension(name="service", value=metrics.service)
        metric.add_dimension(name="Cause", value=cause)
    return cause
