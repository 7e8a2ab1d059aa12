"""Run statemachine/model_cache.asl.json in moto's Step Functions engine, against real servers.

What is real: moto's HTTP server (S3, Step Functions, Lambda and ECS APIs, IAM, EC2), moto's ASL
interpreter executing the very ASL file with the template's DefinitionSubstitutions applied
(moto ARNs instead of CloudFormation ones), the Hub double, and our handler code.

What is routed, because moto would need Docker to run them:
- a Lambda invocation runs `functions/<folder>/app.py:handler(event, LambdaContext())` in-process
  (moto's `LambdaFunction._invoke_lambda` is patched; moto still does everything around it: the
  Invoke API, FunctionError, payload), and an exception becomes the Lambda runtime's error payload
  `{"errorType": <class name>, "errorMessage": ...}` exactly as AWS reports it;
- an ECS RunTask of the copier task definition runs `python -m model_cache.copier` as a local
  process with the container override's environment (MODEL_CACHE_EVENT) before moto reports the
  task STOPPED to the `.sync` poller.
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
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

import boto3
import pytest
from conftest import REGION, REPO_ROOT, LambdaContext, MotoEndpoint

FUNCTIONS_DIR = REPO_ROOT / "functions"
ASL_PATH = REPO_ROOT / "statemachine" / "model_cache.asl.json"
ACCOUNT = "123456789012"
MIB = 1024 * 1024
# Each template function's code folder (template.yaml CodeUri) by its DefinitionSubstitutions key.
FUNCTION_FOLDERS = {
    "PlanFunctionArn": "plan",
    "CopyUnitFunctionArn": "copy_unit",
    "FinalizeFunctionArn": "finalize",
    "PublishFunctionArn": "publish",
    "CleanupFunctionArn": "cleanup",
    "TrackedModelsFunctionArn": "tracked_models",
}


def _load_render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_asl", REPO_ROOT / "scripts" / "render_asl.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# scripts/render_asl.py: the same substitution validate.sh applies before statelint.
render_module = _load_render_module()
render_asl = render_module.render


@dataclass
class Invocation:
    folder: str
    event: Any
    error: str | None


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
    lock: threading.Lock = field(default_factory=threading.Lock)
    modules: dict[str, ModuleType] = field(default_factory=dict)

    def calls(self, folder: str) -> list[Invocation]:
        with self.lock:
            return [call for call in self.invocations if call.folder == folder]

    def handler_module(self, folder: str) -> ModuleType:
        with self.lock:
            if folder not in self.modules:
                spec = importlib.util.spec_from_file_location(
                    f"model_cache_function_{folder}", FUNCTIONS_DIR / folder / "app.py"
                )
                assert spec is not None
                assert spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                self.modules[folder] = module
            return self.modules[folder]


def load_handler_module(folder: str) -> ModuleType:
    """functions/<folder>/app.py as a module of its own (every handler file is called app.py)."""
    return Router().handler_module(folder)


def _run_handler(router: Router, folder: str, event: Any) -> tuple[str, bool]:
    module = router.handler_module(folder)
    context = LambdaContext(function_name=f"model-cache-{folder}")
    try:
        result = module.handler(event, context)
    except Exception as exc:
        payload = {
            "errorType": type(exc).__name__,
            "errorMessage": str(exc),
            "stackTrace": traceback.format_tb(exc.__traceback__),
        }
        with router.lock:
            router.invocations.append(Invocation(folder, event, type(exc).__name__))
        return json.dumps(payload), True
    with router.lock:
        router.invocations.append(Invocation(folder, event, None))
    return json.dumps(result), False


@cache
def _operation_shapes(service: str, action: str) -> tuple[Any, Any]:
    client = boto3.client(service, region_name=REGION)
    operation = client.meta.service_model.operation_model(client.meta.method_to_api_mapping[action])
    return operation.input_shape, operation.output_shape


def _restore_boto_normalisation(monkeypatch: pytest.MonkeyPatch) -> None:
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

    monkeypatch.setattr(StateTaskService, "_normalise_parameters", normalise_parameters)
    monkeypatch.setattr(StateTaskService, "_normalise_response", normalise_response)


def install_routes(monkeypatch: pytest.MonkeyPatch, moto: MotoEndpoint) -> Router:
    """Patch moto (running in this process) so Lambda and ECS run our code; point its engine at the server."""
    from moto.awslambda.models import LambdaFunction
    from moto.ecs.models import EC2ContainerServiceBackend

    _restore_boto_normalisation(monkeypatch)

    router = Router()
    # moto's ASL engine calls Lambda, S3, ECS and Step Functions through boto3 at localhost:MOTO_PORT.
    monkeypatch.setenv("MOTO_PORT", str(moto.port))

    def invoke_lambda(self: Any, event: Any = None) -> tuple[str, bool, str]:
        folder = router.functions.get(self.function_name)
        if folder is None:
            raise AssertionError(f"no handler folder registered for moto Lambda function {self.function_name}")
        body, errored = _run_handler(router, folder, event)
        return body, errored, ""

    original_run_task = EC2ContainerServiceBackend.run_task

    def run_task(self: Any, *args: Any, **kwargs: Any) -> Any:
        tasks = original_run_task(self, *args, **kwargs)
        for task in tasks:
            overrides = task.overrides or {}
            env = dict(os.environ)
            for container in overrides.get("containerOverrides", []):
                for variable in container.get("environment", []):
                    env[variable["name"]] = variable["value"]
            process = subprocess.run(
                [sys.executable, "-m", "model_cache.copier"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            event = json.loads(env.get("MODEL_CACHE_EVENT", "null"))
            with router.lock:
                router.copier_runs.append(CopierRun(event, process.returncode, process.stdout, process.stderr))
            task.status = "STOPPED"
        return tasks

    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", invoke_lambda)
    monkeypatch.setattr(EC2ContainerServiceBackend, "run_task", run_task)
    return router


@contextmanager
def executing_state_machines(moto: MotoEndpoint) -> Iterator[None]:
    """moto's engine runs the ASL only while this config is on; switch it off again after the test."""
    moto.configure({"stepfunctions": {"execute_state_machine": True}})
    try:
        yield
    finally:
        moto.configure({"stepfunctions": {"execute_state_machine": False}})


@dataclass
class Stack:
    """The template's resources, created in moto: one per test, fresh names."""

    moto: MotoEndpoint
    router: Router
    bucket: str
    prefix: str = "models"
    work_prefix: str = "_model-cache-work"
    state_machine_arn: str = ""
    function_arns: dict[str, str] = field(default_factory=dict)

    @property
    def sfn(self) -> Any:
        return boto3.client("stepfunctions", region_name=REGION, endpoint_url=self.moto.url)

    def start(self, request: dict[str, Any], name: str | None = None) -> str:
        # Always named: moto's ASL engine does not generate a name when none is given.
        response = self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn, input=json.dumps(request), name=name or f"test-{uuid.uuid4()}"
        )
        return str(response["executionArn"])

    def wait(self, execution_arn: str, deadline_seconds: float = 240) -> dict[str, Any]:
        """Poll until the execution leaves RUNNING (a deadline, not a timing assertion)."""
        deadline = time.monotonic() + deadline_seconds
        while True:
            described = self.sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                return dict(described)
            if time.monotonic() > deadline:
                raise AssertionError(f"execution {execution_arn} still RUNNING after {deadline_seconds}s")
            time.sleep(0.2)

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.wait(self.start(request))

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
        while True:
            page = self.sfn.get_execution_history(**kwargs)
            events.extend(page["events"])
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]


def _zip_of(folder: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(FUNCTIONS_DIR / folder / "app.py", "app.py")
    return buffer.getvalue()


def create_stack(
    moto: MotoEndpoint,
    router: Router,
    bucket: str,
    *,
    part_size: int = 5 * MIB,
    unit_size: int = 5 * MIB,
    fargate_threshold: int = 1024 * MIB,
) -> Stack:
    """IAM role, Lambda functions, ECS cluster + task definition, VPC bits, the state machine."""
    suffix = uuid.uuid4().hex[:8]
    session = {"region_name": REGION, "endpoint_url": moto.url}
    iam = boto3.client("iam", **session)
    role_arn = iam.create_role(
        RoleName=f"model-cache-test-{suffix}",
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
    stack = Stack(moto=moto, router=router, bucket=bucket)
    lambda_client = boto3.client("lambda", **session)
    for key, folder in FUNCTION_FOLDERS.items():
        name = f"mc-{folder.replace('_', '-')}-{suffix}"
        arn = lambda_client.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Architectures=["arm64"],
            Role=role_arn,
            Handler="app.handler",
            Code={"ZipFile": _zip_of(folder)},
            Timeout=900,
        )["FunctionArn"]
        router.functions[name] = folder
        stack.function_arns[key] = arn

    ec2 = boto3.client("ec2", **session)
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    # As for any Fargate VPC (and moto's awsvpc task model needs the ENI's DNS name).
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group_id = ec2.create_security_group(GroupName=f"copier-{suffix}", Description="copier", VpcId=vpc_id)["GroupId"]
    ecs = boto3.client("ecs", **session)
    cluster_arn = ecs.create_cluster(clusterName=f"copier-{suffix}")["cluster"]["clusterArn"]
    task_definition_arn = ecs.register_task_definition(
        family=f"copier-{suffix}",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="2048",
        memory="8192",
        containerDefinitions=[
            {"name": "copier", "image": "model-cache-copier:test", "essential": True, "cpu": 2048, "memory": 8192}
        ],
    )["taskDefinition"]["taskDefinitionArn"]

    substitutions = {
        **stack.function_arns,
        "BucketName": bucket,
        "CachePrefix": stack.prefix,
        "WorkPrefix": stack.work_prefix,
        "PartSizeBytes": str(part_size),
        "UnitSizeBytes": str(unit_size),
        "FargateThresholdBytes": str(fargate_threshold),
        "CopierClusterArn": cluster_arn,
        "CopierTaskDefinitionArn": task_definition_arn,
        "CopierSubnetIds": subnet_id,
        "CopierSecurityGroupId": group_id,
        "CopierAssignPublicIp": "DISABLED",
    }
    definition = render_asl(ASL_PATH.read_text(), substitutions)
    stack.state_machine_arn = boto3.client("stepfunctions", **session).create_state_machine(
        name=f"model-cache-{suffix}", definition=definition, roleArn=role_arn, type="STANDARD"
    )["stateMachineArn"]
    return stack
