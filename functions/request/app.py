"""Request task: SQS messages (docs/architecture.md 3.3) -> one deduplicated state machine execution each.

Each record is handled on its own (Powertools BatchProcessor, ReportBatchItemFailures): a
malformed message is logged with the reason and reported as a failed item, so SQS redrives it to
the dead-letter queue after maxReceiveCount; a valid one starts an execution whose name is the
request's deterministic name. A taken name is a duplicate only when that execution is running, or
succeeded with its result still in the bucket; otherwise the request runs again under a new name
(model_cache.pipeline.request_message.start_request_execution). A valid request with no free execution slot
is deferred: sent again with a delay, never counted toward the dead-letter queue
(model_cache.pipeline.request_message.deliver).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from model_cache.contract.errors import ModelCacheError
from model_cache.pipeline.request_message import Delivery, deliver

logger = Logger()
tracer = Tracer()
metrics = Metrics()
# A batch of only malformed messages is still answered with item failures (not an exception), so
# every message takes the same path to the dead-letter queue and the invocation is not an error.
# One metric per way a request is acknowledged (docs/reference/pipeline.md): a new execution, one already running
# or already succeeded with its result still in the bucket, or a new run after one that did not stand.
OUTCOME_METRICS = {
    "accepted": "RequestsAccepted",
    "deduplicated-running": "RequestsDeduplicatedRunning",
    "deduplicated-succeeded": "RequestsDeduplicatedSucceeded",
    "restarted": "RequestsRestarted",
    "deferred": "RequestsDeferred",
}
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@tracer.capture_method(capture_response=False)
def record_handler(record: SQSRecord) -> dict[str, Any]:
    # SQS sets SenderId on every message; a record without one did not come from the queue.
    delivery = Delivery.from_sqs_record(record.raw_event)
    sender = delivery.sender_id
    try:
        started = deliver(delivery)
    except ModelCacheError as exc:
        details = {"message_id": record.message_id, "sender": sender, "error": type(exc).__name__, "reason": str(exc)}
        logger.warning("request rejected", extra=details)
        metrics.add_metric(name="RequestsRejected", unit=MetricUnit.Count, value=1)
        raise
    logger.info(
        f"request {started.outcome}",
        extra={
            "message_id": record.message_id,
            "sender": sender,
            "execution": started.name,
            "execution_arn": started.execution_arn,
            "deferred_seconds": started.deferred_seconds,
        },
    )
    metrics.add_metric(name=OUTCOME_METRICS[started.outcome], unit=MetricUnit.Count, value=1)
    return {"execution": started.name, "outcome": started.outcome, "duplicate": started.duplicate}


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
