"""Run the serverless pipeline locally: statemachine/model_cache.asl.json in moto's Step Functions engine.

Used by `make demo` and by the pipeline tests (tests/pipeline/sfn_harness.py is a thin wrapper).

What is real: moto's HTTP server (S3, SQS, Step Functions, Lambda and ECS APIs, IAM, EC2), moto's
ASL interpreter executing the very ASL file with the template's DefinitionSubstitutions applied
(moto ARNs instead of CloudFormation ones, by scripts/render_asl.py), moto's SQS -> Lambda event
source mapping, the Hub double, and our handler code.

What is routed, because moto would need Docker to run them:
- a Lambda invocation runs `functions/<folder>/app.py:handler(event, LambdaContext())` in-process
  (moto's `LambdaFunction._invoke_lambda` is patched; moto still does everything around it: the
  Invoke API, FunctionError, payload), with the function's configured environment variables set as
  the Lambda runtime would, and an exception becomes the Lambda runtime's error payload
  `{"errorType": <class name>, "errorMessage": ...}` exactly as AWS reports it;
- an ECS RunTask of the copier task definition runs `python -m model_cache.pipeline.copier` as a local
  process with the container override's environment (MODEL_CACHE_EVENT) before moto reports the
  task STOPPED to the `.sync` poller.

The patches go through a `Patcher` (pytest's MonkeyPatch is one; `Patches` is the plain one the demo
uses) so they are undone afterwards. moto must run in this process (ThreadedMotoServer, `LocalAws`).
The functions/, statemachine/ and scripts/ folders are read from the checkout: this runs from a
clone, not from an installed wheel.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Protocol

import boto3

from model_cache_devtools import s3_authz, stack_iam
from model_cache_devtools.s3_authz import Principal

REGION = "us-east-1"
ACCOUNT = "123456789012"
MIB = 1024 * 1024
REPO_ROOT_ENV = "MODEL_CACHE_REPO_ROOT"
ASL_RELATIVE_PATH = Path("statemachine") / "model_cache.asl.json"
# Each template function's code folder (template.yaml CodeUri) by its DefinitionSubstitutions key.
FUNCTION_FOLDERS = {
    "PlanFunctionArn": "plan",
    "CopyUnitFunctionArn": "copy_unit",
    "FinalizeFunctionArn": "finalize",
    "PublishFunctionArn": "publish",
    "CleanupFunctionArn": "cleanup",
    "TrackedModelsFunctionArn": "tracked_models",
}
REQUEST_FOLDER = "request"
REQUEST_MAX_RECEIVE_COUNT = 3  # template.yaml MaxReceiveCount default
COPIER_TIMEOUT_SECONDS = 900
TIMED_OUT = "Task timed out"  # Invocation.error of an invocation ended as a Lambda timeout
# The error Step Functions reports for a Lambda invocation that failed without an error type: a timeout
# or an out-of-memory end (Step Functions Developer Guide, "Handling errors": Lambda.Unknown).
LAMBDA_UNKNOWN = "Lambda.Unknown"


class LocalPipelineError(RuntimeError):
    """The local pipeline cannot be set up (no checkout to read, moto not reachable, ...)."""


def _is_repo_root(path: Path) -> bool:
    return (path / ASL_RELATIVE_PATH).is_file() and (path / "functions").is_dir()


@cache
def repo_root() -> Path:
    """The checkout holding functions/, statemachine/ and scripts/: $MODEL_CACHE_REPO_ROOT, else the
    folder this (editable-installed) module lives in, else the current directory or a parent of it."""
    configured = os.environ.get(REPO_ROOT_ENV)
    if configured:
        root = Path(configured).resolve()
        if not _is_repo_root(root):
            raise LocalPipelineError(f"{REPO_ROOT_ENV}={configured} has no {ASL_RELATIVE_PATH} and functions/")
        return root
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for candidate in (start, *start.parents):
            if _is_repo_root(candidate):
                return candidate
    raise LocalPipelineError(
        f"cannot find the s3-model-cache checkout ({ASL_RELATIVE_PATH}, functions/): "
        f"run from the clone or set {REPO_ROOT_ENV}"
    )


def functions_dir() -> Path:
    return repo_root() / "functions"


def asl_path() -> Path:
    return repo_root() / ASL_RELATIVE_PATH


@cache
def render_module() -> ModuleType:
    """scripts/render_asl.py: the same substitution validate.sh applies before statelint."""
    path = repo_root() / "scripts" / "render_asl.py"
    spec = importlib.util.spec_from_file_location("render_asl", path)
    if spec is None or spec.loader is None:
        raise LocalPipelineError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render_asl(asl_text: str, values: dict[str, str]) -> str:
    """The ASL with every `${Name}` replaced (strict: no placeholder without a value and vice versa)."""
    rendered: str = render_module().render(asl_text, values)
    return rendered


def load_function_module(folder: str) -> ModuleType:
    """functions/<folder>/app.py as a module of its own (every handler file is called app.py)."""
    path = functions_dir() / folder / "app.py"
    if not path.is_file():
        raise LocalPipelineError(f"no Lambda handler at {path}")
    spec = importlib.util.spec_from_file_location(f"model_cache_function_{folder}", path)
    if spec is None or spec.loader is None:
        raise LocalPipelineError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# Patching moto, undoably
# ---------------------------------------------------------------------------------------------


class Patcher(Protocol):
    """What the routes need to patch; pytest's MonkeyPatch has this shape."""

    def setattr(self, target: Any, name: str, value: Any) -> None: ...

    def setenv(self, name: str, value: str) -> None: ...


class Patches:
    """A Patcher outside pytest: records every change and `undo()` puts everything back."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Any, str, Any]] = []
        self._missing = object()

    def setattr(self, target: Any, name: str, value: Any) -> None:
        self._undo.append(("attr", target, name, getattr(target, name, self._missing)))
        setattr(target, name, value)

    def setenv(self, name: str, value: str) -> None:
        self._undo.append(("env", None, name, os.environ.get(name, self._missing)))
        os.environ[name] = value

    def undo(self) -> None:
        while self._undo:
            kind, target, name, previous = self._undo.pop()
            if kind == "attr":
                if previous is self._missing:
                    delattr(target, name)
                else:
                    setattr(target, name, previous)
            elif previous is self._missing:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous

    def __enter__(self) -> Patches:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.undo()


# ---------------------------------------------------------------------------------------------
# moto
# ---------------------------------------------------------------------------------------------


class MotoLike(Protocol):
    """A moto server running in this process (tests' MotoEndpoint, or LocalAws)."""

    @property
    def url(self) -> str: ...

    @property
    def port(self) -> int: ...

    def configure(self, config: dict[str, Any]) -> None: ...


def configure_moto(url: str, config: dict[str, Any]) -> None:
    """moto's runtime config API (POST /moto-api/config)."""
    request = urllib.request.Request(f"{url}/moto-api/config", data=json.dumps(config).encode(), method="POST")  # noqa: S310 (our own loopback moto server)
    with urllib.request.urlopen(request):  # noqa: S310 (our own loopback moto server)
        pass


class LocalAws:
    """moto's ThreadedMotoServer on a free loopback port, in this process (so its Lambda and ECS
    backends can be routed to our code)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        from model_cache_devtools import moto_ranges

        moto_ranges.install()  # a ranged GET costs O(range), as on S3
        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self.host = host
        self.port = port
        self.url = ""
        self.authorizer: s3_authz.Authorizer  # set by start()

    def start(self) -> LocalAws:
        import logging

        # werkzeug logs one line per request, which would drown any console output.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        self.authorizer = s3_authz.enforce(self._server)  # S3's and IAM's authorization rules
        self.host, self.port = self._server.get_host_and_port()
        self.url = f"http://{self.host}:{self.port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def configure(self, config: dict[str, Any]) -> None:
        configure_moto(self.url, config)

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def executing_state_machines(moto: MotoLike) -> Iterator[None]:
    """moto's engine runs the ASL only while this config is on; switched off again afterwards."""
    moto.configure({"stepfunctions": {"execute_state_machine": True}})
    try:
        yield
    finally:
        moto.configure({"stepfunctions": {"execute_state_machine": False}})


# ---------------------------------------------------------------------------------------------
# Routing Lambda and ECS to our code
# ---------------------------------------------------------------------------------------------


@dataclass
class LambdaContext:
    """The attributes Powertools and our handlers read from the real Lambda context object."""

    function_name: str = "model-cache-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:model-cache-local"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/model-cache-local"
    log_stream_name: str = "2026/11/30/[$LATEST]local"
    remaining_millis: int = 900_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis


@dataclass
class Invocation:
    folder: str
    event: Any
    error: str | None
    result: Any = None
    seconds: float = 0.0


@dataclass
class CopierRun:
    event: dict[str, Any]
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Router:
    """Where moto's Lambda and ECS calls went; thread-safe (Map iterations run in threads)."""

    functions: dict[str, str] = field(default_factory=dict)  # moto function name -> folder
    invocations: list[Invocation] = field(default_factory=list)
    copier_runs: list[CopierRun] = field(default_factory=list)
    # Stops to emulate, one per RunTask, before the copier would run: {"StopCode", "StoppedReason"}
    # as ECS reports a task that could not start (image pull, secrets, ENI) or was stopped (maintenance).
    fargate_stops: list[dict[str, str]] = field(default_factory=list)
    task_outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # task ARN -> how it stopped
    # Invocations to end as the Lambda runtime ends one that ran out of time, by handler folder: the
    # handler never runs and the payload has only an errorMessage (no errorType), as AWS returns it.
    lambda_timeouts: dict[str, int] = field(default_factory=dict)
    # The role each function and copier task definition runs as (rendered from template.yaml).
    function_principals: dict[str, Principal] = field(default_factory=dict)
    copier_principals: dict[str, Principal] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    modules: dict[str, ModuleType] = field(default_factory=dict)

    def calls(self, folder: str) -> list[Invocation]:
        with self.lock:
            return [call for call in self.invocations if call.folder == folder]

    def handler_module(self, folder: str) -> ModuleType:
        with self.lock:
            if folder not in self.modules:
                self.modules[folder] = load_function_module(folder)
            return self.modules[folder]

    def take_timeout(self, folder: str) -> bool:
        with self.lock:
            pending = self.lambda_timeouts.get(folder, 0)
            if pending:
                self.lambda_timeouts[folder] = pending - 1
                self.invocations.append(Invocation(folder, None, TIMED_OUT))
            return pending > 0

    def run_handler(self, folder: str, event: Any, principal: Principal | None = None) -> tuple[str, bool]:
        """Call the handler as the Lambda runtime does, with its role's credentials: (payload JSON, errored)."""
        with s3_authz.acting_as(principal):
            return self._run_handler(folder, event)

    def _run_handler(self, folder: str, event: Any) -> tuple[str, bool]:
        if self.take_timeout(folder):
            return json.dumps(
                {"errorMessage": f"{time.strftime('%Y-%m-%dT%H:%M:%S')}Z Task timed out after 900.00 seconds"}
            ), True
        module = self.handler_module(folder)
        context = LambdaContext(function_name=f"model-cache-{folder}")
        started = time.monotonic()
        try:
            result = module.handler(event, context)
        except Exception as exc:
            payload = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
            with self.lock:
                self.invocations.append(
                    Invocation(folder, event, type(exc).__name__, seconds=time.monotonic() - started)
                )
            return json.dumps(payload), True
        with self.lock:
            self.invocations.append(Invocation(folder, event, None, result, time.monotonic() - started))
        return json.dumps(result), False


def load_handler_module(folder: str) -> ModuleType:
    """functions/<folder>/app.py as a fresh module (for calling one handler directly)."""
    return Router().handler_module(folder)


def _client(service: str, endpoint_url: str | None = None) -> Any:
    # The service is chosen at run time, so boto3's per-service typed overloads do not apply.
    factory: Any = boto3.client
    return factory(service, region_name=REGION, endpoint_url=endpoint_url)


@cache
def _operation_shapes(service: str, action: str) -> tuple[Any, Any]:
    client = _client(service)
    operation = client.meta.service_model.operation_model(client.meta.method_to_api_mapping[action])
    return operation.input_shape, operation.output_shape


def restore_boto_normalisation(patcher: Patcher) -> None:
    """Give moto's service integrations the request/response casing Step Functions has.

    ASL writes integration parameters in Step Functions' PascalCase (`Cluster`, `StateMachineArn`),
    and AWS maps them onto each API's own casing (`cluster`, `stateMachineArn`) and the responses
    back. moto 5.2.5 ships the LocalStack ASL engine with that mapping stubbed out, so ECS RunTask
    and states:startExecution fail with a KeyError; this restores it with moto's own helpers.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service import (
        StateTaskService,
    )

    def normalise_parameters(
        self: Any,
        parameters: dict[str, Any],
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        service = self._get_boto_service_name(boto_service_name)
        input_shape, _ = _operation_shapes(service, self._get_boto_service_action(service_action_name))
        if input_shape is not None:
            self._to_boto_request(parameters, input_shape)

    def normalise_response(
        self: Any, response: Any, boto_service_name: str | None = None, service_action_name: str | None = None
    ) -> None:
        service = self._get_boto_service_name(boto_service_name)
        _, output_shape = _operation_shapes(service, self._get_boto_service_action(service_action_name))
        if output_shape is not None:
            self._from_boto_response(response, output_shape)

    patcher.setattr(StateTaskService, "_normalise_parameters", normalise_parameters)
    patcher.setattr(StateTaskService, "_normalise_response", normalise_response)


def patch_ecs_sync_failures(patcher: Patcher, router: Router) -> None:
    """`ecs:runTask.sync` fails as on AWS: moto's engine ends the task state when the task stops, whatever
    happened; Step Functions fails it with `States.TaskFailed` (the task's description as the cause) when
    the task could not start or its essential container exited non-zero."""
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs import (
        StateTaskServiceEcs,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    original: Any = StateTaskServiceEcs._build_sync_resolver

    def build_sync_resolver(self: Any, env: Any, *args: Any, **kwargs: Any) -> Any:
        resolve: Any = original(self, env, *args, **kwargs)

        def resolve_or_fail() -> Any:
            task = resolve()
            if task is None:
                return None
            with router.lock:
                outcome = router.task_outcomes.get(str(task.get("TaskArn")))
            if outcome is None or (outcome["StopCode"] == "EssentialContainerExited" and outcome["ExitCode"] == 0):
                return task
            described = {**task, "StopCode": outcome["StopCode"], "StoppedReason": outcome["StoppedReason"]}
            if outcome["ExitCode"] is not None:
                described["Containers"] = [{"Name": "copier", "ExitCode": outcome["ExitCode"]}]
            raise FailureEventException(
                FailureEvent(
                    env=env,
                    error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                    event_type=HistoryEventType.TaskFailed,
                    event_details=EventDetails(  # type: ignore[typeddict-item]  # moto's TypedDict is total
                        taskFailedEventDetails=TaskFailedEventDetails(
                            resource="runTask.sync",
                            resourceType="ecs",
                            error=StatesErrorNameType.StatesTaskFailed.to_name(),
                            cause=json.dumps(described, default=str),
                        )
                    ),
                )
            )

        return resolve_or_fail

    patcher.setattr(StateTaskServiceEcs, "_build_sync_resolver", build_sync_resolver)


def patch_map_run_failure_threshold(patcher: Patcher) -> None:
    """Fail a Distributed Map whose failed items exceed its tolerated failures, as AWS does.

    moto counts a child execution that failed but lets the Map Run succeed; AWS fails it with
    States.ExceedToleratedFailureThreshold (ToleratedFailureCount and ToleratedFailurePercentage both
    default to 0, so one failed item fails the Map), which is the path our Catch takes to
    ExplainCopyFailure. Without this, the success path after the Map would run on a failed copy.
    """
    from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
        DistributedIterationComponent,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    original = DistributedIterationComponent._map_run

    def map_run(self: Any, env: Any, eval_input: Any) -> None:
        original(self, env, eval_input)
        record = eval_input.map_run_record
        counter = record.item_counter
        failed, total = counter.failed.get() + counter.timed_out.get(), counter.total.get()
        over_count = failed > (record.tolerated_failure_count or 0)
        over_share = total > 0 and failed * 100.0 / total > (record.tolerated_failure_percentage or 0.0)
        if failed and over_count and over_share:
            env.stack.pop()  # the items' outputs: a failed Map Run has none
            error = StatesErrorNameType.StatesExceedToleratedFailureThreshold.to_name()
            raise FailureEventException(
                FailureEvent(
                    env=env,
                    error_name=StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold),
                    event_type=HistoryEventType.MapRunFailed,
                    event_details=EventDetails(  # type: ignore[typeddict-item]
                        mapRunFailedEventDetails=MapRunFailedEventDetails(
                            error=error,
                            cause=f"The tolerated failure threshold was exceeded: {failed} of {total} items failed",
                        )
                    ),
                )
            )

    patcher.setattr(DistributedIterationComponent, "_map_run", map_run)


def patch_lambda_unknown(patcher: Patcher) -> None:
    """Name a Lambda failure without an `errorType` `Lambda.Unknown`, as Step Functions does.

    The Lambda runtime answers a timed-out or out-of-memory invocation with FunctionError "Unhandled"
    and a payload holding only `errorMessage`; Step Functions reports that as `Lambda.Unknown`. moto's
    engine names it "Exception", which no Retry in a real definition would name.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_lambda import (
        StateTaskServiceLambda,
    )

    original: Any = StateTaskServiceLambda._from_error

    def from_error(self: Any, env: Any, ex: Exception) -> Any:
        if isinstance(ex, lambda_eval_utils.LambdaFunctionErrorException):
            try:
                payload = json.loads(ex.payload)
            except ValueError:
                payload = None
            if not isinstance(payload, dict) or "errorType" not in payload:
                named = {**(payload if isinstance(payload, dict) else {}), "errorType": LAMBDA_UNKNOWN}
                ex = lambda_eval_utils.LambdaFunctionErrorException(ex.function_error, json.dumps(named))
        return original(self, env, ex)

    patcher.setattr(StateTaskServiceLambda, "_from_error", from_error)


def install_routes(patcher: Patcher, moto: MotoLike) -> Router:
    """Patch moto (running in this process) so Lambda and ECS run our code; point its engine at the server."""
    from moto.awslambda.models import LambdaFunction
    from moto.ecs.models import EC2ContainerServiceBackend

    restore_boto_normalisation(patcher)

    router = Router()
    # moto's ASL engine calls Lambda, S3, ECS and Step Functions through boto3 at localhost:MOTO_PORT.
    patcher.setenv("MOTO_PORT", str(moto.port))

    def invoke_lambda(self: Any, event: Any = None) -> tuple[str, bool, str]:
        folder = router.functions.get(self.function_name)
        if folder is None:
            raise LocalPipelineError(f"no handler folder registered for moto Lambda function {self.function_name}")
        # The Lambda runtime sets the function's configured environment (e.g. the request function's
        # STATE_MACHINE_ARN); here the process is shared, so set what differs, undoably.
        with router.lock:
            for name, value in (self.environment_vars or {}).items():
                if os.environ.get(name) != value:
                    patcher.setenv(name, str(value))
        body, errored = router.run_handler(folder, event, router.function_principals.get(self.function_name))
        return body, errored, ""

    original_run_task = EC2ContainerServiceBackend.run_task

    def run_task(self: Any, *args: Any, **kwargs: Any) -> Any:
        tasks = original_run_task(self, *args, **kwargs)
        for task in tasks:
            with router.lock:
                stop = router.fargate_stops.pop(0) if router.fargate_stops else None
            if stop is not None:
                with router.lock:
                    router.task_outcomes[task.task_arn] = {**stop, "ExitCode": None}
                task.status = "STOPPED"
                continue
            overrides = task.overrides or {}
            env = dict(os.environ)
            # ECS hands the task role's credentials to the container (the copier's own AWS calls).
            copier_role = router.copier_principals.get(task.task_definition_arn)
            if copier_role is not None:
                env.update(copier_role.credentials())
            for container in overrides.get("containerOverrides", []):
                for variable in container.get("environment", []):
                    env[variable["name"]] = variable["value"]
            process = subprocess.run(
                [sys.executable, "-m", "model_cache.pipeline.copier"],
                env=env,
                capture_output=True,
                text=True,
                timeout=COPIER_TIMEOUT_SECONDS,
                check=False,
            )
            event = json.loads(env.get("MODEL_CACHE_EVENT", "null"))
            with router.lock:
                router.copier_runs.append(CopierRun(event, process.returncode, process.stdout, process.stderr))
                router.task_outcomes[task.task_arn] = {
                    "StopCode": "EssentialContainerExited",
                    "StoppedReason": "Essential container in task exited",
                    "ExitCode": process.returncode,
                }
            task.status = "STOPPED"
        return tasks

    patch_ecs_sync_failures(patcher, router)
    patch_map_run_failure_threshold(patcher)
    patch_lambda_unknown(patcher)

    patcher.setattr(LambdaFunction, "_invoke_lambda", invoke_lambda)
    patcher.setattr(EC2ContainerServiceBackend, "run_task", run_task)
    return router


# ---------------------------------------------------------------------------------------------
# The stack: the template's resources, created in moto
# ---------------------------------------------------------------------------------------------


class ExecutionTimeout(LocalPipelineError):
    pass


@dataclass
class Stack:
    """The template's resources in moto: fresh names per stack."""

    moto: MotoLike
    router: Router
    bucket: str
    prefix: str = "models"
    work_prefix: str = "_model-cache-work"
    state_machine_arn: str = ""
    function_arns: dict[str, str] = field(default_factory=dict)
    role_arn: str = ""
    suffix: str = ""
    request_queue_url: str | None = None
    request_dlq_url: str | None = None
    stack_name: str = ""
    iam: stack_iam.StackIam | None = None

    def client(self, service: str) -> Any:
        return _client(service, self.moto.url)

    @property
    def sfn(self) -> Any:
        return self.client("stepfunctions")

    def start(self, request: dict[str, Any], name: str | None = None) -> str:
        # Always named: moto's ASL engine does not generate a name when none is given.
        response = self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn, input=json.dumps(request), name=name or f"local-{uuid.uuid4()}"
        )
        return str(response["executionArn"])

    def execution_arn(self, name: str) -> str:
        """The ARN of the execution `name` of this stack's state machine (e.g. one the request Lambda started)."""
        machine = self.state_machine_arn.split(":stateMachine:", 1)
        if len(machine) != 2:
            raise LocalPipelineError(f"not a state machine ARN: {self.state_machine_arn}")
        return f"{machine[0]}:execution:{machine[1]}:{name}"

    def wait(self, execution_arn: str, deadline_seconds: float = 240) -> dict[str, Any]:
        """Poll until the execution leaves RUNNING (a deadline, not a timing assertion)."""
        deadline = time.monotonic() + deadline_seconds
        sfn = self.sfn
        while True:
            described = sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                return dict(described)
            if time.monotonic() > deadline:
                raise ExecutionTimeout(f"execution {execution_arn} still RUNNING after {deadline_seconds}s")
            time.sleep(0.2)

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.wait(self.start(request))

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
        sfn = self.sfn
        while True:
            page = sfn.get_execution_history(**kwargs)
            events.extend(page["events"])
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]

    def send_request(self, body: str) -> str:
        """Drop a request message (docs/architecture.md 3.3) on the request queue; returns the message id.

        moto's event source mapping delivers it to the request Lambda within the SendMessage call.
        """
        if self.request_queue_url is None:
            raise LocalPipelineError("this stack has no request queue: create it with add_request_queue(stack)")
        return str(self.client("sqs").send_message(QueueUrl=self.request_queue_url, MessageBody=body)["MessageId"])


def states_entered(history: list[dict[str, Any]]) -> list[str]:
    """The names of the states an execution entered, in order (Map iterations included)."""
    return [event["stateEnteredEventDetails"]["name"] for event in history if "stateEnteredEventDetails" in event]


def _zip_of(folder: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(functions_dir() / folder / "app.py", "app.py")
    return buffer.getvalue()


def _create_function(stack: Stack, folder: str, environment: dict[str, str] | None = None) -> str:
    name = stack_iam.function_name(folder, stack.suffix)
    spec: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": "python3.12",
        "Architectures": ["arm64"],
        "Role": stack.role_arn,
        "Handler": "app.handler",
        "Code": {"ZipFile": _zip_of(folder)},
        "Timeout": 900,
    }
    if environment:
        spec["Environment"] = {"Variables": environment}
    arn = str(stack.client("lambda").create_function(**spec)["FunctionArn"])
    stack.router.functions[name] = folder
    if stack.iam is not None:
        stack.router.function_principals[name] = stack.iam.roles[stack_iam.FUNCTION_ROLES[folder]]
    return arn


def _deploy_iam(stack: Stack, resources: dict[str, Any], parameters: dict[str, Any]) -> None:
    """Render the template's roles and bucket policy for this stack, register each role with the
    world's authorizer, and put the bucket policy on the bucket, as CloudFormation would."""
    authorizer = s3_authz.active()
    stack.iam = stack_iam.render_stack_iam(
        repo_root() / "template.yaml",
        stack_name=stack.stack_name,
        bucket=stack.bucket,
        parameters=parameters,
        resources=resources,
    )
    for principal in stack.iam.roles.values():
        authorizer.register(principal)
    # moto's engine signs its S3 integrations (units.json, the refresh's models list) with one fixed
    # key; on AWS the state machine's role makes them.
    authorizer.register(stack.iam.roles[stack_iam.STATE_MACHINE_ROLE], access_key_id=s3_authz.STEP_FUNCTIONS_ENGINE_KEY)
    if stack.iam.bucket_policy is not None:
        stack.client("s3").put_bucket_policy(Bucket=stack.bucket, Policy=json.dumps(stack.iam.bucket_policy))


def create_stack(
    moto: MotoLike,
    router: Router,
    bucket: str,
    *,
    part_size: int = 5 * MIB,
    unit_size: int = 5 * MIB,
    fargate_threshold: int = 1024 * MIB,
    layout: str = "split",
    gated_prefix: str = "",
    prefix: str = "models",
    work_prefix: str = "_model-cache-work",
    kms_key_arn: str = "",
    operator_arns: tuple[str, ...] = (s3_authz.ADMIN_ARN,),
    hf_token_secret_arn: str = "",
    copier: bool = True,
) -> Stack:
    """The template's resources in moto: Lambda functions, ECS cluster + task definition, VPC bits, the
    state machine; and its IAM: each function, the copier and the state machine run as the role the
    template gives them, under the bucket policy it puts on the bucket. `operator_arns` are the
    template's OperatorPrincipalArns (the test harness sets the world up as an operator); with
    `kms_key_arn` the bucket's default encryption is that customer managed key (the template's KmsKeyArn). Without
    `copier` the stack has no Fargate copier (an empty CopierImageUri)."""
    stack = Stack(moto=moto, router=router, bucket=bucket, prefix=prefix, work_prefix=work_prefix)
    stack.suffix = uuid.uuid4().hex[:8]
    stack.stack_name = f"mc-{stack.suffix}"
    stack.role_arn = stack.client("iam").create_role(
        RoleName=f"model-cache-local-{stack.suffix}",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    machine_name = f"{stack.stack_name}-model-cache"
    ec2 = stack.client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    # As for any Fargate VPC (and moto's awsvpc task model needs the ENI's DNS name).
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group_id = ec2.create_security_group(GroupName=f"copier-{stack.suffix}", Description="copier", VpcId=vpc_id)[
        "GroupId"
    ]
    ecs = stack.client("ecs")
    cluster_arn = ecs.create_cluster(clusterName=f"copier-{stack.suffix}")["cluster"]["clusterArn"]
    task_definition_arn = ecs.register_task_definition(
        family=f"copier-{stack.suffix}",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="2048",
        memory="8192",
        containerDefinitions=[
            {"name": "copier", "image": "model-cache-copier:local", "essential": True, "cpu": 2048, "memory": 8192}
        ],
    )["taskDefinition"]["taskDefinitionArn"]

    if kms_key_arn:
        stack.client("s3").put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": kms_key_arn,
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
    parameters = {
        **stack_iam.SAMPLE_PARAMETERS,
        "CachePrefix": prefix,
        "WorkPrefix": work_prefix,
        "GatedPrefix": gated_prefix,
        "KmsKeyArn": kms_key_arn,
        "HfTokenSecretArn": hf_token_secret_arn,
        "OperatorPrincipalArns": ",".join(operator_arns),
        "CopierImageUri": stack_iam.SAMPLE_PARAMETERS["CopierImageUri"] if copier else "",
        "CopierVpcId": vpc_id if copier else "",
        "CopierSubnetIds": subnet_id if copier else "",
    }
    resources = stack_iam.resource_values(
        stack.stack_name,
        stack.suffix,
        cluster_arn=cluster_arn,
        task_definition_arn=task_definition_arn,
        security_group_id=group_id,
    )
    _deploy_iam(stack, resources, parameters)
    assert stack.iam is not None
    if copier:
        router.copier_principals[task_definition_arn] = stack.iam.roles[stack_iam.COPIER_ROLE]
    for key, folder in FUNCTION_FOLDERS.items():
        stack.function_arns[key] = _create_function(stack, folder)

    substitutions = {
        **stack.function_arns,
        "BucketName": bucket,
        "CachePrefix": stack.prefix,
        "WorkPrefix": stack.work_prefix,
        "PartSizeBytes": str(part_size),
        "UnitSizeBytes": str(unit_size),
        "UnitLayout": layout,
        "GatedPrefix": gated_prefix,
        "FargateThresholdBytes": str(fargate_threshold),
        "FargateRetryWaitSeconds": "1",
        "CopierClusterArn": cluster_arn,
        "CopierTaskDefinitionArn": task_definition_arn,
        "CopierSubnetIds": subnet_id,
        "CopierSecurityGroupId": group_id,
        "CopierAssignPublicIp": "DISABLED",
        "CopierConfigured": "true" if copier else "false",
    }
    definition = render_asl(asl_path().read_text(), substitutions)
    stack.state_machine_arn = stack.sfn.create_state_machine(
        name=machine_name, definition=definition, roleArn=stack.role_arn, type="STANDARD"
    )["stateMachineArn"]
    return stack


def add_request_queue(stack: Stack) -> str:
    """The request queue (with its dead-letter queue), the request Lambda (STATE_MACHINE_ARN wired
    as the template does) and the SQS event source mapping between them; returns the queue URL."""
    sqs = stack.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{stack.stack_name}-requests-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=f"{stack.stack_name}-requests",
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": REQUEST_MAX_RECEIVE_COUNT})
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    function_arn = _create_function(stack, REQUEST_FOLDER, {"STATE_MACHINE_ARN": stack.state_machine_arn})
    stack.function_arns["RequestFunctionArn"] = function_arn
    stack.client("lambda").create_event_source_mapping(
        EventSourceArn=queue_arn,
        FunctionName=function_arn,
        BatchSize=10,
        FunctionResponseTypes=["ReportBatchItemFailures"],
    )
    # The template's queue policy: only listed or tagged senders (the world decides SendMessage with it).
    if stack.iam is not None and stack.iam.queue_policy is not None:
        for url in (queue_url, dlq_url):
            sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(stack.iam.queue_policy)})
    stack.request_queue_url = str(queue_url)
    stack.request_dlq_url = str(dlq_url)
    return str(queue_url)
