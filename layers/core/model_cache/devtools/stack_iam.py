"""The roles, boundary and bucket policy of template.yaml, rendered for one deployment.

Never a copy: every statement comes out of template.yaml through its intrinsic functions
(iam_policy.Deployment), with the parameters the test or the demo deploys. A SAM function or state
machine gets the role SAM creates for it (`<LogicalId>Role`), holding the inline statements of its
`Policies`; SAM's policy templates (LambdaInvokePolicy) grant no S3 or KMS action and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from model_cache.devtools.iam_policy import Deployment, as_list
from model_cache.devtools.s3_authz import ACCOUNT, REGION, Principal

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

    def role_arn(self, logical_id: str) -> str:
        return str(self.deployment.values[f"{logical_id}.Arn"])


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
            value = [item for item in value.split(",") if item] or [""]
        values[name] = value
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
    return iam


def pod_principal(iam: StackIam, name: str = "ray-pods") -> Principal:
    """A pod role with the stack's PodReadOnlyPolicy attached and the pods' boundary set."""
    return Principal(
        f"arn:aws:iam::{ACCOUNT}:role/{name}",
        [iam.managed_policies[POD_READ_ONLY_POLICY]],
        boundary=iam.managed_policies[PODS_BOUNDARY],
    )
