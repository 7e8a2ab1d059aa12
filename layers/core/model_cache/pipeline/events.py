"""Typed task events: a task's input, parsed and validated once at the edge, then passed inward as is.

Validation lives here and nowhere after it (docs/contributing/internals.md, "The walk of one plan event"):
`prepare_plan` and the Hub client take a `PlanRequest` or its fields as given, so a repo id is checked
once per plan, by one rule (the loader's, `model_cache_loader.layout`). The defaults are this module's:
the ones a request may leave out (docs/architecture.md 3.3) and the ones the stack fills in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from model_cache.contract import errors, ids, layout
from model_cache.contract.selection import validate_globs
from model_cache.pipeline.plan import DEFAULT_WORK_PREFIX, PlanOptions, new_plan_id
from model_cache.pipeline.request_message import validate_requested_by


def _event_object(event: Any) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise errors.InvalidRequest(f"event must be a JSON object, got {type(event).__name__}")
    return event


def require(event: dict[str, Any], name: str) -> Any:
    """A field the event must carry, not null and not empty."""
    if name not in event or event[name] in (None, ""):
        raise errors.InvalidRequest(f"event has no {name!r}")
    return event[name]


def _require_string(event: dict[str, Any], name: str) -> str:
    value = require(event, name)
    if not isinstance(value, str):
        raise errors.InvalidRequest(f"{name} must be a string, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class PlanRequest:
    """What the Plan task (or `engine.sync`) is asked to plan. Build it with `create` or `from_event`,
    which validate every field; the fields of a built one are trusted from then on."""

    repo_id: str
    revision: str
    bucket: str
    prefix: str = layout.DEFAULT_PREFIX
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    force: bool = False
    requested_by: str | None = None
    # A gated repo is cached under its own prefix, when the stack has one.
    gated_prefix: str | None = None
    work_prefix: str = DEFAULT_WORK_PREFIX
    plan_id: str = field(default_factory=new_plan_id)
    options: PlanOptions = field(default_factory=PlanOptions)

    @classmethod
    def create(
        cls,
        repo_id: object,
        revision: object = layout.DEFAULT_REVISION,
        *,
        bucket: object,
        prefix: object = layout.DEFAULT_PREFIX,
        include: object = (),
        exclude: object = (),
        force: object = False,
        requested_by: object = None,
        gated_prefix: object = None,
        work_prefix: object = DEFAULT_WORK_PREFIX,
        plan_id: object = None,
        options: PlanOptions | None = None,
    ) -> PlanRequest:
        """A request with every field validated: here, and only here."""
        if not isinstance(force, bool):
            raise errors.InvalidRequest(f"force must be true or false, got {force!r}")
        checked_work_prefix = ids.validate_work_prefix(work_prefix)
        checked_gated_prefix = ids.validate_prefix(gated_prefix) if gated_prefix else None
        if checked_gated_prefix is not None and checked_gated_prefix == checked_work_prefix:
            raise errors.InvalidRequest(f"gated_prefix {checked_gated_prefix!r} is the work prefix")
        return cls(
            repo_id=ids.validate_repo_id(repo_id),
            revision=ids.validate_revision(revision),
            bucket=ids.validate_bucket(bucket),
            prefix=ids.validate_prefix(prefix),
            include=validate_globs(include, "include"),
            exclude=validate_globs(exclude, "exclude"),
            force=force,
            requested_by=validate_requested_by(requested_by),
            gated_prefix=checked_gated_prefix,
            work_prefix=checked_work_prefix,
            plan_id=ids.validate_plan_id(plan_id or new_plan_id()),
            options=options or PlanOptions(),
        )

    @classmethod
    def from_event(cls, event: Any) -> PlanRequest:
        """The Plan task's event (docs/contributing/internals.md, task 1): a bare 'org/name[@rev]' string, or
        the object the state machine passes. `repo_id` may carry the revision as 'org/name@rev'."""
        if isinstance(event, cls):
            return event
        if isinstance(event, str):
            event = {"repo_id": event}
        event = _event_object(event)
        if "request" in event:
            event = _with_request_fields(event)
        repo_ref = _require_string(event, "repo_id")
        # Only split here: create validates both halves.
        repo_id, has_ref, ref_revision = repo_ref.strip().partition("@")
        given = event.get("revision")
        if has_ref and ref_revision and given and ref_revision != given:
            raise errors.InvalidRequest(f"repo_id says @{ref_revision} but revision says {given!r}")
        return cls.create(
            repo_id,
            ref_revision if has_ref else (given or layout.DEFAULT_REVISION),
            bucket=require(event, "bucket"),
            prefix=event.get("prefix", layout.DEFAULT_PREFIX),
            include=event.get("include"),
            exclude=event.get("exclude"),
            force=event.get("force", False),
            requested_by=event.get("requested_by"),
            gated_prefix=event.get("gated_prefix") or None,
            work_prefix=event.get("work_prefix") or DEFAULT_WORK_PREFIX,
            plan_id=event.get("plan_id"),
            options=PlanOptions.from_json(event.get("options")),
        )


# What a request may say (docs/architecture.md 3.3); everything else of the task's event is the stack's.
REQUEST_FIELDS = ("repo_id", "revision", "include", "exclude", "force", "requested_by")


def _with_request_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The state machine passes the execution's input whole as `request`: only the request's own fields are
    taken from it, so an input that names a bucket, a prefix or a plan id changes nothing."""
    request = event["request"]
    if not isinstance(request, dict):
        raise errors.InvalidRequest(f"request must be a JSON object, got {type(request).__name__}")
    stack = {name: value for name, value in event.items() if name != "request" and name not in REQUEST_FIELDS}
    return {**stack, **{name: request[name] for name in REQUEST_FIELDS if name in request}}


# ---------------------------------------------------------------------------------------------
# The tasks after Plan: each reads the plan the Plan task stored, named by its bucket and key.
# ---------------------------------------------------------------------------------------------


def _index(event: dict[str, Any], name: str) -> int:
    """A unit id or file index: a whole number, never a bool (JSON `true` is not unit 1)."""
    value = event.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.InvalidRequest(f"event has no whole-number {name!r} (got {value!r})")
    return value


@dataclass(frozen=True)
class PlanRef:
    """Where a stored plan is: every task after Plan names it so (the ASL passes `$.plan.bucket` and
    `$.plan.plan_key`; a Map item carries both)."""

    bucket: str
    plan_key: str

    @classmethod
    def from_event(cls, event: Any) -> PlanRef:
        event = _event_object(event)
        plan_key = _require_string(event, "plan_key")
        return cls(bucket=ids.validate_bucket(require(event, "bucket")), plan_key=plan_key)


@dataclass(frozen=True)
class CopyUnitTask:
    """Task 2's event: one Map item of units.json (the Lambda and the Fargate copier get the same)."""

    plan: PlanRef
    unit_id: int
    path: str | None = None  # the unit's first file, for logs and a failure's record
    files: int = 1  # how many files the unit holds, for the FilesCopied metric

    @classmethod
    def from_event(cls, event: Any) -> CopyUnitTask:
        if isinstance(event, cls):
            return event
        plan = PlanRef.from_event(event)
        path = event.get("path")
        files = event.get("files", 1)
        return cls(
            plan=plan,
            unit_id=_index(event, "unit_id"),
            path=path if isinstance(path, str) else None,
            files=files if isinstance(files, int) and not isinstance(files, bool) else 1,
        )


@dataclass(frozen=True)
class CompleteFileTask:
    """Task 3a's event: one item of completions.json, a multipart file by its path and its index in the plan."""

    plan: PlanRef
    path: str
    file_index: int

    @classmethod
    def from_event(cls, event: Any) -> CompleteFileTask:
        if isinstance(event, cls):
            return event
        plan = PlanRef.from_event(event)
        return cls(plan=plan, path=_require_string(event, "path"), file_index=_index(event, "file_index"))


@dataclass(frozen=True)
class FinalizeTask:
    """Task 3b's event: gather the plan's verified records, or (`explain`, after a failed Map) say which
    unit or file failed; `map_error` is the Map's own Error/Cause, quoted in that message."""

    plan: PlanRef
    explain: bool = False
    map_error: Any = None

    @classmethod
    def from_event(cls, event: Any) -> FinalizeTask:
        if isinstance(event, cls):
            return event
        plan = PlanRef.from_event(event)
        return cls(plan=plan, explain=bool(event.get("explain")), map_error=event.get("map_error"))


@dataclass(frozen=True)
class PublishTask:
    """Task 4's event: the plan whose verified file list is published."""

    plan: PlanRef

    @classmethod
    def from_event(cls, event: Any) -> PublishTask:
        if isinstance(event, cls):
            return event
        return cls(plan=PlanRef.from_event(event))


@dataclass(frozen=True)
class CleanupTask:
    """Task 5's event, on every way out of the copy. It never refuses one: an execution that failed before
    a plan was stored (no or a bad plan_key) has nothing to clean, and cleanup must not fail in its place."""

    plan: PlanRef | None
    failed: bool = False
    error: Any = None  # the failing state's {"Error", "Cause"}, counted by cause in the handler

    @classmethod
    def from_event(cls, event: Any) -> CleanupTask:
        if isinstance(event, cls):
            return event
        if not isinstance(event, dict):
            return cls(plan=None)
        try:
            plan: PlanRef | None = PlanRef.from_event(event)
        except errors.InvalidRequest:
            plan = None
        return cls(plan=plan, failed=bool(event.get("failed")), error=event.get("error"))
