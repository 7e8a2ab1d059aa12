"""The offline world authorizes like AWS: each documented rule, proved on its own against the live moto server.

Every row names the AWS page that states the rule. The requests are ordinary boto3 calls to the
session's moto server, signed with a registered principal's keys; the decision is made by
model_cache_devtools.s3_authz in front of moto (the evaluation logic itself is iam_policy).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import REGION, MotoEndpoint, client_as

from model_cache_devtools import s3_authz
from model_cache_devtools.iam_policy import Request, condition_holds, evaluate
from model_cache_devtools.s3_authz import Principal

pytestmark = pytest.mark.integration

ACCOUNT = s3_authz.ACCOUNT
OTHER_ACCOUNT = "210987654321"

# The pages the rows cite.
EVALUATION_LOGIC = "IAM User Guide, Policy evaluation logic (reference_policies_evaluation-logic)"
CROSS_ACCOUNT = "IAM User Guide, Cross-account policy evaluation logic"
BOUNDARIES = "IAM User Guide, Permissions boundaries for IAM entities"
CONDITION_OPERATORS = "IAM User Guide, IAM JSON policy elements: Condition operators"
GET_OBJECT = "S3 API Reference, GetObject, Permissions"
HEAD_OBJECT = "S3 API Reference, HeadObject, Permissions"
S3_ACTIONS = "S3 User Guide, Required permissions for Amazon S3 API operations"
COPY_OBJECT = "S3 API Reference, CopyObject, Permissions"
SSE_KMS = "S3 User Guide, Using server-side encryption with AWS KMS keys (SSE-KMS), Permissions"
MULTIPART_KMS = "S3 User Guide, Multipart upload API and permissions"


def allow(*actions: str, resource: str = "*", **condition: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": list(actions), "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


def principal(*policies: dict[str, Any], boundary: dict[str, Any] | None = None, account: str = ACCOUNT) -> Principal:
    registered = Principal(f"arn:aws:iam::{account}:role/world-{uuid.uuid4().hex[:8]}", list(policies), boundary)
    return s3_authz.active().register(registered)


def error_of(call: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    return int(response["ResponseMetadata"]["HTTPStatusCode"]), str(response["Error"]["Code"])


def arn(bucket: str, key: str = "") -> str:
    return f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}"


@pytest.fixture
def versioned(s3: Any, bucket: str) -> str:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


# ---------------------------------------------------------------------------------------------
# IAM's evaluation logic
# ---------------------------------------------------------------------------------------------


def test_an_explicit_deny_in_the_bucket_policy_wins_over_an_identity_allow(
    aws: MotoEndpoint, bucket: str, s3: Any
) -> None:
    """IAM User Guide, Policy evaluation logic (reference_policies_evaluation-logic): an explicit Deny in any policy
    overrides any Allow."""
    # GIVEN a principal allowed s3:* by its identity policy and a bucket policy denying it PutObject
    who = principal(allow("s3:*"))
    deny = {"Effect": "Deny", "Principal": {"AWS": who.arn}, "Action": "s3:PutObject", "Resource": arn(bucket, "*")}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]}))
    client = client_as(who)
    # WHEN it writes  THEN it is refused, and what the Deny does not name still works
    assert error_of(client.put_object, Bucket=bucket, Key="a", Body=b"x") == (403, "AccessDenied")
    s3.put_object(Bucket=bucket, Key="b", Body=b"y")
    assert client.get_object(Bucket=bucket, Key="b")["Body"].read() == b"y"


def test_nothing_allowed_is_an_implicit_deny(aws: MotoEndpoint, bucket: str, s3: Any) -> None:
    """IAM User Guide, Policy evaluation logic (reference_policies_evaluation-logic): a request no statement allows is
    denied."""
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    client = client_as(principal(allow("s3:PutObject", resource=arn(bucket, "*"))))
    assert error_of(client.get_object, Bucket=bucket, Key="a") == (403, "AccessDenied")


def test_a_boundary_limits_and_never_grants(aws: MotoEndpoint, bucket: str, s3: Any) -> None:
    """IAM User Guide, Permissions boundaries for IAM entities: the effective permissions are the intersection of
    identity policies and boundary."""
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    # GIVEN identity s3:* bounded by read-only, and a boundary that allows what the identity does not
    bounded = client_as(principal(allow("s3:*"), boundary=allow("s3:GetObject")))
    granted_by_boundary_only = client_as(principal(allow("s3:ListBucket"), boundary=allow("s3:*")))
    # THEN the bounded role reads but cannot write; the boundary alone grants no read
    assert bounded.get_object(Bucket=bucket, Key="a")["Body"].read() == b"x"
    assert error_of(bounded.put_object, Bucket=bucket, Key="b", Body=b"y") == (403, "AccessDenied")
    assert error_of(granted_by_boundary_only.get_object, Bucket=bucket, Key="a") == (403, "AccessDenied")


def test_a_same_account_bucket_policy_grants_on_its_own(aws: MotoEndpoint, bucket: str, s3: Any) -> None:
    """IAM User Guide, Policy evaluation logic (reference_policies_evaluation-logic): within one account, an Allow in a
    resource-based policy is enough."""
    who = principal()
    grant = {"Effect": "Allow", "Principal": {"AWS": who.arn}, "Action": "s3:GetObject", "Resource": arn(bucket, "*")}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [grant]}))
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    assert client_as(who).get_object(Bucket=bucket, Key="a")["Body"].read() == b"x"


def test_another_accounts_principal_needs_both_policies(aws: MotoEndpoint, bucket: str, s3: Any) -> None:
    """IAM User Guide, Cross-account policy evaluation logic: the identity policy and the resource policy must both
    allow."""
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    alone = principal(allow("s3:GetObject"), account=OTHER_ACCOUNT)
    assert error_of(client_as(alone).get_object, Bucket=bucket, Key="a") == (403, "AccessDenied")
    grant = {"Effect": "Allow", "Principal": {"AWS": alone.arn}, "Action": "s3:GetObject", "Resource": arn(bucket, "*")}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [grant]}))
    assert client_as(alone).get_object(Bucket=bucket, Key="a")["Body"].read() == b"x"
    without_identity = principal(account=OTHER_ACCOUNT)
    grant["Principal"] = {"AWS": [alone.arn, without_identity.arn]}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [grant]}))
    assert error_of(client_as(without_identity).get_object, Bucket=bucket, Key="a") == (403, "AccessDenied")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("operator", "actual", "expected", "holds"),
    [
        ("StringEquals", None, ["x"], False),  # a positive operator on an absent key does not hold
        ("StringNotEquals", None, ["x"], True),  # a negated one does
        ("StringEqualsIfExists", None, ["x"], True),  # ...IfExists holds on absence
        ("StringLike", ["models/a/refs/main"], ["models/*"], True),
        ("StringLike", ["other/a"], ["models/*", "gated/*"], False),  # values ORed, none matches
        ("ArnNotEquals", ["arn:aws:iam::1:role/a"], ["arn:aws:iam::1:role/a", "arn:aws:iam::1:role/b"], False),
        ("ArnNotLike", ["arn:aws:iam::1:role/ops-x"], ["arn:aws:iam::1:role/ops-*"], False),
        ("Bool", ["true"], ["false"], False),
        ("Null", None, ["true"], True),
    ],
)
def test_condition_operators(operator: str, actual: list[str] | None, expected: list[str], holds: bool) -> None:
    """IAM User Guide, IAM JSON policy elements: Condition operators"""
    assert condition_holds(operator, actual, expected) is holds


@pytest.mark.unit
def test_operators_in_one_condition_block_are_anded() -> None:
    """IAM User Guide, IAM JSON policy elements: Condition operators: every operator of a Condition must hold; insecure
    transport is denied."""
    bucket = "arn:aws:s3:::b"
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": f"{bucket}/*",
        "Condition": {
            "ArnNotEquals": {"aws:PrincipalArn": "arn:aws:iam::1:role/pipeline"},
            "Bool": {"aws:SecureTransport": "true"},
        },
    }
    policy = {"Statement": [deny]}
    admin = [allow("s3:*")]
    outsider = Request("arn:aws:iam::1:role/outsider", "s3:PutObject", f"{bucket}/k", {"aws:SecureTransport": "true"})
    assert not evaluate(outsider, identity=admin, resource_policy=policy, resource_account="1")
    plain = Request("arn:aws:iam::1:role/outsider", "s3:PutObject", f"{bucket}/k", {"aws:SecureTransport": "false"})
    assert evaluate(plain, identity=admin, resource_policy=policy, resource_account="1")
    pipeline = Request("arn:aws:iam::1:role/pipeline", "s3:PutObject", f"{bucket}/k", {"aws:SecureTransport": "true"})
    assert evaluate(pipeline, identity=admin, resource_policy=policy, resource_account="1")


# ---------------------------------------------------------------------------------------------
# S3's own rules
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["get_object", "head_object"])
def test_a_missing_key_is_404_only_with_list_bucket(aws: MotoEndpoint, bucket: str, operation: str) -> None:
    """S3 API Reference, GetObject, Permissions and S3 API Reference, HeadObject, Permissions: 404 with s3:ListBucket
    on the bucket, 403 without it; a ListBucket conditioned on s3:prefix does not count (the read carries no
    s3:prefix)."""
    read = allow("s3:GetObject", resource=arn(bucket, "*"))
    lister = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": arn(bucket)}
    prefixed = {**lister, "Condition": {"StringLike": {"s3:prefix": ["models/*"]}}}
    without = client_as(principal(read))
    listing = client_as(principal(read, {"Statement": [lister]}))
    prefix_bound = client_as(principal(read, {"Statement": [prefixed]}))
    assert error_of(getattr(without, operation), Bucket=bucket, Key="models/missing")[0] == 403
    assert error_of(getattr(listing, operation), Bucket=bucket, Key="models/missing")[0] == 404
    assert error_of(getattr(prefix_bound, operation), Bucket=bucket, Key="models/missing")[0] == 403
    # AND the prefix-bound principal may list exactly that name, which is how our code tells a miss
    assert prefix_bound.list_objects_v2(Bucket=bucket, Prefix="models/missing").get("KeyCount") == 0
    assert error_of(prefix_bound.list_objects_v2, Bucket=bucket, Prefix="work/") == (403, "AccessDenied")


def test_a_read_by_version_id_needs_get_object_version(aws: MotoEndpoint, versioned: str, s3: Any) -> None:
    """{S3_ACTIONS}: GetObject and HeadObject with versionId need s3:GetObjectVersion."""
    version = s3.put_object(Bucket=versioned, Key="a", Body=b"x")["VersionId"]
    current_only = client_as(principal(allow("s3:GetObject")))
    both = client_as(principal(allow("s3:GetObject", "s3:GetObjectVersion")))
    assert current_only.get_object(Bucket=versioned, Key="a")["Body"].read() == b"x"
    assert error_of(current_only.get_object, Bucket=versioned, Key="a", VersionId=version) == (403, "AccessDenied")
    assert error_of(current_only.head_object, Bucket=versioned, Key="a", VersionId=version)[0] == 403
    assert both.get_object(Bucket=versioned, Key="a", VersionId=version)["Body"].read() == b"x"


def test_a_copy_needs_the_sources_read_action(aws: MotoEndpoint, versioned: str, s3: Any) -> None:
    """S3 API Reference, CopyObject, Permissions: s3:GetObject (s3:GetObjectVersion for a versioned source) on the
    source, s3:PutObject on the destination."""
    version = s3.put_object(Bucket=versioned, Key="src", Body=b"x")["VersionId"]
    writer = client_as(principal(allow("s3:PutObject", "s3:GetObject")))
    pinned = {"Bucket": versioned, "Key": "src", "VersionId": version}
    assert error_of(writer.copy_object, Bucket=versioned, Key="dst", CopySource=pinned) == (403, "AccessDenied")
    writer.copy_object(Bucket=versioned, Key="dst", CopySource={"Bucket": versioned, "Key": "src"})
    no_read = client_as(principal(allow("s3:PutObject")))
    assert (
        error_of(no_read.copy_object, Bucket=versioned, Key="dst2", CopySource={"Bucket": versioned, "Key": "src"})[0]
        == 403
    )


def test_deletes_listings_and_aborts_need_their_own_actions(aws: MotoEndpoint, versioned: str, s3: Any) -> None:
    """{S3_ACTIONS}: DeleteObject with versionId is s3:DeleteObjectVersion, each key of DeleteObjects is decided on its
    own, ListObjectVersions is s3:ListBucketVersions, AbortMultipartUpload its own action."""
    version = s3.put_object(Bucket=versioned, Key="keep/a", Body=b"x")["VersionId"]
    s3.put_object(Bucket=versioned, Key="free/b", Body=b"y")
    deleter = client_as(principal(allow("s3:DeleteObject", "s3:ListBucket", "s3:PutObject", resource="*")))
    assert error_of(deleter.delete_object, Bucket=versioned, Key="keep/a", VersionId=version) == (403, "AccessDenied")
    assert error_of(deleter.list_object_versions, Bucket=versioned) == (403, "AccessDenied")
    upload = deleter.create_multipart_upload(Bucket=versioned, Key="free/c")["UploadId"]
    assert error_of(deleter.abort_multipart_upload, Bucket=versioned, Key="free/c", UploadId=upload)[0] == 403
    narrow = client_as(principal(allow("s3:DeleteObject", resource=arn(versioned, "free/*"))))
    batch = narrow.delete_objects(Bucket=versioned, Delete={"Objects": [{"Key": "free/b"}]})
    assert [deleted["Key"] for deleted in batch.get("Deleted", [])] == ["free/b"]
    assert error_of(narrow.delete_objects, Bucket=versioned, Delete={"Objects": [{"Key": "keep/a"}]})[0] == 403


def test_an_unknown_access_key_is_refused(aws: MotoEndpoint, bucket: str) -> None:
    """S3 API Reference, Error responses: InvalidAccessKeyId for a key AWS does not know."""
    stranger = Principal("arn:aws:iam::123456789012:role/never-registered", [allow("s3:*")])
    assert error_of(client_as(stranger).list_objects_v2, Bucket=bucket) == (403, "InvalidAccessKeyId")


@pytest.fixture
def kms_bucket(aws: MotoEndpoint, s3: Any, bucket: str) -> tuple[str, str]:
    key = boto3.client("kms", region_name=REGION, endpoint_url=aws.url).create_key()["KeyMetadata"]["Arn"]
    default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": True}]
        },
    )
    return bucket, key


def test_sse_kms_reads_and_writes_need_the_key(aws: MotoEndpoint, kms_bucket: tuple[str, str], s3: Any) -> None:
    """S3 User Guide, Using server-side encryption with AWS KMS keys (SSE-KMS), Permissions and S3 User Guide,
    Multipart upload API and permissions: GetObject needs kms:Decrypt, PutObject kms:GenerateDataKey, a multipart
    upload both; HeadObject needs neither; the grant is through S3 only (kms:ViaService)."""
    bucket, key = kms_bucket
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    via_s3 = {"StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}}
    s3_only = allow("s3:GetObject", "s3:PutObject")
    reader = client_as(principal(s3_only))
    assert reader.head_object(Bucket=bucket, Key="a")["ContentLength"] == 1
    assert error_of(reader.get_object, Bucket=bucket, Key="a") == (403, "AccessDenied")
    assert error_of(reader.put_object, Bucket=bucket, Key="b", Body=b"y") == (403, "AccessDenied")
    decrypt = client_as(principal(s3_only, allow("kms:Decrypt", resource=key, **via_s3)))
    assert decrypt.get_object(Bucket=bucket, Key="a")["Body"].read() == b"x"
    assert error_of(decrypt.create_multipart_upload, Bucket=bucket, Key="m")[0] == 403
    both = client_as(principal(s3_only, allow("kms:Decrypt", "kms:GenerateDataKey", resource=key, **via_s3)))
    upload = both.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    part = both.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=1, Body=b"z")
    both.complete_multipart_upload(
        Bucket=bucket, Key="m", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    )
    other_key = client_as(principal(s3_only, allow("kms:*", resource=key.replace(key[-4:], "0000"))))
    assert error_of(other_key.get_object, Bucket=bucket, Key="a") == (403, "AccessDenied")
