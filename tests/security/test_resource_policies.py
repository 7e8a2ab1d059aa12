"""The cache bucket's and the request queue's policies, rendered for one deployment and evaluated per request.

A principal with broad S3 write access in the account (an admin-like team role) is denied every write and
delete under the cache prefix by the bucket policy; the pipeline's roles are not; an unlisted, untagged
principal cannot send a request (policy_eval says what is evaluated and how).
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import REPO_ROOT
from test_security_template import template

from model_cache_devtools import stack_iam
from model_cache_devtools.iam_policy import Request, matching

pytestmark = pytest.mark.unit

ACCOUNT = "123456789012"
BUCKET = "model-cache-bucket-abc"
ROLES = ["Plan", "CopyUnit", "Finalize", "Publish", "Cleanup", "Gc"]
STACK = "model-cache"
QUEUE = stack_iam.resource_values(STACK, "abc")["RequestQueue.Arn"]
TLS = {"aws:SecureTransport": "true"}


def deployment(sender_arns: list[str]) -> stack_iam.StackIam:
    """template.yaml rendered for a stack with a gated prefix and these sender ARNs (model_cache_devtools.stack_iam)."""
    return stack_iam.render_stack_iam(
        REPO_ROOT / "template.yaml",
        stack_name=STACK,
        bucket=BUCKET,
        parameters={
            **stack_iam.SAMPLE_PARAMETERS,
            "GatedPrefix": "gated-models",
            "RequestSenderPrincipalArns": ",".join(sender_arns),
        },
        resources=stack_iam.resource_values(STACK, "abc"),
    )


def role_arn(name: str) -> str:
    return stack_iam.role_arn(STACK, name)


def denied(policy: dict[str, Any], request: Request) -> list[str]:
    """The Sids of the policy's Deny statements that match the request (IAM's evaluation logic)."""
    return matching([policy], request, "Deny", ACCOUNT)


def bucket_policy() -> dict[str, Any]:
    rendered = deployment([]).bucket_policy
    assert rendered is not None
    return rendered


def queue_policy(sender_arns: list[str]) -> dict[str, Any]:
    rendered: dict[str, Any] = deployment(sender_arns).deployment.render(
        template()["Resources"]["RequestQueuesPolicy"]["Properties"]["PolicyDocument"]
    )
    return rendered


SNAPSHOT_OBJECT = f"arn:aws:s3:::{BUCKET}/models/org--model/snapshots/{'c' * 40}/model.safetensors"
MANIFEST = f"arn:aws:s3:::{BUCKET}/models/org--model/manifests/{'c' * 40}.json"
GATED_MANIFEST = f"arn:aws:s3:::{BUCKET}/gated-models/meta-llama--model/manifests/{'c' * 40}.json"


@pytest.mark.parametrize("action", ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectAcl"])
@pytest.mark.parametrize("resource", [SNAPSHOT_OBJECT, MANIFEST, GATED_MANIFEST])
def test_a_non_pipeline_principal_cannot_write_or_delete_under_the_cache_prefix(action: str, resource: str) -> None:
    """GIVEN a team role whose identity policy allows s3:* (not the pipeline)  WHEN it writes, deletes or re-ACLs a
    snapshot object or a manifest  THEN the bucket policy denies it."""
    request = Request(f"arn:aws:iam::{ACCOUNT}:role/data-platform-admin", action, resource, TLS)
    assert denied(bucket_policy(), request) == ["OnlyThePipelineWritesTheCache"]


@pytest.mark.parametrize("role", [*(f"{name}FunctionRole" for name in ROLES), "CopierTaskRole"])
def test_the_pipelines_roles_may_write_the_cache_over_tls(role: str) -> None:
    """GIVEN each role that writes the cache  WHEN it puts a snapshot object over TLS  THEN nothing denies it, and
    the same request without TLS is denied."""
    put = Request(role_arn(role), "s3:PutObject", SNAPSHOT_OBJECT, TLS)
    assert denied(bucket_policy(), put) == []
    plain = Request(role_arn(role), "s3:PutObject", SNAPSHOT_OBJECT, {"aws:SecureTransport": "false"})
    assert denied(bucket_policy(), plain) == ["DenyInsecureTransport"]


def test_reads_and_the_work_prefix_are_left_to_identity_policies() -> None:
    """GIVEN the same team role  WHEN it reads a snapshot or writes a work file  THEN the bucket policy denies
    neither (its own identity policy decides)."""
    reader = f"arn:aws:iam::{ACCOUNT}:role/ray-pods"
    assert denied(bucket_policy(), Request(reader, "s3:GetObject", SNAPSHOT_OBJECT, TLS)) == []
    work = f"arn:aws:s3:::{BUCKET}/_model-cache-work/plan-1/plan.json"
    assert denied(bucket_policy(), Request(reader, "s3:PutObject", work, TLS)) == []


@pytest.mark.parametrize("sender_arns", [[], [f"arn:aws:iam::{ACCOUNT}:role/ml-*"]], ids=["tag only", "listed roles"])
def test_only_listed_or_tagged_principals_may_send_a_request(sender_arns: list[str]) -> None:
    """GIVEN the queue policy with and without listed sender ARNs  THEN an unlisted, untagged principal's SendMessage
    is denied; the same principal tagged model-cache-sender=true is not; a listed one is not (when listed)."""
    policy = queue_policy(sender_arns)
    stranger = f"arn:aws:iam::{ACCOUNT}:role/someone"
    assert denied(policy, Request(stranger, "sqs:SendMessage", QUEUE, TLS)) == ["DenyUnlistedSenders"]
    tagged = {**TLS, "aws:PrincipalTag/model-cache-sender": "true"}
    assert denied(policy, Request(stranger, "sqs:SendMessage", QUEUE, tagged)) == []
    if sender_arns:
        listed = f"arn:aws:iam::{ACCOUNT}:role/ml-training"
        assert denied(policy, Request(listed, "sqs:SendMessage", QUEUE, TLS)) == []
