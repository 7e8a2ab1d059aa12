"""The roles, boundary and bucket policy of template.yaml, rendered for one deployment.

Never a copy: every statement comes out of template.yaml through its intrinsic functions
(iam_policy.Deployment), with the parameters the test or the demo deploys. A SAM function or state
machine gets the role SAM creates for it (`<LogicalId>Role`), holding the inline statements of its
`Policies`; SAM's policy templates (LambdaInvokePolicy) grant no S3 or KMS action and are left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from model_cache_devtools.iam_policy import Deployment, as_list, mapping_key
from model_cache_devtools.s3_authz import ACCOUNT, REGION, Principal

# Which template role runs which piece of code.
FUNCTION_ROLES = {
    "plan": "PlanFunctionRole",
    "copy_unit": "CopyUnitFunctionRole",
    "finalize": "FinalizeFunctionRole",
    "publish": "PublishFunctionRole",
    "cleanup": "CleanupFunctionRole",
    "tracked_models": "TrackedModelsFunctionRole",
    "request": "RequestFunctionRole",
    "gc": "GcFunctionRole",
}
COPIER_ROLE = "CopierTaskRole"
STATE_MACHINE_ROLE = "ModelCacheStateMachineRole"
POD_READ_ONLY_POLICY = "PodReadOnlyPolicy"
PODS_BOUNDARY = "RayPodsPermissionsBoundary"
# `make mutants` takes one grant away from the rendered policies ("Role|Sid|action"), to prove a test needs it.
WITHOUT_GRANT_ENV = "MODEL_CACHE_WORLD_WITHOUT"
ENFORCED_SERVICES = ("s3:", "kms:")  # the actions the offline world decides (model_cache_devtools.s3_authz)


# A deployment with the optional Fargate copier (its three parameters), as a team would give them.
SAMPLE_PARAMETERS = {
    "CopierImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/model-cache-copier:local",
    "CopierVpcId": "vpc-0123456789abcdef0",
    "CopierSubnetIds": "subnet-0123456789abcdef0",
}
# A customer managed key for KmsKeyArn (SSE-KMS with it).
SAMPLE_KMS_KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-0000-0000-000000000000"
FUNCTION_FOLDERS = ("plan", "copy_unit", "finalize", "publish", "cleanup", "tracked_models", "request", "gc")


def function_name(folder: str, suffix: str) -> str:
    return f"mc-{folder.replace('_', '-')}-{suffix}"


def resource_values(
    stack_name: str,
    suffix: str,
    *,
    cluster_arn: str = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/copier",
    task_definition_arn: str = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/copier:1",
    security_group_id: str = "sg-0123456789abcdef0",
) -> dict[str, Any]:
    """The Ref and GetAtt values of the resources the roles name, for a stack of this name."""
    machine_name = f"{stack_name}-model-cache"
    functions = {
        f"{folder.title().replace('_', '')}Function": function_name(folder, suffix) for folder in FUNCTION_FOLDERS
    }
    queue = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{stack_name}-requests"
    return {
        **functions,
        **{f"{name}.Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{value}" for name, value in functions.items()},
        "ModelCacheStateMachine": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{machine_name}",
        "ModelCacheStateMachine.Name": machine_name,
        "CopierCluster": cluster_arn.rsplit("/", 1)[-1],
        "CopierCluster.Arn": cluster_arn,
        "CopierTaskDefinition": task_definition_arn,
        "CopierSecurityGroup.GroupId": security_group_id,
        "CopierLogGroup.Arn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/ecs/{stack_name}/copier",
        "RequestQueue": queue,
        "RequestQueue.Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{stack_name}-requests",
        "RequestDeadLetterQueue": f"{queue}-dlq",
        "RequestDeadLetterQueue.Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{stack_name}-requests-dlq",
    }


@cache
def load_template(path: Path) -> dict[str, Any]:
    from cfnlint.decode import decode

    decoded, problems = decode(str(path))
    if decoded is None:
        raise ValueError(f"cannot read {path}: {problems}")
    return dict(decoded)


@dataclass
class StackIam:
    """One deployment's rendered IAM: role name -> Principal, managed policies, the bucket policy."""

    stack_name: str
    deployment: Deployment
    roles: dict[str, Principal] = field(default_factory=dict)
    managed_policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    bucket_policy: dict[str, Any] | None = None
    queue_policy: dict[str, Any] | None = None  # the request queues' (RequestQueuesPolicy)

    def role_arn(self, logical_id: str) -> str:
        return str(self.deployment.values[f"{logical_id}.Arn"])


def _listed(value: str) -> list[str]:
    """A comma-separated value as CloudFormation gives a list parameter: [""] when empty."""
    return [item for item in value.split(",") if item] or [""]


def role_arn(stack_name: str, logical_id: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{stack_name}-{logical_id}"


def render_stack_iam(
    template_path: Path,
    *,
    stack_name: str,
    bucket: str,
    parameters: dict[str, Any],
    resources: dict[str, Any],
) -> StackIam:
    """Render every role, managed policy and the bucket policy for a deployment of the template.

    `parameters` override the template's defaults (lists for CommaDelimitedList); `resources` give
    the Ref/GetAtt values of the resources the roles name (state machine, queue, cluster, ...).
    """
    template = load_template(template_path)
    values: dict[str, Any] = {
        "AWS::Partition": "aws",
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::StackName": stack_name,
        "AWS::URLSuffix": "amazonaws.com",
    }
    for name, definition in template["Parameters"].items():
        value = parameters.get(name, definition.get("Default", ""))
        if definition.get("Type") in ("CommaDelimitedList", "List<AWS::EC2::Subnet::Id>") and isinstance(value, str):
            value = _listed(value)
        values[name] = value
    # The tuning knobs live in Mappings (Fn::FindInMap); a test overrides one by its key, as an
    # operator would by editing the mapping.
    settings = set()
    for map_name, top_level in template.get("Mappings", {}).items():
        for top_key, entries in top_level.items():
            for key, default in entries.items():
                value = parameters.get(key, default)
                if isinstance(default, list) and isinstance(value, str):
                    value = _listed(value)
                values[mapping_key(map_name, top_key, key)] = value
                settings.add(key)
    unknown = set(parameters) - set(template["Parameters"]) - settings
    if unknown:
        raise ValueError(f"not a parameter or a Settings key of {template_path.name}: {', '.join(sorted(unknown))}")
    values.update(
        {
            "CacheBucket": bucket,
            "CacheBucket.Arn": f"arn:aws:s3:::{bucket}",
            "RayPodsPermissionsBoundary": f"arn:aws:iam::{ACCOUNT}:policy/{stack_name}-ray-pods-boundary",
        }
    )
    resource_types = {name: resource["Type"] for name, resource in template["Resources"].items()}
    for name, kind in resource_types.items():
        if kind in ("AWS::IAM::Role",):
            values.setdefault(f"{name}.Arn", role_arn(stack_name, name))
        if kind in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            values.setdefault(f"{name}Role.Arn", role_arn(stack_name, f"{name}Role"))
    values.update(resources)
    deployment = Deployment(values=values)
    deployment.evaluate_conditions(template.get("Conditions", {}))
    iam = StackIam(stack_name=stack_name, deployment=deployment)

    for name, resource in template["Resources"].items():
        condition = resource.get("Condition")
        if condition and not deployment.conditions[condition]:
            continue
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            iam.managed_policies[name] = deployment.render(properties["PolicyDocument"])
    for name, resource in template["Resources"].items():
        condition = resource.get("Condition")
        if condition and not deployment.conditions[condition]:
            continue
        properties = resource.get("Properties", {})
        kind = resource["Type"]
        if kind in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            statements = []
            for entry in deployment.render(properties.get("Policies", [])):
                if isinstance(entry, dict) and "Statement" in entry:
                    statements.extend(as_list(entry["Statement"]))
            identity = [{"Version": "2012-10-17", "Statement": statements}]
            iam.roles[f"{name}Role"] = Principal(role_arn(stack_name, f"{name}Role"), identity)
        elif kind == "AWS::IAM::Role":
            identity = [policy["PolicyDocument"] for policy in deployment.render(properties.get("Policies", []))]
            identity = [policy for policy in identity if policy.get("Statement")]
            iam.roles[name] = Principal(str(values[f"{name}.Arn"]), identity)
        elif kind == "AWS::S3::BucketPolicy":
            iam.bucket_policy = deployment.render(properties["PolicyDocument"])
        elif kind == "AWS::SQS::QueuePolicy":
            iam.queue_policy = deployment.render(properties["PolicyDocument"])
    without = os.environ.get(WITHOUT_GRANT_ENV)
    if without:
        _drop_grant(iam, *without.split("|"))
    return iam


@dataclass(frozen=True)
class Grant:
    """One enforced action of one Allow statement of a role or managed policy."""

    owner: str  # role logical id (SAM's <Function>Role) or managed policy logical id
    sid: str
    action: str

    @property
    def spec(self) -> str:
        return f"{self.owner}|{self.sid}|{self.action}"


def _documents(iam: StackIam, owner: str) -> list[dict[str, Any]]:
    if owner in iam.roles:
        return iam.roles[owner].identity
    return [iam.managed_policies[owner]]


def grants(iam: StackIam) -> list[Grant]:
    """Every S3 or KMS action an Allow statement grants, role by role and in the pods' managed policies."""
    found = []
    owners = [*sorted(iam.roles), POD_READ_ONLY_POLICY, PODS_BOUNDARY]
    for owner in owners:
        for document in _documents(iam, owner):
            for index, statement in enumerate(as_list(document.get("Statement", []))):
                if statement.get("Effect") != "Allow":
                    continue
                for action in as_list(statement.get("Action", [])):
                    if str(action).startswith(ENFORCED_SERVICES):
                        found.append(Grant(owner, str(statement.get("Sid", index)), str(action)))
    return found


def _drop_grant(iam: StackIam, owner: str, sid: str, action: str) -> None:
    for document in _documents(iam, owner):
        for index, statement in enumerate(as_list(document.get("Statement", []))):
            if str(statement.get("Sid", index)) == sid and action in as_list(statement.get("Action", [])):
                statement["Action"] = [kept for kept in as_list(statement["Action"]) if kept != action]
                return
    raise ValueError(f"{WITHOUT_GRANT_ENV}: no grant {owner}|{sid}|{action} in the rendered policies")


def pod_principal(iam: StackIam, name: str = "ray-pods") -> Principal:
    """A pod role with the stack's PodReadOnlyPolicy attached and the pods' boundary set."""
    return Principal(
        f"arn:aws:iam::{ACCOUNT}:role/{name}",
        [iam.managed_policies[POD_READ_ONLY_POLICY]],
        boundary=iam.managed_policies[PODS_BOUNDARY],
    )
