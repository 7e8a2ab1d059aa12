"""The request message (docs/architecture.md 3.3): SQS body or state machine input -> `CacheRequest`.

A message is either a bare repo id (`org/name`, optionally `org/name@rev`) or a JSON object
`{"repo_id", "revision", "include", "exclude", "force", "requested_by"}`. Anything else is
rejected with an `InvalidRequest` that names the problem, before anything is written.

The execution name makes duplicates collapse: two messages asking for the same repo, revision,
file selection and force flag within one dedupe window map to the same Step Functions execution
name, and Step Functions refuses a second execution with that name.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

from model_cache.contract.errors import InvalidRequest, TooManyExecutions
from model_cache.contract.ids import is_commit_id, parse_repo_ref, validate_repo_id, validate_revision
from model_cache.contract.layout import DEFAULT_REVISION
from model_cache.contract.selection import validate_globs

# Step Functions execution names: at most 80 characters; we keep to the subset that is safe in
# CloudWatch log streams and ARNs as well.
MAX_EXECUTION_NAME_LENGTH = 80
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
_HASH_LENGTH = 10
# A branch or tag can move to a new commit, so a request for one must be able to run again later;
# Step Functions keeps a closed execution's name taken for 90 days. A commit id never moves, so a
# request pinned to one needs no window at all.
DEFAULT_DEDUPE_WINDOW_SECONDS = 3600

MAX_MESSAGE_BYTES = 64 * 1024
MAX_REQUESTED_BY_LENGTH = 128
_FIELDS = frozenset({"repo_id", "revision", "include", "exclude", "force", "requested_by"})
STATE_MACHINE_ARN_ENV = "STATE_MACHINE_ARN"


@dataclass(frozen=True)
class CacheRequest:
    """One validated request to cache `repo_id` at `revision`.

    An empty `include` means the default selection: every file, minus duplicate weight formats
    when the repo has safetensors (applied by `model_cache.contract.selection`, which owns that rule).
    """

    repo_id: str
    revision: str = DEFAULT_REVISION
    include: tuple[str, ...] = field(default_factory=tuple)
    exclude: tuple[str, ...] = field(default_factory=tuple)
    force: bool = False
    requested_by: str | None = None

    def to_input(self) -> dict[str, Any]:
        """The state machine input (and the JSON form of the SQS message)."""
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "include": list(self.include),
            "exclude": list(self.exclude),
            "force": self.force,
            "requested_by": self.requested_by,
        }

    def selection_hash(self) -> str:
        """A short, stable hash of everything that changes what an execution copies."""
        canonical = json.dumps(
            {
                "repo_id": self.repo_id,
                "revision": self.revision,
                "include": sorted(self.include),
                "exclude": sorted(self.exclude),
                "force": self.force,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:_HASH_LENGTH]

    def execution_name(self, now: datetime | None = None, window_seconds: int = DEFAULT_DEDUPE_WINDOW_SECONDS) -> str:
        """`{repo}-{revision}-{hash}[-{window}]`, at most 80 characters of [A-Za-z0-9_-].

        The readable part may be truncated or lose characters; the hash covers the exact repo id,
        revision, include, exclude and force, so two different requests never share a name.
        """
        suffix = f"-{self.selection_hash()}"
        if not is_commit_id(self.revision):
            if window_seconds <= 0:
                raise InvalidRequest(f"dedupe window must be positive, got {window_seconds} seconds")
            moment = now or datetime.now(UTC)
            window_start = int(moment.timestamp()) // window_seconds * window_seconds
            suffix += "-" + datetime.fromtimestamp(window_start, UTC).strftime("%Y%m%dT%H%M")
        revision = self.revision[:12] if is_commit_id(self.revision) else self.revision
        readable = _UNSAFE_NAME_CHARS.sub("_", f"{self.repo_id.replace('/', '--')}-{revision}")
        return readable[: MAX_EXECUTION_NAME_LENGTH - len(suffix)] + suffix


def _stepfunctions() -> Any:
    # One client per warm Lambda, yet a fresh one whenever the endpoint or region changes (the
    # local pipeline and the tests point the same process at one moto server after another).
    return _stepfunctions_for(os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_DEFAULT_REGION"))


@cache
def _stepfunctions_for(endpoint_url: str | None, region: str | None) -> Any:
    import boto3

    return boto3.client("stepfunctions")


def state_machine_arn() -> str:
    arn = os.environ.get(STATE_MACHINE_ARN_ENV, "")
    if not arn:
        raise RuntimeError(
            f"{STATE_MACHINE_ARN_ENV} is not set: the template wires it to the model-cache state machine"
        )
    return arn


Outcome = Literal["accepted", "deduplicated-running", "deduplicated-succeeded", "restarted", "deferred"]
MAX_RESTARTS = 20  # names tried after the first: a request that keeps failing is retried this often in 90 days


@dataclass(frozen=True)
class StartedExecution:
    """What `start_request_execution` did, and under which name.

    `outcome`: `accepted` (a new execution under the request's name), `deduplicated-running` (an
    execution of that name is running and will do the work), `deduplicated-succeeded` (one succeeded
    and its result still stands), `restarted` (the name was taken by an execution that failed, or whose
    result no longer stands: a new one started under the next free name), `deferred` (no slot was free:
    the request was sent again with a delay of `deferred_seconds`, see `deliver`).
    """

    name: str
    outcome: Outcome
    execution_arn: str | None = None
    deferred_seconds: int | None = None

    @property
    def duplicate(self) -> bool:
        return self.outcome.startswith("deduplicated")


ResultCheck = Callable[[CacheRequest], bool]


# A request deferred for capacity is sent again by the request Lambda itself; these attributes carry the
# original SenderId and the deferral count, and are believed only on a message whose SenderId is the
# request Lambda's own role (SQS sets SenderId; no other principal can send as that role).
SENDER_ATTRIBUTE = "model-cache-sender"
DEFERRALS_ATTRIBUTE = "model-cache-deferrals"
REQUEST_ROLE_ID_ENV = "MODEL_CACHE_REQUEST_ROLE_ID"
REQUEST_QUEUE_URL_ENV = "MODEL_CACHE_REQUEST_QUEUE_URL"
DEFER_FLOOR_SECONDS = 15
DEFER_BASE_SECONDS = 30
DEFER_CEILING_SECONDS = 900  # SQS's largest DelaySeconds


@dataclass(frozen=True)
class Delivery:
    """One SQS record as the request Lambda gets it: the body, the SenderId SQS set, string attributes."""

    body: str
    sender_id: str | None
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_sqs_record(cls, record: Mapping[str, Any]) -> Delivery:
        attributes = {
            str(name): str(value.get("stringValue"))
            for name, value in (record.get("messageAttributes") or {}).items()
            if isinstance(value, Mapping) and value.get("stringValue") is not None
        }
        return cls(
            body=str(record.get("body", "")),
            sender_id=(record.get("attributes") or {}).get("SenderId"),
            attributes=attributes,
        )

    def origin(self, own_principal: str | None) -> tuple[str | None, int]:
        """(the sender the request is from, how often it was deferred): the attributes' when the request
        Lambda's own role sent this message, else SQS's SenderId and 0."""
        from model_cache.pipeline.inflight import principal

        if own_principal and self.sender_id and principal(self.sender_id) == own_principal:
            count = self.attributes.get(DEFERRALS_ATTRIBUTE, "0")
            return self.attributes.get(SENDER_ATTRIBUTE) or self.sender_id, int(count) if count.isdigit() else 0
        return self.sender_id, 0


def defer_delay(deferrals: int, rng: random.Random | None = None) -> int:
    """Seconds before a deferred request is tried again: full jitter up to a ceiling that doubles with each
    deferral (30 s, 60 s, ... SQS's 900 s), above a 15 s floor so a saturated cache is not polled in a loop."""
    ceiling = min(DEFER_CEILING_SECONDS, DEFER_BASE_SECONDS * 2 ** min(deferrals, 10))
    return (rng or random.Random()).randint(DEFER_FLOOR_SECONDS, ceiling)  # noqa: S311 - jitter, not a secret


def deliver(
    delivery: Delivery,
    *,
    own_principal: str | None = None,
    queue_url: str | None = None,
    sqs: Any = None,
    delay_for: Callable[[int], int] = defer_delay,
    **accept: Any,
) -> StartedExecution:
    """An SQS delivery -> its execution, or its deferral.

    A request refused only for capacity (TooManyExecutions) is not failed back to the queue, where each
    receive counts toward maxReceiveCount and the dead-letter queue: it is sent again with a delay
    (`delay_for`), carrying its original sender, and this delivery succeeds. A request that breaks a rule
    still raises, and goes to the dead-letter queue. Without a queue URL (an operator's machine) the
    refusal propagates as before.
    """
    own_principal = own_principal if own_principal is not None else os.environ.get(REQUEST_ROLE_ID_ENV)
    queue_url = queue_url if queue_url is not None else os.environ.get(REQUEST_QUEUE_URL_ENV)
    sender, deferrals = delivery.origin(own_principal)
    try:
        return accept_request(delivery.body, sender, **accept)
    except TooManyExecutions:
        if not queue_url:
            raise
    delay = delay_for(deferrals)
    attributes = {DEFERRALS_ATTRIBUTE: {"DataType": "Number", "StringValue": str(deferrals + 1)}}
    if sender:
        attributes[SENDER_ATTRIBUTE] = {"DataType": "String", "StringValue": sender}
    client = sqs or _sqs()
    client.send_message(QueueUrl=queue_url, MessageBody=delivery.body, DelaySeconds=delay, MessageAttributes=attributes)
    return StartedExecution(name="", outcome="deferred", deferred_seconds=delay)


def _sqs() -> Any:
    import boto3

    return boto3.client("sqs")


def accept_request(
    body: object, sender: str | None, *, policy: Any = None, s3: Any = None, **start: Any
) -> StartedExecution:
    """An SQS message from `sender` (its SenderId, which SQS sets and no sender can forge) -> its execution.

    The requester recorded in the execution input (and so in the manifest) is the sender, never the
    body's `requested_by`. The platform's policy (model_cache.pipeline.governance, from the environment) refuses
    an org it does not mirror and `force` from anyone but its principals, and bounds the executions in
    flight: each refusal is a named domain error, so the message goes to the dead-letter queue (or, over
    the bound, back to the queue until executions finish) and nothing starts.
    """
    from dataclasses import replace

    from model_cache.pipeline.governance import RequestPolicy

    policy = policy or RequestPolicy.from_env()
    request = replace(parse_request(body), requested_by=sender)
    policy.check_repo(request.repo_id)
    policy.check_force(request.force, sender)
    if policy.max_executions is not None and "ledger" not in start:
        start["ledger"] = in_flight_ledger(policy.max_executions, s3=s3, **start)
    return start_request_execution(request, **start)


def in_flight_ledger(limit: int, *, s3: Any = None, stepfunctions: Any = None, arn: str | None = None, **_: Any) -> Any:
    """The slots of MaxExecutionsInFlight (model_cache.pipeline.inflight), kept in the cache bucket's work prefix."""
    from model_cache.adapters.s3 import s3_client
    from model_cache.pipeline import inflight
    from model_cache.pipeline.plan import DEFAULT_WORK_PREFIX

    bucket = os.environ.get("MODEL_CACHE_BUCKET", "")
    if not bucket:
        raise InvalidRequest("MODEL_CACHE_MAX_EXECUTIONS is set but MODEL_CACHE_BUCKET is not: the slots live there")
    work_prefix = os.environ.get("MODEL_CACHE_WORK_PREFIX") or DEFAULT_WORK_PREFIX
    client = stepfunctions or _stepfunctions()
    machine = arn or state_machine_arn()
    return inflight.InFlightLedger(
        s3 or s3_client(),
        bucket,
        inflight.ledger_key(work_prefix),
        limit=limit,
        running=lambda: _running_names(client, machine),
        ended=lambda name: _ended(client, machine, name),
    )


def start_request_execution(
    request: CacheRequest,
    *,
    arn: str | None = None,
    stepfunctions: Any = None,
    result_stands: ResultCheck | None = None,
    ledger: Any = None,
) -> StartedExecution:
    """Start the request's execution under its deterministic name (default: $STATE_MACHINE_ARN),
    deduplicating by outcome, not by name.

    Step Functions keeps a name taken for 90 days, whatever the execution did. So when the name is
    taken, that execution is described: a running one, or a succeeded one whose result still stands
    (`result_stands`, default `cached_result_stands`), absorbs the request; a failed, timed-out or
    aborted one, or a success that no longer stands (gc removed it, the branch moved), does not, and
    the request starts again under `{name}-r{n}`. Any other StartExecution error propagates, so the
    SQS message is delivered again. With a `ledger` (model_cache.pipeline.inflight.InFlightLedger), each start
    first takes a slot, given back when nothing started: TooManyExecutions when every slot is taken or
    the sender holds its share (a request that a running execution already covers is still absorbed).
    """
    from model_cache.pipeline import inflight

    client = stepfunctions or _stepfunctions()
    machine = arn or state_machine_arn()
    check = result_stands or cached_result_stands
    base = request.execution_name()
    payload = json.dumps(request.to_input())
    for attempt in range(MAX_RESTARTS + 1):
        name = base if attempt == 0 else restart_name(base, attempt)
        if ledger is not None:
            try:
                ledger.take(name, request.requested_by)
            except inflight.Full as full:
                covered = _running_execution(client, machine, name) if full.name_in_flight else None
                if covered is not None:
                    return StartedExecution(name=name, outcome="deduplicated-running", execution_arn=covered)
                raise TooManyExecutions(f"{request.repo_id}@{request.revision}: {full}") from None
        try:
            started = client.start_execution(stateMachineArn=machine, name=name, input=payload)
        except client.exceptions.ExecutionAlreadyExists:
            if ledger is not None:
                ledger.give_back(name)  # the slot is the existing execution's (listed), not this request's
            described = client.describe_execution(executionArn=execution_arn(machine, name))
            status = described["status"]
            if status == "RUNNING":
                return StartedExecution(
                    name=name, outcome="deduplicated-running", execution_arn=described["executionArn"]
                )
            if status == "SUCCEEDED" and check(request):
                return StartedExecution(
                    name=name, outcome="deduplicated-succeeded", execution_arn=described["executionArn"]
                )
            continue
        except BaseException:
            if ledger is not None:
                ledger.give_back(name)
            raise
        outcome: Outcome = "accepted" if attempt == 0 else "restarted"
        return StartedExecution(name=name, outcome=outcome, execution_arn=started["executionArn"])
    raise InvalidRequest(
        f"{request.repo_id}@{request.revision}: {MAX_RESTARTS + 1} executions of this request already ended "
        "without a standing result in the last 90 days; check the failures (model-cache status) before sending it again"
    )


def _ended(client: Any, machine: str, name: str) -> bool:
    """Whether execution `name` has ended (an unknown name may not be visible yet: not ended)."""
    try:
        described = client.describe_execution(executionArn=execution_arn(machine, name))
    except client.exceptions.ExecutionDoesNotExist:
        return False
    return bool(described["status"] != "RUNNING")


def _running_names(client: Any, machine: str) -> set[str]:
    """The names of the executions listed RUNNING (every page)."""
    names: set[str] = set()
    for page in client.get_paginator("list_executions").paginate(stateMachineArn=machine, statusFilter="RUNNING"):
        names.update(str(item["name"]) for item in page.get("executions", []))
    return names


def _running_execution(client: Any, machine: str, name: str) -> str | None:
    try:
        described = client.describe_execution(executionArn=execution_arn(machine, name))
    except client.exceptions.ExecutionDoesNotExist:
        return None
    return str(described["executionArn"]) if described["status"] == "RUNNING" else None


def restart_name(base: str, attempt: int) -> str:
    suffix = f"-r{attempt}"
    return base[: MAX_EXECUTION_NAME_LENGTH - len(suffix)] + suffix


def execution_arn(state_machine_arn: str, name: str) -> str:
    """arn:...:stateMachine:NAME -> arn:...:execution:NAME:EXECUTION (the ARN Step Functions gives it)."""
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


def cached_result_stands(request: CacheRequest) -> bool:
    """The request is served by what the bucket holds now: for a branch or tag, refs/{revision} names the
    commit the Hub names as its head, and that commit's manifest is published; for a commit, its manifest
    is. Reads MODEL_CACHE_BUCKET / MODEL_CACHE_PREFIX and asks the Hub once for a branch."""
    from model_cache.adapters import hubapi
    from model_cache.adapters.s3 import s3_client
    from model_cache.adapters.tokens import hub_token
    from model_cache.contract import layout
    from model_cache.pipeline import publish

    bucket = os.environ.get("MODEL_CACHE_BUCKET", "")
    prefix = os.environ.get("MODEL_CACHE_PREFIX", layout.DEFAULT_PREFIX).strip("/")
    if not bucket:
        return False  # nothing to check against: run again rather than drop the request
    s3 = s3_client()
    commit = request.revision
    if not is_commit_id(commit):
        ref = publish.get_bytes(s3, bucket, layout.ref_key(prefix, request.repo_id, request.revision))
        commit = ref.decode("ascii", "replace") if ref else ""
        if (
            not is_commit_id(commit)
            or hubapi.head_commit(request.repo_id, request.revision, token=hub_token()) != commit
        ):
            return False
    return publish.get_bytes(s3, bucket, layout.manifest_key(prefix, request.repo_id, commit)) is not None


def parse_request(body: object) -> CacheRequest:
    """Parse an SQS body (str) or an already-decoded state machine input (dict) into a request."""
    if isinstance(body, dict):
        return _from_mapping(body)
    if not isinstance(body, str):
        raise InvalidRequest(f"request must be a string or a JSON object, got {type(body).__name__}")
    if len(body.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise InvalidRequest(f"request is larger than {MAX_MESSAGE_BYTES} bytes")
    text = body.strip()
    if not text:
        raise InvalidRequest("request is empty: expected 'org/name', 'org/name@revision' or a JSON object")
    if text[0] in '{["':
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(
                f"request is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
        if isinstance(decoded, str):
            return _from_reference(decoded)
        if not isinstance(decoded, dict):
            raise InvalidRequest(f"a JSON request must be an object, got {type(decoded).__name__}")
        return _from_mapping(decoded)
    return _from_reference(text)


def _from_reference(text: str) -> CacheRequest:
    if any(ch.isspace() for ch in text.strip()):
        raise InvalidRequest(f"request {text[:100]!r} is not a repo id: it contains whitespace")
    repo_id, revision = parse_repo_ref(text)
    return CacheRequest(repo_id=repo_id, revision=revision or DEFAULT_REVISION)


def _from_mapping(data: dict[Any, Any]) -> CacheRequest:
    unknown = sorted(str(key) for key in data if key not in _FIELDS)
    if unknown:
        raise InvalidRequest(
            f"request has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}"
        )
    if "repo_id" not in data:
        raise InvalidRequest("request has no repo_id")
    repo_id = validate_repo_id(data["repo_id"])
    revision_value = data.get("revision")
    revision = DEFAULT_REVISION if revision_value is None else validate_revision(revision_value)
    include = validate_globs(data.get("include"), "include")
    exclude = validate_globs(data.get("exclude"), "exclude")
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise InvalidRequest(f"force must be true or false, got {force!r}")
    requested_by = validate_requested_by(data.get("requested_by"))
    return CacheRequest(
        repo_id=repo_id,
        revision=revision,
        include=include,
        exclude=exclude,
        force=force,
        requested_by=requested_by,
    )


def validate_requested_by(requested_by: object) -> str | None:
    """None, or a non-empty printable string of at most MAX_REQUESTED_BY_LENGTH characters."""
    if requested_by is None:
        return None
    if not isinstance(requested_by, str) or not requested_by.strip():
        raise InvalidRequest("requested_by must be a non-empty string when given")
    if len(requested_by) > MAX_REQUESTED_BY_LENGTH or not requested_by.isprintable():
        raise InvalidRequest(f"requested_by must be printable and at most {MAX_REQUESTED_BY_LENGTH} characters")
    return requested_by
